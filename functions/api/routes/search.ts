// Search by code. Descriptor re-ranking is a later issue: its hook is in search/search.ts,
// and until then a `descriptor` field is rejected as unknown rather than silently ignored.
import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { requireCollection } from '../../auth/guard.ts';
import { audit, meter } from '../../billing/meter.ts';
import type { CollectionInfo } from '../../control/store.ts';
import { searchManifest, type SearchQuery } from '../../search/search.ts';
import { parseMetadata } from '../../shards/metadata.ts';
import { badRequest } from '../../util/errors.ts';
import type { Backend } from '../backend.ts';
import { parseCode } from '../codes.ts';
import { errors, json, jsonBody, rateLimitHeaders, security, type App } from '../openapi.ts';
import { CollectionParams, IdempotencyHeaders, SearchBody, SearchResult } from '../schemas.ts';

export function searchRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections/{collection}/search', tags: ['search'], security,
      summary: 'The k nearest items by Hamming distance (scope: search; metered: 1 unit)',
      request: { params: CollectionParams, headers: IdempotencyHeaders, body: jsonBody(SearchBody) },
      responses: { 200: { ...json(SearchResult, 'Ranked results.'), headers: rateLimitHeaders }, ...errors(400, 401, 402, 403, 404, 409, 415, 422, 429, 503) },
    }),
    async (c) => {
      const col = await requireCollection(c, backend, 'search', c.req.valid('param').collection);
      const body = c.req.valid('json');
      const code = parseCode(body.code, col.bits, 'code');
      return c.json(await searchCollection(c, backend, col, { code, k: body.k, radius: body.radius }), 200);
    },
  );
}

/** A search of one collection as the API answers it, billed and audited as one search; search by
 * code and by image share it. */
export async function searchCollection(c: Context, backend: Backend, col: CollectionInfo, q: SearchQuery) {
  if (q.radius !== undefined && q.radius > col.bits) {
    throw badRequest('invalid_field', `radius must be between 0 and ${col.bits} for a ${col.bits}-bit collection`, 'radius');
  }
  await meter(c, 'search', 1);
  const answer = await backend.reader.withManifest(col.id, async (m) => {
    const { hits, truncated } = await searchManifest(backend.reader, backend.kernel, m, q);
    return {
      generation: m?.generation ?? 0,
      truncated,
      results: hits.map((h) => ({ id: h.id, distance: h.distance, metadata: parseMetadata(h.shard.metadataJson(h.row)) })),
    };
  });
  audit(c, 'search', col.name, { k: q.k, results: answer.results.length });
  return answer;
}
