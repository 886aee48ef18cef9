// OOD detection metrics, the TypeScript twin of models/medhash_model/ood.py (auroc,
// fpr_at_95_tpr) and ood_eval.py (flagged). OOD is the positive class; higher score = more OOD.

/** NaN above every number and equal to itself, as numpy's sort and unique treat it in ood.py
 * (with `===` a NaN never ends its own tie group and the loop below never ends). */
const nanLast = (a: number, b: number) => (Number.isNaN(a) ? (Number.isNaN(b) ? 0 : 1) : Number.isNaN(b) ? -1 : a - b);

/** P(score_ood > score_id), ties counted half (Mann-Whitney U over midranks). */
export function auroc(id: ArrayLike<number>, ood: ArrayLike<number>): number {
  const all = [...Array.from(id, (s) => ({ s, ood: false })), ...Array.from(ood, (s) => ({ s, ood: true }))].sort((a, b) => nanLast(a.s, b.s));
  let rankSumOod = 0;
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j < all.length && nanLast(all[j].s, all[i].s) === 0) j++;
    const mid = (i + 1 + j) / 2; // ranks i+1..j share their mean
    for (let t = i; t < j; t++) if (all[t].ood) rankSumOod += mid;
    i = j;
  }
  const n1 = ood.length, n0 = id.length;
  return (rankSumOod - (n1 * (n1 + 1)) / 2) / (n0 * n1);
}

/** numpy's default (linear) quantile. */
export function quantile(values: ArrayLike<number>, q: number): number {
  const s = Float64Array.from(values).sort();
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** Share of in-distribution images flagged at the threshold that flags 95 % of OOD images. */
export function fpr95(id: ArrayLike<number>, ood: ArrayLike<number>): number {
  const thr = quantile(ood, 0.05);
  return Array.from(id).filter((s) => s >= thr).length / id.length;
}

/** Share of scores above the threshold (flagged as out of distribution). */
export function flagged(scores: ArrayLike<number>, threshold: number): number {
  return Array.from(scores).filter((s) => s > threshold).length / scores.length;
}
