// The edge encoder of the Node entry: the model card and .onnx from disk (the card drives the
// in-process preprocessing; the .onnx is the fallback's model), the backend from settings.
import { loadCard } from '../encode/card.ts';
import { initNodeImageCodecs } from '../encode/image-node.ts';
import { loadWebEncoder } from '../encode/model.ts';
import { nodeEdgeEncoder, type NodeEdgeEncoder } from './edge.ts';
import { DEFAULT_EDGE, type EdgeEncoderOptions } from './remote.ts';

export interface NodeImageSettings {
  /** Path of NAME.onnx (card beside it) or NAME.card.json. */
  model: string;
  backendUrl?: string;
  timeoutMs?: number;
  breaker?: EdgeEncoderOptions['breaker'];
}

/** MEDHASH_MODEL, MEDHASH_BACKEND_URL, MEDHASH_BACKEND_TIMEOUT_MS; null without a model. */
export function imageSettingsFromEnv(env: NodeJS.ProcessEnv): NodeImageSettings | null {
  if (!env.MEDHASH_MODEL) return null;
  const timeout = env.MEDHASH_BACKEND_TIMEOUT_MS ? Number(env.MEDHASH_BACKEND_TIMEOUT_MS) : undefined;
  if (timeout !== undefined && !(Number.isInteger(timeout) && timeout > 0)) throw new Error('MEDHASH_BACKEND_TIMEOUT_MS must be a positive integer');
  return { model: env.MEDHASH_MODEL, backendUrl: env.MEDHASH_BACKEND_URL || undefined, timeoutMs: timeout };
}

export async function createNodeImageEncoder(s: NodeImageSettings): Promise<NodeEdgeEncoder> {
  const { card, onnx } = await loadCard(s.model);
  await initNodeImageCodecs();
  return nodeEdgeEncoder(card, () => loadWebEncoder(onnx, card), {
    backendUrl: s.backendUrl,
    timeoutMs: s.timeoutMs ?? DEFAULT_EDGE.timeoutMs,
    breaker: s.breaker ?? DEFAULT_EDGE.breaker,
  });
}
