// Tenancy, metering, idempotency, plans and audit over HTTP, part of the shared API suite (so
// it runs on Node and in workerd). The route matrices are checked against the OpenAPI
// document: a new route fails them until it says how it treats strangers and revoked keys.
// Each runtime is checked against its own document (the model routes are the Node entry's only).
import { describe, expect, it } from 'vitest';
import type { Reply } from './api-suite.ts';

interface TestTenant {
  id: string;
  name: string;
  key: (scopes: string[], collections?: string[]) => Promise<{ id: string; secret: string }>;
}

export interface SuiteTools {
  call(method: string, path: string, opts?: { key?: string; body?: unknown; raw?: BodyInit; headers?: Record<string, string> }): Promise<Reply>;
  op(): string;
  tenant(): Promise<TestTenant>;
  world(bits?: number, dims?: number): Promise<{ t: TestTenant; all: string; col: string }>;
  ingest(key: string, col: string, items: unknown[]): Promise<Reply>;
}

const DAY_MS = 86_400_000;
/** A PNG signature: enough image for a route that checks the type before it looks anything up. */
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const isoDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** A window around now, so that a test running across midnight UTC still sees all its calls. */
const window = (): string => `from=${isoDay(Date.now() - DAY_MS)}&to=${isoDay(Date.now() + DAY_MS)}`;

export function billingSuite(runtime: string, { call, op, tenant, world, ingest }: SuiteTools): void {
  const setPlan = async (tenantId: string, plan: { rate_per_second: number; burst: number; monthly_quota: number | null }) => {
    const r = await call('PUT', `/v1/admin/tenants/${tenantId}/plan`, { key: op(), body: plan });
    expect(r.status).toBe(200);
    return r.body;
  };
  const totals = async (key: string) => {
    const r = await call('GET', `/v1/usage?${window()}`, { key });
    expect(r.status).toBe(200);
    return r.body.totals as { search: number; encode: number; ingest_item: number; total: number };
  };
  const search = (key: string, col: string, body: unknown = { code: 'ffff' }, headers?: Record<string, string>) =>
    call('POST', `/v1/collections/${col}/search`, { key, body, headers });
  const routesOf = async (): Promise<string[]> => {
    const doc = await call('GET', '/openapi.json');
    return Object.entries(doc.body.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) =>
      Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
    );
  };

  describe(`tenancy on every route (${runtime})`, () => {
    it("another tenant's key learns nothing: 404 on every collection route, nothing in lists, usage or audit", async () => {
      const a = await world(16);
      expect((await ingest(a.all, a.col, [{ id: 'x', code: 'ffff', metadata: { patient_ref: 'p-1' } }])).status).toBe(200);
      const before = await totals(a.all);
      const stranger = await tenant();
      const s = (await stranger.key(['search', 'ingest', 'admin'])).secret;
      const notFound = (r: Reply) => expect([r.status, r.body?.error?.code]).toEqual([404, 'collection_not_found']);
      const operatorOnly = (r: Reply) => expect([r.status, r.body?.error?.code]).toEqual([403, 'operator_only']);
      const leaksNothing = (r: Reply) => {
        const text = JSON.stringify(r.body);
        expect(text).not.toContain(a.col);
        expect(text).not.toContain(a.t.id);
      };
      type Row = [(key: string) => Promise<Reply>, (r: Reply) => void];
      // The model catalog (Node entry only: the Worker serves none) is not tenant data: a
      // stranger's key sees exactly what A's sees, and nothing of A's.
      const modelRows: Record<string, Row> = {};
      if (runtime === 'node') {
        const mine = await call('GET', '/v1/models', { key: a.all });
        expect(mine.status).toBe(200);
        const first = mine.body.models[0] as { model_id: string; sha256: string };
        const id = encodeURIComponent(first.model_id);
        modelRows['GET /v1/models'] = [(k) => call('GET', '/v1/models', { key: k }), (r) => {
          expect([r.status, r.body]).toEqual([200, mine.body]);
          leaksNothing(r);
        }];
        modelRows['GET /v1/models/{model_id}/card'] = [(k) => call('GET', `/v1/models/${id}/card`, { key: k }), (r) => {
          expect(r.status).toBe(200);
          expect(r.body).toMatchObject({ model_id: first.model_id, sha256: first.sha256 });
        }];
        modelRows['GET /v1/models/{model_id}/onnx'] = [(k) => call('GET', `/v1/models/${id}/onnx`, { key: k }), (r) => {
          expect([r.status, r.headers.get('etag')]).toEqual([200, `"${first.sha256}"`]);
        }];
      }
      // Insertion order is run order: the stranger creates its own same-named collection last.
      const matrix: Record<string, Row> = {
        'GET /healthz': [() => call('GET', '/healthz'), leaksNothing],
        'GET /v1/collections': [(k) => call('GET', '/v1/collections', { key: k }), (r) => {
          expect(r.status).toBe(200);
          expect(r.body.collections).toEqual([]);
        }],
        'GET /v1/collections/{collection}': [(k) => call('GET', `/v1/collections/${a.col}`, { key: k }), notFound],
        'POST /v1/collections/{collection}/items': [(k) => ingest(k, a.col, [{ id: 'x', code: '0000' }]), notFound],
        'GET /v1/collections/{collection}/items/{id}': [(k) => call('GET', `/v1/collections/${a.col}/items/x`, { key: k }), notFound],
        'DELETE /v1/collections/{collection}/items/{id}': [(k) => call('DELETE', `/v1/collections/${a.col}/items/x`, { key: k }), notFound],
        'POST /v1/collections/{collection}/search': [(k) => search(k, a.col), notFound],
        'POST /v1/collections/{collection}/erase': [(k) => call('POST', `/v1/collections/${a.col}/erase`, { key: k, body: { patient_ref: 'p-1' } }), notFound],
        // An image, so that the request's shape passes (a JSON body would be a 415 before any lookup).
        'POST /v1/collections/{collection}/search/image': [(k) => call('POST', `/v1/collections/${a.col}/search/image`, { key: k, raw: PNG, headers: { 'content-type': 'image/png' } }), notFound],
        // Not tenant data: without an image (here, a JSON body) it is a 415 naming the type, unbilled.
        'POST /v1/encode': [(k) => call('POST', '/v1/encode', { key: k, body: {} }), (r) => {
          expect([r.status, r.body?.error?.code]).toEqual([415, 'unsupported_media_type']);
          leaksNothing(r);
        }],
        'DELETE /v1/collections/{collection}': [(k) => call('DELETE', `/v1/collections/${a.col}`, { key: k }), notFound],
        'GET /v1/usage': [(k) => call('GET', `/v1/usage?${window()}`, { key: k }), (r) => {
          expect(r.status).toBe(200);
          expect(r.body.totals.total).toBe(0);
          leaksNothing(r);
        }],
        'GET /v1/audit': [(k) => call('GET', '/v1/audit', { key: k }), (r) => {
          expect(r.status).toBe(200);
          expect(r.body.events.map((e: { action: string }) => e.action)).toEqual(['key.create']);
          leaksNothing(r);
        }],
        'POST /v1/admin/tenants': [(k) => call('POST', '/v1/admin/tenants', { key: k, body: { name: `t-${a.col}` } }), operatorOnly],
        'GET /v1/admin/tenants': [(k) => call('GET', '/v1/admin/tenants', { key: k }), operatorOnly],
        'POST /v1/admin/tenants/{tenant}/keys': [(k) => call('POST', `/v1/admin/tenants/${a.t.id}/keys`, { key: k, body: { scopes: ['search'] } }), operatorOnly],
        'GET /v1/admin/tenants/{tenant}/keys': [(k) => call('GET', `/v1/admin/tenants/${a.t.id}/keys`, { key: k }), operatorOnly],
        'POST /v1/admin/keys/{key}/rotate': [(k) => call('POST', '/v1/admin/keys/key_nope/rotate', { key: k }), operatorOnly],
        'DELETE /v1/admin/keys/{key}': [(k) => call('DELETE', '/v1/admin/keys/key_nope', { key: k }), operatorOnly],
        'GET /v1/admin/tenants/{tenant}/plan': [(k) => call('GET', `/v1/admin/tenants/${a.t.id}/plan`, { key: k }), operatorOnly],
        'PUT /v1/admin/tenants/{tenant}/plan': [(k) => call('PUT', `/v1/admin/tenants/${a.t.id}/plan`, { key: k, body: { rate_per_second: 1, burst: 1, monthly_quota: 0 } }), operatorOnly],
        'GET /v1/admin/tenants/{tenant}/usage': [(k) => call('GET', `/v1/admin/tenants/${a.t.id}/usage`, { key: k }), operatorOnly],
        'GET /v1/admin/orphans': [(k) => call('GET', '/v1/admin/orphans', { key: k }), operatorOnly],
        'POST /v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest': [(k) => call('POST', `/v1/admin/tenants/${a.t.id}/collections/${a.col}/adopt-manifest`, { key: k }), operatorOnly],
        'DELETE /v1/admin/orphans': [(k) => call('DELETE', '/v1/admin/orphans', { key: k }), operatorOnly],
        ...modelRows,
        'POST /v1/collections': [(k) => call('POST', '/v1/collections', { key: k, body: { name: a.col, bits: 32 } }), (r) => {
          // Names are per tenant: the stranger gets a collection of its own, and no hint of A's.
          expect(r.status).toBe(201);
          expect(r.body).toMatchObject({ name: a.col, bits: 32, count: 0 });
        }],
      };
      expect(Object.keys(matrix).sort()).toEqual((await routesOf()).sort());
      for (const [route, [send, check]] of Object.entries(matrix)) {
        const r = await send(s);
        try {
          check(r);
        } catch (e) {
          throw new Error(`${route}: ${(e as Error).message}`);
        }
      }
      // None of the stranger's calls was billed: refusals, reads, and on Node the model downloads.
      expect((await totals(s)).total).toBe(0);
      // A's collection, item, usage and audit log are untouched by all of it.
      expect((await call('GET', `/v1/collections/${a.col}`, { key: a.all })).body).toMatchObject({ bits: 16, count: 1 });
      expect((await call('GET', `/v1/collections/${a.col}/items/x`, { key: a.all })).body.code).toBe('ffff');
      expect(await totals(a.all)).toEqual(before);
      const log = await call('GET', '/v1/audit', { key: a.all });
      expect(log.body.events.map((e: { action: string }) => e.action)).toEqual(['items.ingest', 'collection.create', 'key.create']);
    });

    it('a revoked key is refused on every route at once', async () => {
      const a = await world(16);
      const k = await a.t.key(['search', 'ingest', 'admin']);
      expect((await search(k.secret, a.col)).status).toBe(200);
      expect((await call('DELETE', `/v1/admin/keys/${k.id}`, { key: op() })).status).toBe(200);
      // model_id names no model: the key is refused before any lookup.
      const params: Record<string, string> = { collection: a.col, id: 'x', tenant: a.t.id, key: k.id, model_id: 'any-model' };
      // Valid bodies, so that the refusal is the key's and not the validator's.
      const bodies: Record<string, unknown> = {
        'POST /v1/collections': { name: 'zz', bits: 16 },
        'POST /v1/collections/{collection}/items': { items: [{ id: 'x', code: 'ffff' }] },
        'POST /v1/collections/{collection}/search': { code: 'ffff' },
        'POST /v1/collections/{collection}/erase': { patient_ref: 'p-1' },
        'POST /v1/admin/tenants': { name: 'zz' },
        'POST /v1/admin/tenants/{tenant}/keys': { scopes: ['search'] },
        'PUT /v1/admin/tenants/{tenant}/plan': { rate_per_second: 1, burst: 1, monthly_quota: null },
      };
      for (const route of await routesOf()) {
        const [method, template] = route.split(' ');
        const path = template.replace(/\{(\w+)\}/g, (_, p: string) => params[p]);
        const r = await call(method, path, { key: k.secret, body: bodies[route] });
        if (route === 'GET /healthz') expect(r.status, route).toBe(200);
        else expect([route, r.status, r.body?.error?.code]).toEqual([route, 401, 'invalid_key']);
      }
      // The tenant's other keys are unaffected, and its admin sees who revoked what.
      expect((await search(a.all, a.col)).status).toBe(200);
      const log = await call('GET', '/v1/audit', { key: a.all });
      expect(log.body.events.filter((e: { action: string }) => e.action === 'key.revoke')).toEqual([
        expect.objectContaining({ key_id: 'operator', detail: { key: k.id } }),
      ]);
    });
  });

  describe(`metering (${runtime})`, () => {
    it('1,000 concurrent searches are billed exactly 1,000 times; failures are not billed', async () => {
      const { t, all, col } = await world(16);
      await setPlan(t.id, { rate_per_second: 1000, burst: 2000, monthly_quota: null });
      expect((await ingest(all, col, Array.from({ length: 20 }, (_, i) => ({ id: `i${i}`, code: (i * 997).toString(16).padStart(4, '0') })))).status).toBe(200);
      const replies = await Promise.all([
        ...Array.from({ length: 1000 }, (_, i) => search(all, col, { code: (i * 31).toString(16).padStart(4, '0'), k: 3 })),
        // Refused before any work: bad input, unknown collection, missing scope.
        ...Array.from({ length: 10 }, () => search(all, col, { code: 'zz' })),
        ...Array.from({ length: 10 }, () => search(all, `nope-${col}`)),
      ]);
      expect(replies.filter((r) => r.status === 200)).toHaveLength(1000);
      expect(replies.filter((r) => r.status >= 400)).toHaveLength(20);
      const usage = await call('GET', `/v1/usage?${window()}`, { key: all });
      expect(usage.body.totals).toEqual({ search: 1000, encode: 0, ingest_item: 20, total: 1020 });
      expect(usage.body.days).toEqual([{ day: expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/), search: 1000, encode: 0, ingest_item: 20, total: 1020 }]);
      // The operator reads the same numbers, and the audit log holds one event per billed search.
      const viaOperator = await call('GET', `/v1/admin/tenants/${t.id}/usage?${window()}`, { key: op() });
      expect(viaOperator.body).toEqual(usage.body);
      const log = await call('GET', '/v1/audit?limit=1000', { key: all });
      expect(log.body.events.filter((e: { action: string }) => e.action === 'search')).toHaveLength(1000);
    });

    it('exports usage as CSV (by ?format=csv or Accept) and validates the window', async () => {
      const { all, col } = await world(16);
      await ingest(all, col, [{ id: 'a', code: '0001' }, { id: 'b', code: '0002' }]);
      await search(all, col);
      const day = isoDay(Date.now());
      for (const r of [
        await call('GET', `/v1/usage?from=${day}&to=${day}&format=csv`, { key: all }),
        await call('GET', `/v1/usage?from=${day}&to=${day}`, { key: all, headers: { accept: 'text/csv' } }),
      ]) {
        expect(r.status).toBe(200);
        expect(r.headers.get('content-type')).toMatch(/^text\/csv/);
        expect(r.body).toBe(`day,search,encode,ingest_item,total\r\n${day},1,0,2,3\r\n`);
      }
      const json = await call('GET', `/v1/usage?from=${day}&to=${day}`, { key: all });
      expect(json.body).toMatchObject({ version: 1, from: day, to: day, totals: { search: 1, ingest_item: 2, total: 3 } });
      // Accept as RFC 9110 reads it: types in any case, q=0 is "not acceptable", the higher q wins
      for (const [accept, csv] of [['TEXT/CSV', true], ['application/json;q=0.5, text/csv', true], ['text/csv, application/json', true],
        ['text/csv;q=0, application/json', false], ['text/csv;q=0.2, application/json', false], ['*/*', false], ['text/*', false]] as const) {
        const r = await call('GET', `/v1/usage?from=${day}&to=${day}`, { key: all, headers: { accept } });
        expect([accept, r.headers.get('content-type')?.startsWith('text/csv')]).toEqual([accept, csv]);
      }
      const bad: Array<[string, string]> = [
        ['from=2026-02-30', 'from'],
        ['from=2026-11-02&to=2026-11-01', 'from'],
        ['from=2020-01-01&to=2026-01-01', 'from'],
        ['to=yesterday', 'to'],
        ['format=xml', 'format'],
        // a misspelt parameter would otherwise silently report another window
        ['form=2026-11-01', 'form'],
      ];
      for (const [q, field] of bad) {
        const r = await call('GET', `/v1/usage?${q}`, { key: all });
        expect([q, r.status, r.body.error.field]).toEqual([q, 400, field]);
      }
      const searchOnly = (await (await tenant()).key(['search'])).secret;
      expect((await call('GET', '/v1/usage', { key: searchOnly })).body.error.code).toBe('missing_scope');
    });
  });

  describe(`idempotency (${runtime})`, () => {
    it('a retried request with one Idempotency-Key gets the first answer and is billed once', async () => {
      const { all, col } = await world(16);
      const items = Array.from({ length: 5 }, (_, i) => ({ id: `i${i}`, code: `000${i}` }));
      const key = { 'idempotency-key': `ingest-${col}` };
      const first = await call('POST', `/v1/collections/${col}/items`, { key: all, body: { items }, headers: key });
      expect(first.status).toBe(200);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      for (let i = 0; i < 3; i++) {
        const again = await call('POST', `/v1/collections/${col}/items`, { key: all, body: { items }, headers: key });
        expect(again.status).toBe(200);
        expect(again.body).toEqual(first.body);
        expect(again.headers.get('idempotent-replayed')).toBe('true');
      }
      const s1 = await search(all, col, { code: '0000', k: 2 }, { 'idempotency-key': 'q-1' });
      // Between the retries the collection changes: the replay still answers as the first time.
      await ingest(all, col, [{ id: 'a-new', code: '0000' }]);
      const s2 = await search(all, col, { code: '0000', k: 2 }, { 'idempotency-key': 'q-1' });
      expect(s2.body).toEqual(s1.body);
      const fresh = await search(all, col, { code: '0000', k: 2 });
      expect(fresh.body.results[0].id).toBe('a-new');
      expect(await totals(all)).toEqual({ search: 2, encode: 0, ingest_item: 6, total: 8 });
      // Concurrent duplicates: one runs, the others replay or are told it is still running.
      const burst = await Promise.all(Array.from({ length: 5 }, () => search(all, col, { code: '0001' }, { 'idempotency-key': 'q-2' })));
      expect(burst.every((r) => r.status === 200 || (r.status === 409 && r.body.error.code === 'idempotency_in_progress'))).toBe(true);
      expect(await totals(all)).toMatchObject({ search: 3 });
    });

    it('the media type counts as RFC 9110 reads it: written in another case or with parameters, the retry replays', async () => {
      const { all, col } = await world(16);
      const key = { 'idempotency-key': 'json-1' };
      const first = await search(all, col, { code: 'ffff' }, { ...key, 'content-type': 'application/json' });
      expect([first.status, first.headers.get('idempotent-replayed')]).toEqual([200, null]);
      for (const type of ['Application/JSON', 'application/json;charset=UTF-8', 'application/json ; charset="utf-8"']) {
        const again = await search(all, col, { code: 'ffff' }, { ...key, 'content-type': type });
        expect([type, again.status, again.headers.get('idempotent-replayed')]).toEqual([type, 200, 'true']);
      }
      expect(await totals(all)).toMatchObject({ search: 1 });
    });

    it('the same key on a different request is a 422; a malformed key a 400; failures can be retried', async () => {
      const { all, col } = await world(16);
      expect((await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'k1' })).status).toBe(200);
      const otherBody = await search(all, col, { code: 'fff0' }, { 'idempotency-key': 'k1' });
      expect([otherBody.status, otherBody.body.error.code]).toEqual([422, 'idempotency_key_reused']);
      const otherRoute = await call('POST', `/v1/collections/${col}/items`, { key: all, body: { code: 'ffff' }, headers: { 'idempotency-key': 'k1' } });
      expect(otherRoute.status).toBe(400);
      const otherPath = await ingest(all, col, [{ id: 'a', code: 'ffff' }]);
      expect(otherPath.status).toBe(200);
      const reusedOnIngest = await call('POST', `/v1/collections/${col}/items`, { key: all, body: { items: [{ id: 'a', code: 'ffff' }] }, headers: { 'idempotency-key': 'k1' } });
      expect(reusedOnIngest.status).toBe(422);
      const malformed = await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'has space' });
      expect([malformed.status, malformed.body.error.code]).toEqual([400, 'invalid_idempotency_key']);
      // A request that fails keeps nothing under its key: the corrected retry runs and is billed.
      const failed = await search(all, `missing-${col}`, { code: 'ffff' }, { 'idempotency-key': 'k2' });
      expect(failed.status).toBe(404);
      expect((await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'k2' })).status).toBe(200);
      // Keys are per tenant: another tenant's k1 is its own.
      const other = await world(16);
      const theirs = await search(other.all, other.col, { code: 'fff0' }, { 'idempotency-key': 'k1' });
      expect([theirs.status, theirs.headers.get('idempotent-replayed')]).toEqual([200, null]);
      expect(await totals(all)).toEqual({ search: 2, encode: 0, ingest_item: 1, total: 3 });
    });
  });

  describe(`plans (${runtime})`, () => {
    it('rate limit: the burst passes, the next call gets 429 with Retry-After and RateLimit headers, unbilled; a replay takes no token and carries them', async () => {
      const { t, all, col } = await world(16);
      // A refill of one token per 1000 s: nothing refills while the test runs.
      await setPlan(t.id, { rate_per_second: 0.001, burst: 3, monthly_quota: null });
      // Each call is sent twice under one key: the replay carries the bucket as it stands, one token spent.
      for (const left of [2, 1, 0]) {
        const key = { 'idempotency-key': `rate-${left}` };
        const first = await search(all, col, { code: 'ffff' }, key);
        const replay = await search(all, col, { code: 'ffff' }, key);
        expect([first.headers.get('idempotent-replayed'), replay.headers.get('idempotent-replayed')]).toEqual([null, 'true']);
        for (const r of [first, replay]) {
          expect(r.status).toBe(200);
          expect(r.headers.get('ratelimit-limit')).toBe('3');
          expect(r.headers.get('ratelimit-remaining')).toBe(String(left));
          expect(r.headers.get('ratelimit-policy')).toBe('3;w=3000');
        }
      }
      const limited = await search(all, col);
      expect([limited.status, limited.body.error.code]).toEqual([429, 'rate_limited']);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(limited.headers.get('ratelimit-remaining')).toBe('0');
      expect(limited.body.error.details).toMatchObject({ limit: 3 });
      // The empty bucket does not refuse a replay, whose headers say it is empty now (its first answer said 2 left).
      const late = await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'rate-2' });
      expect([late.status, late.headers.get('idempotent-replayed'), late.headers.get('ratelimit-remaining'), late.headers.get('ratelimit-limit')]).toEqual([200, 'true', '0', '3']);
      // Reads that are not metered stay available; the refusal is not billed.
      expect((await call('GET', `/v1/collections/${col}`, { key: all })).status).toBe(200);
      expect(await totals(all)).toMatchObject({ search: 3 });
      // A new plan starts with a full bucket.
      await setPlan(t.id, { rate_per_second: 10, burst: 10, monthly_quota: null });
      expect((await search(all, col)).status).toBe(200);
    });

    it('quota: units up to the quota pass, then 402 with a clear body, until the plan grows', async () => {
      const { t, all, col } = await world(16);
      await setPlan(t.id, { rate_per_second: 100, burst: 100, monthly_quota: 5 });
      expect((await ingest(all, col, [{ id: 'a', code: '0001' }, { id: 'b', code: '0002' }, { id: 'c', code: '0003' }])).status).toBe(200);
      expect((await search(all, col)).status).toBe(200);
      // Three items do not fit in the one unit left: the whole batch is refused.
      const big = await ingest(all, col, [{ id: 'd', code: '0004' }, { id: 'e', code: '0005' }, { id: 'f', code: '0006' }]);
      expect([big.status, big.body.error.code]).toEqual([402, 'quota_exhausted']);
      expect(big.body.error.details).toMatchObject({ quota: 5, used: 4, requested: 3 });
      expect((await search(all, col)).status).toBe(200);
      const over = await search(all, col);
      expect(over.status).toBe(402);
      expect(over.body.error.message).toMatch(/monthly quota of 5 units is used up/);
      expect(over.body.error.details).toMatchObject({ quota: 5, used: 5, requested: 1, resets_at: expect.stringMatching(/-01T00:00:00.000Z$/) });
      expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.count).toBe(3);
      const plan = await call('GET', `/v1/admin/tenants/${t.id}/plan`, { key: op() });
      expect(plan.body).toMatchObject({ tenant_id: t.id, monthly_quota: 5, month: { used: 5 } });
      await setPlan(t.id, { rate_per_second: 100, burst: 100, monthly_quota: 6 });
      expect((await search(all, col)).status).toBe(200);
      expect(await totals(all)).toEqual({ search: 3, encode: 0, ingest_item: 3, total: 6 });
    });

    it('with the quota used up and the bucket empty the answer is 402, not a 429 whose retry could not pass; a replay still answers, free', async () => {
      const { t, all, col } = await world(16);
      await setPlan(t.id, { rate_per_second: 0.001, burst: 1, monthly_quota: 1 });
      const first = await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'both-1' });
      expect(first.status).toBe(200);
      const over = await search(all, col);
      expect([over.status, over.body.error.code, over.headers.get('retry-after')]).toEqual([402, 'quota_exhausted', null]);
      const again = await search(all, col, { code: 'ffff' }, { 'idempotency-key': 'both-1' });
      expect([again.status, again.headers.get('idempotent-replayed'), again.body]).toEqual([200, 'true', first.body]);
      expect(await totals(all)).toMatchObject({ search: 1, total: 1 });
    });

    it('plans are set by the operator only, validated, and audited', async () => {
      const t = await tenant();
      const admin = (await t.key(['admin'])).secret;
      const dflt = await call('GET', `/v1/admin/tenants/${t.id}/plan`, { key: op() });
      expect(dflt.status).toBe(200);
      expect(dflt.body).toMatchObject({ tenant_id: t.id, updated_at: null, month: { used: 0 } });
      const bad: Array<[unknown, string]> = [
        [{ rate_per_second: 0, burst: 1, monthly_quota: null }, 'rate_per_second'],
        [{ rate_per_second: 1e-300, burst: 1, monthly_quota: null }, 'rate_per_second'],
        [{ rate_per_second: 1, burst: 0.5, monthly_quota: null }, 'burst'],
        [{ rate_per_second: 1, burst: 1, monthly_quota: -1 }, 'monthly_quota'],
        [{ rate_per_second: 1, burst: 1 }, 'monthly_quota'],
        [{ rate_per_second: 1, burst: 1, monthly_quota: null, tier: 'gold' }, 'tier'],
      ];
      for (const [body, field] of bad) {
        const r = await call('PUT', `/v1/admin/tenants/${t.id}/plan`, { key: op(), body });
        expect([field, r.status, r.body.error.field]).toEqual([field, 400, field]);
      }
      const missing = await call('PUT', '/v1/admin/tenants/tn_nope/plan', { key: op(), body: { rate_per_second: 1, burst: 1, monthly_quota: null } });
      expect([missing.status, missing.body.error.code]).toEqual([404, 'tenant_not_found']);
      const set = await setPlan(t.id, { rate_per_second: 2.5, burst: 7, monthly_quota: 1000 });
      expect(set).toMatchObject({ rate_per_second: 2.5, burst: 7, monthly_quota: 1000, updated_at: expect.any(String) });
      const log = await call('GET', '/v1/audit', { key: admin });
      expect(log.body.events).toEqual([
        expect.objectContaining({ key_id: 'operator', action: 'plan.update', collection: null, detail: { rate_per_second: 2.5, burst: 7, monthly_quota: 1000 } }),
        expect.objectContaining({ key_id: 'operator', action: 'key.create', collection: null }),
      ]);
    });
  });

  describe(`audit log (${runtime})`, () => {
    it('records who searched, ingested and deleted what, newest first, without codes or metadata', async () => {
      const { t, all, col } = await world(64);
      const searcher = await t.key(['search']);
      const code = '9f3a0c51e2d4b678';
      await ingest(all, col, [{ id: 'scan-1', code, metadata: { patient_ref: 'patient-4711', label: 'glioma' } }, { id: 'scan-2', code }]);
      expect((await search(searcher.secret, col, { code, k: 5 })).status).toBe(200);
      expect((await search(searcher.secret, col, { code: 'zz' })).status).toBe(400);
      expect((await call('DELETE', `/v1/collections/${col}/items/scan-2`, { key: all })).status).toBe(204);
      expect((await call('DELETE', `/v1/collections/${col}/items/scan-9`, { key: all })).status).toBe(404);
      expect((await call('DELETE', `/v1/collections/${col}`, { key: all })).status).toBe(204);
      const allKey = (await call('GET', `/v1/admin/tenants/${t.id}/keys`, { key: op() })).body.keys.find((k: { scopes: string[] }) => k.scopes.length === 3).id;

      const log = await call('GET', '/v1/audit', { key: all });
      expect(log.status).toBe(200);
      expect(log.body.version).toBe(1);
      const events = log.body.events.map((e: Record<string, unknown>) => ({ key_id: e.key_id, action: e.action, collection: e.collection, detail: e.detail }));
      expect(events).toEqual([
        { key_id: allKey, action: 'collection.delete', collection: col, detail: {} },
        { key_id: allKey, action: 'items.delete', collection: col, detail: { ids: ['scan-2'] } },
        { key_id: searcher.id, action: 'search', collection: col, detail: { k: 5, results: 2 } },
        { key_id: allKey, action: 'items.ingest', collection: col, detail: { count: 2, ids: ['scan-1', 'scan-2'] } },
        { key_id: 'operator', action: 'key.create', collection: null, detail: { key: searcher.id } },
        { key_id: allKey, action: 'collection.create', collection: col, detail: { bits: 64, descriptor_dims: 0 } },
        { key_id: 'operator', action: 'key.create', collection: null, detail: { key: allKey } },
      ]);
      const seqs = log.body.events.map((e: { seq: number }) => e.seq);
      expect([...seqs].sort((x, y) => y - x)).toEqual(seqs);
      expect(log.body.events.every((e: { at: string }) => !Number.isNaN(Date.parse(e.at)))).toBe(true);
      const text = JSON.stringify(log.body);
      for (const secret of [code, 'patient-4711', 'glioma']) expect(text).not.toContain(secret);

      const page1 = await call('GET', '/v1/audit?limit=2', { key: all });
      expect(page1.body.events.map((e: { action: string }) => e.action)).toEqual(['collection.delete', 'items.delete']);
      const page2 = await call('GET', `/v1/audit?limit=2&before=${page1.body.next_before}`, { key: all });
      expect(page2.body.events.map((e: { action: string }) => e.action)).toEqual(['search', 'items.ingest']);
      const page3 = await call('GET', `/v1/audit?limit=2&before=${page2.body.next_before}`, { key: all });
      expect(page3.body.events.map((e: { action: string }) => e.action)).toEqual(['key.create', 'collection.create']);
      const last = await call('GET', `/v1/audit?limit=2&before=${page3.body.next_before}`, { key: all });
      expect(last.body.events).toHaveLength(1);
      expect(last.body.next_before).toBeNull();
      expect((await call('GET', '/v1/audit?limit=0', { key: all })).body.error.field).toBe('limit');
      // a misspelt `before` would otherwise answer the first page again, and a pager would never end
      expect((await call('GET', `/v1/audit?limit=2&befor=${page1.body.next_before}`, { key: all })).body.error).toMatchObject({ code: 'unknown_field', field: 'befor' });
      expect((await call('GET', '/v1/audit', { key: searcher.secret })).body.error.code).toBe('missing_scope');
    });
  });
}
