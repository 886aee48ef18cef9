// Obviously-correct reference for the Hamming kernel and the shard merge: same semantics as
// hamming.ts, written for clarity (bit by bit, full sort), used by the tests.
import type { Bits, Merged, MergeInput, TopK } from './hamming.ts';
import { compareMerged } from './hamming.ts';

/** Hamming distance following the documented bit order: bit i is bit (7 - i%8) of byte i/8. */
export function refDistance(a: Uint8Array, b: Uint8Array, bits: Bits): number {
  let d = 0;
  for (let i = 0; i < bits; i++) {
    const x = (a[i >> 3] >> (7 - (i & 7))) & 1;
    const y = (b[i >> 3] >> (7 - (i & 7))) & 1;
    if (x !== y) d++;
  }
  return d;
}

/** Every row as (dist, row), sorted by dist then row. */
function allSorted(codes: Uint8Array, bits: Bits, query: Uint8Array): Array<[number, number]> {
  const rowBytes = bits / 8;
  const n = codes.length / rowBytes;
  const all: Array<[number, number]> = [];
  for (let row = 0; row < n; row++) {
    all.push([refDistance(codes.subarray(row * rowBytes, (row + 1) * rowBytes), query, bits), row]);
  }
  return all.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
}

function toTopK(pairs: Array<[number, number]>): TopK {
  return { rows: Uint32Array.from(pairs, (p) => p[1]), dists: Uint16Array.from(pairs, (p) => p[0]) };
}

export function refTopK(codes: Uint8Array, bits: Bits, query: Uint8Array, k: number): TopK {
  return toTopK(allSorted(codes, bits, query).slice(0, k));
}

export function refRadius(
  codes: Uint8Array, bits: Bits, query: Uint8Array, r: number, limit: number,
): TopK & { truncated: boolean } {
  const within = allSorted(codes, bits, query).filter((p) => p[0] <= r);
  return { ...toTopK(within.slice(0, limit)), truncated: within.length > limit };
}

/** Merge by concatenating everything and sorting in merge order. */
export function refMerge(lists: MergeInput[], k: number): Merged[] {
  const all: Merged[] = [];
  lists.forEach((l, list) => {
    l.ids.forEach((id, index) => {
      const m: Merged = { id, dist: l.dists[index], list, index };
      if (l.scores) m.score = l.scores[index];
      all.push(m);
    });
  });
  all.sort((a, b) => compareMerged(a.dist, a.score, a.id, b.dist, b.score, b.id) || a.list - b.list || a.index - b.index);
  return all.slice(0, k);
}
