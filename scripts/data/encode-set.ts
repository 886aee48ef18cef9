// Encodes images of a data set (scripts/data/shared-data.ts) through the service's own path
// (decodeImage -> preprocess -> Encoder), in batches. Shared by the evaluations and the tests.
import { decodeImage } from '../../functions/encode/image.ts';
import type { EncodeOutputs, Encoder } from '../../functions/encode/model.ts';
import { preprocessBatch } from '../../functions/encode/preprocess.ts';
import type { MemberReader } from './shared-data.ts';

/** Calls `onBatch` with each batch's paths and outputs, in order; `done` counts images so far. */
export async function encodeMembers(
  reader: MemberReader,
  paths: string[],
  encoder: Encoder,
  batchSize: number,
  onBatch: (paths: string[], out: EncodeOutputs, done: number) => void,
): Promise<void> {
  for (let at = 0; at < paths.length; at += batchSize) {
    const chunk = paths.slice(at, at + batchSize);
    const imgs = [];
    for (const p of chunk) {
      try {
        imgs.push(await decodeImage(await reader.read(p)));
      } catch (e) {
        throw new Error(`${p}: ${(e as Error).message}`);
      }
    }
    const out = await encoder.run(preprocessBatch(imgs, encoder.card.input), chunk.length);
    onBatch(chunk, out, at + chunk.length);
  }
}
