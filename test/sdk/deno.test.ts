// onnxruntime-web under Deno (issue 4, "Parity"; docs/RUNTIMES.md): with Mesa's software Vulkan
// adapter loadWebEncoder picks WebGPU, and every model's golden inputs give PyTorch's sign bits
// through it and through the wasm path, with u within float32 noise of PyTorch's.
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { denoRunner, type DenoRunner } from '../../scripts/deno/run.ts';
import { MODELS } from '../encode/fixtures.ts';

const names = readdirSync(MODELS).filter((f) => f.endsWith('.card.json')).map((f) => f.replace(/\.card\.json$/, '')).sort();
const DU_TOL = 1e-3;

let deno: DenoRunner;
beforeAll(async () => {
  deno = await denoRunner();
});
afterAll(() => deno?.close());

describe.each(names)('%s under Deno', (name) => {
  it.each(['webgpu', 'wasm'] as const)('%s path: chosen, and PyTorch\'s sign bits for every golden image', async (path) => {
    const r = await deno.run(name, path);
    expect(r.runtime).toBe(`onnxruntime-web/${path}`);
    expect(r.n).toBeGreaterThan(0);
    for (const item of r.items) {
      expect(item.bits_match, item.id).toBe(true);
      expect(item.max_abs_du, item.id).toBeLessThan(DU_TOL);
    }
  }, 180_000);
});
