// Preprocessing contract v1 (docs/MODEL_CARD.md), the TypeScript twin of
// models/medhash_model/preprocess.py: pixels -> RGB 0-255 -> luma (1-channel models) -> separable
// antialiased triangle resize through the same weight matrices -> /255 -> float32 CHW. Every step
// runs in float64 in the same order as numpy, so the result matches Python to float32 rounding.
import type { ModelCard } from './card.ts';
import type { DecodedImage } from './image.ts';

/** One output row of the resize: weights of inputs lo .. lo + w.length - 1 (sum 1). */
interface WeightRow {
  lo: number;
  w: Float64Array;
}

// The senders choose the sizes: unbounded, tiny images of every side up to the limit would pin
// about 190 MB of weights for the life of the process. The least recently used size goes first.
const WEIGHT_CACHE_SIZES = 64;
const weightCache = new Map<string, WeightRow[]>();

/** resize_weights of preprocess.py: triangle filter, support widened by the downscale factor. */
export function resizeWeights(nIn: number, nOut: number): WeightRow[] {
  const key = `${nIn}:${nOut}`;
  const cached = weightCache.get(key);
  if (cached) {
    weightCache.delete(key);
    weightCache.set(key, cached);
    return cached;
  }
  const scale = nIn / nOut;
  const support = Math.max(scale, 1);
  const rows: WeightRow[] = [];
  for (let i = 0; i < nOut; i++) {
    const centre = (i + 0.5) * scale;
    const lo = Math.max(Math.floor(centre - support), 0);
    const hi = Math.min(Math.ceil(centre + support), nIn);
    const w = new Float64Array(hi - lo);
    let sum = 0;
    for (let j = lo; j < hi; j++) {
      const t = Math.max(1 - Math.abs((j + 0.5 - centre) / support), 0);
      w[j - lo] = t;
      sum += t;
    }
    for (let k = 0; k < w.length; k++) w[k] /= sum;
    rows.push({ lo, w });
  }
  if (weightCache.size >= WEIGHT_CACHE_SIZES) weightCache.delete(weightCache.keys().next().value!);
  weightCache.set(key, rows);
  return rows;
}

/** Fills `out` with row y of one plane, float64 0-255, as Python computes it before resizing. */
type PlaneRow = (y: number, out: Float64Array) => void;

/**
 * The planes the model sees, produced one row at a time so that a large image never exists as
 * float64 copies. RGB as decode_rgb of preprocess.py makes it: alpha dropped, grey replicated,
 * 16-bit grey scaled by its own maximum and truncated as numpy's astype(uint8) does, other 16-bit
 * images keep the high byte as PIL reads them. 1-channel models get the luma of that RGB, with
 * numpy's order of operations.
 */
function planes(img: DecodedImage, input: ModelCard['input']): PlaneRow[] {
  const { width: w, channels: ch, data: d } = img;
  const n = w * img.height;
  // sample (channel c of pixel p) of the RGB image
  let sample: (p: number, c: number) => number;
  if (img.bitDepth === 16 && ch === 1) {
    let max = 1;
    for (let p = 0; p < n; p++) max = Math.max(max, (d[2 * p] << 8) | d[2 * p + 1]);
    sample = (p) => Math.trunc(Math.min(Math.max((((d[2 * p] << 8) | d[2 * p + 1]) / max) * 255, 0), 255));
  } else {
    const step = img.bitDepth === 16 ? 2 : 1; // high byte of big-endian pairs
    sample = ch === 1 ? (p) => d[p * step] : (p, c) => d[(p * ch + c) * step];
  }
  if (input.channels === 3) {
    return [0, 1, 2].map((c): PlaneRow => (y, out) => {
      for (let x = 0, p = y * w; x < w; x++, p++) out[x] = sample(p, c);
    });
  }
  const [a, b, c] = input.preprocess.grey.weights;
  return [
    (y, out) => {
      for (let x = 0, p = y * w; x < w; x++, p++) out[x] = sample(p, 0) * a + sample(p, 1) * b + sample(p, 2) * c;
    },
  ];
}

/**
 * wy @ x @ wx.T for one (h, w) plane. The vertical pass walks the input rows once and adds each
 * to the output rows whose filter covers it; float64 throughout, so the order of the sums only
 * moves results far below float32 resolution.
 */
function resizePlane(plane: PlaneRow, h: number, w: number, wy: WeightRow[], wx: WeightRow[]): Float64Array {
  const oh = wy.length;
  const ow = wx.length;
  const users: Array<Array<[number, number]>> = Array.from({ length: h }, () => []);
  wy.forEach(({ lo, w: ws }, i) => ws.forEach((wk, k) => users[lo + k].push([i, wk])));
  const tmp = new Float64Array(oh * w);
  const buf = new Float64Array(w);
  for (let y = 0; y < h; y++) {
    if (users[y].length === 0) continue;
    plane(y, buf);
    for (const [i, wk] of users[y]) {
      const base = i * w;
      for (let x = 0; x < w; x++) tmp[base + x] += wk * buf[x];
    }
  }
  const out = new Float64Array(oh * ow);
  for (let i = 0; i < oh; i++) {
    for (let j = 0; j < ow; j++) {
      const { lo, w: ws } = wx[j];
      let s = 0;
      for (let k = 0; k < ws.length; k++) s += tmp[i * w + lo + k] * ws[k];
      out[i * ow + j] = s;
    }
  }
  return out;
}

/** One decoded image -> the model input (channels, size, size), float32 in [0, 1]. */
export function preprocess(img: DecodedImage, input: ModelCard['input']): Float32Array {
  const size = input.size;
  const wy = resizeWeights(img.height, size);
  const wx = resizeWeights(img.width, size);
  const ps = planes(img, input);
  const out = new Float32Array(ps.length * size * size);
  ps.forEach((plane, c) => {
    const r = resizePlane(plane, img.height, img.width, wy, wx);
    for (let k = 0; k < r.length; k++) out[c * size * size + k] = r[k] / 255;
  });
  return out;
}

/** Several images -> one (N, C, S, S) batch. */
export function preprocessBatch(imgs: DecodedImage[], input: ModelCard['input']): Float32Array {
  const per = input.channels * input.size * input.size;
  const out = new Float32Array(per * imgs.length);
  imgs.forEach((img, i) => out.set(preprocess(img, input), i * per));
  return out;
}
