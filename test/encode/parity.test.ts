// Encoding parity with Python (issue 4, "Parity"): for every models/*.card.json, the TypeScript
// path (decodeImage + preprocess) applied to the SOURCE bytes of each golden image equals the
// Python-preprocessed golden input to <= 1/255 per pixel, and that TS input gives PyTorch's sign
// bits through loadNodeEncoder and loadWebEncoder. Also pins PNG variants (16-bit grey, palette,
// RGBA, grey+alpha, 1/2/4-bit grey, odd sizes) against models/medhash_model/preprocess.py itself,
// and that what one side refuses (another format, CMYK, a coding mozjpeg lacks, the limits) the
// other refuses too, with the same status, code and message.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCard, parseCard, type ModelCard } from '../../functions/encode/card.ts';
import { decodeImage } from '../../functions/encode/image.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder, loadWebEncoder, packCode, row, type Encoder } from '../../functions/encode/model.ts';
import { preprocess, preprocessBatch } from '../../functions/encode/preprocess.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { dataDir, MODELS } from './fixtures.ts';
import { png, scanlines } from './png-fixtures.ts';

const PIXEL_TOL = 1 / 255;

interface GoldenItem { id: string; input: string; bits_hex: string }
interface Golden { model_id: string; data: string; input_shape: number[]; items: GoldenItem[] }

const names = readdirSync(MODELS).filter((f) => f.endsWith('.card.json')).map((f) => f.replace(/\.card\.json$/, '')).sort();

function f32(b64: string): Float32Array {
  return new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

beforeAll(() => initNodeImageCodecs());

it('finds exported models', () => expect(names.length).toBeGreaterThan(0));

describe.each(names)('%s', (name) => {
  const golden = JSON.parse(readFileSync(join(MODELS, 'golden', `${name}.json`), 'utf8')) as Golden;
  let card: ModelCard;
  let onnx: Uint8Array;
  let batch: Float32Array;

  beforeAll(async () => {
    ({ card, onnx } = await loadCard(join(MODELS, `${name}.card.json`)));
    expect(golden.model_id).toBe(card.model_id);
    const tar = await TarReader.open(join(dataDir(golden.data), 'images.tar'));
    const imgs = [];
    for (const item of golden.items) imgs.push(await decodeImage(await tar.read(item.id)));
    await tar.close();
    batch = preprocessBatch(imgs, card.input);
  });

  it('TS preprocessing of the source images equals the Python golden input to <= 1/255', () => {
    const per = golden.input_shape.reduce((a, b) => a * b, 1);
    golden.items.forEach((item, i) => {
      expect(maxAbsDiff(batch.subarray(i * per, (i + 1) * per), f32(item.input)), item.id).toBeLessThanOrEqual(PIXEL_TOL);
    });
  });

  const checkBits = async (load: () => Promise<Encoder>, runtime: RegExp) => {
    const enc = await load();
    expect(enc.runtime).toMatch(runtime);
    const out = await enc.run(batch, golden.items.length);
    await enc.close();
    expect(out.oodScore.length).toBe(golden.items.length);
    golden.items.forEach((item, i) => expect(hex(packCode(row(out.u, card.bits, i))), item.id).toBe(item.bits_hex));
  };

  it('onnxruntime-node on the TS input gives PyTorch sign bits', () => checkBits(() => loadNodeEncoder(onnx, card), /^onnxruntime-node\/cpu$/));

  it('asking for CUDA without one falls back to the CPU and says so', () => checkBits(() => loadNodeEncoder(onnx, card, { cuda: true }), /^onnxruntime-node\/(cpu|cuda)$/));

  it('onnxruntime-web on the TS input gives PyTorch sign bits', () => checkBits(() => loadWebEncoder(onnx, card), /^onnxruntime-web\/(wasm|webgpu)$/));
});

describe('PNG variants against models/medhash_model/preprocess.py', () => {
  const dir = mkdtempSync(join(tmpdir(), 'medhash-pre-'));
  let seed = 11;
  const rnd = (max: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % max;
  const cases = {
    'grey16-37x23': png({ width: 37, height: 23, colorType: 0, bitDepth: 16, raw: scanlines(37, 23, 1, 16, Array.from({ length: 37 * 23 }, () => rnd(4000))) }),
    'rgba8-50x70': png({ width: 50, height: 70, colorType: 6, bitDepth: 8, raw: scanlines(50, 70, 4, 8, Array.from({ length: 50 * 70 * 4 }, () => rnd(256))) }),
    'rgb16-20x20': png({ width: 20, height: 20, colorType: 2, bitDepth: 16, raw: scanlines(20, 20, 3, 16, Array.from({ length: 20 * 20 * 3 }, () => rnd(65536))) }),
    'palette-9x130': png({ width: 9, height: 130, colorType: 3, bitDepth: 8, raw: scanlines(9, 130, 1, 8, Array.from({ length: 9 * 130 }, () => rnd(3))), palette: new Uint8Array([0, 0, 0, 255, 10, 20, 30, 200, 90]) }),
    'grey1-33x17': png({ width: 33, height: 17, colorType: 0, bitDepth: 1, raw: scanlines(33, 17, 1, 1, Array.from({ length: 33 * 17 }, () => rnd(2))) }),
    'grey2-40x40': png({ width: 40, height: 40, colorType: 0, bitDepth: 2, raw: scanlines(40, 40, 1, 2, Array.from({ length: 1600 }, () => rnd(4))) }),
    'grey4-15x90': png({ width: 15, height: 90, colorType: 0, bitDepth: 4, raw: scanlines(15, 90, 1, 4, Array.from({ length: 15 * 90 }, () => rnd(16))) }),
    'greyalpha8-31x31': png({ width: 31, height: 31, colorType: 4, bitDepth: 8, raw: scanlines(31, 31, 2, 8, Array.from({ length: 31 * 31 * 2 }, () => rnd(256))) }),
    'rgba16-12x66': png({ width: 12, height: 66, colorType: 6, bitDepth: 16, raw: scanlines(12, 66, 4, 16, Array.from({ length: 12 * 66 * 4 }, () => rnd(65536))) }),
    'grey8-200x3': png({ width: 200, height: 3, colorType: 0, bitDepth: 8, raw: scanlines(200, 3, 1, 8, Array.from({ length: 600 }, () => rnd(256))) }),
  };
  for (const [k, bytes] of Object.entries(cases)) writeFileSync(join(dir, `${k}.png`), bytes);

  it.each([1, 3] as const)('channels %i, upscaling and downscaling', async (channels) => {
    const size = 64;
    const script = [
      'import sys, json, base64, pathlib',
      `sys.path.insert(0, ${JSON.stringify(join(MODELS))})`,
      'from medhash_model.preprocess import preprocess_bytes',
      `d = pathlib.Path(${JSON.stringify(dir)})`,
      `print(json.dumps({p.stem: base64.b64encode(preprocess_bytes(p.read_bytes(), ${size}, ${channels}).tobytes()).decode() for p in sorted(d.glob("*.png"))}))`,
    ].join('\n');
    const py = JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { encoding: 'utf8' })) as Record<string, string>;
    const input = parseCard({ ...JSON.parse(readFileSync(join(MODELS, `${names[0]}.card.json`), 'utf8')) }).input;
    const spec = { ...input, size, channels, preprocess: { ...input.preprocess, grey: { ...input.preprocess.grey, applies: channels === 1 }, resize: { to: [size, size] as [number, number] } } };
    for (const [k, bytes] of Object.entries(cases)) {
      const ts = preprocess(await decodeImage(bytes, 'image/png'), spec);
      expect(maxAbsDiff(ts, f32(py[k])), k).toBeLessThanOrEqual(1e-6);
    }
  });
});

describe('refusals against models/medhash_model/preprocess.py', () => {
  // Made by PIL, as a training folder would hold them (the arithmetic-coded, lossless and 12-bit ones
  // by relabelling a PIL JPEG's frame header, all the walk reads): each one the service refuses;
  // preprocess.py once trained on all but the 12-bit one (and the service answered real
  // arithmetic-coded ones, cjpeg -arithmetic, with a 422 saying nothing).
  const make = [
    'import io, json, sys, pathlib, struct, zlib',
    `sys.path.insert(0, ${JSON.stringify(MODELS)})`,
    'import numpy as np',
    'from PIL import Image',
    'from medhash_model.preprocess import preprocess_bytes',
    'rgb = (np.arange(40 * 48 * 3).reshape(40, 48, 3) % 251).astype(np.uint8)',
    'def saved(im, fmt, **kw):',
    '    b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()',
    'def sof(b, marker=None, precision=None):',
    '    i = b.index(b"\\xff\\xc0"); b = bytearray(b)',
    '    if marker: b[i + 1] = marker',
    '    if precision: b[i + 4] = precision',
    '    return bytes(b)',
    'def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))',
    'png = saved(Image.fromarray(rgb), "PNG")',
    'jpeg = saved(Image.fromarray(rgb), "JPEG", quality=90)',
    'cases = {',
    '    "cmyk.jpg": saved(Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "CMYK"), "JPEG"),',
    '    "arithmetic.jpg": sof(jpeg, marker=0xC9),',
    '    "lossless.jpg": sof(jpeg, marker=0xC3),',
    '    "12-bit.jpg": sof(jpeg, precision=12),',
    '    "truncated.jpg": jpeg[: len(jpeg) // 2],',
    '    "gif.png": saved(Image.fromarray(rgb), "GIF"),',
    '    "bmp.jpg": saved(Image.fromarray(rgb), "BMP"),',
    '    "tiff.png": saved(Image.fromarray(rgb), "TIFF"),',
    '    "webp.jpg": saved(Image.fromarray(rgb), "WEBP"),',
    '    "4097x1.png": saved(Image.new("L", (4097, 1)), "PNG"),',
    '    "no-iend.png": png[:-12],',
    '    "no-idat.png": png[:33] + chunk(b"IEND", b""),',
    '    "no-plte.png": (lambda p: p[:p.index(b"PLTE") - 4] + p[p.index(b"PLTE") + 8 + struct.unpack(">I", p[p.index(b"PLTE") - 4:p.index(b"PLTE")])[0] + 4:])(saved(Image.fromarray(rgb[:, :, 0]).convert("P"), "PNG")),',
    '}',
    'out = {}',
    'for name, b in cases.items():',
    '    try:',
    '        preprocess_bytes(b, 16, 3); out[name] = [bytes(b).hex(), None]',
    '    except Exception as e:  # a DicomError is the service\'s refusal; anything else is PIL\'s',
    '        out[name] = [bytes(b).hex(), [getattr(e, "status", None), getattr(e, "code", type(e).__name__), str(e)]]',
    'print(json.dumps(out))',
  ].join('\n');

  it('the service and preprocess.py refuse the same images, with the same status, code and message', async () => {
    const py = JSON.parse(execFileSync('/usr/bin/python3', ['-c', make], { encoding: 'utf8', maxBuffer: 1 << 26 })) as Record<string, [string, [number, string, string] | null]>;
    expect(Object.keys(py)).toHaveLength(13);
    for (const [name, [hexBytes, refusal]] of Object.entries(py)) {
      const e = await decodeImage(new Uint8Array(Buffer.from(hexBytes, 'hex'))).then(() => null, (x: unknown) => x);
      expect(e, name).toBeInstanceOf(MedhashError);
      const { status, code, message } = e as MedhashError;
      expect([status, code, message], name).toEqual(refusal);
      expect(status, name).toBeLessThan(500);
    }
  });
});
