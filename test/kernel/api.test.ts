// The HammingKernel wrapper's contract: loading paths, argument checks, handle lifetime.
import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { HammingKernel } from '../../wasm/hamming.ts';
import { HAMMING_WASM_URL, loadHammingKernel } from '../../wasm/load-node.ts';

let kernel: HammingKernel;
beforeAll(async () => {
  kernel = await loadHammingKernel();
});

describe('HammingKernel', () => {
  it('loads from a precompiled module (the workerd path)', async () => {
    const mod = await WebAssembly.compile(await readFile(HAMMING_WASM_URL));
    const k = await HammingKernel.fromModule(mod);
    const t = k.loadTable(new Uint8Array([0xff, 0x00, 0x0f, 0x00]), 16);
    expect(k.topK(t, new Uint8Array([0x0f, 0x00]), 2)).toEqual({
      rows: Uint32Array.of(1, 0),
      dists: Uint16Array.of(0, 4),
    });
  });

  it('uses big-endian bit order within bytes', () => {
    // Bit 0 is the top bit of byte 0: a code differing only there is at distance 1.
    const t = kernel.loadTable(Uint8Array.of(0x80, 0, 0, 0, 0, 0, 0, 0), 64);
    expect(Array.from(kernel.topK(t, new Uint8Array(8), 1).dists)).toEqual([1]);
    kernel.freeTable(t);
  });

  it('returns empty results for k = 0 and an empty table, all rows for k > n', () => {
    const t = kernel.loadTable(new Uint8Array(4 * 3), 32);
    expect(kernel.topK(t, new Uint8Array(4), 0)).toEqual({ rows: new Uint32Array(0), dists: new Uint16Array(0) });
    expect(Array.from(kernel.topK(t, new Uint8Array(4), 10).rows)).toEqual([0, 1, 2]);
    const empty = kernel.loadTable(new Uint8Array(0), 32);
    expect(kernel.topK(empty, new Uint8Array(4), 5).rows.length).toBe(0);
    expect(kernel.radius(empty, new Uint8Array(4), 32, 5)).toMatchObject({ truncated: false });
    kernel.freeTable(t);
    kernel.freeTable(empty);
  });

  it('rejects bad arguments', () => {
    const t = kernel.loadTable(new Uint8Array(16), 64);
    expect(() => kernel.loadTable(new Uint8Array(8), 48 as 64)).toThrow(RangeError);
    expect(() => kernel.loadTable(new Uint8Array(7), 64)).toThrow(RangeError);
    expect(() => kernel.topK(t, new Uint8Array(4), 1)).toThrow(RangeError);
    expect(() => kernel.topK(t, new Uint8Array(8), -1)).toThrow(RangeError);
    expect(() => kernel.topK(t, new Uint8Array(8), 1.5)).toThrow(RangeError);
    expect(() => kernel.radius(t, new Uint8Array(8), -1, 1)).toThrow(RangeError);
    expect(() => kernel.radius(t, new Uint8Array(8), 1, -1)).toThrow(RangeError);
    kernel.freeTable(t);
  });

  it('refuses freed handles and handles of another instance', async () => {
    const t = kernel.loadTable(new Uint8Array(16), 64);
    const other = await loadHammingKernel();
    expect(() => other.topK(t, new Uint8Array(8), 1)).toThrow(/another kernel/);
    kernel.freeTable(t);
    expect(() => kernel.topK(t, new Uint8Array(8), 1)).toThrow(/freed/);
    expect(() => kernel.freeTable(t)).toThrow(/freed/);
  });

  it('keeps tables independent and survives memory growth', () => {
    const a = kernel.loadTable(new Uint8Array(8 * 10).fill(0xff), 64);
    // Big enough to force memory.grow after `a` exists.
    const b = kernel.loadTable(new Uint8Array(8 * 200_000), 64);
    expect(Array.from(kernel.topK(a, new Uint8Array(8).fill(0xff), 3).dists)).toEqual([0, 0, 0]);
    expect(Array.from(kernel.topK(b, new Uint8Array(8).fill(0xff), 3).dists)).toEqual([64, 64, 64]);
    kernel.freeTable(a);
    kernel.freeTable(b);
  });
});
