// The shared API suite against the Node app (node:sqlite stores in a temporary data dir).
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import { accessTable, operatorKey, tenantKey, wholeTenant, type Security } from '../functions/auth/guard.ts';
import type { Admission, Ledger } from '../functions/billing/ledger.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import type { ImageEncoderApi } from '../functions/inference/remote.ts';
import { DEFAULT_WRITER_LIMITS } from '../functions/store/writer.ts';
import { ControlStore, MAX_COLLECTIONS } from '../functions/control/store.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import { MedhashError } from '../functions/util/errors.ts';
import { apiSuite, type ApiHarness } from './shared/api-suite.ts';
import { TEST_OPERATOR_KEY, TEST_SHARD_MAX_ITEMS } from './shared/constants.ts';
import { damageItems, flipFirstId } from './shared/damaged-manifest.ts';

let dir: string;
let node: NodeBackend;
let harness: ApiHarness;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-api-'));
  node = await createNodeBackend({
    dataDir: dir,
    operatorKey: TEST_OPERATOR_KEY,
    limits: { ...DEFAULT_WRITER_LIMITS, maxShardItems: TEST_SHARD_MAX_ITEMS },
  });
  const app = createApp(node.backend);
  harness = { fetch: async (req) => app.fetch(req), operatorKey: TEST_OPERATOR_KEY, shardMaxItems: TEST_SHARD_MAX_ITEMS };
});

afterAll(() => {
  node.close();
  rmSync(dir, { recursive: true, force: true });
});

apiSuite('node', () => harness);

/** A caller of `node`'s app, and the secret of a new tenant's key with every scope. */
async function tenantOn(node: NodeBackend) {
  const app = createApp(node.backend);
  const call = async (method: string, path: string, key: string, body?: unknown) => {
    const res = await app.request(path, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  };
  const tenant = (await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 't' })).body as { id: string };
  const { secret } = (await call('POST', `/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['search', 'ingest', 'admin'] })).body as { secret: string };
  return { call, secret };
}

/** An edge encoder that answers every image alike and counts its calls, for metering tests. */
function countingEncoder(): ImageEncoderApi & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async encodeImage(_bytes, contentType) {
      calls.push(contentType);
      return { path: 'test', model_id: 'test@0', encoding: { code: '00', descriptor: [], classes: [], ood: { score: 0, recon: 0, maha: 0, stats: null, threshold: 1 } } };
    },
  };
}

/** The body of the encode calls below: the encoder above never reads it. */
const bytes = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** POST /v1/encode of `body` as `contentType` under Idempotency-Key `key`. */
const encodeCall = (app: ReturnType<typeof createApp>, secret: string, body: Uint8Array<ArrayBuffer>, contentType: string, key: string) =>
  app.request('/v1/encode', { method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': contentType, 'idempotency-key': key }, body });

it('an Idempotency-Key covers the media type: the same bytes as another type are another request (422), the same type written otherwise a replay', async () => {
  const images = countingEncoder();
  const other = await createNodeBackend({ dataDir: join(dir, 'idempotent-media-type'), operatorKey: TEST_OPERATOR_KEY, images });
  try {
    const { call, secret } = await tenantOn(other);
    const app = createApp(other.backend);
    const send = (contentType: string) => encodeCall(app, secret, bytes, contentType, 'enc-1');
    const first = await send('image/png');
    expect([first.status, first.headers.get('idempotent-replayed')]).toEqual([200, null]);
    for (const contentType of ['IMAGE/png', 'image/PNG ;  x-note=1']) {
      const again = await send(contentType);
      expect([contentType, again.status, again.headers.get('idempotent-replayed')]).toEqual([contentType, 200, 'true']);
    }
    for (const contentType of ['application/dicom', 'image/jpeg']) {
      const reused = await send(contentType);
      const body = (await reused.json()) as { error?: { code: string } };
      expect([contentType, reused.status, reused.headers.get('idempotent-replayed'), body.error?.code]).toEqual([contentType, 422, null, 'idempotency_key_reused']);
    }
    expect(images.calls).toEqual(['image/png']);
    const usage = (await call('GET', '/v1/usage', secret)).body as { totals: { encode: number } };
    expect(usage.totals.encode).toBe(1);
  } finally {
    other.close();
  }
});

/**
 * Makes `target`'s writers commit each change, then fail its manifest put: what the store reports
 * then (store.test.ts). Returns the undo.
 */
function publishFails(target: NodeBackend): () => void {
  const writer = target.backend.writer;
  target.backend.writer = (spec) => {
    const w = writer(spec);
    return {
      apply: async (ops) => {
        const r = await w.apply(ops);
        throw new MedhashError(503, 'publish_failed', 'the update is committed but not yet visible', undefined, { committed: true, generation: r.generation });
      },
      erase: (f, v) => w.erase(f, v),
      destroy: () => w.destroy(),
      adoptManifest: () => w.adoptManifest(),
    };
  };
  return () => {
    target.backend.writer = writer;
  };
}

it('a delete committed but not yet published (KV put failed) answers 204 and is audited, not a 503 whose retry is a 404', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'publish-fails'), operatorKey: TEST_OPERATOR_KEY });
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'a', code: 'abcd' }, { id: 'b', code: 'abce' }] });
    const restore = publishFails(other);
    expect((await call('DELETE', '/v1/collections/c/items/a', secret)).status).toBe(204);
    restore();
    const audit = (await call('GET', '/v1/audit', secret)).body as { events: { action: string; detail: unknown }[] };
    expect(audit.events[0]).toMatchObject({ action: 'items.delete', detail: { ids: ['a'] } });
    expect((await call('GET', '/v1/collections/c/items/a', secret)).status).toBe(404);
  } finally {
    other.close();
  }
});

it('an ingest committed but not yet published answers 200 visible: false, metered and audited once, not a 503 that refunds it', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'ingest-publish-fails'), operatorKey: TEST_OPERATOR_KEY });
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    const restore = publishFails(other);
    const r = await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'a', code: 'abcd' }, { id: 'b', code: 'abce' }] });
    restore();
    expect([r.status, r.body]).toEqual([200, { ingested: 2, generation: 1, visible: false }]);
    const usage = (await call('GET', '/v1/usage', secret)).body as { totals: { ingest_item: number } };
    expect(usage.totals.ingest_item).toBe(2);
    const audit = (await call('GET', '/v1/audit', secret)).body as { events: { action: string; detail: unknown }[] };
    expect(audit.events[0]).toMatchObject({ action: 'items.ingest', detail: { ids: ['a', 'b'] } });
    expect((await call('GET', '/v1/collections/c/items/b', secret)).status).toBe(200);
  } finally {
    other.close();
  }
});

/**
 * Makes `target`'s ledger fail its next `times` finish calls (on Workers: the tenant's Durable
 * Object unreachable after the work). Returns the undo.
 */
function finishFails(target: NodeBackend, times: number): () => void {
  const ledger = target.backend.ledger;
  let left = times;
  target.backend.ledger = (tenantId) => {
    const store = ledger(tenantId);
    const finish: Ledger['finish'] = (t, f) => (left-- > 0 ? Promise.reject(new Error('ledger unreachable')) : store.finish(t, f));
    return Object.assign(Object.create(store) as Ledger, { finish });
  };
  return () => {
    target.backend.ledger = ledger;
  };
}

it('a ledger that fails to settle a search after the work takes the charge back and withholds the answer (503); the retry, keyed or not, is billed once', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'finish-fails'), operatorKey: TEST_OPERATOR_KEY });
  const log = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'a', code: 'abcd' }] });
    const app = createApp(other.backend);
    const search = (headers: Record<string, string> = {}) => app.request('/v1/collections/c/search', {
      method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify({ code: 'abcd' }),
    });
    const searches = async () => ((await call('GET', '/v1/usage', secret)).body as { totals: { search: number } }).totals.search;
    for (const headers of [{}, { 'idempotency-key': 'q-1' }] as Record<string, string>[]) {
      const restore = finishFails(other, 1);
      const failed = await search(headers);
      restore();
      const body = (await failed.json()) as { error: { code: string; message: string } };
      expect([failed.status, body.error.code]).toEqual([503, 'billing_unavailable']);
      expect(body.error.message).toMatch(/nothing is billed for it/);
      expect(failed.headers.get('ratelimit-limit')).toBe('100');
      const before = await searches();
      // The key was freed with the charge: its retry runs (not a 409 for a minute, nor a replay).
      const retry = await search(headers);
      expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([200, null]);
      expect(await searches()).toBe(before + 1);
    }
    expect(await searches()).toBe(2);
    const audit = (await call('GET', '/v1/audit', secret)).body as { events: { action: string }[] };
    expect(audit.events.filter((e) => e.action === 'search')).toHaveLength(2);
    expect(log.mock.calls.map(([line]) => String(line))).toEqual([
      expect.stringMatching(/POST \/v1\/collections\/:collection\/search: the billing ledger failed to settle it \(Error: ledger unreachable\); its charge was taken back and its answer withheld \(503\)$/),
      expect.stringMatching(/its answer withheld \(503\)$/),
    ]);
  } finally {
    log.mockRestore();
    other.close();
  }
});

it('a ledger that fails to settle and then to take the charge back: a success is answered, billed once; a failure is refunded when the second try passes', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'finish-fails-twice'), operatorKey: TEST_OPERATOR_KEY });
  const log = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'a', code: 'abcd' }] });
    const totals = async () => ((await call('GET', '/v1/usage', secret)).body as { totals: { search: number; ingest_item: number } }).totals;
    const app = createApp(other.backend);
    const search = () => app.request('/v1/collections/c/search', {
      method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', 'idempotency-key': 'q-1' }, body: JSON.stringify({ code: 'abcd' }),
    });
    let restore = finishFails(other, 2);
    const answered = await search();
    restore();
    expect([answered.status, ((await answered.json()) as { results: { id: string }[] }).results[0].id]).toEqual([200, 'a']);
    expect(await totals()).toMatchObject({ search: 1, ingest_item: 1 });
    const line = String(log.mock.calls.at(-1)?.[0]);
    expect(line).toMatch(/nor could it take the charge back, which stands; answered without an audit event; its event, to restore: \{/);
    expect(JSON.parse(line.slice(line.indexOf('to restore: ') + 'to restore: '.length))).toEqual({
      tenant_id: expect.any(String), at: expect.any(String), key_id: expect.any(String), action: 'search', collection: 'c', detail: { k: 10, results: 1 },
    });
    // Its key is held as by an attempt that died: a retry is told to wait, and is not billed.
    const retry = await search();
    expect([retry.status, ((await retry.json()) as { error: { code: string } }).error.code]).toEqual([409, 'idempotency_in_progress']);
    expect(await totals()).toMatchObject({ search: 1 });
    // An ingest whose write fails (500) and whose refund fails once is refunded by the second try.
    const writer = other.backend.writer;
    other.backend.writer = (spec) => ({ ...writer(spec), apply: () => Promise.reject(new Error('writer unreachable')) });
    restore = finishFails(other, 1);
    const failed = await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'b', code: 'abce' }, { id: 'c', code: 'abcf' }] });
    restore();
    other.backend.writer = writer;
    expect(failed.status).toBe(500);
    expect(await totals()).toMatchObject({ search: 1, ingest_item: 1 });
    expect(log.mock.calls.map(([line]) => String(line))).toContainEqual(expect.stringMatching(/items: the billing ledger failed to settle it \(Error: ledger unreachable\); its charge was taken back$/));
  } finally {
    log.mockRestore();
    other.close();
  }
});

/** Makes `target`'s ledger answer every admission with `admission`, charging nothing. Returns the undo. */
function admitsAs(target: NodeBackend, admission: Admission): () => void {
  const ledger = target.backend.ledger;
  target.backend.ledger = (tenantId) => Object.assign(Object.create(ledger(tenantId)) as Ledger, { admit: async () => admission });
  return () => {
    target.backend.ledger = ledger;
  };
}

it('declares Retry-After on the 429 rate_limited and the 409 idempotency_in_progress of every metered route, each of which sends it', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'retry-after'), operatorKey: TEST_OPERATOR_KEY, images: countingEncoder() });
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16, model_id: 'test@0' });
    const app = createApp(other.backend);
    type Declared = { parameters?: { name: string; in: string }[]; responses: Record<string, { headers?: Record<string, unknown> }> };
    const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, Declared>> };
    // a request each metered route (one that takes an Idempotency-Key) admits to metering
    const image = { type: 'image/png', body: bytes };
    const requests: Record<string, { path: string; type: string; body: BodyInit }> = {
      'POST /v1/collections/{collection}/items': { path: '/v1/collections/c/items', type: 'application/json', body: JSON.stringify({ items: [{ id: 'a', code: 'abcd' }] }) },
      'POST /v1/collections/{collection}/search': { path: '/v1/collections/c/search', type: 'application/json', body: JSON.stringify({ code: 'abcd' }) },
      'POST /v1/collections/{collection}/search/image': { path: '/v1/collections/c/search/image', ...image },
      'POST /v1/encode': { path: '/v1/encode', ...image },
    };
    const metered = Object.entries(doc.paths).flatMap(([template, ops]) => Object.entries(ops)
      .filter(([, op]) => op.parameters?.some((p) => p.in === 'header' && p.name === 'idempotency-key'))
      .map(([method]) => `${method.toUpperCase()} ${template}`));
    expect(metered.sort()).toEqual(Object.keys(requests).sort());
    const rate = { limit: 3, remaining: 0, reset_s: 30, window_s: 30 };
    const refusals: [Admission, number, string, string][] = [
      [{ outcome: 'rate_limited', retry_after_s: 7, rate }, 429, 'rate_limited', '7'],
      [{ outcome: 'in_progress' }, 409, 'idempotency_in_progress', '1'],
    ];
    for (const [admission, status, code, retryAfter] of refusals) {
      const restore = admitsAs(other, admission);
      for (const [route, { path, type, body }] of Object.entries(requests)) {
        const r = await app.request(path, { method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': type, 'idempotency-key': 'k-1' }, body });
        const answer = (await r.json()) as { error: { code: string } };
        expect([route, r.status, answer.error.code, r.headers.get('retry-after')]).toEqual([route, status, code, retryAfter]);
        const [method, template] = route.split(' ');
        expect(doc.paths[template][method.toLowerCase()].responses[status].headers?.['Retry-After'], `${route} ${status}`).toEqual({ $ref: '#/components/headers/RetryAfter' });
      }
      restore();
    }
  } finally {
    other.close();
  }
});

it('an uncharged change whose audit event the ledger fails to record is recorded by a second try; failing that, a 500 audit_unrecorded says it was made, and the log holds the event', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'audit-fails'), operatorKey: TEST_OPERATOR_KEY });
  const log = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    const { call, secret } = await tenantOn(other);
    const audited = async () => ((await call('GET', '/v1/audit', secret)).body as { events: { action: string; collection: string; detail: unknown }[] }).events;
    let restore = finishFails(other, 1);
    const created = await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    restore();
    expect(created.status).toBe(201);
    expect((await audited()).filter((e) => e.action === 'collection.create')).toEqual([expect.objectContaining({ collection: 'c', detail: { bits: 16, descriptor_dims: 0 } })]);
    expect(String(log.mock.calls.at(-1)?.[0])).toMatch(/POST \/v1\/collections: the billing ledger failed to record its audit event \(Error: ledger unreachable\); recorded by a second try$/);
    // A line separator in an id is escaped on the log line (printable), and parses back as itself.
    const items = [{ id: 'a\u2028', code: 'abcd' }, { id: 'b', code: 'abce', metadata: { patient_ref: 'p-1' } }, { id: 'c', code: 'abcf', metadata: { patient_ref: 'p-1' } }];
    expect((await call('POST', '/v1/collections/c/items', secret, { items })).status).toBe(200);
    await call('POST', '/v1/collections', secret, { name: 'd', bits: 16 });
    const before = await audited();
    const changes: [string, string, unknown, object][] = [
      ['POST', '/v1/collections', { name: 'e', bits: 16 }, { action: 'collection.create', collection: 'e', detail: { bits: 16, descriptor_dims: 0 } }],
      ['DELETE', '/v1/collections/c/items/a%E2%80%A8', undefined, { action: 'items.delete', collection: 'c', detail: { ids: ['a\u2028'] } }],
      ['POST', '/v1/collections/c/erase', { patient_ref: 'p-1' }, { action: 'items.erase', collection: 'c', detail: { by: 'patient_ref', count: 2, ids: ['b', 'c'], remaining: 0 } }],
      ['DELETE', '/v1/collections/d', undefined, { action: 'collection.delete', collection: 'd', detail: {} }],
    ];
    for (const [method, path, body, event] of changes) {
      log.mockClear();
      restore = finishFails(other, 2);
      const r = await call(method, path, secret, body);
      restore();
      const error = (r.body as { error: { code: string; message: string } }).error;
      expect([r.status, error.code]).toEqual([500, 'audit_unrecorded']);
      expect(error.message).toMatch(/^the change was made, but its audit event could not be recorded; the operator has been told/);
      const line = String(log.mock.calls[0]?.[0]);
      expect(log.mock.calls).toHaveLength(1);
      expect(line).not.toMatch(/\u2028/);
      expect(line).toMatch(/: the billing ledger failed to record its audit event twice \(Error: ledger unreachable; Error: ledger unreachable\); the change was made; its event, to restore: \{/);
      expect(JSON.parse(line.slice(line.indexOf('to restore: ') + 'to restore: '.length))).toEqual({ tenant_id: expect.any(String), at: expect.any(String), key_id: expect.any(String), ...event });
    }
    // Each change was made, and none is in the audit log.
    expect((await call('GET', '/v1/collections/e', secret)).status).toBe(200);
    expect((await call('GET', '/v1/collections/d', secret)).status).toBe(404);
    for (const id of ['a\u2028', 'b', 'c']) expect((await call('GET', `/v1/collections/c/items/${encodeURIComponent(id)}`, secret)).status).toBe(404);
    expect(await audited()).toEqual(before);
  } finally {
    log.mockRestore();
    other.close();
  }
});

it('a collection delete that fails on the way is sent again and completes; no data is left that nothing can reach', async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'delete-fails'), operatorKey: TEST_OPERATOR_KEY });
  try {
    const { call, secret } = await tenantOn(other);
    const col = (await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 })).body as { id: string };
    await call('POST', '/v1/collections/c/items', secret, { items: [{ id: 'a', code: 'abcd', metadata: { patient_ref: 'MRN-1' } }] });
    // The call to the collection's writer fails once (on Workers: its Durable Object unreachable).
    const writer = other.backend.writer;
    let failures = 1;
    other.backend.writer = (spec) => {
      const w = writer(spec);
      return { apply: (ops) => w.apply(ops), erase: (f, v) => w.erase(f, v), destroy: () => (failures-- > 0 ? Promise.reject(new Error('writer unreachable')) : w.destroy()), adoptManifest: () => w.adoptManifest() };
    };
    expect((await call('DELETE', '/v1/collections/c', secret)).status).toBe(500);
    expect((await call('DELETE', '/v1/collections/c', secret)).status).toBe(204);
    other.backend.writer = writer;
    expect((await call('GET', '/v1/collections/c', secret)).status).toBe(404);
    expect(await other.backend.reader.manifest(col.id)).toBeNull();
    const audit = (await call('GET', '/v1/audit', secret)).body as { events: { action: string }[] };
    expect(audit.events[0].action).toBe('collection.delete');
  } finally {
    other.close();
  }
});

it('an item lookup through a published manifest with a flipped bit answers 500 corrupt_index, not a 404 from the wrong shard', async () => {
  const sub = join(dir, 'damaged-manifest');
  const other = await createNodeBackend({ dataDir: sub, operatorKey: TEST_OPERATOR_KEY, limits: { ...DEFAULT_WRITER_LIMITS, maxShardItems: TEST_SHARD_MAX_ITEMS } });
  const kvDb = openSqlite(join(sub, 'kv.sqlite'));
  try {
    const { call, secret } = await tenantOn(other);
    await call('POST', '/v1/collections', secret, { name: 'c', bits: 16 });
    expect((await call('POST', '/v1/collections/c/items', secret, { items: damageItems(TEST_SHARD_MAX_ITEMS) })).status).toBe(200);
    const kv = new SqliteKV(kvDb);
    const [key] = (await kv.list('c/')).filter((k) => k.endsWith('/manifest'));
    const { damaged, id } = flipFirstId((await kv.get(key))!);
    expect((await call('GET', `/v1/collections/c/items/${id}`, secret)).status).toBe(200);
    await kv.put(key, damaged);
    const r = await call('GET', `/v1/collections/c/items/${id}`, secret);
    expect([r.status, r.body]).toEqual([500, { error: { code: 'corrupt_index', message: 'the stored index failed verification; the operator has been told' } }]);
  } finally {
    kvDb.close();
    other.close();
  }
});

it('an operator key shorter than 32 characters leaves the admin API disabled, not open to guessing', async () => {
  const weak = 'admin-password';
  const other = await createNodeBackend({ dataDir: join(dir, 'weak-operator'), operatorKey: weak });
  try {
    const app = createApp(other.backend);
    const admin = await app.request('/v1/admin/tenants', { headers: { authorization: `Bearer ${weak}` } });
    expect(admin.status).toBe(503);
    const body = (await admin.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('admin_disabled');
    expect(body.error.message).toMatch(/shorter than 32 characters/);
    // nor is it the operator key on tenant routes: just an unknown key
    const tenantRoute = await app.request('/v1/collections', { headers: { authorization: `Bearer ${weak}` } });
    expect(tenantRoute.status).toBe(401);
  } finally {
    other.close();
  }
});

it('the /v1 guard fails closed: a route that states no security it can enforce fails the start, and one outside the document answers 500, never unchecked', async () => {
  const route = (path: string, security?: Security, extra: Record<string, unknown> = {}) => ({ type: 'route', route: { method: 'post', path, ...(security ? { security } : {}), ...extra } });
  expect(accessTable([route('/v1/encode', tenantKey('search', 'ingest')), route('/v1/admin/tenants', operatorKey), route('/v1/collections', tenantKey()), route('/v1/usage', tenantKey('admin'), wholeTenant)])).toEqual(new Map([
    ['POST /v1/encode', { operator: false, anyOf: [['search'], ['ingest']], wholeTenant: false }],
    ['POST /v1/admin/tenants', { operator: true }],
    ['POST /v1/collections', { operator: false, anyOf: [[]], wholeTenant: false }],
    ['POST /v1/usage', { operator: false, anyOf: [['admin']], wholeTenant: true }],
  ]));
  // x-whole-tenant is a tenant key's limit, and true when stated
  expect(() => accessTable([route('/v1/admin/x', operatorKey, wholeTenant)])).toThrow(/x-whole-tenant is for tenant routes/);
  expect(() => accessTable([route('/v1/x', tenantKey(), { 'x-whole-tenant': 'yes' })])).toThrow(/x-whole-tenant is for tenant routes, and true when set/);
  expect(() => accessTable([route('/v1/collections/{collection}')])).toThrow(/POST \/v1\/collections\/:collection: security must be/);
  expect(() => accessTable([route('/v1/x', [{ bearer: ['root'] }])])).toThrow(/security must be/);
  expect(() => accessTable([route('/v1/x', [{ bearer: ['search'], operator: [] }])])).toThrow(/security must be/);
  // the guard runs on /v1 alone: a requirement elsewhere would be stated and not enforced
  expect(() => accessTable([route('/healthz', tenantKey())])).toThrow(/enforced on \/v1 routes only/);
  expect(() => accessTable([route('/healthz', undefined, wholeTenant)])).toThrow(/enforced on \/v1 routes only/);
  // A route added outside createRoute (no security in the document) is refused, key or none.
  const app = createApp(node.backend);
  app.get('/v1/unlisted', (c) => c.text('open'));
  const res = await app.request('/v1/unlisted');
  expect(res.status).toBe(500);
  expect(await res.text()).not.toContain('open');
});

it(`a tenant holds at most ${MAX_COLLECTIONS} collections: one more is a 409 naming the limit, until one is deleted`, async () => {
  const other = await createNodeBackend({ dataDir: join(dir, 'collection-limit'), operatorKey: TEST_OPERATOR_KEY });
  try {
    const { call, secret } = await tenantOn(other);
    const tenantId = ((await call('GET', '/v1/admin/tenants', TEST_OPERATOR_KEY)).body as { tenants: { id: string }[] }).tenants[0].id;
    for (let i = 1; i < MAX_COLLECTIONS; i++) await other.backend.control.createCollection(tenantId, { name: `c${i}`, bits: 64, descriptor_dims: 0 });
    expect((await call('POST', '/v1/collections', secret, { name: 'last', bits: 64 })).status).toBe(201);
    const error = async (name: string) => {
      const r = await call('POST', '/v1/collections', secret, { name, bits: 64 });
      return { status: r.status, ...(r.body as { error: { code: string; message: string } }).error };
    };
    const over = await error('one-more');
    expect([over.status, over.code]).toEqual([409, 'too_many_collections']);
    expect(over.message).toMatch(new RegExp(`at most ${MAX_COLLECTIONS} collections`));
    // a taken name is still that conflict, not this one
    expect((await error('last')).code).toBe('collection_exists');
    // the whole cap fits one page of the largest size
    const all = (await call('GET', '/v1/collections?limit=1000', secret)).body as { collections: unknown[]; next_after: string | null };
    expect([all.collections.length, all.next_after]).toEqual([MAX_COLLECTIONS, null]);
    expect((await call('DELETE', '/v1/collections/c1', secret)).status).toBe(204);
    expect((await call('POST', '/v1/collections', secret, { name: 'one-more', bits: 64 })).status).toBe(201);
  } finally {
    other.close();
  }
});

it("a control store made before the keys were paged gets the index their pages read: a tenant's keys in id order, without sorting them", async () => {
  const db = sqliteDb(new DatabaseSync(':memory:'));
  db.exec('CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)');
  db.exec(`CREATE TABLE api_keys (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants (id), name TEXT,
    hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, collections TEXT, created_at TEXT NOT NULL, rotated_at TEXT, revoked_at TEXT)`);
  db.exec('CREATE INDEX api_keys_tenant ON api_keys (tenant_id)');
  const store = new ControlStore(db);
  const indexes = db.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'api_keys' AND sql IS NOT NULL").map((r) => r.name);
  expect(indexes).toEqual(['api_keys_tenant_id']);
  const plan = db.all<{ detail: string }>("EXPLAIN QUERY PLAN SELECT id FROM api_keys WHERE tenant_id = 'tn_x' AND id > '' ORDER BY id LIMIT 3").map((r) => r.detail);
  expect(plan).toEqual([expect.stringContaining('USING COVERING INDEX api_keys_tenant_id (tenant_id=? AND id>?)')]);
  const t = await store.createTenant('t');
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await store.createKey(t.id, { scopes: ['search'] }, `hash-${i}`)).id);
  const first = await store.listKeys(t.id, 2);
  expect(first.items.map((k) => k.id)).toEqual([...ids].sort().slice(0, 2));
  expect(await store.listKeys(t.id, 2, first.next_after!)).toEqual({ items: [expect.objectContaining({ id: [...ids].sort()[2] })], next_after: null });
});
