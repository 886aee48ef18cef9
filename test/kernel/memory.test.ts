// Memory must stay flat: queries reuse one scratch block, freed tables are reused.
import { describe, expect, it } from 'vitest';
import { loadHammingKernel } from '../../wasm/load-node.ts';

describe('kernel memory', () => {
  it('is flat over 100k queries of varying k and limit', async () => {
    const kernel = await loadHammingKernel();
    const n = 2000;
    const codes = new Uint8Array(n * 8).map((_, i) => Math.imul(i + 7, 2654435761) >>> 24);
    const t = kernel.loadTable(codes, 64);
    const q = new Uint8Array(8);
    // The largest k and limit first: scratch grows once, to its final size.
    kernel.topK(t, q, n);
    kernel.radius(t, q, 64, n);
    const before = kernel.memoryBytes();
    for (let i = 0; i < 100_000; i++) {
      q[i & 7] = i;
      if (i & 1) kernel.topK(t, q, 1 + (i % 300));
      else kernel.radius(t, q, i % 40, i % 500);
    }
    expect(kernel.memoryBytes()).toBe(before);
  });

  it('reuses the space of freed tables', async () => {
    const kernel = await loadHammingKernel();
    const codes = new Uint8Array(8 * 100_000);
    kernel.freeTable(kernel.loadTable(codes, 64));
    const before = kernel.memoryBytes();
    for (let i = 0; i < 200; i++) {
      const a = kernel.loadTable(codes.subarray(0, 8 * (1 + (i % 50_000))), 64);
      const b = kernel.loadTable(codes.subarray(0, 8 * (50_000 - (i % 50_000))), 64);
      kernel.topK(b, new Uint8Array(8), 10);
      kernel.freeTable(a);
      kernel.freeTable(b);
    }
    expect(kernel.memoryBytes()).toBe(before);
  });
});
