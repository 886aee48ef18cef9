// Encode for partners: one image in (PNG, JPEG or DICOM body), its code, descriptor, class
// probabilities and OOD scores out, through the same edge encoder as search by image (backend
// or in-process fallback). Lets a partner code its own archive for ingest without running the
// model; metered as one `encode` unit per image. The inference backend's own /v1/encode is an
// internal service behind the edge and knows no tenants.
import { createRoute, z } from '@hono/zod-openapi';
import { tenantKey } from '../../auth/guard.ts';
import { audit, meter } from '../../billing/meter.ts';
import { ImageEncodingSchema } from '../../backend/protocol.ts';
import { MedhashError, badRequest } from '../../util/errors.ts';
import type { Backend } from '../backend.ts';
import { errors, json, rateLimitHeaders, type App } from '../openapi.ts';
import { maxBody } from '../body.ts';
import { IdempotencyHeaders, MAX_BODY_BYTES } from '../schemas.ts';
import { FrameQuery, imageBody, imageType } from './image-search.ts';

const EncodeResult = z
  .object({
    path: z.string().openapi({ description: 'Which encoder answered: "backend" or the in-process fallback ("ort-web-wasm"/"ort-web-webgpu").' }),
    model_id: z.string(),
    encoding: ImageEncodingSchema,
  })
  .openapi('EdgeEncodeResult');

export function encodeRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/encode', tags: ['search'], security: tenantKey('search', 'ingest'), ...maxBody(MAX_BODY_BYTES),
      summary: 'Encode one image with the served model (scope: search or ingest; metered: 1 encode unit)',
      description: 'The body is the image file itself, Content-Type image/png, image/jpeg or application/dicom (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000; of a multi-frame file, the frame named by `frame`; docs/ENCODING.md).',
      request: {
        query: z.strictObject({ frame: FrameQuery }),
        headers: IdempotencyHeaders,
        body: imageBody,
      },
      responses: { 200: { ...json(EncodeResult, 'The image\'s encoding.'), headers: rateLimitHeaders }, ...errors(400, 401, 402, 403, 409, 413, 415, 422, 429, 503) },
    }),
    async (c) => {
      // The guard has checked the key and its scope; the image's own checks come before the encoder's.
      const { frame } = c.req.valid('query');
      const type = imageType(c);
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      if (bytes.length === 0) throw badRequest('empty_body', 'the body must be the image file; it is empty');
      if (!backend.images) throw new MedhashError(503, 'encoder_unavailable', 'encoding is not configured on this server (no model: see docs/INFERENCE.md)');
      await meter(c, 'encode', 1);
      const enc = await backend.images.encodeImage(bytes, type, frame);
      audit(c, 'encode', null, { count: 1, model_id: enc.model_id });
      return c.json({ path: enc.path, model_id: enc.model_id, encoding: enc.encoding }, 200);
    },
  );
}
