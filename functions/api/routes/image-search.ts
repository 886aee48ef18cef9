// Search by image: the body is the image itself (PNG, JPEG or DICOM); the edge encoder (backend or
// in-process fallback, inference/edge.ts) turns it into a code, and the search is the same as
// search by code. The collection must have been coded by the very model that encodes the
// image: codes of two models are not comparable, so a mismatch is refused, never ranked.
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { pathCollection, tenantKey } from '../../auth/guard.ts';
import { FrameNumber } from '../../backend/protocol.ts';
import { dicomMetadata, isDicom } from '../../encode/dicom.ts';
import { IMAGE_TYPES } from '../../encode/image.ts';
import { MedhashError, badRequest, quote } from '../../util/errors.ts';
import { mediaType } from '../../util/media-type.ts';
import type { Backend } from '../backend.ts';
import { parseCode } from '../codes.ts';
import { errors, json, oodRefusal, rateLimitHeaders, type App } from '../openapi.ts';
import { DEFAULT_CONTENT_WEIGHT } from '../../search/rerank.ts';
import { maxBody } from '../body.ts';
import { CollectionParams, ContentWeight, Exclusions, IdempotencyHeaders, MAX_BODY_BYTES, MAX_K, QueryNumber, SearchFilter, SearchResult } from '../schemas.ts';
import { admitSearch, metadataFilter, requireDescriptors, searchCollection } from './search.ts';

/** The OpenAPI request body of a route whose body is the image file itself. */
export const imageBody = { required: true, content: Object.fromEntries(IMAGE_TYPES.map((t) => [t, { schema: z.string().openapi({ format: 'binary' }) }])) };

/** The image's media type from Content-Type; 415 naming it when it is not one of IMAGE_TYPES. */
export function imageType(c: Context): string {
  const type = mediaType(c.req.header('content-type'));
  if (!(IMAGE_TYPES as readonly string[]).includes(type)) {
    throw new MedhashError(415, 'unsupported_media_type', `Content-Type must be ${IMAGE_TYPES.join(', ')}, got ${quote(type)}`);
  }
  return type;
}

/** The `frame` query parameter of the image routes: one frame of a multi-frame DICOM. */
export const FrameQuery = QueryNumber(FrameNumber).optional()
    .openapi({ param: { name: 'frame', in: 'query' }, description: 'Which frame (0-based) of a multi-frame DICOM to use: required for one (without it, 415), 0 or absent for any other image; past the last frame, 422 `frame_out_of_range`.' });

const ImageSearchQuery = z.strictObject({
  frame: FrameQuery,
  k: QueryNumber(z.number({ error: 'k must be an integer' }).int('k must be an integer').min(1, `k must be between 1 and ${MAX_K}`).max(MAX_K, `k must be between 1 and ${MAX_K}`)).default(10)
    .openapi({ param: { name: 'k', in: 'query' } }),
  radius: QueryNumber(z.number({ error: 'radius must be an integer' }).int('radius must be an integer').min(0, 'radius must be >= 0')).optional()
    .openapi({ param: { name: 'radius', in: 'query' }, description: 'Only items within this Hamming distance.' }),
  allow_ood: z.enum(['true', 'false'], { error: 'allow_ood must be true or false' }).default('false').transform((v) => v === 'true')
    .openapi({ param: { name: 'allow_ood', in: 'query' }, description: 'Return results for an out-of-distribution image (marked so) instead of refusing it with 422.' }),
  // the clinician's controls of search by code, as query parameters (a filter repeats its name for several values)
  content_weight: QueryNumber(ContentWeight(z.number({ error: 'content_weight must be a number' }))).optional()
    .openapi({ param: { name: 'content_weight', in: 'query' }, description: `Weight of content similarity in the final score (the collection must store descriptors). Default ${DEFAULT_CONTENT_WEIGHT}.` }),
  label: SearchFilter.shape.label.openapi({ param: { name: 'label', in: 'query' }, description: 'Keep only items of this label (repeat for several).' }),
  modality: SearchFilter.shape.modality.openapi({ param: { name: 'modality', in: 'query' }, description: 'Keep only items of this modality (repeat for several).' }),
  body_part: SearchFilter.shape.body_part.openapi({ param: { name: 'body_part', in: 'query' }, description: 'Keep only items of this body part (repeat for several).' }),
  exclude_study_uid: Exclusions.exclude_study_uid.openapi({ param: { name: 'exclude_study_uid', in: 'query' } }),
  exclude_patient_ref: Exclusions.exclude_patient_ref.openapi({ param: { name: 'exclude_patient_ref', in: 'query' } }),
  exclude_own_study: z.enum(['true', 'false'], { error: 'exclude_own_study must be true or false' }).default('false').transform((v) => v === 'true')
    .openapi({ param: { name: 'exclude_own_study', in: 'query' }, description: 'For a DICOM image: leave out the items of the study the image belongs to (its Study Instance UID).' }),
})
  // the schema's, so that it is a 400 where any malformed parameter is one: after the key, before the collection is looked up
  .refine((q) => !(q.exclude_own_study && q.exclude_study_uid !== undefined), {
    message: 'exclude_own_study cannot be given with exclude_study_uid (give one)', path: ['exclude_own_study'],
  });

const ImageSearchResult = SearchResult.extend({
  path: z.string().openapi({ description: 'Which encoder answered: "backend" (the inference service) or "ort-web-wasm"/"ort-web-webgpu" (in-process fallback).' }),
  model_id: z.string(),
  code: z.string().openapi({ description: 'The image\'s code, hex.' }),
  model_ood: z.object({ score: z.number(), threshold: z.number() }).openapi({ description: 'The model\'s out-of-distribution score of the image and the card\'s threshold.' }),
  classes: z.array(z.object({ name: z.string(), p: z.number() })).openapi({ description: 'The model\'s class probabilities for the image.' }),
}).openapi('ImageSearchResult');

export function imageSearchRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections/{collection}/search/image', tags: ['search'], security: tenantKey('search'), ...maxBody(MAX_BODY_BYTES),
      summary: 'The k nearest items to an image (scope: search; metered: 1 unit)',
      description: 'The body is the image file itself, Content-Type image/png, image/jpeg or application/dicom (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000; of a multi-frame file, the frame named by `frame`; docs/ENCODING.md). The collection\'s model_id must be the encoder\'s.',
      request: {
        params: CollectionParams,
        query: ImageSearchQuery,
        headers: IdempotencyHeaders,
        body: imageBody,
      },
      responses: { 200: { ...json(ImageSearchResult, 'The image\'s code, its model OOD score and the ranked results.'), headers: rateLimitHeaders }, ...errors(400, 401, 402, 403, 404, 409, 413, 415, 429, 503), ...oodRefusal },
    }),
    async (c) => {
      // The guard has checked the key; the validators the path and the query. The image's own
      // checks come next, and only then the collection (404) and what needs it: a request's
      // mistakes are 4xx whether or not the collection exists.
      const { frame, k, radius, allow_ood: allowOod, content_weight: contentWeight, label, modality, body_part, exclude_own_study: ownStudy, ...exclusions } = c.req.valid('query');
      const type = imageType(c);
      if (ownStudy && type !== 'application/dicom') {
        throw badRequest('invalid_field', 'exclude_own_study needs a DICOM image: a PNG or JPEG names no study (send exclude_study_uid instead)', 'exclude_own_study');
      }
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      if (bytes.length === 0) throw badRequest('empty_body', 'the body must be the image file; it is empty');
      // the one header field a search reads, for this exclusion alone (bytes that are not DICOM
      // at all get decodeImage's 415 below)
      if (ownStudy && isDicom(bytes)) {
        const study = (await dicomMetadata(bytes)).study_uid;
        if (study === undefined) throw badRequest('invalid_field', 'exclude_own_study: the DICOM image has no valid Study Instance UID (0020,000D)', 'exclude_own_study');
        exclusions.exclude_study_uid = study;
      }
      const col = pathCollection(c);
      if (contentWeight !== undefined) requireDescriptors(col);
      if (!col.model_id) {
        throw new MedhashError(409, 'model_mismatch', `collection ${JSON.stringify(col.name)} records no model_id, so its codes cannot be compared with an image's; search it by code`);
      }
      if (!backend.images) throw new MedhashError(503, 'encoder_unavailable', 'search by image is not configured on this server (no model: see docs/INFERENCE.md)');
      const controls = metadataFilter({ filter: { label, modality, body_part }, ...exclusions });
      await admitSearch(c, col, radius);
      const enc = await backend.images.encodeImage(bytes, type, frame);
      if (enc.model_id !== col.model_id) {
        throw new MedhashError(409, 'model_mismatch', `collection ${JSON.stringify(col.name)} holds codes of model ${col.model_id}, but images are encoded by ${enc.model_id}`);
      }
      const code = parseCode(enc.encoding.code, col.bits, 'code');
      const modelOod = { score: enc.encoding.ood.score, threshold: enc.encoding.ood.threshold };
      // The gate judges the image by the model's own score combined with the code's neighbours.
      // The image's own descriptor re-ranks by content (ties at equal distance broken by similarity,
      // not by id) wherever the collection stores descriptors of the same length.
      const desc = enc.encoding.descriptor;
      const descriptor = col.descriptor_dims > 0 && desc.length === col.descriptor_dims ? Int8Array.from(desc) : undefined;
      // Asked for by name, content similarity must not be dropped without a word.
      if (contentWeight !== undefined && !descriptor) {
        throw new MedhashError(409, 'model_mismatch', `collection ${JSON.stringify(col.name)} stores ${col.descriptor_dims}-value descriptors, the model gives ${desc.length}: content_weight cannot apply (leave it out, or index the collection with this model's descriptors)`);
      }
      const q = { code, k, radius, descriptor, contentWeight: contentWeight ?? DEFAULT_CONTENT_WEIGHT, ...controls };
      const answer = await searchCollection(c, backend, col, q, { allowOod, allowOodVia: 'query', modelOod });
      return c.json({
        path: enc.path,
        model_id: enc.model_id,
        code: enc.encoding.code,
        model_ood: modelOod,
        classes: enc.encoding.classes,
        ...answer,
      }, 200);
    },
  );
}
