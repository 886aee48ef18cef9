// OOD calibration of a model, read from its model card (docs/MODEL_CARD.md, `ood` section):
// the image model's own score and threshold, and the k-NN Hamming score the service computes
// against an index, both calibrated on the model's val split at 95 % in-distribution recall.
import { CardError, parseCard, type ModelCard } from '../encode/card.ts';
import cards from './shipped-cards.ts';

export interface OodCalibration {
  /** The card's model_id (name@sha prefix) and name: a collection's model_id may be either. */
  modelId: string;
  name: string;
  /** Threshold on the ONNX graph's `ood_score` (search by image). */
  modelThreshold: number;
  /**
   * Distance to the k-th nearest code of the index (search by code); valid for indexes of at
   * least indexSize items (a smaller index leaves every code further from its neighbours).
   */
  knn: { k: number; threshold: number; mean: number; std: number; indexSize: number } | null;
  /** Threshold on max(ood_score, (knn - mean) / std) (search by image, index known); null when not combined. */
  combinedThreshold: number | null;
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CardError(`${what} must be a finite number`);
  return v;
}

/** Reads the OOD part of a card (parseCard rejects an unknown format or version). */
export function calibrationFromCard(json: unknown): OodCalibration {
  return calibrationOf(parseCard(json));
}

/** The OOD part of a card already parsed (the browser SDK's). */
export function calibrationOf(card: ModelCard): OodCalibration {
  const { knn, with_knn: withKnn } = card.ood as { knn?: Record<string, unknown>; with_knn?: Record<string, unknown> };
  // absent in older cards (read as true); any other type would be misread, "false" as true
  if (withKnn && withKnn.use !== undefined && typeof withKnn.use !== 'boolean') throw new CardError('ood.with_knn.use must be true or false');
  return {
    modelId: card.model_id,
    name: card.name,
    modelThreshold: card.ood.threshold,
    knn: knn
      ? { k: num(knn.k, 'ood.knn.k'), threshold: num(knn.threshold, 'ood.knn.threshold'), mean: num(knn.mean, 'ood.knn.mean'), std: num(knn.std, 'ood.knn.std'), indexSize: num(knn.index_size, 'ood.knn.index_size') }
      : null,
    // `use: false`: the OOD validation found the k-NN part no help to the image score (cards
    // exported before `use` existed combine them, as they were calibrated to)
    combinedThreshold: withKnn && withKnn.use !== false ? num(withKnn.threshold, 'ood.with_knn.threshold') : null,
  };
}

export type CalibrationLookup = (modelId: string | null) => OodCalibration | null;

/** Finds a collection's model by exact model_id or by name (ids change with every re-export). */
export function calibrationLookup(list: OodCalibration[]): CalibrationLookup {
  const by = new Map<string, OodCalibration>();
  for (const c of list) {
    by.set(c.name, c);
    by.set(c.modelId, c);
  }
  return (modelId) => (modelId === null ? null : by.get(modelId) ?? null);
}

/** The models shipped in models/, the same on Node and Workers (bundled, no file system). */
export const shippedCalibrations: CalibrationLookup = calibrationLookup(cards.map(calibrationFromCard));
