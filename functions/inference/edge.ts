// The edge encoder on Node (and Deno): decode and preprocess in-process, then the inference
// backend (timeout, circuit breaker); when it is down or slow, the model in-process through
// onnxruntime-web. The tensor is what goes to the backend, so both paths encode the very same
// input.
import type { ModelCard } from '../encode/card.ts';
import { decodeImage, DEFAULT_LIMITS } from '../encode/image.ts';
import type { Encoder } from '../encode/model.ts';
import { preprocess } from '../encode/preprocess.ts';
import { encodingOf } from '../backend/encoding.ts';
import type { CircuitBreaker } from './breaker.ts';
import { GuardedRemote, type EdgeEncoderOptions, type ImageEncoderApi } from './remote.ts';

export interface NodeEdgeEncoder extends ImageEncoderApi {
  breaker: CircuitBreaker;
  /** Loads the fallback model now, so the first fallback does not pay its start-up. */
  preload(): Promise<void>;
}

/** Node (and Deno): in-process decode and preprocessing; onnxruntime-web as the fallback. */
export function nodeEdgeEncoder(card: ModelCard, loadFallback: () => Promise<Encoder>, opts: EdgeEncoderOptions): NodeEdgeEncoder {
  const guarded = new GuardedRemote(opts);
  let fallback: Promise<Encoder> | null = null;
  const local = () =>
    (fallback ??= loadFallback().catch((e) => {
      fallback = null; // let a later call retry the load
      throw e;
    }));
  return {
    breaker: guarded.breaker,
    preload: () => local().then(() => undefined),
    async encodeImage(bytes, contentType, frame) {
      const tensor = preprocess(await decodeImage(bytes, contentType, DEFAULT_LIMITS, { frame }), card.input);
      const remote = await guarded.tryEncode({ tensor }, card.model_id);
      if (remote) return remote;
      const enc = await local();
      const out = await enc.run(tensor, 1);
      // "onnxruntime-web/wasm" -> "ort-web-wasm"
      return { path: `ort-web-${enc.runtime.split('/').pop()}`, model_id: card.model_id, encoding: encodingOf(card, out, 0) };
    },
  };
}
