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

const weightCache = new Map<string, WeightRow[]>();

/** resize_weights of preprocess.py: triangle filter, support widened by the downscale factor. */
export function resizeWeights(nIn: number, nOut: number): WeightRow[] {
  const key = `${nIn}:${nOut}`;
  const cached = weightCache.get(key);
  if (cached) return cached;
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
  weightCache.set(key, rows);
  return rows;
}

/**
 * The decoded pixels as float64 planes of 0-255 values, RGB (decode_rgb of preprocess.py): alpha
 * dropped, grey replicated, 16-bit grey scaled by its own maximum and truncated to an integer as
 * numpy's astype(uint8) does; other 16-bit images keep the high byte, as PIL reads them.
 */
function rgbPlanes(img: DecodedImage): Float64Array[] {
  const n = img.width * img.height;
  const ch = img.channels;
  const planes = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  const d = img.data;
  if (img.bitDepth === 16 && ch === 1) {
    let max = 1;
    for (let p = 0; p < n; p++) max = Math.max(max, (d[2 * p] << 8) | d[2 * p + 1]);
    for (let p = 0; p < n; p++) {
      const v = Math.trunc(Math.min(Math.max((((d[2 * p] << 8) | d[2 * p + 1]) / max) * 255, 0), 255));
      planes[0][p] = planes[1][p] = planes[2][p] = v;
    }
    return planes;
  }
  const step = img.bitDepth === 16 ? 2 : 1; // high byte of big-endian pairs
  for (let p = 0; p < n; p++) {
    const base = p * ch * step;
    if (ch === 1) {
      planes[0][p] = planes[1][p] = planes[2][p] = d[base];
    } else {
      planes[0][p] = d[base];
      planes[1][p] = d[base + step];
      planes[2][p] = d[base + 2 * step];
    }
  }
  return planes;
}

/** wy @ x @ wx.T for one (h, w) plane, vertical pass first as numpy evaluates it. */
function resizePlane(x: Float64Array, h: number, w: number, wy: WeightRow[], wx: WeightRow[]): Float64Array {
  const oh = wy.length;
  const ow = wx.length;
  const tmp = new Float64Array(oh * w);
  for (let i = 0; i < oh; i++) {
    const { lo, w: ws } = wy[i];
    const row = tmp.subarray(i * w, (i + 1) * w);
    for (let k = 0; k < ws.length; k++) {
      const wk = ws[k];
      const src = (lo + k) * w;
      for (let c = 0; c < w; c++) row[c] += wk * x[src + c];
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
  const rgb = rgbPlanes(img);
  const n = img.width * img.height;
  let planes: Float64Array[];
  if (input.channels === 1) {
    const [a, b, c] = input.preprocess.grey.weights;
    const luma = new Float64Array(n);
    for (let p = 0; p < n; p++) luma[p] = rgb[0][p] * a + rgb[1][p] * b + rgb[2][p] * c;
    planes = [luma];
  } else {
    planes = rgb;
  }
  const wy = resizeWeights(img.height, size);
  const wx = resizeWeights(img.width, size);
  const out = new Float32Array(planes.length * size * size);
  planes.forEach((plane, c) => {
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
