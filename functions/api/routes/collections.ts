// Collection lifecycle within the caller's tenant. Counts and generation come from the
// published manifest, i.e. exactly what searches currently see.
import { createRoute, z } from '@hono/zod-openapi';
import { allowCollection, pathCollection, tenantKey, tenantOf } from '../../auth/guard.ts';
import { audit } from '../../billing/meter.ts';
import { MAX_COLLECTIONS, type CollectionInfo } from '../../control/store.ts';
import type { Manifest } from '../../shards/manifest.ts';
import type { Backend } from '../backend.ts';
import { errors, json, jsonBody, type App } from '../openapi.ts';
import { CollectionListQuery, CollectionParams, CollectionSchema, CreateCollectionBody, NextAfter } from '../schemas.ts';

const tags = ['collections'];

const CollectionSummary = CollectionSchema.pick({ name: true, bits: true, descriptor_dims: true, model_id: true, created_at: true }).openapi('CollectionSummary');

const summary = (c: CollectionInfo) => ({
  name: c.name,
  bits: c.bits,
  descriptor_dims: c.descriptor_dims,
  model_id: c.model_id,
  created_at: c.created_at,
});

export const collectionView = (c: CollectionInfo, m: Manifest | null) => ({
  ...summary(c),
  count: m?.count ?? 0,
  shards: m?.shards.length ?? 0,
  generation: m?.generation ?? 0,
});

export function collectionRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections', tags, security: tenantKey('admin'), summary: 'Create a collection (scope: admin)',
      description: `409 collection_exists for a name the tenant already has; 409 too_many_collections when the tenant holds ${MAX_COLLECTIONS} collections, the most it may (delete one first).`,
      request: { body: jsonBody(CreateCollectionBody) },
      responses: { 201: json(CollectionSchema, 'The empty collection.'), ...errors(400, 401, 403, 409, 413, 415) },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const { key } = tenantOf(c);
      // The one collection limit that needs the body: the name it creates (the guard checks a name in the path).
      allowCollection(key, body.name);
      const created = await backend.control.createCollection(key.tenant_id, body);
      audit(c, 'collection.create', created.name, { bits: created.bits, descriptor_dims: created.descriptor_dims });
      return c.json(collectionView(created, null), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/collections', tags, security: tenantKey(), summary: 'List the collections this key may use, a page at a time',
      description: 'By name: follow `next_after` until it is null. A collection created meanwhile shows up on a later page or not at all, and never hides another.',
      request: { query: CollectionListQuery },
      responses: {
        200: json(z.object({ collections: z.array(CollectionSummary).openapi({ description: 'By name.' }), next_after: NextAfter }).openapi('CollectionList'), 'One page of collections.'),
        ...errors(400, 401, 403),
      },
    }),
    async (c) => {
      const { key } = tenantOf(c);
      const { limit, after } = c.req.valid('query');
      const { items, next_after } = await backend.control.listCollections(key.tenant_id, key.collections, limit, after);
      return c.json({ collections: items.map(summary), next_after }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/collections/{collection}', tags, security: tenantKey(), summary: 'Get a collection with its live counts',
      request: { params: CollectionParams },
      responses: { 200: json(CollectionSchema, 'The collection.'), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const col = pathCollection(c);
      return c.json(collectionView(col, await backend.reader.manifest(col.id)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/collections/{collection}', tags, security: tenantKey('admin'), summary: 'Delete a collection and its index (scope: admin)',
      request: { params: CollectionParams },
      responses: { 204: { description: 'Deleted.' }, ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const col = pathCollection(c);
      // Data first, registry last. A failure in between leaves a name whose writer refuses writes
      // (404) and whose delete can be sent again; the other order left data that no request could
      // reach any more (a failed or cut-off call to the writer, a Durable Object on Workers).
      await backend.writer(col).destroy();
      await backend.control.deleteCollection(col);
      audit(c, 'collection.delete', col.name);
      return c.body(null, 204);
    },
  );
}
