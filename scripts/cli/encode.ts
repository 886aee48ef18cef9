// Encoding for `medhash index` by image, through the same code path as the service: the
// inference backend when MEDHASH_BACKEND_URL is set (batches of up to 64), the model in-process
// with onnxruntime-node otherwise. An item may be one frame of a multi-frame DICOM
// (`ImageFile.frame`), decoded as search by image decodes `?frame=`. A DICOM item is decoded and
// preprocessed here on both paths (decodeImage and preprocess, the service's own, by the card's
// input, which the backend reports on /healthz) and goes to the backend as a `tensor`: the file
// stays local, under the CLI's own byte limit (LOCAL_DICOM_LIMITS), and a multi-frame file is
// read once, not sent once per frame. A PNG or JPEG goes as its bytes, which the backend decodes.
// Items are read one at a time, so a batch holds at most one DICOM file's bytes at once.
import { encodingOf } from '../../functions/backend/encoding.ts';
import { MAX_BODY_BYTES, MAX_INPUTS, type ImageEncoding } from '../../functions/backend/protocol.ts';
import { loadCard, parseModelInput, type ModelInput } from '../../functions/encode/card.ts';
import { dicomMetadata, undeflated, type DicomMetadata } from '../../functions/encode/dicom.ts';
import { checkImageBytes, decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder } from '../../functions/encode/model.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { BackendUnavailable, RemoteEncoder, type RemoteInput } from '../../functions/inference/remote.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { LOCAL_DICOM_LIMITS, LOCAL_MAX_INFLATED, named, where, type ImageFile } from './images.ts';
import { fetchFailure } from './client.ts';
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

/** Item `f`'s bytes decoded (a DICOM under the CLI's limits, others under the service's) and preprocessed as `input` says. */
async function tensorOf(f: ImageFile, bytes: Uint8Array, input: ModelInput): Promise<Float32Array> {
  const limits = f.contentType === 'application/dicom' ? LOCAL_DICOM_LIMITS : DEFAULT_LIMITS;
  return preprocess(await decodeImage(bytes, f.contentType, limits, { frame: f.frame }), input);
}

/** What a request body spends on one input: base64 is 4/3 of the bytes, the rest of its JSON a few dozen bytes. */
const wireBytes = (x: RemoteInput): number => Math.ceil(('tensor' in x ? x.tensor.byteLength : x.image.length) / 3) * 4 + 64;

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
    const healthz = async () => {
      let text: string;
      try {
        text = await (await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(BACKEND_TIMEOUT_MS) })).text();
      } catch (e) {
        throw new Error(`inference backend ${url} is unreachable: ${fetchFailure(e)}`);
      }
      let h: { model_id?: unknown; bits: number; runtime: string; input?: unknown } | null = null;
      try {
        h = JSON.parse(text);
      } catch {
        // said below
      }
      // e.g. MEDHASH_BACKEND_URL set to the API's URL, whose /healthz names no model
      if (typeof h?.model_id !== 'string') throw new Error(`inference backend ${url}: GET /healthz names no model: is MEDHASH_BACKEND_URL the URL of \`medhash backend\` (not of the API)?`);
      return h as { model_id: string; bits: number; runtime: string; input?: unknown };
    };
    const health = await healthz();
    const changed = (to: string) => new Error(`inference backend ${url} changed model to ${to} while indexing`);
    let input: ModelInput;
    try {
      input = parseModelInput(health.input);
    } catch (e) {
      // a backend older than this CLI reports no input: a DICOM item could not be preprocessed for it
      throw new Error(`inference backend ${url}: GET /healthz does not give its model's input as this CLI needs it (${(e as Error).message}): upgrade the backend`);
    }
    await initNodeImageCodecs();
    const remote = new RemoteEncoder(url, BACKEND_TIMEOUT_MS);
    const send = async (chunk: ImageFile[], inputs: RemoteInput[]): Promise<ImageEncoding[]> => {
      const r = await whenQueueHasRoom(() => remote.encodeBatch(inputs)).catch(async (e: unknown) => {
        // a tensor made for the model the run started with does not fit a model of another input
        if (e instanceof MedhashError && e.code === 'invalid_tensor') {
          const now = await healthz().catch(() => health);
          if (now.model_id !== health.model_id) throw changed(now.model_id);
        }
        const at = e instanceof MedhashError ? /^inputs\.(\d+)\./.exec(e.field ?? '') : null;
        throw at ? new Error(`${where(chunk[Number(at[1])])}: ${(e as MedhashError).message}`) : e;
      });
      if (r.model_id !== health.model_id) throw changed(r.model_id);
      return r.results;
    };
    return {
      model_id: health.model_id,
      bits: health.bits,
      path: `backend ${url} (${health.runtime})`,
      async encode(images) {
        const out: ImageEncoding[] = [];
        // Requests of at most MAX_INPUTS inputs and of a body the backend reads, filled one item
        // at a time: a DICOM's bytes are let go once its tensor is made.
        const budget = MAX_BODY_BYTES / 2;
        let chunk: ImageFile[] = [];
        let inputs: RemoteInput[] = [];
        let size = 0;
        for (const f of images) {
          const x = await named(where(f), async (): Promise<RemoteInput> => {
            const bytes = await f.read();
            if (f.contentType === 'application/dicom') return { tensor: await tensorOf(f, bytes, input) };
            // the backend's limit, checked here: over the body limit, its 413 would name no file
            checkImageBytes(bytes.length);
            return { image: bytes, contentType: f.contentType, frame: f.frame };
          });
          const b = wireBytes(x);
          if (chunk.length === MAX_INPUTS || (chunk.length > 0 && size + b > budget)) {
            out.push(...(await send(chunk, inputs)));
            [chunk, inputs, size] = [[], [], 0];
          }
          chunk.push(f);
          inputs.push(x);
          size += b;
        }
        if (chunk.length > 0) out.push(...(await send(chunk, inputs)));
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
      for (const [i, f] of images.entries()) x.set(await named(where(f), async () => tensorOf(f, await f.read(), card.input)), i * per);
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
      // A DICOM file also gives its modality, body part and UIDs, taken from the bytes the encoder
      // reads (a deflated one's inflated once): one read per file, shared by the frames of a
      // multi-frame file (by `origin`, the file) across chunks, and let go after its last frame's
      // read. Items are in file order, so either encoder, which reads and decodes one item at a
      // time, holds one file's bytes at a time.
      const reads = new Map<string, Promise<Uint8Array>>();
      const left = new Map<string, number>();
      for (const f of images) left.set(f.origin, (left.get(f.origin) ?? 0) + 1);
      const dicom = new Map<string, DicomMetadata>();
      for (let i = 0; i < images.length; i += opts.chunk) {
        const chunk = images.slice(i, i + opts.chunk);
        const reading = chunk.map((f): ImageFile => (f.contentType !== 'application/dicom' ? f : {
          ...f,
          read: () => {
            let bytes = reads.get(f.origin);
            if (!bytes) {
              bytes = f.read().then(async (b) => {
                // a deflated file inflated once here, not once per frame decoded (up to 1 GiB each time)
                const plain = await undeflated(b, LOCAL_MAX_INFLATED).catch(() => b);
                try {
                  dicom.set(f.origin, await dicomMetadata(plain, LOCAL_MAX_INFLATED));
                } catch {
                  // a header or stream that does not read: the encoder refuses the file itself, naming it
                }
                return plain;
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
            metadata: { ...(f.label !== undefined ? { label: f.label } : {}), ...dicom.get(f.origin) },
            origin: where(f),
          };
        }
        // a file whose last frame is done gives its metadata no more record
        for (const f of chunk) if (left.get(f.origin) === 0) dicom.delete(f.origin);
      }
    },
  };
}
