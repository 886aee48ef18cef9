// Encoding for `medhash index` by image, through the same code path as the service: the
// inference backend when MEDHASH_BACKEND_URL is set (it decodes; batches of up to 64), the
// model in-process with onnxruntime-node otherwise. An item may be one frame of a multi-frame
// DICOM (`ImageFile.frame`), decoded as search by image decodes `?frame=`.
import { encodingOf } from '../../functions/backend/encoding.ts';
import { MAX_BODY_BYTES, MAX_INPUTS, type ImageEncoding } from '../../functions/backend/protocol.ts';
import { loadCard } from '../../functions/encode/card.ts';
import { dicomMetadata, type DicomMetadata } from '../../functions/encode/dicom.ts';
import { decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder } from '../../functions/encode/model.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { BackendUnavailable, RemoteEncoder } from '../../functions/inference/remote.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { where, type ImageFile } from './images.ts';
import type { RecordSource } from './sources.ts';

export interface BatchEncoder {
  model_id: string;
  bits: number;
  /** "backend <url>" or "in-process onnxruntime-node (cpu)". */
  path: string;
  encode(images: ImageFile[]): Promise<ImageEncoding[]>;
  close(): Promise<void>;
}

// Generous: a batch of 64 waits behind other clients' batches in the backend's queue.
const BACKEND_TIMEOUT_MS = 60_000;
// A full queue (503 with Retry-After) is the backend asking a bulk client to wait: the index
// waits as asked and sends the batch again, up to this many times, rather than stopping.
const QUEUE_FULL_RETRIES = 30;
// The longest single wait: a Retry-After far out (a proxy's date hours ahead) would stall the run,
// and one past setTimeout's 24.8 days fires at once.
const QUEUE_FULL_MAX_WAIT_S = 60;
// A dropped connection or a 5xx without Retry-After (a keep-alive socket the backend closed as
// the batch went out, a backend restarting) costs a retry of that batch, not the whole run:
// encoding is a pure function, so sending a batch again is safe.
const TRANSIENT_RETRIES = 3;

async function whenQueueHasRoom<T>(send: () => Promise<T>): Promise<T> {
  for (let queued = 0, failed = 0; ; ) {
    try {
      return await send();
    } catch (e) {
      if (!(e instanceof BackendUnavailable)) throw e;
      if (e.retryAfterS !== undefined && ++queued <= QUEUE_FULL_RETRIES) {
        await new Promise((ok) => setTimeout(ok, Math.min(QUEUE_FULL_MAX_WAIT_S, Math.max(1, e.retryAfterS!)) * 1000));
      } else if (e.retryAfterS === undefined && ++failed <= TRANSIENT_RETRIES) {
        await new Promise((ok) => setTimeout(ok, 500 * failed));
      } else {
        throw e;
      }
    }
  }
}

export async function openBatchEncoder(opts: { backendUrl?: string; model?: string }): Promise<BatchEncoder> {
  if (opts.backendUrl) {
    const url = opts.backendUrl;
    const health = await fetch(new URL('/healthz', url)).then((r) => r.json() as Promise<{ model_id: string; bits: number; runtime: string }>, (e) => {
      throw new Error(`inference backend ${url} is unreachable: ${String(e)}`);
    });
    const remote = new RemoteEncoder(url, BACKEND_TIMEOUT_MS);
    return {
      model_id: health.model_id,
      bits: health.bits,
      path: `backend ${url} (${health.runtime})`,
      async encode(images) {
        const out: ImageEncoding[] = [];
        const bytes = await Promise.all(images.map((f) => f.read()));
        // Requests of at most MAX_INPUTS images and of a body the backend reads (base64 is 4/3
        // of the bytes; the rest of the JSON is a few dozen bytes per input).
        const budget = MAX_BODY_BYTES / 2;
        for (let i = 0; i < images.length; ) {
          let j = i;
          let size = 0;
          while (j < images.length && j - i < MAX_INPUTS) {
            const b = Math.ceil(bytes[j].length / 3) * 4 + 64;
            if (j > i && size + b > budget) break;
            size += b;
            j++;
          }
          const chunk = images.slice(i, j);
          const r = await whenQueueHasRoom(() => remote.encodeBatch(chunk.map((f, k) => ({ image: bytes[i + k], contentType: f.contentType, frame: f.frame }))))
            .catch((e: unknown) => {
              const at = e instanceof MedhashError ? /^inputs\.(\d+)\./.exec(e.field ?? '') : null;
              throw at ? new Error(`${where(chunk[Number(at[1])])}: ${(e as MedhashError).message}`) : e;
            });
          if (r.model_id !== health.model_id) throw new Error(`inference backend ${url} changed model to ${r.model_id} while indexing`);
          out.push(...r.results);
          i = j;
        }
        return out;
      },
      close: async () => undefined,
    };
  }
  if (!opts.model) throw new Error('give --model (or MEDHASH_MODEL), or set MEDHASH_BACKEND_URL to encode through the inference backend');
  const { card, onnx } = await loadCard(opts.model);
  await initNodeImageCodecs();
  const encoder = await loadNodeEncoder(onnx, card, { cuda: false });
  const per = card.input.channels * card.input.size * card.input.size;
  return {
    model_id: card.model_id,
    bits: card.bits,
    path: `in-process ${encoder.runtime}`,
    async encode(images) {
      const x = new Float32Array(images.length * per);
      for (const [i, f] of images.entries()) {
        try {
          x.set(preprocess(await decodeImage(await f.read(), f.contentType, DEFAULT_LIMITS, { frame: f.frame }), card.input), i * per);
        } catch (e) {
          throw new Error(`${where(f)}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      const out = await encoder.run(x, images.length);
      return images.map((_, i) => encodingOf(card, out, i));
    },
    close: () => encoder.close(),
  };
}

/** Records for the indexer: `images` encoded `chunk` at a time as the indexer pulls them. */
export function encodedSource(images: ImageFile[], encoder: BatchEncoder, opts: { descriptors: boolean; chunk: number }): RecordSource {
  return {
    count: async () => images.length,
    async *records() {
      for (let i = 0; i < images.length; i += opts.chunk) {
        const chunk = images.slice(i, i + opts.chunk);
        // A DICOM file also gives its modality, body part and UIDs, taken from the bytes the
        // encoder reads: one read per file and chunk, shared by the frames of a multi-frame file
        // (by `origin`, the file) and let go after its last frame's read, so that the in-process
        // encoder, which decodes one item at a time, holds one file's bytes at a time.
        const reads = new Map<string, Promise<Uint8Array>>();
        const left = new Map<string, number>();
        for (const f of chunk) left.set(f.origin, (left.get(f.origin) ?? 0) + 1);
        const dicom = new Map<string, DicomMetadata>();
        const reading = chunk.map((f): ImageFile => (f.contentType !== 'application/dicom' ? f : {
          ...f,
          read: () => {
            let bytes = reads.get(f.origin);
            if (!bytes) {
              bytes = f.read().then(async (b) => {
                try {
                  dicom.set(f.origin, await dicomMetadata(b));
                } catch {
                  // a header that does not walk: the encoder refuses the file itself, naming it
                }
                return b;
              });
              reads.set(f.origin, bytes);
            }
            const more = left.get(f.origin)! - 1;
            left.set(f.origin, more);
            if (more === 0) reads.delete(f.origin);
            return bytes;
          },
        }));
        const encs = await encoder.encode(reading);
        for (const [j, f] of chunk.entries()) {
          yield {
            id: f.id,
            code: encs[j].code,
            ...(opts.descriptors ? { descriptor: encs[j].descriptor } : {}),
            metadata: { label: f.label, ...dicom.get(f.origin) },
            origin: where(f),
          };
        }
      }
    },
  };
}
