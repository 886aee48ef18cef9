// Tie-aware retrieval metrics of a Hamming ranking, the TypeScript twin of
// models/medhash_model/metrics.py: the expected value over every order inside each group of
// equal distance (He, Cakir, Bargal and Sclaroff, CVPR 2018), AP@K normalised by min(R, K).
// Distances are small integers, so groups come from a histogram instead of a sort.

/** Hamming distance of two packed codes (same bit order everywhere, so bytes suffice). */
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => {
  let c = 0;
  for (let v = i; v; v >>= 1) c += v & 1;
  return c;
});

/** (nq, nd) distances between packed query and database codes of `bytes` bytes each. */
export function hammingMatrix(q: Uint8Array, db: Uint8Array, bytes: number): Uint16Array {
  const nq = q.length / bytes;
  const nd = db.length / bytes;
  const out = new Uint16Array(nq * nd);
  for (let i = 0; i < nq; i++) {
    for (let j = 0; j < nd; j++) {
      let d = 0;
      for (let b = 0; b < bytes; b++) d += POPCOUNT[q[i * bytes + b] ^ db[j * bytes + b]];
      out[i * nd + j] = d;
    }
  }
  return out;
}

interface Groups {
  /** Per distance value, in increasing order: items, relevant items, items before. */
  n: number[];
  r: number[];
  start: number[];
  R: number;
}

function groups(dist: ArrayLike<number>, rel: ArrayLike<boolean>): Groups {
  let maxD = 0;
  for (let i = 0; i < dist.length; i++) maxD = Math.max(maxD, dist[i]);
  const n = new Array<number>(maxD + 1).fill(0);
  const r = new Array<number>(maxD + 1).fill(0);
  let R = 0;
  for (let i = 0; i < dist.length; i++) {
    n[dist[i]]++;
    if (rel[i]) {
      r[dist[i]]++;
      R++;
    }
  }
  const g: Groups = { n: [], r: [], start: [], R };
  let before = 0;
  for (let d = 0; d <= maxD; d++) {
    if (n[d] === 0) continue;
    g.n.push(n[d]);
    g.r.push(r[d]);
    g.start.push(before);
    before += n[d];
  }
  return g;
}

/** Expected AP@k over the orders inside equal-distance groups, normalised by min(R, k). */
export function tieAwareApAtK(dist: ArrayLike<number>, rel: ArrayLike<boolean>, k: number): number {
  const g = groups(dist, rel);
  if (g.R === 0) return 0;
  const kk = Math.min(k, dist.length);
  let sum = 0;
  let relBefore = 0;
  for (let gi = 0; gi < g.n.length && g.start[gi] < kk; gi++) {
    const n = g.n[gi];
    const r = g.r[gi];
    const end = Math.min(g.start[gi] + n, kk);
    for (let pos = g.start[gi] + 1; pos <= end; pos++) {
      const t = pos - g.start[gi];
      const inner = n > 1 ? ((t - 1) * (r - 1)) / (n - 1) : 0;
      sum += ((r / n) * (relBefore + 1 + inner)) / pos;
    }
    relBefore += r;
  }
  return sum / Math.min(g.R, k);
}

/** Expected share of relevant items among the first k. */
export function tieAwarePrecisionAtK(dist: ArrayLike<number>, rel: ArrayLike<boolean>, k: number): number {
  const g = groups(dist, rel);
  const kk = Math.min(k, dist.length);
  let hits = 0;
  for (let gi = 0; gi < g.n.length && g.start[gi] < kk; gi++) {
    const taken = Math.min(g.n[gi], kk - g.start[gi]);
    hits += (taken * g.r[gi]) / g.n[gi];
  }
  return hits / k;
}

export interface RetrievalMetrics {
  map100: number;
  map1000: number;
  p10: number;
  n_query: number;
  n_db: number;
}

/** Every query against the whole database; relevant = same label. */
export function evaluateCodes(qCodes: Uint8Array, qLabels: string[], dbCodes: Uint8Array, dbLabels: string[], bits: number): RetrievalMetrics {
  const bytes = bits / 8;
  const D = hammingMatrix(qCodes, dbCodes, bytes);
  const nd = dbLabels.length;
  let ap100 = 0;
  let ap1000 = 0;
  let p10 = 0;
  const rel = new Array<boolean>(nd);
  qLabels.forEach((label, i) => {
    for (let j = 0; j < nd; j++) rel[j] = dbLabels[j] === label;
    const d = D.subarray(i * nd, (i + 1) * nd);
    ap100 += tieAwareApAtK(d, rel, 100);
    ap1000 += tieAwareApAtK(d, rel, 1000);
    p10 += tieAwarePrecisionAtK(d, rel, 10);
  });
  const nq = qLabels.length;
  return { map100: ap100 / nq, map1000: ap1000 / nq, p10: p10 / nq, n_query: nq, n_db: nd };
}
