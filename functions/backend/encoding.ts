// One image's model outputs as the API reports them (protocol.ts, ImageEncoding). The backend
// and the edge's in-process fallback both build their answers here, so the two paths agree
// field for field.
import type { ModelCard } from '../encode/card.ts';
import { descriptor, packCode, type EncodeOutputs } from '../encode/model.ts';
import { toHex } from '../util/bytes.ts';
import type { ImageEncoding } from './protocol.ts';

function softmax(logits: Float32Array): number[] {
  const max = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** Image `i` of a batch's outputs, as the API reports it. */
export function encodingOf(card: ModelCard, out: EncodeOutputs, i: number): ImageEncoding {
  const u = out.u.subarray(i * out.bits, (i + 1) * out.bits);
  const nc = card.classes.length;
  const p = softmax(out.logits.subarray(i * nc, (i + 1) * nc));
  return {
    code: toHex(packCode(u)),
    descriptor: Array.from(descriptor(u)),
    classes: card.classes.map((name, j) => ({ name, p: p[j] })),
    ood: { score: out.oodScore[i], recon: out.oodRecon[i], maha: out.oodMaha[i], stats: out.oodStats ? out.oodStats[i] : null, threshold: card.ood.threshold },
  };
}
