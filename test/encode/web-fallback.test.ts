// The onnxruntime-web encoder's switch from a failed WebGPU session to wasm (functions/encode/model.ts,
// docs/SDK.md "When the GPU fails later") when loading the wasm session fails: the run that asked
// for it gets that error, and the next run loads again, once per run. onnxruntime-web is replaced
// by a stand-in whose sessions fail as told: a wasm session load in a real page fetches nothing
// (the SDK handed the runtime's bytes over at start), so there is no request to fail; the real
// switch runs in Chromium in test/sdk/browser-webgpu.test.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, expect, it, vi } from 'vitest';
import { parseCard } from '../../functions/encode/card.ts';
import { loadWebEncoder } from '../../functions/encode/model.ts';
import { MODELS } from './fixtures.ts';

const card = parseCard(JSON.parse(readFileSync(join(MODELS, 'mednist-darf-b64.card.json'), 'utf8')));
const per = card.input.channels * card.input.size ** 2;

/** What the stand-in's sessions do: the wasm loads that fail next, and every session load made. */
const ort = vi.hoisted(() => ({ wasmLoadsFailing: 0, loads: [] as string[] }));

vi.mock('onnxruntime-web', () => {
  class Tensor {
    constructor(readonly type: string, readonly data: Float32Array, readonly dims: number[]) {}
  }
  const outputs = (n: number, bits: number, classes: number) => {
    const t = (k: number) => ({ data: new Float32Array(n * k).fill(0.5), dims: [n, k] });
    return { u: t(bits), logits: t(classes), features: t(4), ood_score: t(1), ood_recon: t(1), ood_maha: t(1) };
  };
  return {
    Tensor,
    env: { wasm: {}, webgpu: { device: Promise.resolve({ lost: new Promise(() => {}) }) } },
    InferenceSession: {
      async create(_bytes: Uint8Array, opts: { executionProviders: string[] }) {
        const [ep] = opts.executionProviders;
        ort.loads.push(ep);
        if (ep === 'webgpu') return { run: async () => Promise.reject(new Error('the GPU process crashed')), release: async () => {} };
        if (ort.wasmLoadsFailing > 0) {
          ort.wasmLoadsFailing--;
          throw new Error(`wasm load ${ort.loads.length} failed`);
        }
        return { run: async (feeds: Record<string, Tensor>) => outputs(Object.values(feeds)[0].dims[0], 64, 6), release: async () => {} };
      },
    },
  };
});

const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
// a hardware adapter, so that loadWebEncoder takes WebGPU
vi.stubGlobal('navigator', { gpu: { requestAdapter: async () => ({ info: { isFallbackAdapter: false } }) } });
afterAll(() => {
  vi.unstubAllGlobals();
  warn.mockRestore();
});

beforeEach(() => {
  ort.loads.length = 0;
  warn.mockClear();
});

const run = (enc: Awaited<ReturnType<typeof loadWebEncoder>>) => enc.run(new Float32Array(per), 1);

it('a failed wasm load fails the run that asked for it, with its error, and the next run loads again', async () => {
  const enc = await loadWebEncoder(new Uint8Array(1), card);
  expect(enc.runtime).toBe('onnxruntime-web/webgpu');
  ort.wasmLoadsFailing = 1;
  await expect(run(enc)).rejects.toThrow('wasm load 2 failed');
  expect(ort.loads).toEqual(['webgpu', 'wasm']);
  // nothing runs the model now: WebGPU's session is released, wasm's never loaded
  expect(enc.runtime).toBe('none (onnxruntime-web/webgpu failed; the next run loads its fallback)');
  const out = await run(enc);
  expect(out.u).toHaveLength(64);
  expect(enc.runtime).toBe('onnxruntime-web/wasm');
  // loaded once it worked, and never again; one warning for the one switch
  await run(enc);
  expect(ort.loads).toEqual(['webgpu', 'wasm', 'wasm']);
  expect(warn).toHaveBeenCalledOnce();
  await enc.close();
});

it('tries the load once per run, however many runs wait, each failed run with its own load\'s error', async () => {
  const enc = await loadWebEncoder(new Uint8Array(1), card);
  ort.wasmLoadsFailing = 3;
  const runs = await Promise.allSettled([run(enc), run(enc), run(enc), run(enc)]);
  expect(runs.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.status))).toEqual(['wasm load 2 failed', 'wasm load 3 failed', 'wasm load 4 failed', 'fulfilled']);
  expect(ort.loads).toEqual(['webgpu', 'wasm', 'wasm', 'wasm', 'wasm']);
  expect(enc.runtime).toBe('onnxruntime-web/wasm');
  await enc.close();
});
