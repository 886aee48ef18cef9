// OOD calibration of a model, read from its model card (docs/MODEL_CARD.md, `ood` section):
// the image model's own score and threshold, and the k-NN Hamming score the service computes
// against an index, both calibrated on the model's val split at 95 % in-distribution recall.
import cards from './shipped-cards.ts';

export interface OodCalibration {
  /** The card's model_id (name@sha prefix) and name: a collection's model_id may be either. */
  modelId: string;
  name: string;
  /** Threshold on the ONNX graph's `ood_score` (search by image). */
  modelThreshold: number;
  /** Distance to the k-th nearest code of the index (search by code). */
  knn: { k: number; threshold: number; mean: number; std: number } | null;
  /** Threshold on max(ood_score, (knn - mean) / std) (search by image, index known). */
  combinedThreshold: number | null;
}

const CARD_FORMAT = 'medhash-model-card';
const CARD_VERSION = 1;

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`model card: ${what} must be a finite number`);
  return v;
}

/** Reads the OOD part of a card; rejects a card of unknown format or version. */
export function calibrationFromCard(card: unknown): OodCalibration {
  const c = card as Record<string, any>;
  if (c?.format !== CARD_FORMAT || c?.version !== CARD_VERSION) {
    throw new Error(`model card: format ${JSON.stringify(c?.format)} version ${JSON.stringify(c?.version)} is not ${CARD_FORMAT} v${CARD_VERSION}`);
  }
  const ood = c.ood ?? {};
  const knn = ood.knn
    ? { k: num(ood.knn.k, 'ood.knn.k'), threshold: num(ood.knn.threshold, 'ood.knn.threshold'), mean: num(ood.knn.mean, 'ood.knn.mean'), std: num(ood.knn.std, 'ood.knn.std') }
    : null;
  return {
    modelId: String(c.model_id),
    name: String(c.name),
    modelThreshold: num(ood.threshold, 'ood.threshold'),
    knn,
    combinedThreshold: ood.with_knn ? num(ood.with_knn.threshold, 'ood.with_knn.threshold') : null,
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
