// Batch ingest (idempotent by item id), item read, item delete, and erasure of every item of
// one patient or study.
import { createRoute, type z } from '@hono/zod-openapi';
import { pathCollection, tenantKey } from '../../auth/guard.ts';
import { audit, meter } from '../../billing/meter.ts';
import type { CollectionInfo } from '../../control/store.ts';
import { canonicalMetadata, parseMetadata } from '../../shards/metadata.ts';
import { isCommittedNotVisible, MAX_ERASE_ITEMS, type WriteOp } from '../../store/writer.ts';
import { toHex } from '../../util/bytes.ts';
import { badRequest, MedhashError } from '../../util/errors.ts';
import type { Backend } from '../backend.ts';
import { parseCode } from '../codes.ts';
import { errors, json, jsonBody, rateLimitHeaders, type App } from '../openapi.ts';
import { maxBody } from '../body.ts';
import { CollectionParams, EraseBody, EraseResultSchema, IdempotencyHeaders, IngestBody, IngestResult, ItemParams, ItemSchema, MAX_BODY_BYTES } from '../schemas.ts';

const tags = ['items'];

/** Turns a validated batch into write ops, with the checks that need the collection's shape. */
function batchOps(col: CollectionInfo, items: z.infer<typeof IngestBody>['items']): WriteOp[] {
  const seen = new Map<string, number>();
  return items.map((item, i) => {
    const first = seen.get(item.id);
    if (first !== undefined) throw badRequest('duplicate_id', `id ${JSON.stringify(item.id)} appears twice in the batch (items ${first} and ${i})`, `items.${i}.id`);
    seen.set(item.id, i);
    const code = parseCode(item.code, col.bits, `items.${i}.code`);
    const descriptor = item.descriptor ?? [];
    if (descriptor.length !== col.descriptor_dims) {
      throw badRequest(
        'invalid_descriptor',
        `descriptor must hold ${col.descriptor_dims} values for this collection; got ${item.descriptor === undefined ? 'none' : descriptor.length}`,
        `items.${i}.descriptor`,
      );
    }
    return { op: 'put', record: { id: item.id, code, descriptor: Int8Array.from(descriptor), metadata: canonicalMetadata(item.metadata) } };
  });
}

export function itemRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections/{collection}/items', tags, security: tenantKey('ingest'), ...maxBody(MAX_BODY_BYTES),
      summary: 'Upsert a batch of items (scope: ingest; metered: 1 unit per item)',
      description:
        'Idempotent by item id: re-sending a batch changes nothing and gets the same answer. Ids must be unique within a batch. ' +
        'Every item sent is billed; send an Idempotency-Key to make a retry free.',
      request: { params: CollectionParams, headers: IdempotencyHeaders, body: jsonBody(IngestBody) },
      responses: { 200: { ...json(IngestResult, 'All items are stored as sent.'), headers: rateLimitHeaders }, ...errors(400, 401, 402, 403, 404, 409, 413, 415, 422, 429, 503) },
    }),
    async (c) => {
      const col = pathCollection(c);
      const { items } = c.req.valid('json');
      const ops = batchOps(col, items);
      await meter(c, 'ingest_item', items.length);
      let generation: number;
      let visible = true;
      try {
        generation = (await backend.writer(col).apply(ops)).generation;
      } catch (e) {
        // Stored, only not yet visible: a 503 here would refund the units and skip the audit,
        // though the items are kept whether or not the client sends the batch again.
        if (!isCommittedNotVisible(e)) throw e;
        generation = (e as MedhashError).details!.generation as number;
        visible = false;
      }
      audit(c, 'items.ingest', col.name, { count: items.length, ids: items.map((i) => i.id) });
      return c.json({ ingested: items.length, generation, visible }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/collections/{collection}/items/{id}', tags, security: tenantKey('search'), summary: 'Get an item (scope: search)',
      request: { params: ItemParams },
      responses: { 200: json(ItemSchema, 'The item.'), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const col = pathCollection(c);
      const item = await backend.reader.withManifest(col.id, async (m) => {
        const found = await backend.reader.item(m, id);
        return found && { id, code: toHex(found.shard.code(found.row)), descriptor: Array.from(found.shard.descriptor(found.row)), metadata: parseMetadata(found.shard.metadataJson(found.row)) };
      });
      if (!item) throw new MedhashError(404, 'item_not_found', `item ${JSON.stringify(id)} not found`);
      return c.json(item, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/collections/{collection}/items/{id}', tags, security: tenantKey('ingest'), summary: 'Delete an item (scope: ingest)',
      request: { params: ItemParams },
      responses: { 204: { description: 'Deleted.' }, ...errors(400, 401, 403, 404, 409, 503) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const col = pathCollection(c);
      try {
        const result = await backend.writer(col).apply([{ op: 'delete', id }]);
        if (result.missing.length > 0) throw new MedhashError(404, 'item_not_found', `item ${JSON.stringify(id)} not found`);
      } catch (e) {
        // Deleted, only not yet visible: a 503 here would make the retry a 404 and the delete
        // would never be audited.
        if (!isCommittedNotVisible(e)) throw e;
      }
      audit(c, 'items.delete', col.name, { ids: [id] });
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/collections/{collection}/erase', tags, security: tenantKey('admin'),
      summary: 'Delete every item of one patient or study (scope: admin)',
      description:
        'For a patient who withdraws consent, or a study taken back: deletes, in one change, the items whose metadata ' +
        `patient_ref (or study_uid) is the one given, as stored when the request reaches the collection's writer: the first ${MAX_ERASE_ITEMS} ` +
        'in id order; `remaining` says how many are left for the next call. Searches stop returning them once the new index ' +
        'is published (on Workers, within KV propagation, about a minute; a search answer stored for an Idempotency-Key retry ' +
        'is replayed as it was for 24 hours); the replaced shard blobs are deleted after the GC grace period. The audit log ' +
        'keeps the ids deleted. Not metered. See docs/API.md for what an erasure does not reach.',
      request: { params: CollectionParams, body: jsonBody(EraseBody) },
      responses: { 200: json(EraseResultSchema, 'Those items are deleted from the index.'), ...errors(400, 401, 403, 404, 409, 413, 415, 503) },
    }),
    async (c) => {
      const col = pathCollection(c);
      const body = c.req.valid('json');
      const [field, value] = body.patient_ref !== undefined ? (['patient_ref', body.patient_ref] as const) : (['study_uid', body.study_uid!] as const);
      const result = await backend.writer(col).erase(field, value);
      audit(c, 'items.erase', col.name, { by: field, count: result.ids.length, ids: result.ids, remaining: result.remaining });
      return c.json({ erased: result.ids.length, remaining: result.remaining, generation: result.generation, visible: result.visible }, 200);
    },
  );
}
