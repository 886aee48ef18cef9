// Shared fixtures for the kernel tests: one kernel per test file, tie-heavy code tables.
import fc from 'fast-check';
import type { Bits } from '../../wasm/hamming.ts';

export const ALL_BITS: Bits[] = [16, 32, 64, 128, 256];

export interface Case { bits: Bits; codes: Uint8Array; query: Uint8Array; n: number }

/**
 * Tables whose rows come from a pool of 1-4 codes, so most distances tie; the query is a
 * pool member (distance-0 ties) or fresh. Sizes cross the kernel's 8-row block boundary.
 */
export function tieCase(bits: Bits, maxRows = 300): fc.Arbitrary<Case> {
  const b = bits / 8;
  const code = fc.uint8Array({ minLength: b, maxLength: b });
  return fc
    .record({
      pool: fc.array(code, { minLength: 1, maxLength: 4 }),
      picks: fc.array(fc.nat(), { maxLength: maxRows }),
      fresh: code,
      fromPool: fc.boolean(),
    })
    .map(({ pool, picks, fresh, fromPool }) => {
      const codes = new Uint8Array(picks.length * b);
      picks.forEach((p, i) => codes.set(pool[p % pool.length], i * b));
      return { bits, codes, query: fromPool ? pool[0] : fresh, n: picks.length };
    });
}
