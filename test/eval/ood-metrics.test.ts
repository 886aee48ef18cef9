// The OOD metrics of scripts/eval/ood.ts on the toy scores test/python/test_ood_eval.py uses,
// so the TypeScript and Python tables compute the same thing. OOD is the positive class.
import { describe, expect, it } from 'vitest';
import { auroc, flagged, fpr95, quantile } from '../../scripts/eval/ood-metrics.ts';

describe('OOD metrics', () => {
  it('AUROC: separated, reversed, and ties counted half', () => {
    expect(auroc([0, 1], [2, 3])).toBe(1);
    expect(auroc([2, 3], [0, 1])).toBe(0);
    expect(auroc([0, 1], [1, 2])).toBe(0.875);
  });

  it('AUROC with NaN scores ends, and ranks NaN above every score as ood.py does', () => {
    // ood.auroc(np.array([0, 1, nan]), np.array([2, nan, 3])) = 13/18
    expect(auroc([0, 1, NaN], [2, NaN, 3])).toBeCloseTo(13 / 18, 15);
  });

  it('FPR at 95 % TPR is the ID share at or above the OOD 5th percentile (numpy linear quantile)', () => {
    const ood = Array.from({ length: 100 }, (_, i) => i);
    expect(quantile(ood, 0.05)).toBeCloseTo(4.95, 12);
    expect(fpr95([0, 1, 2, 5, 10], ood)).toBe(0.4);
  });

  it('flags strictly above the threshold', () => {
    expect(flagged([1.5, 3, 4, 0.2], 1)).toBe(0.75);
    expect(flagged([0, 0.5, 1, 2], 1)).toBe(0.25);
  });
});
