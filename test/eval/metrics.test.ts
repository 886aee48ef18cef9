// The tie-aware metrics equal their definition: the mean over every order of the items inside
// each equal-distance group of the plain AP@k / P@k of that order, enumerated by brute force.
import { describe, expect, it } from 'vitest';
import { evaluateCodes, hammingMatrix, tieAwareApAtK, tieAwarePrecisionAtK } from '../../scripts/eval/metrics.ts';

/** Plain AP@k of one order, normalised by min(R, k) (ap_at_k_ranked of metrics.py). */
function apOfOrder(relInOrder: boolean[], k: number): number {
  const R = relInOrder.filter(Boolean).length;
  if (R === 0) return 0;
  let hits = 0;
  let s = 0;
  relInOrder.slice(0, k).forEach((r, i) => {
    if (r) {
      hits++;
      s += hits / (i + 1);
    }
  });
  return s / Math.min(R, k);
}

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

/** Every order consistent with the distances: the product of the permutations of each group. */
function allOrders(dist: number[]): number[][] {
  const ds = [...new Set(dist)].sort((a, b) => a - b);
  let orders: number[][] = [[]];
  for (const d of ds) {
    const members = dist.flatMap((x, i) => (x === d ? [i] : []));
    orders = orders.flatMap((o) => permutations(members).map((p) => [...o, ...p]));
  }
  return orders;
}

function bruteForce(dist: number[], rel: boolean[], k: number) {
  const orders = allOrders(dist);
  const mean = (f: (o: number[]) => number) => orders.reduce((a, o) => a + f(o), 0) / orders.length;
  return {
    ap: mean((o) => apOfOrder(o.map((i) => rel[i]), k)),
    p: mean((o) => o.slice(0, k).filter((i) => rel[i]).length / k),
  };
}

describe('tie-aware metrics', () => {
  let seed = 3;
  const rnd = (m: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % m;

  it('equal the brute-force expectation over tie orders on random small cases', () => {
    for (let trial = 0; trial < 60; trial++) {
      const n = 2 + rnd(7);
      const dist = Array.from({ length: n }, () => rnd(3));
      const rel = Array.from({ length: n }, () => rnd(2) === 1);
      for (const k of [1, 2, 3, 5, 10]) {
        const bf = bruteForce(dist, rel, k);
        expect(tieAwareApAtK(dist, rel, k), `ap ${dist} ${rel} k=${k}`).toBeCloseTo(bf.ap, 12);
        expect(tieAwarePrecisionAtK(dist, rel, k), `p ${dist} ${rel} k=${k}`).toBeCloseTo(bf.p, 12);
      }
    }
  });

  it('a perfect ranking without ties scores 1, no relevant item scores 0', () => {
    expect(tieAwareApAtK([0, 1, 2, 3], [true, true, false, false], 100)).toBe(1);
    expect(tieAwareApAtK([0, 1], [false, false], 100)).toBe(0);
  });

  it('all items tied: AP is the expectation, not the luck of the database order', () => {
    // 2 relevant of 4, all at distance 0: the same for any arrangement of rel
    const a = tieAwareApAtK([0, 0, 0, 0], [true, true, false, false], 4);
    const b = tieAwareApAtK([0, 0, 0, 0], [false, false, true, true], 4);
    expect(a).toBeCloseTo(b, 15);
    expect(a).toBeCloseTo(bruteForce([0, 0, 0, 0], [true, true, false, false], 4).ap, 12);
  });

  it('a larger group straddling k: exact over every placement of its relevant items', () => {
    // Permutations are too many here; each placement of the relevant items inside a group is
    // equally likely over them, so enumerating placements is the same expectation.
    const placements = (n: number, r: number): boolean[][] =>
      n === 0 ? [[]] : [
        ...(r > 0 ? placements(n - 1, r - 1).map((p) => [true, ...p]) : []),
        ...(r < n ? placements(n - 1, r).map((p) => [false, ...p]) : []),
      ];
    for (let trial = 0; trial < 30; trial++) {
      const sizes = [rnd(4), 4 + rnd(9), 1 + rnd(3)];
      const rels = sizes.map((n) => rnd(n + 1));
      const dist = sizes.flatMap((n, d) => Array<number>(n).fill(d));
      const rel = sizes.flatMap((n, d) => Array.from({ length: n }, (_, i) => i < rels[d]));
      const k = sizes[0] + 1 + rnd(sizes[1] - 1); // cut inside the middle group
      let orders: boolean[][] = [[]];
      sizes.forEach((n, d) => (orders = orders.flatMap((o) => placements(n, rels[d]).map((p) => [...o, ...p]))));
      const ap = orders.reduce((a, o) => a + apOfOrder(o, k), 0) / orders.length;
      const p = orders.reduce((a, o) => a + o.slice(0, k).filter(Boolean).length / k, 0) / orders.length;
      expect(tieAwareApAtK(dist, rel, k), `ap ${sizes} ${rels} k=${k}`).toBeCloseTo(ap, 12);
      expect(tieAwarePrecisionAtK(dist, rel, k), `p ${sizes} ${rels} k=${k}`).toBeCloseTo(p, 12);
    }
  });

  it('conventions shared with metrics.py: no relevant item 0, P@k over k with fewer than k items, AP over min(R, k)', () => {
    expect(tieAwarePrecisionAtK([0, 1, 1, 3], [false, false, false, false], 10)).toBe(0);
    expect(tieAwarePrecisionAtK([0, 1, 1, 3], [true, true, true, true], 10)).toBeCloseTo(0.4, 15);
    expect(tieAwareApAtK([0, 1, 2], [false, true, true], 1)).toBe(0);
    expect(tieAwareApAtK([0, 1, 2], [false, true, true], 2)).toBeCloseTo(0.25, 15);
  });

  it('Hamming distances follow the packed bytes; evaluateCodes averages over queries', () => {
    const db = new Uint8Array([0b00000000, 0b11110000, 0b11111111]);
    const q = new Uint8Array([0b00000001, 0b11111111]);
    expect([...hammingMatrix(q, db, 1)]).toEqual([1, 5, 7, 8, 4, 0]);
    const m = evaluateCodes(q, ['a', 'b'], db, ['a', 'b', 'b'], 8);
    expect(m.map100).toBe(1);
    expect(m.p10).toBeCloseTo((0.1 + 0.2) / 2, 15);
    expect([m.n_query, m.n_db]).toEqual([2, 3]);
  });
});
