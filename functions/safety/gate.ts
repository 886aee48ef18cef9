// The OOD gate of every search: turns the scores a query has (the k-NN Hamming distance of its
// code in the index; for a search by image also the model's own OOD score) into a verdict with
// plain reasons, and refuses an out-of-distribution query with 422 unless the caller allows it.
import { MedhashError } from '../util/errors.ts';
import type { OodCalibration } from './calibration.ts';

export type OodVerdict = 'in_distribution' | 'out_of_distribution' | 'not_assessed';

export interface OodAssessment {
  score: number | null;
  threshold: number | null;
  verdict: OodVerdict;
  reasons: string[];
}

/** The ONNX model's OOD score of a query image and the card's threshold for it. */
export interface ModelOod {
  score: number;
  threshold: number;
}

export interface OodInputs {
  /** Hamming distance from the query code to its k-th nearest indexed code; null if unknown. */
  knnDistance: number | null;
  /** Items in the index the distance was measured in. */
  indexCount: number;
  model?: ModelOod;
}

const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(3));

/** A score and its threshold, with decimals enough (3 or more) that unequal ones never read equal. */
function fmtPair(a: number, b: number): [string, string] {
  let d = 3;
  while (d < 17 && a !== b && a.toFixed(d) === b.toFixed(d)) d++;
  return [a, b].map((x) => (Number.isInteger(x) ? String(x) : x.toFixed(d))) as [string, string];
}

export function assess(cal: OodCalibration | null, inputs: OodInputs): OodAssessment {
  const smallIndex = cal?.knn != null && inputs.indexCount < cal.knn.indexSize;
  const knn = cal?.knn && inputs.knnDistance !== null && !smallIndex ? { ...cal.knn, d: inputs.knnDistance } : null;
  const model = inputs.model;

  if (model && knn && cal?.combinedThreshold != null) {
    // Both scores on one scale (z-scores on val), combined by max; its own val threshold keeps 95 %.
    // Each part is judged against that threshold, as the verdict is: against its own threshold a
    // part could read "far" for a query the combination lets through, or "within" for one it refuses.
    const t = cal.combinedThreshold;
    const z = (knn.d - knn.mean) / knn.std;
    const modelPart = modelReason(model.score, t, ' when combined with the code\'s neighbours');
    const knnBits = fmt(knn.mean + t * knn.std);
    const knnPart: Reason = isFar(z, t)
      ? { far: true, text: `the code's ${knn.k}th nearest indexed code is ${knn.d} bits away, further than the ${knnBits} that the combined check allows` }
      : { far: false, text: `the code's ${knn.k}th nearest indexed code is ${knn.d} bits away, within the ${knnBits} that the combined check allows` };
    return verdict(Math.max(model.score, z), t, [modelPart, knnPart]);
  }
  if (model) return verdict(model.score, model.threshold, [modelReason(model.score, model.threshold, '')]);
  if (knn) {
    const text = isFar(knn.d, knn.threshold)
      ? `the code's ${knn.k}th nearest indexed code is ${knn.d} bits away, further than the ${fmt(knn.threshold)} that 95 % of in-distribution validation images stay within`
      : `the code's ${knn.k}th nearest indexed code is ${knn.d} bits away, within the calibrated ${fmt(knn.threshold)}`;
    return verdict(knn.d, knn.threshold, [{ far: isFar(knn.d, knn.threshold), text }]);
  }
  return {
    score: null,
    threshold: null,
    verdict: 'not_assessed',
    reasons: [
      cal === null
        ? "the collection's model_id names no model with an OOD calibration, so queries cannot be checked"
        : cal.knn === null
          ? `the card of ${cal.name} has no k-NN calibration (re-export it), so a search by code cannot be checked`
          : `the index holds ${inputs.indexCount} items, fewer than the ${cal.knn.indexSize} its k-NN threshold was calibrated on, so a search by code cannot be checked`,
    ],
  };
}

/**
 * Whether a score is out of distribution: above its threshold, or no number at all (a model that
 * gives NaN for an image has not shown it to look like its training data, so the gate fails closed).
 */
const isFar = (score: number, threshold: number): boolean => !(score <= threshold);

function modelReason(score: number, threshold: number, how: string): Reason {
  if (Number.isNaN(score)) return { far: true, text: "the model gave no OOD score for the image (not a number), so it cannot be shown to look like the model's training data" };
  const [s, t] = fmtPair(score, threshold);
  return isFar(score, threshold)
    ? { far: true, text: `the model's OOD score is ${s}, above its threshold ${t}${how}: the image does not look like the model's training data` }
    : { far: false, text: `the model's OOD score ${s} is within its threshold ${t}${how}` };
}

interface Reason {
  text: string;
  far: boolean;
}

function verdict(score: number, threshold: number, reasons: Reason[]): OodAssessment {
  const far = isFar(score, threshold);
  // The parts that point away from the training data come first (each part is judged as the
  // verdict is, so an out-of-distribution verdict always leads with one).
  const ordered = [...reasons.filter((r) => r.far), ...reasons.filter((r) => !r.far)];
  return { score: Number.isNaN(score) ? null : score, threshold, verdict: far ? 'out_of_distribution' : 'in_distribution', reasons: ordered.map((r) => r.text) };
}

/** Where the caller says allow_ood: in the JSON body of a search by code, in the query string of a search by image. */
export type AllowOodVia = 'body' | 'query';

/** 422 with the assessment beside the error, so the caller sees why. */
export class OodRefusal extends MedhashError {
  constructor(
    readonly assessment: OodAssessment,
    via: AllowOodVia = 'body',
  ) {
    super(
      422,
      'out_of_distribution',
      `the query looks out of distribution for this collection's model (${assessment.reasons[0]}); results would not be reliable. ` +
        `${via === 'body' ? 'Send allow_ood: true' : 'Add ?allow_ood=true'} to get them anyway, marked as such`,
      via === 'body' ? 'code' : undefined,
    );
  }

  override toBody() {
    return { ...super.toBody(), ood: this.assessment };
  }
}

/** Throws the refusal for an out-of-distribution query unless the caller allows it. */
export function enforce(a: OodAssessment, allowOod: boolean, via: AllowOodVia = 'body'): void {
  if (a.verdict === 'out_of_distribution' && !allowOod) throw new OodRefusal(a, via);
}
