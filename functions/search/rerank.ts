// Content-guided re-ranking of a Hamming candidate pool: each candidate's final score blends
// its normalised code similarity with the Pearson correlation of its int8 descriptor with the
// query's. Pure arithmetic over values that do not depend on where an item is stored, so the
// ordering is the same for any shard layout.
import { compareIdBytes } from '../../wasm/hamming.ts';

export interface Candidate {
  id: string;
  distance: number;
  /** The stored descriptor; null ranks by distance alone. */
  descriptor: Int8Array | null;
}

export interface Ranked {
  id: string;
  distance: number;
  /** Pearson correlation of descriptors in [-1, 1]; null without a query descriptor. */
  similarity: number | null;
  /** Higher is better: (1 - w) * (1 - distance / bits) + w * (similarity + 1) / 2. */
  score: number;
  /** Position of the candidate in the input, for the caller's bookkeeping. */
  index: number;
}

/** Pearson correlation; 0 when either vector is constant (no direction to correlate). */
export function pearson(a: Int8Array, b: Int8Array): number {
  const n = a.length;
  if (n === 0 || b.length !== n) return 0;
  let sa = 0, sb = 0;
  for (let i = 0; i < n; i++) {
    sa += a[i];
    sb += b[i];
  }
  const ma = sa / n, mb = sb / n;
  let cov = 0, va = 0, vb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma, y = b[i] - mb;
    cov += x * y;
    va += x * x;
    vb += y * y;
  }
  if (va === 0 || vb === 0) return 0;
  return Math.max(-1, Math.min(1, cov / Math.sqrt(va * vb)));
}

/**
 * Orders candidates by final score (desc), then similarity (desc), distance (asc) and id
 * (bytewise). With weight 0 the score is the code similarity alone, so the order is Hamming
 * distance with content only breaking ties; without a query descriptor it is (distance, id).
 */
export function rerank(cands: Candidate[], bits: number, query: Int8Array | null, weight: number): Ranked[] {
  if (!(weight >= 0 && weight <= 1)) throw new RangeError(`content weight must be in [0, 1], got ${weight}`);
  const ranked = cands.map((c, index): Ranked => {
    const code = 1 - c.distance / bits;
    if (!query || !c.descriptor) return { id: c.id, distance: c.distance, similarity: null, score: code, index };
    const similarity = pearson(query, c.descriptor);
    return { id: c.id, distance: c.distance, similarity, score: (1 - weight) * code + weight * (similarity + 1) / 2, index };
  });
  const sim = (r: Ranked): number => r.similarity ?? -Infinity;
  return ranked.sort(
    (a, b) => b.score - a.score || sim(b) - sim(a) || a.distance - b.distance || compareIdBytes(a.id, b.id),
  );
}

/**
 * content_weight when a request names none: the best on the val split of the shipped models
 * (docs/RANKING.md; scripts/eval/rerank.ts).
 */
export const DEFAULT_CONTENT_WEIGHT = 0;
