// Export parity: every models/*.card.json names an .onnx whose bytes match the card's sha256,
// and its golden file (Python-preprocessed query images with PyTorch outputs) comes out the same
// through onnxruntime-node and onnxruntime-web (wasm, as the browser and edge run it).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ortNode from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { packCode } from '../functions/encode/model.ts';

const MODELS = join(import.meta.dirname, '..', 'models');
const U_TOL = 1e-4;
const OOD_TOL = 1e-3;

interface Card { format: string; version: number; name: string; onnx: string; sha256: string; bits: number; input: { name: string } }
interface GoldenItem { id: string; input: string; u: number[]; bits_hex: string; ood_score: number }
interface Golden { format: string; version: number; model_id: string; input_shape: number[]; items: GoldenItem[] }

const cards: Card[] = existsSync(MODELS)
  ? readdirSync(MODELS).filter((f) => f.endsWith('.card.json')).sort()
      .map((f) => JSON.parse(readFileSync(join(MODELS, f), 'utf8')) as Card)
  : [];

/** Sign bits packed as the service packs them. */
const packHex = (u: Float32Array): string => Buffer.from(packCode(u)).toString('hex');

function batchInput(golden: Golden): { data: Float32Array; dims: number[] } {
  const per = golden.input_shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(per * golden.items.length);
  golden.items.forEach((item, i) => {
    const raw = Buffer.from(item.input, 'base64');
    // copy into an aligned buffer: a Buffer's byteOffset need not be a multiple of 4
    data.set(new Float32Array(new Uint8Array(raw).buffer), i * per);
  });
  return { data, dims: [golden.items.length, ...golden.input_shape] };
}

type Outputs = { u: Float32Array; ood: Float32Array };

function check(golden: Golden, bits: number, out: Outputs): void {
  golden.items.forEach((item, i) => {
    const u = out.u.subarray(i * bits, (i + 1) * bits);
    const maxDiff = Math.max(...item.u.map((v, j) => Math.abs(v - u[j])));
    expect(maxDiff, `${item.id} u`).toBeLessThanOrEqual(U_TOL);
    expect(packHex(u), `${item.id} bits`).toBe(item.bits_hex);
    expect(Math.abs(out.ood[i] - item.ood_score), `${item.id} ood_score`).toBeLessThanOrEqual(OOD_TOL);
  });
}

it('has at least one exported model card', () => {
  expect(cards.length).toBeGreaterThan(0);
});

describe.each(cards.map((c) => [c.name, c] as const))('%s', (_name, card) => {
  const bytes = new Uint8Array(readFileSync(join(MODELS, card.onnx)));
  const golden = JSON.parse(readFileSync(join(MODELS, 'golden', `${card.name}.json`), 'utf8')) as Golden;
  const input = batchInput(golden);

  beforeAll(() => {
    ortWeb.env.wasm.numThreads = 1; // no worker threads under Node
  });

  it('is a version 1 card whose sha256 matches the .onnx', () => {
    expect([card.format, card.version]).toEqual(['medhash-model-card', 1]);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(card.sha256);
    expect([golden.format, golden.version]).toEqual(['medhash-golden', 1]);
    expect(golden.model_id).toBe(`${card.name}@${card.sha256.slice(0, 12)}`);
  });

  it('onnxruntime-node reproduces the PyTorch outputs', async () => {
    const session = await ortNode.InferenceSession.create(bytes);
    const res = await session.run({ [card.input.name]: new ortNode.Tensor('float32', input.data, input.dims) });
    check(golden, card.bits, { u: res.u.data as Float32Array, ood: res.ood_score.data as Float32Array });
    await session.release();
  });

  it('onnxruntime-web (wasm) reproduces the PyTorch outputs', async () => {
    const session = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    const res = await session.run({ [card.input.name]: new ortWeb.Tensor('float32', input.data, input.dims) });
    check(golden, card.bits, { u: res.u.data as Float32Array, ood: res.ood_score.data as Float32Array });
    await session.release();
  });
});
