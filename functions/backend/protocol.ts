// The inference backend's wire format (version 1, docs/INFERENCE.md): what POST /v1/encode
// takes and returns. Schemas and codecs only, no model code, so the Worker can import it.
import { z } from '@hono/zod-openapi';
import { IMAGE_TYPES } from '../encode/image.ts';
import { fromBase64, toBase64 } from '../util/bytes.ts';

export const PROTOCOL_VERSION = 1 as const;
/** Inputs per request; a bigger batch is the client's to split. */
export const MAX_INPUTS = 64;
/** Largest request body the backend reads; a bigger batch is the client's to split. */
export const MAX_BODY_BYTES = 32 << 20;
/**
 * What a request's JSON may hold, counted before it is parsed (util/json-budget.ts): twice what
 * the largest valid batch holds. That batch is the request object and its `inputs` array, then
 * per input one object; values: the request, `version` and `inputs` with their values, then per
 * input its object and, for an image, three keys with their values (`image`, `content_type`,
 * `frame`; a tensor has one). The room lets a nearly valid request (an unknown key, a few inputs
 * too many) reach the schema and its 400 naming the problem; 32 MiB of `{},` still stops at 132
 * objects.
 */
export const JSON_BUDGET = { containers: 2 * (MAX_INPUTS + 2), values: 2 * (5 + 7 * MAX_INPUTS) };

const Base64 = z.string().min(1).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be standard base64');

/** Which frame (0-based) of a multi-frame DICOM: the backend's input field and the image routes' query parameter alike. */
export const FrameNumber = z.number({ error: 'frame must be a non-negative integer' }).int('frame must be a non-negative integer').min(0, 'frame must be a non-negative integer');

export const EncodeInput = z.union([
  z.strictObject({
    image: Base64.openapi({ description: 'PNG, JPEG or DICOM (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000) bytes, base64.' }),
    content_type: z.enum(IMAGE_TYPES, { error: `content_type must be ${IMAGE_TYPES.join(', ')}` }),
    frame: FrameNumber.optional()
      .openapi({ description: 'Which frame (0-based) of a multi-frame DICOM to encode: required for one, 0 or absent for any other image (docs/ENCODING.md, "Multi-frame files").' }),
  }),
  z.strictObject({
    tensor: Base64.openapi({
      description: 'An image already preprocessed as the model card says: float32 little-endian, channels first (C x S x S), base64.',
    }),
  }),
]);

export const EncodeRequest = z
  .strictObject({
    version: z.literal(PROTOCOL_VERSION, { error: `version must be ${PROTOCOL_VERSION}` }).default(PROTOCOL_VERSION),
    inputs: z.array(EncodeInput).min(1, 'inputs must hold at least one input').max(MAX_INPUTS, `inputs holds at most ${MAX_INPUTS} inputs`),
  })
  .openapi('EncodeRequest');

export const ImageEncodingSchema = z
  .object({
    // Strict, so that a reader takes a broken backend's answer for malformed, not the code of the
    // caller's image (the edge would answer its caller 400 invalid_code).
    code: z.string().regex(/^(?:[0-9a-f]{2})+$/, 'code must be whole bytes of lowercase hex').openapi({ description: 'Packed sign bits of u, hex; bit i = bit (7 - i % 8) of byte i / 8.' }),
    descriptor: z.array(z.number().int().min(-127).max(127)).openapi({ description: 'int8 re-ranking descriptor: round(127 * u / max|u|), one value per bit of the code.' }),
    classes: z.array(z.object({ name: z.string(), p: z.number() })).openapi({ description: 'softmax(logits), in the card\'s class order.' }),
    ood: z.object({
      score: z.number(),
      recon: z.number(),
      maha: z.number(),
      stats: z.number().nullable().openapi({ description: 'Feature-statistics distance (`ood_stats`); null for models exported without it.' }),
      threshold: z.number().openapi({ description: 'The card\'s ood.threshold: above it the image is out of distribution.' }),
    }),
  })
  .refine((e) => e.descriptor.length === e.code.length * 4, { message: 'descriptor must hold one value per bit of the code', path: ['descriptor'] })
  .openapi('ImageEncoding');

export const EncodeResponse = z
  .object({
    version: z.literal(PROTOCOL_VERSION),
    model_id: z.string(),
    runtime: z.enum(['cpu', 'cuda']),
    results: z.array(ImageEncodingSchema),
  })
  .openapi('EncodeResponse');

export type EncodeRequestBody = z.infer<typeof EncodeRequest>;
export type ImageEncoding = z.infer<typeof ImageEncodingSchema>;
export type EncodeResponseBody = z.infer<typeof EncodeResponse>;

/** A preprocessed image as the `tensor` field carries it. */
export function tensorToBase64(x: Float32Array): string {
  return toBase64(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
}

/** The `tensor` field back to floats; null unless it holds exactly `length` of them. */
export function tensorFromBase64(s: string, length: number): Float32Array | null {
  const bytes = fromBase64(s);
  if (!bytes || bytes.length !== length * 4) return null;
  const t = new Float32Array(bytes.buffer, bytes.byteOffset, length);
  // NaN or Inf would come back as null fields in a 200, against the response schema
  return t.every(Number.isFinite) ? t : null;
}
