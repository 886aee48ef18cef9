// The OOD gate's decisions: which score decides, when it refuses, and that it says why.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { calibrationFromCard, type OodCalibration } from '../../functions/safety/calibration.ts';
import { assess, enforce, OodRefusal } from '../../functions/safety/gate.ts';

const MODELS = join(import.meta.dirname, '../../models');

const cal: OodCalibration = {
  modelId: 'm@0123456789ab',
  name: 'm',
  modelThreshold: 2.5,
  knn: { k: 10, threshold: 12, mean: 8, std: 2, indexSize: 1000 },
  combinedThreshold: 2.8,
};

describe('OOD gate', () => {
  it('judges a search by code by its k-th neighbour distance against the calibrated threshold', () => {
    const near = assess(cal, { knnDistance: 12, indexCount: 1000 });
    expect(near).toMatchObject({ score: 12, threshold: 12, verdict: 'in_distribution' });
    const far = assess(cal, { knnDistance: 20, indexCount: 5000 });
    expect(far).toMatchObject({ score: 20, threshold: 12, verdict: 'out_of_distribution' });
    expect(far.reasons[0]).toMatch(/10th nearest indexed code is 20 bits away, further than the 12/);
  });

  it('combines the model score and the k-NN z-score by max for a search by image', () => {
    // model 1.0 is in; knn 16 -> z = 4 is out: the max decides.
    const a = assess(cal, { knnDistance: 16, indexCount: 1000, model: { score: 1, threshold: 2.5 } });
    expect(a).toMatchObject({ score: 4, threshold: 2.8, verdict: 'out_of_distribution' });
    expect(a.reasons[0]).toMatch(/nearest indexed code/);
    const b = assess(cal, { knnDistance: 8, indexCount: 1000, model: { score: 6, threshold: 2.5 } });
    expect(b).toMatchObject({ score: 6, verdict: 'out_of_distribution' });
    expect(b.reasons[0]).toMatch(/does not look like the model's training data/);
    expect(assess(cal, { knnDistance: 8, indexCount: 1000, model: { score: 0.5, threshold: 2.5 } }).verdict).toBe('in_distribution');
  });

  it('judges a search by image by the model score alone when the card says the k-NN part does not help', () => {
    const card = JSON.parse(readFileSync(join(MODELS, 'mednist-darf-b64.card.json'), 'utf8'));
    const combined = calibrationFromCard({ ...card, ood: { ...card.ood, with_knn: { ...card.ood.with_knn, use: true } } });
    const alone = calibrationFromCard({ ...card, ood: { ...card.ood, with_knn: { ...card.ood.with_knn, use: false } } });
    expect(combined.combinedThreshold).toBe(card.ood.with_knn.threshold);
    expect(alone.combinedThreshold).toBeNull();
    // a `use` of another type is refused, not read as true ("false" is truthy)
    expect(() => calibrationFromCard({ ...card, ood: { ...card.ood, with_knn: { ...card.ood.with_knn, use: 'false' } } })).toThrow(/ood.with_knn.use must be true or false/);
    // a code far from its neighbours, an image the model finds in-distribution
    const inputs = { knnDistance: 64, indexCount: 1_000_000, model: { score: 0, threshold: card.ood.threshold } };
    expect(assess(combined, inputs).verdict).toBe('out_of_distribution');
    expect(assess(alone, inputs)).toMatchObject({ score: 0, threshold: card.ood.threshold, verdict: 'in_distribution' });
  });

  it('prints a score and its threshold with decimals enough that unequal ones never read equal', () => {
    const above = assess({ ...cal, knn: null, combinedThreshold: null }, { knnDistance: null, indexCount: 0, model: { score: 1.94242, threshold: 1.94216 } });
    expect(above.reasons).toEqual(["the model's OOD score is 1.9424, above its threshold 1.9422: the image does not look like the model's training data"]);
    const within = assess({ ...cal, knn: null, combinedThreshold: null }, { knnDistance: null, indexCount: 0, model: { score: 0.5, threshold: 2.5 } });
    expect(within.reasons).toEqual(["the model's OOD score 0.500 is within its threshold 2.500"]);
  });

  it('does not judge by neighbours in an index smaller than the calibration index', () => {
    const code = assess(cal, { knnDistance: 30, indexCount: 300 });
    expect(code).toMatchObject({ score: null, threshold: null, verdict: 'not_assessed' });
    expect(code.reasons[0]).toMatch(/holds 300 items, fewer than the 1000/);
    // By image the model's own score still decides.
    expect(assess(cal, { knnDistance: 30, indexCount: 300, model: { score: 1, threshold: 2.5 } })).toMatchObject({ score: 1, threshold: 2.5, verdict: 'in_distribution' });
  });

  it('says so when a collection has no calibrated model', () => {
    const a = assess(null, { knnDistance: null, indexCount: 10 });
    expect(a).toEqual({ score: null, threshold: null, verdict: 'not_assessed', reasons: [expect.stringMatching(/no model with an OOD calibration/)] });
  });

  it('refuses an out-of-distribution query with 422 unless allowed', () => {
    const far = assess(cal, { knnDistance: 20, indexCount: 1000 });
    let thrown: unknown;
    try {
      enforce(far, false);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(OodRefusal);
    const r = thrown as OodRefusal;
    expect(r.status).toBe(422);
    expect(r.toBody()).toMatchObject({ error: { code: 'out_of_distribution' }, ood: far });
    expect(r.message).toMatch(/Send allow_ood: true/);
    expect(r.field).toBe('code');
    // A search by image takes the switch in its query string, and has no `code` field.
    const viaQuery = new OodRefusal(far, 'query');
    expect(viaQuery.message).toMatch(/Add \?allow_ood=true/);
    expect(viaQuery.field).toBeUndefined();
    expect(() => enforce(far, true)).not.toThrow();
    expect(() => enforce(assess(cal, { knnDistance: 3, indexCount: 1000 }), false)).not.toThrow();
  });

  it('judges each part of a combined score by the combined threshold, so no reason contradicts the verdict', () => {
    // Model 2.6: above its own threshold (2.5), within the combined one (2.8); k-NN 13 bits: past
    // its own threshold (12) but a z-score of 2.5, within 2.8 too.
    const inside = assess(cal, { knnDistance: 13, indexCount: 1000, model: { score: 2.6, threshold: 2.5 } });
    expect(inside).toMatchObject({ score: 2.6, threshold: 2.8, verdict: 'in_distribution' });
    for (const r of inside.reasons) expect(r).not.toMatch(/above|further than|does not look like/);
    expect(inside.reasons).toEqual([
      "the model's OOD score 2.600 is within its threshold 2.800 when combined with the code's neighbours",
      "the code's 10th nearest indexed code is 13 bits away, within the 13.600 that the combined check allows",
    ]);
    // 14 bits is a z-score of 3: the k-NN part alone refuses it, and says so first.
    const out = assess(cal, { knnDistance: 14, indexCount: 1000, model: { score: 2.6, threshold: 2.5 } });
    expect(out).toMatchObject({ score: 3, threshold: 2.8, verdict: 'out_of_distribution' });
    expect(out.reasons[0]).toBe("the code's 10th nearest indexed code is 14 bits away, further than the 13.600 that the combined check allows");
    expect(out.reasons[1]).toMatch(/within its threshold 2.800/);
  });

  it('fails closed on a model OOD score that is not a number, alone or combined', () => {
    for (const c of [cal, { ...cal, combinedThreshold: null }]) {
      const a = assess(c, { knnDistance: 8, indexCount: 1000, model: { score: Number.NaN, threshold: 2.5 } });
      expect(a).toMatchObject({ score: null, verdict: 'out_of_distribution' });
      expect(a.reasons[0]).toMatch(/model gave no OOD score for the image \(not a number\)/);
      expect(() => enforce(a, false, 'query')).toThrow(OodRefusal);
      expect(() => enforce(a, true, 'query')).not.toThrow();
    }
  });
});
