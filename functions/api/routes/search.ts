// Search by code: validation of the clinician's controls, the OOD gate (functions/safety), then
// Hamming retrieval with content re-ranking and metadata filters (functions/search); metered
// and audited as one search.
import { createRoute, type z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { pathCollection, tenantKey } from '../../auth/guard.ts';
import { audit, meter } from '../../billing/meter.ts';
import type { CollectionInfo } from '../../control/store.ts';
import { assess, enforce, type AllowOodVia, type ModelOod } from '../../safety/gate.ts';
import { DEFAULT_CONTENT_WEIGHT } from '../../search/rerank.ts';
import { kthFromPool, kthNearestDistance, MATCH_FIELDS, searchManifest, type SearchQuery } from '../../search/search.ts';
import { parseMetadata, type ItemMetadata } from '../../shards/metadata.ts';
import { badRequest } from '../../util/errors.ts';
import type { Backend } from '../backend.ts';
import { parseCode } from '../codes.ts';
import { errors, json, jsonBody, oodRefusal, rateLimitHeaders, type App } from '../openapi.ts';
import { CollectionParams, IdempotencyHeaders, SearchBody, SearchResult } from '../schemas.ts';

type Body = z.infer<typeof SearchBody>;

/** The search query of a validated body, with the checks that need the collection's shape. */
export function searchQuery(col: CollectionInfo, body: Body): SearchQuery {
  const code = parseCode(body.code, col.bits, 'code');
  if (body.descriptor !== undefined && body.descriptor.length !== col.descriptor_dims) {
    throw badRequest('invalid_descriptor', `descriptor must hold ${col.descriptor_dims} values for this collection; got ${body.descriptor.length}`, 'descriptor');
  }
  if (body.content_weight !== undefined) requireDescriptors(col);
  if (body.content_weight !== undefined && body.descriptor === undefined) {
    throw badRequest('invalid_field', 'content_weight needs the query descriptor (descriptor)', 'content_weight');
  }
  return {
    code,
    k: body.k,
    radius: body.radius,
    // an empty descriptor (a collection without descriptors) re-ranks nothing: similarity stays null
    descriptor: body.descriptor?.length ? Int8Array.from(body.descriptor) : undefined,
    contentWeight: body.content_weight ?? DEFAULT_CONTENT_WEIGHT,
    ...metadataFilter(body),
  };
}

/** content_weight weighs content similarity, which a collection without descriptors has none of. */
export function requireDescriptors(col: CollectionInfo): void {
  if (col.descriptor_dims === 0) {
    throw badRequest('invalid_field', `content_weight needs descriptors, and collection ${JSON.stringify(col.name)} stores none`, 'content_weight');
  }
}

/** The clinician's metadata controls, as search by code and search by image both take them. */
export interface MetadataControls {
  filter?: Body['filter'];
  exclude_study_uid?: string;
  exclude_patient_ref?: string;
}

/** The controls as a search takes them: the filter's fields as values to match, the exclusions as a test of each candidate. */
export function metadataFilter(body: MetadataControls): Pick<SearchQuery, 'match' | 'filter'> {
  const match: NonNullable<SearchQuery['match']> = {};
  for (const field of MATCH_FIELDS) {
    const want = body.filter?.[field];
    if (want !== undefined) match[field] = typeof want === 'string' ? [want] : want;
  }
  const study = body.exclude_study_uid, patient = body.exclude_patient_ref;
  const excluded = study !== undefined || patient !== undefined;
  return {
    match: Object.keys(match).length > 0 ? match : undefined,
    filter: excluded ? (m: ItemMetadata) => (study === undefined || m.study_uid !== study) && (patient === undefined || m.patient_ref !== patient) : undefined,
  };
}

export function searchRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections/{collection}/search', tags: ['search'], security: tenantKey('search'),
      summary: 'The k nearest items by Hamming distance, re-ranked by content (scope: search; metered: 1 unit)',
      description:
        'Every answer carries `ood`, the out-of-distribution check of the query against the collection\'s model. ' +
        'An out-of-distribution query is refused with 422 unless `allow_ood` is true.',
      request: { params: CollectionParams, headers: IdempotencyHeaders, body: jsonBody(SearchBody) },
      responses: { 200: { ...json(SearchResult, 'Ranked results.'), headers: rateLimitHeaders }, ...errors(400, 401, 402, 403, 404, 409, 413, 415, 429, 503), ...oodRefusal },
    }),
    async (c) => {
      const col = pathCollection(c);
      const body = c.req.valid('json');
      const q = searchQuery(col, body);
      await admitSearch(c, col, q.radius);
      return c.json(await searchCollection(c, backend, col, q, { allowOod: body.allow_ood }), 200);
    },
  );
}

/**
 * Checks what a search of `col` needs of its query that the request schema cannot know, then
 * bills it as one search: before any work, so that a search by image over its rate limit or quota
 * is refused before the image is encoded (a search that then fails is refunded).
 */
export async function admitSearch(c: Context, col: CollectionInfo, radius: number | undefined): Promise<void> {
  if (radius !== undefined && radius > col.bits) {
    throw badRequest('invalid_field', `radius must be between 0 and ${col.bits} for a ${col.bits}-bit collection`, 'radius');
  }
  await meter(c, 'search', 1);
}

/**
 * A search of one collection as the API answers it, OOD gate included, audited as one search;
 * search by code and by image share it (an image search passes the model's own OOD score as
 * `modelOod`). The caller has admitted it (admitSearch).
 */
export async function searchCollection(
  c: Context,
  backend: Backend,
  col: CollectionInfo,
  q: SearchQuery,
  opts: { allowOod: boolean; allowOodVia?: AllowOodVia; modelOod?: ModelOod },
) {
  const cal = backend.oodCalibration(col.model_id);
  const answer = await backend.reader.withManifest(col.id, async (m) => {
    const outcome = await searchManifest(backend.reader, backend.kernel, m, q);
    const k = cal?.knn?.k;
    const knnDistance = k === undefined ? null : (kthFromPool(outcome, k) ?? (await kthNearestDistance(backend.reader, backend.kernel, m, q.code, k)));
    const ood = assess(cal, { knnDistance, indexCount: m?.count ?? 0, model: opts.modelOod });
    enforce(ood, opts.allowOod, opts.allowOodVia);
    const { hits, truncated } = outcome;
    return {
      generation: m?.generation ?? 0,
      truncated,
      ood,
      results: hits.map((h) => ({
        id: h.id, distance: h.distance, similarity: h.similarity, score: h.score, metadata: parseMetadata(h.metadataJson),
      })),
    };
  });
  audit(c, 'search', col.name, { k: q.k, results: answer.results.length });
  return answer;
}
