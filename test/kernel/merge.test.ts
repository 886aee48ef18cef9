// Shard merge: deterministic order (dist asc, score desc, id bytewise asc) whatever the split.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareIdBytes, compareMerged, type MergeInput, mergeTopK } from '../../wasm/hamming.ts';
import { refMerge } from '../../wasm/reference.ts';

interface Item { id: string; dist: number; score?: number }

/** Unique ids (full Unicode, astral included), few distinct dists and scores: many ties. */
const items = (withScores: boolean): fc.Arbitrary<Item[]> =>
  fc.uniqueArray(
    fc.record({
      id: fc.string({ unit: 'binary', maxLength: 4 }),
      dist: fc.nat({ max: 3 }),
      score: withScores ? fc.constantFrom(0.5, 0.25, 1, -1) : fc.constant(undefined),
    }),
    { selector: (x) => x.id, maxLength: 60 },
  );

/** Splits items into `shards` lists by the given assignment, each sorted as a shard would be. */
function split(all: Item[], shards: number, assign: number[], withScores: boolean): MergeInput[] {
  const lists: Item[][] = Array.from({ length: shards }, () => []);
  all.forEach((it, i) => lists[(assign[i] ?? 0) % shards].push(it));
  return lists.map((l) => {
    l.sort((a, b) => compareMerged(a.dist, a.score, a.id, b.dist, b.score, b.id));
    return {
      ids: l.map((x) => x.id),
      dists: l.map((x) => x.dist),
      ...(withScores ? { scores: l.map((x) => x.score as number) } : {}),
    };
  });
}

const strip = (xs: Array<{ id: string; dist: number; score?: number }>) =>
  xs.map(({ id, dist, score }) => (score === undefined ? { id, dist } : { id, dist, score }));

describe('mergeTopK', () => {
  it.each([false, true])('gives the same result for any split into shards (scores: %s)', (withScores) => {
    fc.assert(
      fc.property(
        items(withScores),
        fc.integer({ min: 1, max: 6 }), fc.array(fc.nat(), { maxLength: 60 }),
        fc.integer({ min: 1, max: 6 }), fc.array(fc.nat(), { maxLength: 60 }),
        fc.nat({ max: 70 }),
        (all, s1, a1, s2, a2, k) => {
          const one = split(all, s1, a1, withScores);
          const merged = mergeTopK(one, k);
          expect(merged).toEqual(refMerge(one, k));
          expect(strip(merged)).toEqual(strip(mergeTopK(split(all, s2, a2, withScores), k)));
          // list/index point back at the entry.
          for (const m of merged) expect(one[m.list].ids[m.index]).toBe(m.id);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('orders by dist, then score desc, then id bytes', () => {
    const got = mergeTopK(
      [
        { ids: ['b', 'c'], dists: [1, 1], scores: [0.9, 0.1] },
        { ids: ['a', 'd', 'z'], dists: [0, 1, 1], scores: [0.1, 0.9, 0.5] },
      ],
      10,
    );
    expect(got.map((m) => m.id)).toEqual(['a', 'b', 'd', 'z', 'c']);
  });

  it('compares ids by UTF-8 bytes, not UTF-16 units', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
        expect(Math.sign(compareIdBytes(a, b))).toBe(Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b))));
      }),
      { numRuns: 2000 },
    );
    // U+1F600 (surrogates in UTF-16) sorts after U+FF5E in UTF-8.
    expect(compareIdBytes('\u{1F600}', '\uFF5E')).toBeGreaterThan(0);
  });

  it('rejects unsorted lists and bad k', () => {
    expect(() => mergeTopK([{ ids: ['a', 'b'], dists: [2, 1] }], 2)).toThrow(/not sorted/);
    expect(() => mergeTopK([{ ids: ['a'], dists: [1, 2] }], 1)).toThrow(/length/);
    expect(() => mergeTopK([], -1)).toThrow(RangeError);
    expect(mergeTopK([], 5)).toEqual([]);
  });
});
