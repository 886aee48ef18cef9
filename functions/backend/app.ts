// The inference backend's HTTP face: POST /v1/encode (a batch of images or preprocessed tensors
// in, codes, descriptors, class probabilities and OOD scores out), /healthz (with the model card's
// input, which a tensor must be preprocessed by) and /openapi.json.
// Every input goes through one MicroBatcher, so concurrent requests share model runs.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { UnofficialStatusCode } from 'hono/utils/http-status';
import { limitBody, nosniff, onError, notFoundRoute, validationError } from '../api/errors.ts';
import { errors, json, jsonBody, retryAfterHeader } from '../api/openapi.ts';
import { ErrorSchema } from '../api/schemas.ts';
import { decodeImage, DEFAULT_LIMITS } from '../encode/image.ts';
import { preprocess } from '../encode/preprocess.ts';
import type { EncodeOutputs, Encoder } from '../encode/model.ts';
import { MedhashError, badRequest } from '../util/errors.ts';
import { fromBase64 } from '../util/bytes.ts';
import { checkJsonBody } from '../util/json-budget.ts';
import { MicroBatcher, QueueFullError, RequestAbortedError, throwIfAborted, type BatcherOptions } from './batcher.ts';
import { encodingOf } from './encoding.ts';
import { EncodeRequest, EncodeResponse, JSON_BUDGET, MAX_BODY_BYTES, MAX_INPUTS, PROTOCOL_VERSION, tensorFromBase64, type EncodeRequestBody, type ImageEncoding } from './protocol.ts';

export const DEFAULT_BATCHER: BatcherOptions = { maxBatch: 32, maxWaitMs: 2, maxQueue: 512 };

/** onnxruntime-node's execution provider: "cuda" or "cpu". */
export const provider = (encoder: Encoder): 'cpu' | 'cuda' => (encoder.runtime.endsWith('/cuda') ? 'cuda' : 'cpu');

export interface BackendService {
  app: OpenAPIHono;
  /** null: the model's outputs for that input are not finite. */
  batcher: MicroBatcher<Float32Array, ImageEncoding | null>;
}

/** Whether every output of image `i` is finite: JSON would carry a NaN or Inf as null, against the answer's schema. */
function finiteAt(card: Encoder['card'], out: EncodeOutputs, i: number): boolean {
  const nc = card.classes.length;
  const rows = [out.u.subarray(i * out.bits, (i + 1) * out.bits), out.logits.subarray(i * nc, (i + 1) * nc)];
  const scalars = [out.oodScore[i], out.oodRecon[i], out.oodMaha[i], out.oodStats ? out.oodStats[i] : 0];
  return rows.every((r) => r.every(Number.isFinite)) && scalars.every(Number.isFinite);
}

export function createBackendApp(encoder: Encoder, opts: BatcherOptions = DEFAULT_BATCHER): BackendService {
  const { card } = encoder;
  const size = card.input.channels * card.input.size * card.input.size;
  const batcher = new MicroBatcher<Float32Array, ImageEncoding | null>(async (inputs) => {
    const x = new Float32Array(inputs.length * size);
    inputs.forEach((t, i) => x.set(t, i * size));
    const out = await encoder.run(x, inputs.length);
    // Finite values far outside preprocessing's range (a tensor of 1e30s) overflow the model to
    // NaN: that input's request is refused, naming it, and the rest of the batch is answered.
    return inputs.map((_, i) => (finiteAt(card, out, i) ? encodingOf(card, out, i) : null));
  }, opts);

  /**
   * A request's inputs as the model takes them, decoded and preprocessed. Everything is decoded
   * before it queues, so that a bad input fails the request without costing a model run; one at a
   * time, so that a request holds one full-size image at once, not 64 (a 16 KB PNG of 4096x4096
   * zeros decodes to about 75 MB). Once `signal` fires (the client hung up) no further input is
   * decoded: the request fails with RequestAbortedError, as it would in the queue.
   */
  const tensorsOf = async (inputs: EncodeRequestBody['inputs'], signal: AbortSignal): Promise<Float32Array[]> => {
    const tensors: Float32Array[] = [];
    for (const [i, inp] of inputs.entries()) {
      throwIfAborted(signal);
      if ('tensor' in inp) {
        const t = tensorFromBase64(inp.tensor, size);
        if (!t) throw badRequest('invalid_tensor', `inputs.${i}.tensor must be ${size} finite float32 values (${size * 4} bytes), base64`, `inputs.${i}.tensor`);
        tensors.push(t);
        continue;
      }
      const bytes = fromBase64(inp.image);
      if (!bytes) throw badRequest('invalid_field', `inputs.${i}.image must be standard padded base64`, `inputs.${i}.image`);
      const img = await decodeImage(bytes, inp.content_type, DEFAULT_LIMITS, { frame: inp.frame }).catch((e: unknown) => {
        // the field names the input, so that a batch's sender (the CLI's index) can name the file (or its frame)
        throw e instanceof MedhashError ? new MedhashError(e.status, e.code, e.message, `inputs.${i}.${e.field === 'frame' ? 'frame' : 'image'}`, e.details) : e;
      });
      tensors.push(preprocess(img, card.input));
    }
    return tensors;
  };

  const app = new OpenAPIHono({
    defaultHook: (result) => {
      // zod-validator hands the hook the input too (zod-openapi's type leaves it out): it tells a missing field.
      if (!result.success) throw validationError(result.error, result.target, (result as { data?: unknown }).data);
    },
  });
  app.onError((err, c) => {
    if (err instanceof QueueFullError) {
      c.header('Retry-After', String(err.retryAfterS));
      return c.json(new MedhashError(503, 'overloaded', `${err.message}; retry after ${err.retryAfterS} s`).toBody(), 503);
    }
    // The client has hung up: no one reads the answer, and it is no error to log. 499 is nginx's
    // "client closed request".
    if (err instanceof RequestAbortedError) return c.body(null, 499 as UnofficialStatusCode);
    return onError(err, c);
  });
  app.notFound(notFoundRoute);
  app.use('*', nosniff());
  app.use('/v1/*', limitBody(MAX_BODY_BYTES));
  // 32 MiB of `{},` would be 11 million objects on the heap before the schema refused them.
  app.use('/v1/*', async (c, next) => {
    await checkJsonBody(c.req, JSON_BUDGET);
    await next();
  });

  app.openapi(
    createRoute({
      method: 'get', path: '/healthz', tags: ['service'], summary: 'Liveness, the model and the execution provider',
      responses: {
        200: json(z.object({
          status: z.literal('ok'), runtime: z.enum(['cpu', 'cuda']), model_id: z.string(), bits: z.number().int(), queue: z.number().int(),
          input: z.looseObject({}).openapi({ description: 'The model card\'s `input` (docs/MODEL_CARD.md): the size, channels and preprocessing a `tensor` input must have been made with. A client that decodes an image itself (`medhash index`, for a DICOM) preprocesses by it.' }),
        }), 'Up, model loaded and warm.'),
      },
    }),
    (c) => c.json({ status: 'ok' as const, runtime: provider(encoder), model_id: card.model_id, bits: card.bits, queue: batcher.waiting, input: card.input }, 200),
  );

  const retryAfter = retryAfterHeader(app);
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/encode', tags: ['inference'],
      summary: `Encode up to ${MAX_INPUTS} images (PNG, JPEG or DICOM bytes, or preprocessed tensors, base64 in JSON)`,
      request: { body: jsonBody(EncodeRequest) },
      responses: {
        200: json(EncodeResponse, 'One result per input, in order.'),
        // its own 400: the edge's text speaks of API keys, which the backend has none of
        400: json(ErrorSchema, 'Malformed request: not the EncodeRequest shape, an unknown `version`, an image that is not standard padded base64 or is empty, a tensor of the wrong size, with a non-finite value or with values so far out of range that the model\'s outputs are not finite. The message names the problem and `field` the offending input (`inputs.N.image`, `inputs.N.tensor`).'),
        ...errors(415),
        413: json(ErrorSchema, `\`body_too_large\` over ${MAX_BODY_BYTES} bytes; \`json_too_complex\` for a JSON body with more objects and arrays (${JSON_BUDGET.containers}) or values (${JSON_BUDGET.values}, keys included) than twice the largest valid batch holds, counted before it is parsed; \`image_too_large\` for an image over the size limits (docs/ENCODING.md), \`field\` naming it.`),
        422: json(ErrorSchema, '`corrupt_image`: an image whose bytes are of its type but cannot be decoded (truncated, damaged); `frame_out_of_range`: a `frame` past the DICOM\'s last; `decode_timeout`: a DICOM JPEG-LS or JPEG 2000 frame that took longer than its deadline to decode (a malformed stream; docs/ENCODING.md, "Decode deadline"); `unencodable_image`: an image whose model outputs are not finite. `field` names the input (`inputs.N.image`, `inputs.N.frame`). The whole request fails.'),
        503: { ...json(ErrorSchema, '`overloaded`: the queue is full, or the backend is stopping; Retry-After says when to retry.'), headers: retryAfter },
      },
    }),
    async (c) => {
      const body = c.req.valid('json');
      // Admitted to the queue before it is decoded: a burst past the queue's bound is refused
      // before its images cost memory (each request holding one decoded image at a time).
      // @hono/node-server aborts the request's signal when its client hangs up before the answer:
      // what of it is still to decode is not decoded, and what waits in the queue is dropped, not
      // run for no one.
      const { signal } = c.req.raw;
      const results = await batcher.submitMade(body.inputs.length, () => tensorsOf(body.inputs, signal), signal);
      const bad = results.indexOf(null);
      if (bad >= 0) {
        const what = 'tensor' in body.inputs[bad] ? 'tensor' : 'image';
        const message = `inputs.${bad}.${what}: the model's outputs for it are not finite (NaN or Inf)`;
        throw what === 'tensor'
          ? badRequest('invalid_tensor', `${message}: its values lie far outside what the card's preprocessing gives`, `inputs.${bad}.tensor`)
          : new MedhashError(422, 'unencodable_image', message, `inputs.${bad}.image`);
      }
      return c.json({ version: PROTOCOL_VERSION, model_id: card.model_id, runtime: provider(encoder), results: results as ImageEncoding[] }, 200);
    },
  );

  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'medhash inference backend', version: String(PROTOCOL_VERSION), description: 'Images in, hash codes out: the model named by /healthz, with dynamic micro-batching.' },
  });
  return { app, batcher };
}
