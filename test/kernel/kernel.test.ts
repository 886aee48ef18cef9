// Property tests: the wasm kernel against the bit-by-bit reference (wasm/reference.ts).
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { HammingKernel } from '../../wasm/hamming.ts';
import { loadHammingKernel } from '../../wasm/load-node.ts';
import { refRadius, refTopK } from '../../wasm/reference.ts';
import { ALL_BITS, tieCase } from './helpers.ts';

let kernel: HammingKernel;
beforeAll(async () => {
  kernel = await loadHammingKernel();
});

describe.each(ALL_BITS)('%i-bit codes', (bits) => {
  it('topK equals the reference (ties by row), any k', () => {
    fc.assert(
      fc.property(tieCase(bits), fc.nat({ max: 320 }), ({ codes, query }, k) => {
        const t = kernel.loadTable(codes, bits);
        try {
          expect(kernel.topK(t, query, k)).toEqual(refTopK(codes, bits, query, k));
        } finally {
          kernel.freeTable(t);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('radius equals the reference, truncation included', () => {
    fc.assert(
      fc.property(
        tieCase(bits),
        fc.nat({ max: bits + 2 }),
        fc.nat({ max: 320 }),
        ({ codes, query }, r, limit) => {
          const t = kernel.loadTable(codes, bits);
          try {
            expect(kernel.radius(t, query, r, limit)).toEqual(refRadius(codes, bits, query, r, limit));
          } finally {
            kernel.freeTable(t);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('matches the reference on a larger random table', () => {
    const b = bits / 8;
    const n = 5000;
    const codes = new Uint8Array(n * b).map((_, i) => (Math.imul(i + 1, 2654435761) >>> 24) & 0xff);
    const t = kernel.loadTable(codes, bits);
    for (const q of [0, 17, 4999]) {
      const query = codes.slice(q * b, (q + 1) * b);
      expect(kernel.topK(t, query, 100)).toEqual(refTopK(codes, bits, query, 100));
      expect(kernel.radius(t, query, bits / 4, 50)).toEqual(refRadius(codes, bits, query, bits / 4, 50));
    }
    kernel.freeTable(t);
  });
});
