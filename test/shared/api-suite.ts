// The HTTP behaviour of medhash, written once and run against both apps: the Node app
// (test/api.node.test.ts) and the Worker inside workerd (test/workers/api.test.ts).
import { describe, expect, it } from 'vitest';
import { createApp } from '../../functions/api/app.ts';
import type { Backend } from '../../functions/api/backend.ts';
import { DEFAULT_BODY_BYTES, JSON_BUDGET, MAX_BODY_BYTES } from '../../functions/api/schemas.ts';
import mednistCard from '../../models/mednist-darf-b64.card.json';
import { billingSuite } from './billing-suite.ts';

export interface ApiHarness {
  fetch(req: Request): Promise<Response>;
  operatorKey: string;
  /** The shard item cap the app runs with, so tests can force multi-shard collections. */
  shardMaxItems: number;
}

export interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

const BASE = 'http://medhash.test';
export const uniq = (): string => Math.random().toString(36).slice(2, 10);

/** Hamming distance of two hex codes (test oracle, independent of the kernel). */
function hexDistance(a: string, b: string): number {
  let d = 0;
  for (let i = 0; i < a.length; i += 2) {
    let x = parseInt(a.slice(i, i + 2), 16) ^ parseInt(b.slice(i, i + 2), 16);
    while (x) {
      d += x & 1;
      x >>= 1;
    }
  }
  return d;
}

function utf8Compare(a: string, b: string): number {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

const hexToBase64 = (hex: string): string => btoa(String.fromCharCode(...(hex.match(/../g) ?? []).map((h) => parseInt(h, 16))));

/** Deterministic pseudo-random hex code for item i (few distinct values: many ties). */
function codeFor(i: number, bytes: number, spread = 7): string {
  let s = '';
  for (let j = 0; j < bytes; j++) s += (((i % spread) * 37 + j * 11) & 0xff).toString(16).padStart(2, '0');
  return s;
}

export function apiSuite(runtime: string, harness: () => ApiHarness): void {
  const call = async (method: string, path: string, opts: { key?: string; body?: unknown; raw?: BodyInit; headers?: Record<string, string> } = {}): Promise<Reply> => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.key) headers.authorization = `Bearer ${opts.key}`;
    let body: BodyInit | undefined = opts.raw;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await harness().fetch(new Request(BASE + path, { method, headers, body }));
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (the /docs page)
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  const op = () => harness().operatorKey;

  async function tenant(): Promise<{ id: string; name: string; key: (scopes: string[], collections?: string[]) => Promise<{ id: string; secret: string }> }> {
    const name = `t-${uniq()}`;
    const r = await call('POST', '/v1/admin/tenants', { key: op(), body: { name } });
    expect(r.status).toBe(201);
    const id = r.body.id as string;
    return {
      id,
      name,
      key: async (scopes, collections) => {
        const k = await call('POST', `/v1/admin/tenants/${id}/keys`, { key: op(), body: { scopes, ...(collections ? { collections } : {}) } });
        expect(k.status).toBe(201);
        return { id: k.body.id, secret: k.body.secret };
      },
    };
  }

  /** A tenant with an all-scope key and one collection. */
  async function world(bits = 64, dims = 0) {
    const t = await tenant();
    const all = (await t.key(['search', 'ingest', 'admin'])).secret;
    const col = `c-${uniq()}`;
    const r = await call('POST', '/v1/collections', { key: all, body: { name: col, bits, descriptor_dims: dims } });
    expect(r.status).toBe(201);
    return { t, all, col };
  }

  const ingest = (key: string, col: string, items: unknown[]) => call('POST', `/v1/collections/${col}/items`, { key, body: { items } });

  billingSuite(runtime, { call, op, tenant, world, ingest });

  describe(`medhash API (${runtime})`, () => {
    describe('service', () => {
      it('answers /healthz', async () => {
        const r = await call('GET', '/healthz');
        expect(r.status).toBe(200);
        expect(r.body.status).toBe('ok');
      });

      it('gives every answer its own X-Request-Id, whatever the caller sent', async () => {
        const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
        const first = (await call('GET', '/healthz')).headers.get('x-request-id');
        expect(first).toMatch(uuid);
        const sent = await call('GET', '/healthz', { headers: { 'X-Request-Id': 'ris-4711' } });
        expect(sent.headers.get('x-request-id')).toMatch(uuid);
        expect(sent.headers.get('x-request-id')).not.toBe(first);
        const refused = await call('POST', '/v1/collections/x/search', { body: { code: 'ab' } });
        expect(refused.status).toBe(401);
        expect(refused.headers.get('x-request-id')).toMatch(uuid);
      });

      it('serves the OpenAPI document and the docs page', async () => {
        const doc = await call('GET', '/openapi.json');
        expect(doc.status).toBe(200);
        expect(doc.body.openapi).toBe('3.1.0');
        expect(Object.keys(doc.body.paths)).toContain('/v1/collections/{collection}/search');
        // Every response of every operation declares the X-Request-Id every answer carries.
        const responses = Object.values(doc.body.paths as Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown> }> }>>)
          .flatMap((ops) => Object.values(ops).flatMap((op) => Object.values(op.responses)));
        expect(responses.length).toBeGreaterThan(50);
        for (const r of responses) expect(r.headers?.['X-Request-Id']).toEqual({ $ref: '#/components/headers/RequestId' });
        expect(doc.body.components.headers.RequestId.schema).toEqual({ type: 'string' });
        // search by image: the image types it reads, and the clinician's controls as query parameters
        const image = doc.body.paths['/v1/collections/{collection}/search/image'].post;
        expect(Object.keys(image.requestBody.content)).toEqual(['image/png', 'image/jpeg', 'application/dicom']);
        expect(image.parameters.map((p: { name: string }) => p.name)).toEqual(
          expect.arrayContaining(['k', 'radius', 'allow_ood', 'content_weight', 'label', 'modality', 'body_part', 'exclude_study_uid', 'exclude_patient_ref', 'exclude_own_study']));
        // every code length a collection may have (the generator once wrote a literal of several values as its first alone)
        expect(doc.body.components.schemas.CreateCollection.properties.bits).toEqual({ type: 'integer', enum: [16, 32, 64, 128, 256] });
        // both searches' 422 declares the `ood` an out-of-distribution refusal carries beside `error`
        type Schema = { $ref?: string; allOf?: Schema[]; properties?: Record<string, Schema>; required?: string[]; enum?: string[] };
        // a schema's properties and required names, through $ref and allOf (as a generated client reads them)
        const flat = (s: Schema): { properties: Record<string, Schema>; required: string[] } => {
          if (s.$ref) return flat(doc.body.components.schemas[s.$ref.replace('#/components/schemas/', '')]);
          const parts = [{ properties: s.properties ?? {}, required: s.required ?? [] }, ...(s.allOf ?? []).map(flat)];
          return { properties: Object.assign({}, ...parts.map((p) => p.properties)), required: parts.flatMap((p) => p.required) };
        };
        for (const path of ['/v1/collections/{collection}/search', '/v1/collections/{collection}/search/image']) {
          const refusal = flat(doc.body.paths[path].post.responses['422'].content['application/json'].schema);
          expect([path, Object.keys(refusal.properties).sort(), refusal.required]).toEqual([path, ['error', 'ood'], ['error']]);
          expect(flat(refusal.properties.ood).properties.verdict.enum).toContain('out_of_distribution');
        }
        // every error may carry details (a 402's quota and use, a 429's limit)
        expect(Object.keys(flat(flat(doc.body.components.schemas.Error).properties.error).properties).sort()).toEqual(['code', 'details', 'field', 'message']);
        const page = await call('GET', '/docs');
        expect(page.status).toBe(200);
        expect(page.headers.get('content-type')).toMatch(/text\/html/);
        expect(page.body).toContain('/v1/collections/{collection}/items');
        expect(page.body).not.toMatch(/<script|https?:\/\/(?!medhash)/);
      });

      it('declares every status a route answers without a key, with the wrong kind of key, or with an oversized body', async () => {
        const doc = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { responses: Record<string, unknown>; requestBody?: { content: Record<string, unknown> } }>> };
        const { t, all, col } = await world(16);
        const params: Record<string, string> = { collection: col, id: 'x', tenant: t.id, key: 'key_nope', model_id: 'any-model' };
        const undeclared: string[] = [];
        for (const [template, ops] of Object.entries(doc.paths)) {
          const path = template.replace(/\{(\w+)\}/g, (_, p: string) => params[p]);
          for (const [method, operation] of Object.entries(ops)) {
            // a malformed Idempotency-Key is a 400 on every route, from either kind of key that may use it
            const malformed = { 'idempotency-key': 'has space' };
            const tries: { key?: string; raw?: string; headers?: Record<string, string> }[] = [{}, { key: op() }, { key: op(), headers: malformed }, { key: all, headers: malformed }];
            // the body limit answers before any route does, whatever the body's type
            const type = Object.keys(operation.requestBody?.content ?? {})[0];
            if (type) tries.push({ key: all, raw: 'x'.repeat(MAX_BODY_BYTES + 1), headers: { 'content-type': type } });
            for (const opts of tries) {
              const r = await call(method.toUpperCase(), path, opts);
              if (!(String(r.status) in operation.responses)) undeclared.push(`${method.toUpperCase()} ${template}: ${r.status} ${r.body?.error?.code}`);
            }
          }
        }
        expect(undeclared).toEqual([]);
      });

      it('says nosniff on every answer, of every type; /docs runs no script, fetches nothing, allows no style but its own and cannot be framed', async () => {
        const { all, col } = await world(16);
        const day = new Date().toISOString().slice(0, 10);
        const answers: Array<[string, Reply]> = [
          ['health', await call('GET', '/healthz')],
          ['document', await call('GET', '/openapi.json')],
          ['docs page', await call('GET', '/docs')],
          ['unknown route', await call('GET', '/nope')],
          ['401', await call('GET', '/v1/collections')],
          ['400', await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'zz' } })],
          ['413 before the key', await call('POST', `/v1/collections/${col}/items`, { raw: 'x'.repeat(MAX_BODY_BYTES + 1), headers: { 'content-type': 'application/json' } })],
          ['a search', await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'abcd' }, headers: { 'idempotency-key': `k-${col}` } })],
          ['its idempotent replay', await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'abcd' }, headers: { 'idempotency-key': `k-${col}` } })],
          ['usage CSV', await call('GET', `/v1/usage?from=${day}&to=${day}&format=csv`, { key: all })],
          ['204', await call('DELETE', `/v1/collections/${col}`, { key: all })],
        ];
        expect(answers.find(([, r]) => r.headers.get('idempotent-replayed') === 'true')).toBeDefined();
        expect(answers.map(([what, r]) => [what, r.headers.get('x-content-type-options')])).toEqual(answers.map(([what]) => [what, 'nosniff']));
        const docs = answers[2][1];
        const csp = Object.fromEntries((docs.headers.get('content-security-policy') ?? '').split(';').map((d) => d.trim().split(/\s+/)).map(([name, ...v]) => [name, v]));
        // its one <style> is allowed by its hash, and no other style ('unsafe-inline' would allow any)
        const styles = [...(docs.body as string).matchAll(/<style>([^]*?)<\/style>/g)].map((m) => m[1]);
        expect(styles).toHaveLength(1);
        expect(docs.body).not.toMatch(/\sstyle\s*=/i);
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(styles[0])));
        expect(csp).toEqual({
          'default-src': ["'none'"], 'style-src': [`'sha256-${btoa(String.fromCharCode(...digest))}'`], 'base-uri': ["'none'"], 'form-action': ["'none'"], 'frame-ancestors': ["'none'"],
        });
      });

      it('answers unknown routes with the error shape', async () => {
        const r = await call('GET', '/nope');
        expect(r.status).toBe(404);
        expect(r.body.error.code).toBe('route_not_found');
      });
    });

    describe('admin API', () => {
      it('creates tenants and keys; secrets are shown once, never listed', async () => {
        const t = await tenant();
        const dup = await call('POST', '/v1/admin/tenants', { key: op(), body: { name: t.name } });
        expect(dup.status).toBe(409);
        const k = await t.key(['search']);
        expect(k.secret).toMatch(/^mh_[A-Za-z0-9_-]{43}$/);
        const list = await call('GET', `/v1/admin/tenants/${t.id}/keys`, { key: op() });
        expect(list.status).toBe(200);
        expect(list.body.keys).toHaveLength(1);
        expect(list.body.keys[0]).not.toHaveProperty('secret');
        expect(JSON.stringify(list.body)).not.toContain(k.secret);
        const tenants = await call('GET', '/v1/admin/tenants', { key: op() });
        expect(tenants.body.tenants.map((x: { id: string }) => x.id)).toContain(t.id);
      });

      /** Every page of an operator list, following `next_after` from the first page. */
      const pages = async (path: string, field: string, limit: number, between?: (page: number) => Promise<void>) => {
        const got: { ids: string[]; next_after: string | null }[] = [];
        let after: string | null = null;
        do {
          const r = await call('GET', `${path}?limit=${limit}${after ? `&after=${after}` : ''}`, { key: op() });
          expect(r.status).toBe(200);
          got.push({ ids: r.body[field].map((x: { id: string }) => x.id), next_after: r.body.next_after });
          after = r.body.next_after;
          await between?.(got.length);
        } while (after !== null);
        return got;
      };

      it("pages a tenant's keys by id: every key exactly once, in order; a key created between pages hides none", async () => {
        const t = await tenant();
        const made: string[] = [];
        for (let i = 0; i < 7; i++) made.push((await t.key(['search'])).id);
        const path = `/v1/admin/tenants/${t.id}/keys`;
        const whole = await call('GET', path, { key: op() });
        expect(whole.body.keys.map((k: { id: string }) => k.id)).toEqual([...made].sort());
        expect(whole.body.next_after).toBeNull();

        const got = await pages(path, 'keys', 3);
        expect(got.map((p) => p.ids.length)).toEqual([3, 3, 1]);
        expect(got.flatMap((p) => p.ids)).toEqual([...made].sort());
        // the cursor is the last id of its page; the last page says there is no more
        expect(got.map((p) => p.next_after)).toEqual([got[0].ids[2], got[1].ids[2], null]);
        // a page that ends exactly at the last key is the last one
        expect((await pages(path, 'keys', 7)).map((p) => p.next_after)).toEqual([null]);

        // keys created between pages, whatever their ids, move no other key across the cursor
        const late: string[] = [];
        const during = await pages(path, 'keys', 2, async () => {
          late.push((await t.key(['search'])).id);
        });
        const seen = during.flatMap((p) => p.ids);
        expect(new Set(seen).size).toBe(seen.length);
        expect(seen).toEqual([...seen].sort());
        expect(seen.filter((id) => !late.includes(id))).toEqual([...made].sort());
      });

      it('pages the tenants by id: every tenant exactly once, in order, however the pages fall', async () => {
        const ours = [(await tenant()).id, (await tenant()).id, (await tenant()).id];
        const whole = await call('GET', '/v1/admin/tenants?limit=1000', { key: op() });
        const all = whole.body.tenants.map((x: { id: string }) => x.id);
        expect(whole.body.next_after).toBeNull();
        expect(all).toEqual([...all].sort());
        expect(all).toEqual(expect.arrayContaining(ours));
        const limit = Math.max(1, Math.ceil(all.length / 4));
        const got = await pages('/v1/admin/tenants', 'tenants', limit, async (page) => {
          if (page === 1) await tenant();
        });
        const seen = got.flatMap((p) => p.ids);
        expect(new Set(seen).size).toBe(seen.length);
        expect(seen).toEqual([...seen].sort());
        expect(seen).toEqual(expect.arrayContaining(all));
        // the default page is the first 100 tenants
        const now = (await call('GET', '/v1/admin/tenants?limit=1000', { key: op() })).body.tenants.map((x: { id: string }) => x.id);
        const first = await call('GET', '/v1/admin/tenants', { key: op() });
        expect(first.body.tenants.map((x: { id: string }) => x.id)).toEqual(now.slice(0, 100));
      });

      it("refuses a bad page of the operator's lists with a 400 naming limit or after", async () => {
        const t = await tenant();
        const k = await t.key(['search']);
        const keys = `/v1/admin/tenants/${t.id}/keys`;
        const cases: [string, string, string][] = [
          ['/v1/admin/tenants?limit=0', 'invalid_field', 'limit'],
          ['/v1/admin/tenants?limit=1001', 'invalid_field', 'limit'],
          ['/v1/admin/tenants?limit=2.5', 'invalid_field', 'limit'],
          ['/v1/admin/tenants?limit=', 'invalid_field', 'limit'],
          ['/v1/admin/tenants?after=', 'invalid_field', 'after'],
          [`/v1/admin/tenants?after=${k.id}`, 'invalid_field', 'after'],
          [`/v1/admin/tenants?after=${t.id}&after=${t.id}`, 'repeated_parameter', 'after'],
          [`/v1/admin/tenants?afterr=${t.id}`, 'unknown_field', 'afterr'],
          [`${keys}?limit=x`, 'invalid_field', 'limit'],
          [`${keys}?after=${t.id}`, 'invalid_field', 'after'],
          [`${keys}?after=${k.id.toUpperCase()}`, 'invalid_field', 'after'],
        ];
        for (const [path, code, field] of cases) {
          const r = await call('GET', path, { key: op() });
          expect({ path, status: r.status, code: r.body.error.code, field: r.body.error.field }).toEqual({ path, status: 400, code, field });
        }
        expect((await call('GET', `/v1/admin/tenants?after=${t.id}`, { key: op() })).status).toBe(200);
        const message = (await call('GET', `${keys}?after=${t.id}`, { key: op() })).body.error.message;
        expect(message).toMatch(/after must be a key id \(key_ and 24 hex digits\)/);
        // a bad page is a 400 before the tenant is looked up, as every malformed parameter is
        expect((await call('GET', '/v1/admin/tenants/tn_nope/keys?limit=0', { key: op() })).body.error.field).toBe('limit');
        expect((await call('GET', '/v1/admin/tenants/tn_nope/keys', { key: op() })).status).toBe(404);
      });

      it('refuses tenant keys (403) and unknown keys (401)', async () => {
        const t = await tenant();
        const k = await t.key(['search', 'ingest', 'admin']);
        expect((await call('GET', '/v1/admin/tenants', { key: k.secret })).status).toBe(403);
        expect((await call('GET', '/v1/admin/tenants', { key: 'mh_nope' })).status).toBe(401);
        const none = await call('GET', '/v1/admin/tenants');
        expect(none.status).toBe(401);
        expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
      });

      it('refuses control characters in a key name and a collection model_id (printed by logs, CSV and terminals)', async () => {
        const t = await tenant();
        const k = await call('POST', `/v1/admin/tenants/${t.id}/keys`, { key: op(), body: { scopes: ['search'], name: 'ward\n3' } });
        expect([k.status, k.body.error.field, k.body.error.message]).toEqual([400, 'name', 'name must not contain control characters']);
        const { all } = await world(16);
        const c = await call('POST', '/v1/collections', { key: all, body: { name: `c-${uniq()}`, bits: 16, model_id: 'm\u001b[31m' } });
        expect([c.status, c.body.error.field, c.body.error.message]).toEqual([400, 'model_id', 'model_id must not contain control characters']);
      });

      it('404s keys for an unknown tenant', async () => {
        const r = await call('POST', '/v1/admin/tenants/tn_nope/keys', { key: op(), body: { scopes: ['search'] } });
        expect(r.status).toBe(404);
        expect(r.body.error.code).toBe('tenant_not_found');
      });

      it('rotates a key: the old secret stops working, the new one works', async () => {
        const t = await tenant();
        const k = await t.key(['search']);
        expect((await call('GET', '/v1/collections', { key: k.secret })).status).toBe(200);
        const rot = await call('POST', `/v1/admin/keys/${k.id}/rotate`, { key: op() });
        expect(rot.status).toBe(200);
        expect(rot.body.id).toBe(k.id);
        expect(rot.body.secret).not.toBe(k.secret);
        expect((await call('GET', '/v1/collections', { key: k.secret })).status).toBe(401);
        expect((await call('GET', '/v1/collections', { key: rot.body.secret })).status).toBe(200);
      });

      it('revokes a key: 401 afterwards, and it cannot be rotated back', async () => {
        const t = await tenant();
        const k = await t.key(['search']);
        const rev = await call('DELETE', `/v1/admin/keys/${k.id}`, { key: op() });
        expect(rev.status).toBe(200);
        expect(rev.body.revoked_at).toBeTruthy();
        expect((await call('GET', '/v1/collections', { key: k.secret })).status).toBe(401);
        expect((await call('POST', `/v1/admin/keys/${k.id}/rotate`, { key: op() })).status).toBe(409);
        expect((await call('DELETE', '/v1/admin/keys/key_nope', { key: op() })).status).toBe(404);
      });
    });

    describe('the /v1 guard fails closed', () => {
      it('a /v1 route added outside the OpenAPI registry answers 500, a `*` pattern too, never unchecked', async () => {
        // The guard reads no more of the backend than its keys: none is known here, so a 2xx could only come unchecked.
        const backend = { runtime, control: { authenticate: async () => null }, operatorKey: op() } as unknown as Backend;
        const app = createApp(backend);
        app.get('/v1/exact', (c) => c.text('open'));
        app.get('/v1/files/*', (c) => c.text('open'));
        app.all('/v1/*', (c) => c.text('open'));
        const got = [];
        for (const path of ['/v1/exact', '/v1/files/x', '/v1/anything', '/v1/collections/c/anything']) {
          const res = await app.fetch(new Request(`http://medhash.test${path}`));
          got.push([path, res.status, (await res.text()).includes('open')]);
        }
        expect(got).toEqual([['/v1/exact', 500, false], ['/v1/files/x', 500, false], ['/v1/anything', 500, false], ['/v1/collections/c/anything', 500, false]]);
      });
    });

    describe('auth matrix on collection routes', () => {
      it('tells 401, 403 and cross-tenant 404 apart', async () => {
        const { t, all, col } = await world(16);
        const ok = await ingest(all, col, [{ id: 'x', code: 'ffff' }]);
        expect(ok.status).toBe(200);
        const readOnly = (await t.key(['search'])).secret;
        const ingestOnly = (await t.key(['ingest'])).secret;
        const other = `c-${uniq()}`;
        expect((await call('POST', '/v1/collections', { key: all, body: { name: other, bits: 16 } })).status).toBe(201);
        const limitedElsewhere = (await t.key(['search', 'ingest', 'admin'], [other])).secret;
        const revoked = await t.key(['search']);
        await call('DELETE', `/v1/admin/keys/${revoked.id}`, { key: op() });
        const stranger = (await (await tenant()).key(['search', 'ingest', 'admin'])).secret;

        const search = (key?: string) => call('POST', `/v1/collections/${col}/search`, { key, body: { code: 'ffff' } });
        const write = (key?: string) => ingest(key ?? '', col, [{ id: 'y', code: '0000' }]);
        const cases: Array<[string, Promise<Reply>, number, string]> = [
          ['no key', search(), 401, 'missing_key'],
          ['malformed header', call('POST', `/v1/collections/${col}/search`, { headers: { authorization: 'Basic abc' }, body: { code: 'ffff' } }), 401, 'missing_key'],
          ['wrong key', search('mh_wrong'), 401, 'invalid_key'],
          ['revoked key', search(revoked.secret), 401, 'invalid_key'],
          ['operator key on tenant routes', search(op()), 403, 'tenant_only'],
          ["another tenant's key: search", search(stranger), 404, 'collection_not_found'],
          ["another tenant's key: get", call('GET', `/v1/collections/${col}`, { key: stranger }), 404, 'collection_not_found'],
          ["another tenant's key: item", call('GET', `/v1/collections/${col}/items/x`, { key: stranger }), 404, 'collection_not_found'],
          ["another tenant's key: ingest", write(stranger), 404, 'collection_not_found'],
          ["another tenant's key: delete", call('DELETE', `/v1/collections/${col}`, { key: stranger }), 404, 'collection_not_found'],
          ['read-only key writing', write(readOnly), 403, 'missing_scope'],
          ['read-only key deleting an item', call('DELETE', `/v1/collections/${col}/items/x`, { key: readOnly }), 403, 'missing_scope'],
          ['read-only key creating a collection', call('POST', '/v1/collections', { key: readOnly, body: { name: `c-${uniq()}`, bits: 16 } }), 403, 'missing_scope'],
          ['ingest-only key searching', search(ingestOnly), 403, 'missing_scope'],
          ['key limited to another collection: search', search(limitedElsewhere), 403, 'collection_forbidden'],
          ['key limited to another collection: ingest', write(limitedElsewhere), 403, 'collection_forbidden'],
          ['key limited to another collection: get', call('GET', `/v1/collections/${col}`, { key: limitedElsewhere }), 403, 'collection_forbidden'],
        ];
        for (const [what, pending, status, code] of cases) {
          const r = await pending;
          expect({ what, status: r.status, code: r.body?.error?.code }).toEqual({ what, status, code });
        }
        expect((await search(readOnly)).status).toBe(200);
        expect((await write(ingestOnly)).status).toBe(200);
        expect((await call('POST', `/v1/collections/${other}/search`, { key: limitedElsewhere, body: { code: 'ffff' } })).status).toBe(200);
        const listed = await call('GET', '/v1/collections', { key: limitedElsewhere });
        expect(listed.body.collections.map((c: { name: string }) => c.name)).toEqual([other]);
        // The audit log too: a key limited to some collections reads the events of those alone
        // (another collection's item ids and names are not its to see).
        const limitedLog = await call('GET', '/v1/audit?limit=1000', { key: limitedElsewhere });
        expect(limitedLog.status).toBe(200);
        expect(limitedLog.body.events.length).toBeGreaterThan(0);
        expect(limitedLog.body.events.every((e: { collection: string | null }) => e.collection === other)).toBe(true);
        expect(JSON.stringify(limitedLog.body)).not.toContain(col);
        const page = await call('GET', '/v1/audit?limit=1', { key: limitedElsewhere });
        expect(page.body.events.map((e: { collection: string }) => e.collection)).toEqual([other]);
        // Usage has no collection to filter by: a limited key is refused it, with the reason.
        const usage = await call('GET', '/v1/usage', { key: limitedElsewhere });
        expect([usage.status, usage.body.error.code]).toEqual([403, 'collection_limited']);
        expect(usage.body.error.message).toMatch(/whole tenant/);
        // A tenant cannot tell another tenant's collection from a missing one.
        const missing = await call('POST', `/v1/collections/c-${uniq()}/search`, { key: stranger, body: { code: 'ffff' } });
        const foreign = await search(stranger);
        expect([foreign.status, foreign.body.error.code]).toEqual([missing.status, missing.body.error.code]);
      });
    });

    describe('collections', () => {
      it("pages the collections by name, the key's own ones only; a collection created between pages hides none", async () => {
        const t = await tenant();
        const admin = (await t.key(['search', 'ingest', 'admin'])).secret;
        const names = ['d-4', 'a-1', 'e-5', 'b-2', 'c-3'];
        for (const name of names) expect((await call('POST', '/v1/collections', { key: admin, body: { name, bits: 16 } })).status).toBe(201);
        const limited = (await t.key(['search'], ['e-5', 'a-1', 'c-3'])).secret;
        const list = async (key: string, limit: number, between?: () => Promise<void>) => {
          const got: { names: string[]; next_after: string | null }[] = [];
          let after: string | null = null;
          do {
            const r = await call('GET', `/v1/collections?limit=${limit}${after ? `&after=${after}` : ''}`, { key });
            expect(r.status).toBe(200);
            got.push({ names: r.body.collections.map((x: { name: string }) => x.name), next_after: r.body.next_after });
            after = r.body.next_after;
            await between?.();
          } while (after !== null);
          return got;
        };
        expect(await list(admin, 2)).toEqual([
          { names: ['a-1', 'b-2'], next_after: 'b-2' }, { names: ['c-3', 'd-4'], next_after: 'd-4' }, { names: ['e-5'], next_after: null },
        ]);
        // a limited key pages through its own collections only, whatever lies between them
        expect(await list(limited, 1)).toEqual([
          { names: ['a-1'], next_after: 'a-1' }, { names: ['c-3'], next_after: 'c-3' }, { names: ['e-5'], next_after: null },
        ]);
        expect(await list(limited, 3)).toEqual([{ names: ['a-1', 'c-3', 'e-5'], next_after: null }]);
        // collections created between pages, before or after the cursor, move no other one across it
        const late = ['0-early', 'bb-mid', 'z-late'];
        const during = (await list(admin, 2, async () => {
          const name = late.shift();
          if (name) expect((await call('POST', '/v1/collections', { key: admin, body: { name, bits: 16 } })).status).toBe(201);
        })).flatMap((p) => p.names);
        expect(during).toEqual([...during].sort());
        expect(during.filter((n) => !['0-early', 'bb-mid', 'z-late'].includes(n))).toEqual([...names].sort());
        // the default page is the first 100; a bad page is a 400 naming its parameter
        expect((await call('GET', '/v1/collections', { key: admin })).body.collections).toHaveLength(8);
        for (const [query, field] of [['limit=0', 'limit'], ['limit=1001', 'limit'], ['after=', 'after'], ['after=Bad%20Name', 'after']]) {
          const r = await call('GET', `/v1/collections?${query}`, { key: admin });
          expect({ query, status: r.status, field: r.body.error.field }).toEqual({ query, status: 400, field });
        }
      });

      it('creates, lists, gets and deletes; names are per tenant', async () => {
        const { t, all, col } = await world(128, 4);
        const got = await call('GET', `/v1/collections/${col}`, { key: all });
        expect(got.status).toBe(200);
        expect(got.body).toMatchObject({ name: col, bits: 128, descriptor_dims: 4, count: 0, generation: 0, model_id: null });
        expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 64 } })).status).toBe(409);
        const other = await tenant();
        const otherKey = (await other.key(['admin', 'search'])).secret;
        const same = await call('POST', '/v1/collections', { key: otherKey, body: { name: col, bits: 32, model_id: 'darf-sch-32' } });
        expect(same.status).toBe(201);
        expect(same.body).toMatchObject({ name: col, bits: 32, model_id: 'darf-sch-32' });
        const list = await call('GET', '/v1/collections', { key: all });
        expect(list.body.collections).toEqual([expect.objectContaining({ name: col, bits: 128 })]);
        expect((await call('DELETE', `/v1/collections/${col}`, { key: all })).status).toBe(204);
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).status).toBe(404);
        expect((await call('DELETE', `/v1/collections/${col}`, { key: all })).status).toBe(404);
        // The other tenant's collection of that name is untouched.
        expect((await call('GET', `/v1/collections/${col}`, { key: otherKey })).body.bits).toBe(32);
        void t;
      });

      it('re-creating a deleted collection starts empty', async () => {
        const { all, col } = await world(16);
        await ingest(all, col, [{ id: 'a', code: 'ffff' }]);
        await call('DELETE', `/v1/collections/${col}`, { key: all });
        await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 16 } });
        const got = await call('GET', `/v1/collections/${col}`, { key: all });
        expect(got.body).toMatchObject({ count: 0, generation: 0 });
        expect((await call('GET', `/v1/collections/${col}/items/a`, { key: all })).status).toBe(404);
      });
    });

    describe('items', () => {
      it('ingest is idempotent: re-sending a batch changes nothing and gets the same answer', async () => {
        const { all, col } = await world(64, 2);
        const items = Array.from({ length: 30 }, (_, i) => ({
          id: `img-${String(i).padStart(3, '0')}`,
          code: codeFor(i, 8),
          descriptor: [i % 100, -i % 100],
          metadata: { label: `L${i % 3}`, modality: 'CT', study_uid: '1.2.840.1', patient_ref: 'p-7' },
        }));
        const first = await ingest(all, col, items);
        expect(first.status).toBe(200);
        expect(first.body).toEqual({ ingested: 30, generation: 1, visible: true });
        const again = await ingest(all, col, items);
        expect(again.body).toEqual(first.body);
        const shuffled = await ingest(all, col, [...items].reverse());
        expect(shuffled.body).toEqual(first.body);
        const got = await call('GET', `/v1/collections/${col}`, { key: all });
        expect(got.body).toMatchObject({ count: 30, generation: 1 });
        const item = await call('GET', `/v1/collections/${col}/items/img-007`, { key: all });
        expect(item.body).toEqual({ id: 'img-007', code: codeFor(7, 8), descriptor: [7, -7], metadata: items[7].metadata });
      });

      it('upserts replace items, deletes remove them', async () => {
        const { all, col } = await world(32);
        await ingest(all, col, [{ id: 'a', code: '00000000' }, { id: 'b', code: '00000001', metadata: { label: 'old' } }]);
        const up = await ingest(all, col, [{ id: 'b', code: 'ffffffff', metadata: { label: 'new', body_part: 'CHEST' } }]);
        expect(up.body.generation).toBe(2);
        const b = await call('GET', `/v1/collections/${col}/items/b`, { key: all });
        expect(b.body).toMatchObject({ code: 'ffffffff', metadata: { label: 'new', body_part: 'CHEST' } });
        expect((await call('DELETE', `/v1/collections/${col}/items/a`, { key: all })).status).toBe(204);
        expect((await call('GET', `/v1/collections/${col}/items/a`, { key: all })).status).toBe(404);
        const again = await call('DELETE', `/v1/collections/${col}/items/a`, { key: all });
        expect(again.status).toBe(404);
        expect(again.body.error.code).toBe('item_not_found');
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body).toMatchObject({ count: 1, generation: 3 });
      });

      it('handles ids with slashes and non-ASCII characters in paths', async () => {
        const { all, col } = await world(16);
        const ids = ['CT/000123.jpeg', 'ünïcødé', '\u{1F600}'];
        await ingest(all, col, ids.map((id) => ({ id, code: 'abcd' })));
        for (const id of ids) {
          const r = await call('GET', `/v1/collections/${col}/items/${encodeURIComponent(id)}`, { key: all });
          expect(r.status).toBe(200);
          expect(r.body.id).toBe(id);
        }
      });

      it('refuses a path whose percent-encoding is malformed (400 naming the parameter), rather than reading the id as written', async () => {
        const { all, col } = await world(16);
        const literal = '%E0%A4%A';
        await ingest(all, col, [{ id: literal, code: 'abcd' }]);
        expect((await call('GET', `/v1/collections/${col}/items/${encodeURIComponent(literal)}`, { key: all })).body.id).toBe(literal);
        for (const [method, path] of [['GET', `/v1/collections/${col}/items/%E0%A4%A`], ['DELETE', `/v1/collections/${col}/items/%E0%A4%A`], ['GET', `/v1/collections/${col}/items/%ZZ`]]) {
          const r = await call(method, path, { key: all });
          expect([method, path, r.status, r.body.error.code, r.body.error.field]).toEqual([method, path, 400, 'invalid_path', 'id']);
        }
        expect((await call('GET', `/v1/collections/${col}/items/${encodeURIComponent(literal)}`, { key: all })).status).toBe(200);
      });

      it('keeps an id that starts with U+FEFF apart from the same id without it', async () => {
        const { all, col } = await world(16);
        const ids = ['\ufeffx', 'x'];
        await ingest(all, col, [{ id: ids[0], code: 'ffff' }, { id: ids[1], code: '0000' }]);
        const s = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff' } });
        expect(s.body.results.map((h: { id: string }) => h.id)).toEqual(ids);
        for (const id of ids) {
          const r = await call('GET', `/v1/collections/${col}/items/${encodeURIComponent(id)}`, { key: all });
          expect(r.status).toBe(200);
          expect(r.body.id).toBe(id);
        }
      });

      it('erases every item of one patient or one study, across shards, and audits the ids', async () => {
        const { t, all, col } = await world(16);
        const n = 3 * harness().shardMaxItems + 5;
        const meta = (i: number) => ({ patient_ref: `p-${i % 4}`, study_uid: `1.2.${i % 5}` });
        const items = Array.from({ length: n }, (_, i) => ({ id: `img-${String(i).padStart(4, '0')}`, code: codeFor(i, 2), metadata: meta(i) }));
        expect((await ingest(all, col, items)).status).toBe(200);
        const before = (await call('GET', `/v1/collections/${col}`, { key: all })).body;
        expect(before.shards).toBeGreaterThan(2);
        const ofP1 = items.filter((_, i) => i % 4 === 1).map((it) => it.id);

        const erased = await call('POST', `/v1/collections/${col}/erase`, { key: all, body: { patient_ref: 'p-1' } });
        expect(erased.status).toBe(200);
        expect(erased.body).toEqual({ erased: ofP1.length, remaining: 0, generation: before.generation + 1, visible: true });
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.count).toBe(n - ofP1.length);
        expect((await call('GET', `/v1/collections/${col}/items/${ofP1[0]}`, { key: all })).status).toBe(404);
        expect((await call('GET', `/v1/collections/${col}/items/img-0002`, { key: all })).status).toBe(200);
        const found = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: codeFor(1, 2), k: 1000 } });
        expect(found.body.results).toHaveLength(n - ofP1.length);
        expect(found.body.results.filter((r: { metadata: { patient_ref: string } }) => r.metadata.patient_ref === 'p-1')).toEqual([]);
        const log = await call('GET', '/v1/audit', { key: all });
        expect(log.body.events.find((e: { action: string }) => e.action === 'items.erase')).toMatchObject({ action: 'items.erase', collection: col, detail: { by: 'patient_ref', count: ofP1.length, ids: ofP1, remaining: 0 } });

        const study = items.filter((_, i) => i % 5 === 3 && i % 4 !== 1).length;
        expect((await call('POST', `/v1/collections/${col}/erase`, { key: all, body: { study_uid: '1.2.3' } })).body.erased).toBe(study);
        // Nothing left to erase: no change, same generation.
        const again = await call('POST', `/v1/collections/${col}/erase`, { key: all, body: { patient_ref: 'p-1' } });
        expect(again.body).toEqual({ erased: 0, remaining: 0, generation: before.generation + 2, visible: true });

        const bad: [unknown, string, string][] = [
          [{}, 'invalid_field', 'patient_ref'],
          [{ patient_ref: 'p-2', study_uid: '1.2.4' }, 'invalid_field', 'study_uid'],
          [{ patient_ref: '' }, 'invalid_field', 'patient_ref'],
          [{ study_uid: 'not-a-uid' }, 'invalid_field', 'study_uid'],
          [{ patient_ref: 'p-2', label: 'x' }, 'unknown_field', 'label'],
        ];
        for (const [body, code, field] of bad) {
          const r = await call('POST', `/v1/collections/${col}/erase`, { key: all, body });
          expect({ body, status: r.status, code: r.body.error.code, field: r.body.error.field }).toEqual({ body, status: 400, code, field });
        }
        expect((await call('POST', `/v1/collections/${col}/erase`, { key: all, body: {} })).body.error.message).toBe('patient_ref or study_uid is required (give exactly one)');
        const ingestOnly = (await t.key(['search', 'ingest'])).secret;
        const refused = await call('POST', `/v1/collections/${col}/erase`, { key: ingestOnly, body: { patient_ref: 'p-2' } });
        expect([refused.status, refused.body.error.code]).toEqual([403, 'missing_scope']);
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.count).toBe(n - ofP1.length - study);
      });

      it('concurrent ingests into one collection lose nothing', async () => {
        const { all, col } = await world(64);
        const batches = Array.from({ length: 8 }, (_, b) =>
          Array.from({ length: 25 }, (_, i) => ({ id: `b${b}-i${String(i).padStart(2, '0')}`, code: codeFor(b * 25 + i, 8, 13) })),
        );
        const replies = await Promise.all(batches.map((items) => ingest(all, col, items)));
        expect(replies.map((r) => r.status)).toEqual(batches.map(() => 200));
        const got = await call('GET', `/v1/collections/${col}`, { key: all });
        expect(got.body.count).toBe(200);
        expect(got.body.shards).toBeGreaterThan(1);
        for (const [b, i] of [[0, 0], [3, 12], [7, 24]]) {
          const r = await call('GET', `/v1/collections/${col}/items/b${b}-i${String(i).padStart(2, '0')}`, { key: all });
          expect(r.body.code).toBe(codeFor(b * 25 + i, 8, 13));
        }
      });
    });

    describe('search', () => {
      it('ranks by (distance, id bytewise) across shards, matching a brute-force oracle', async () => {
        const { all, col } = await world(64);
        const n = harness().shardMaxItems * 3 + 17;
        const ids = Array.from({ length: n }, (_, i) => (i % 5 === 0 ? `é-${i}` : `id-${(i * 7919) % 1000}-${i}`));
        const items = ids.map((id, i) => ({ id, code: codeFor(i, 8) }));
        for (let s = 0; s < items.length; s += 100) expect((await ingest(all, col, items.slice(s, s + 100))).status).toBe(200);
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.shards).toBeGreaterThan(2);
        const query = codeFor(3, 8);
        const oracle = items
          .map((it) => ({ id: it.id, distance: hexDistance(it.code, query) }))
          .sort((a, b) => a.distance - b.distance || utf8Compare(a.id, b.id));
        for (const k of [1, 10, 57, n + 5]) {
          const r = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: query, k } });
          expect(r.status).toBe(200);
          expect(r.body.results.map((x: { id: string; distance: number }) => ({ id: x.id, distance: x.distance }))).toEqual(oracle.slice(0, k));
          expect(r.body.truncated).toBe(false);
        }
        const b64 = hexToBase64(query);
        const viaB64 = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: b64, k: 10 } });
        expect(viaB64.body.results.map((x: { id: string }) => x.id)).toEqual(oracle.slice(0, 10).map((x) => x.id));
      });

      it('returns metadata and honours radius with a truncation flag', async () => {
        const { all, col } = await world(16);
        await ingest(all, col, [
          { id: 'a', code: 'ffff', metadata: { label: 'pneumonia', modality: 'CR' } },
          { id: 'b', code: 'fffe' },
          { id: 'c', code: 'fff0' },
          { id: 'd', code: '0000' },
        ]);
        const near = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff', k: 10, radius: 4 } });
        // Each result explains itself: without a query descriptor the score is 1 - distance / bits.
        expect(near.body.results).toEqual([
          { id: 'a', distance: 0, similarity: null, score: 1, metadata: { label: 'pneumonia', modality: 'CR' } },
          { id: 'b', distance: 1, similarity: null, score: 1 - 1 / 16, metadata: {} },
          { id: 'c', distance: 4, similarity: null, score: 1 - 4 / 16, metadata: {} },
        ]);
        expect(near.body.truncated).toBe(false);
        const cut = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff', k: 2, radius: 4 } });
        expect(cut.body.results.map((x: { id: string }) => x.id)).toEqual(['a', 'b']);
        expect(cut.body.truncated).toBe(true);
        expect(cut.body.generation).toBe(1);
      });

      it('searches an empty collection', async () => {
        const { all, col } = await world(256);
        const r = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ab'.repeat(32) } });
        expect(r.body).toMatchObject({ generation: 0, truncated: false, results: [] });
        // A collection without a calibrated model: every answer still says so.
        expect(r.body.ood).toMatchObject({ score: null, threshold: null, verdict: 'not_assessed' });
        expect(r.body.ood.reasons[0]).toMatch(/no model with an OOD calibration/);
      });
    });

    describe('clinician controls', () => {
      const meta = (i: number) => ({
        label: i % 2 ? 'glioma' : 'meningioma',
        modality: i % 3 ? 'MR' : 'CT',
        study_uid: `1.2.${i % 4}`,
        patient_ref: `p${i % 5}`,
      });

      it('a collection without descriptors refuses content_weight, as search by image does, and an empty descriptor re-ranks nothing', async () => {
        const { all, col } = await world(16);
        expect((await ingest(all, col, [{ id: 'a', code: 'ffff' }, { id: 'b', code: 'fffe' }])).status).toBe(200);
        const weighted = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff', descriptor: [], content_weight: 1 } });
        expect([weighted.status, weighted.body.error.field]).toEqual([400, 'content_weight']);
        expect(weighted.body.error.message).toMatch(/stores none/);
        const plain = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff', descriptor: [] } });
        expect(plain.status).toBe(200);
        expect(plain.body.results.map((r: { id: string; similarity: number | null }) => [r.id, r.similarity])).toEqual([['a', null], ['b', null]]);
      });

      it('filters on metadata and leaves out the query\'s own study and patient, still returning k', async () => {
        const { all, col } = await world(16);
        const items = Array.from({ length: 300 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, code: codeFor(i, 2, 11), metadata: meta(i) }));
        for (let s = 0; s < items.length; s += 100) expect((await ingest(all, col, items.slice(s, s + 100))).status).toBe(200);
        const query = codeFor(2, 2, 11);
        const body = { code: query, k: 20, filter: { label: 'glioma', modality: ['MR'] }, exclude_study_uid: '1.2.1', exclude_patient_ref: 'p3' };
        const oracle = items
          .filter((it) => it.metadata.label === 'glioma' && it.metadata.modality === 'MR' && it.metadata.study_uid !== '1.2.1' && it.metadata.patient_ref !== 'p3')
          .map((it) => ({ id: it.id, distance: hexDistance(it.code, query) }))
          .sort((a, b) => a.distance - b.distance || utf8Compare(a.id, b.id));
        expect(oracle.length).toBeGreaterThan(20);
        const r = await call('POST', `/v1/collections/${col}/search`, { key: all, body });
        expect(r.status).toBe(200);
        expect(r.body.results.map((x: { id: string; distance: number }) => ({ id: x.id, distance: x.distance }))).toEqual(oracle.slice(0, 20));
        const within = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { ...body, k: 1000, radius: 16 } });
        expect(within.body.results.map((x: { id: string }) => x.id)).toEqual(oracle.map((x) => x.id));
        expect(within.body.truncated).toBe(false);
      });

      it('gives the identical re-ranked list whatever the ingest order and shard layout', async () => {
        const t = await tenant();
        const all = (await t.key(['search', 'ingest', 'admin'])).secret;
        const items = Array.from({ length: 150 }, (_, i) => ({
          id: `s${(i * 37) % 150}`,
          code: codeFor(i, 2, 5),
          descriptor: [i % 7, (i * 3) % 5, -(i % 4), 2],
          metadata: meta(i),
        }));
        const lists = [];
        for (const [order, batch] of [[items, 150], [[...items].reverse(), 7], [[...items].sort((a, b) => a.descriptor[0] - b.descriptor[0]), 40]] as const) {
          const col = `c-${uniq()}`;
          expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 16, descriptor_dims: 4 } })).status).toBe(201);
          for (let s = 0; s < order.length; s += batch) expect((await ingest(all, col, order.slice(s, s + batch))).status).toBe(200);
          const r = await call('POST', `/v1/collections/${col}/search`, {
            key: all, body: { code: codeFor(1, 2, 5), k: 30, descriptor: [1, 2, 0, 2], content_weight: 0.3, filter: { modality: 'MR' } },
          });
          expect(r.status).toBe(200);
          lists.push(r.body.results);
        }
        expect(lists[0]).toHaveLength(30);
        expect(lists[1]).toEqual(lists[0]);
        expect(lists[2]).toEqual(lists[0]);
      });

      it('re-ranks by descriptor correlation with the requested weight, explaining each result', async () => {
        const { all, col } = await world(16, 4);
        // Same code for all: Hamming alone cannot order them; content decides, then id.
        await ingest(all, col, [
          { id: 'a', code: 'ffff', descriptor: [1, 2, 3, 4] },
          { id: 'b', code: 'ffff', descriptor: [4, 3, 2, 1] },
          { id: 'c', code: 'fffe', descriptor: [10, 20, 30, 40] },
          { id: 'd', code: 'ffff', descriptor: [1, 2, 4, 3] },
        ]);
        const search = (extra: Record<string, unknown>) => call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'ffff', k: 4, ...extra } });
        const ties = await search({ descriptor: [1, 2, 3, 4], content_weight: 0 });
        expect(ties.body.results.map((x: { id: string }) => x.id)).toEqual(['a', 'd', 'b', 'c']);
        expect(ties.body.results[2]).toMatchObject({ id: 'b', distance: 0, similarity: -1, score: 1 });
        const content = await search({ descriptor: [1, 2, 3, 4], content_weight: 1 });
        expect(content.body.results.map((x: { id: string }) => x.id)).toEqual(['a', 'c', 'd', 'b']);
        expect(content.body.results[1]).toMatchObject({ id: 'c', distance: 1, similarity: 1, score: 1 });
        const plain = await search({});
        expect(plain.body.results.map((x: { id: string }) => x.id)).toEqual(['a', 'b', 'd', 'c']);
      });
    });

    describe('search by image without an encoder', () => {
      // Neither app here has an inference backend or a model (test/image-search.test.ts has
      // both): what remains is the refusals, which must hold on both runtimes.
      const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      it('refuses a collection that records no model (409), before any encoding', async () => {
        const { all, col } = await world(64);
        const r = await call('POST', `/v1/collections/${col}/search/image`, { key: all, raw: png, headers: { 'content-type': 'image/png' } });
        expect(r.status).toBe(409);
        expect(r.body.error.code).toBe('model_mismatch');
      });

      it('answers 503 naming the way out when no encoder can run', async () => {
        const { all } = await world(64);
        const col = `m-${uniq()}`;
        expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 64, model_id: mednistCard.model_id } })).status).toBe(201);
        const r = await call('POST', `/v1/collections/${col}/search/image?k=5`, { key: all, raw: png, headers: { 'content-type': 'image/png' } });
        expect(r.status).toBe(503);
        expect(r.body.error.code).toBe('encoder_unavailable');
        // Workers cannot run the model in-process: the message points at client-side encoding.
        if (runtime === 'workers') expect(r.body.error.message).toMatch(/encode the image on the client/);
        const wrongType = await call('POST', `/v1/collections/${col}/search/image`, { key: all, raw: png, headers: { 'content-type': 'text/plain' } });
        expect(wrongType.status).toBe(415);
      });

      it('reads only decimal numbers from the query string: an empty or hex value is a 400 naming it, before any encoding', async () => {
        const { all } = await world(64);
        const col = `m-${uniq()}`;
        expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 64, model_id: mednistCard.model_id } })).status).toBe(201);
        const image = (query: string) => call('POST', `/v1/collections/${col}/search/image?${query}`, { key: all, raw: png, headers: { 'content-type': 'image/png' } });
        for (const [query, field] of [['k=0x10', 'k'], ['k=', 'k'], ['radius=', 'radius'], ['radius=three', 'radius'], ['content_weight=', 'content_weight'], ['content_weight=0x1', 'content_weight']]) {
          const r = await image(query);
          expect({ query, status: r.status, field: r.body.error.field }).toEqual({ query, status: 400, field });
        }
        // decimal values pass validation and reach the encoder (none here: 503)
        expect((await image('k=5&radius=3e0')).body.error.code).toBe('encoder_unavailable');
        const audit = await call('GET', '/v1/audit?limit=', { key: all });
        expect([audit.status, audit.body.error.field]).toEqual([400, 'limit']);
      });

      it('says a one-value query parameter is given twice (400 naming it); a filter may repeat', async () => {
        const { all } = await world(64);
        const col = `m-${uniq()}`;
        expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 64, model_id: mednistCard.model_id } })).status).toBe(201);
        const image = `/v1/collections/${col}/search/image`;
        const cases: [string, string, string][] = [
          [`${image}?k=1&k=2`, 'k', 'k is given twice; give it once'],
          [`${image}?k=1&k=1&k=1`, 'k', 'k is given 3 times; give it once'],
          [`${image}?allow_ood=true&allow_ood=false`, 'allow_ood', 'allow_ood is given twice; give it once'],
          [`${image}?exclude_study_uid=1.2&exclude_study_uid=1.3`, 'exclude_study_uid', 'exclude_study_uid is given twice; give it once'],
          ['/v1/audit?limit=5&limit=5', 'limit', 'limit is given twice; give it once'],
          ['/v1/usage?format=csv&format=json', 'format', 'format is given twice; give it once'],
          ['/v1/usage?from=2026-11-01&from=2026-11-02', 'from', 'from is given twice; give it once'],
        ];
        const send = (path: string) => (path.startsWith(image) ? call('POST', path, { key: all, raw: png, headers: { 'content-type': 'image/png' } }) : call('GET', path, { key: all }));
        for (const [path, field, message] of cases) {
          const r = await send(path);
          expect({ path, status: r.status, code: r.body.error.code, field: r.body.error.field, message: r.body.error.message })
            .toEqual({ path, status: 400, code: 'repeated_parameter', field, message });
        }
        // several values of a filter are its list, and a bad one is named as before
        expect((await send(`${image}?modality=CT&modality=MR`)).body.error.code).toBe('encoder_unavailable');
        const empty = await send(`${image}?modality=CT&modality=`);
        expect([empty.status, empty.body.error.code, empty.body.error.field]).toEqual([400, 'invalid_field', 'modality.1']);
        const many = await send(`${image}?${Array.from({ length: 101 }, (_, i) => `label=l${i}`).join('&')}`);
        expect([many.status, many.body.error.field, many.body.error.message]).toEqual([400, 'label', 'label names at most 100 values']);
      });

      it('refuses a query parameter whose percent-encoding is malformed (400 naming it), rather than filtering or excluding by the text as written', async () => {
        const { all } = await world(64);
        const col = `m-${uniq()}`;
        expect((await call('POST', '/v1/collections', { key: all, body: { name: col, bits: 64, model_id: mednistCard.model_id } })).status).toBe(201);
        const image = (query: string) => call('POST', `/v1/collections/${col}/search/image?${query}`, { key: all, raw: png, headers: { 'content-type': 'image/png' } });
        // %E9 is "é" in Latin-1, not UTF-8: read as the literal "%E9", the exclusion left out no one
        for (const [query, field] of [['exclude_patient_ref=%E9', 'exclude_patient_ref'], ['k=5&label=a%ZZ', 'label'], ['modality=CT&modality=%E0%A4%A', 'modality'], ['exclude%E9=x', 'exclude%E9']]) {
          const r = await image(query);
          expect({ query, status: r.status, code: r.body.error.code, field: r.body.error.field }).toEqual({ query, status: 400, code: 'invalid_field', field });
          expect(r.body.error.message).toMatch(/is not valid percent-encoded UTF-8/);
        }
        // well-formed escapes, "%" itself as %25 among them, pass and reach the encoder (none here: 503)
        for (const query of ['exclude_patient_ref=%C3%A9', 'label=100%25', 'label=a+b']) expect((await image(query)).body.error.code, query).toBe('encoder_unavailable');
      });
    });

    describe('order of checks: the key first, then the request', () => {
      const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      const isoDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
      /** Units billed to the key's tenant, in a window around now (a run across midnight still sees them). */
      const billed = async (key: string): Promise<number> => {
        const r = await call('GET', `/v1/usage?from=${isoDay(Date.now() - 86_400_000)}&to=${isoDay(Date.now() + 86_400_000)}`, { key });
        expect(r.status).toBe(200);
        return r.body.totals.total;
      };
      type Send = { path: string; body?: unknown; raw?: BodyInit; headers?: Record<string, string> };
      interface Outcome { what: string; status: number; code: string | undefined; field?: string | undefined }

      it('every /v1 route answers a bad key (401) and a key that may not use it (403) before it reads the request; only then is a bad body, path or query a 400 naming the field, and nothing is billed', async () => {
        const { t, all, col } = await world(16);
        const limited = (await t.key(['search', 'ingest', 'admin'], [`c-${uniq()}`])).secret;
        // A key lacking what the route needs: a scope, or (encode) both of the scopes it takes.
        const lacking: Record<string, string> = {
          search: (await t.key(['ingest', 'admin'])).secret,
          ingest: (await t.key(['search', 'admin'])).secret,
          admin: (await t.key(['search', 'ingest'])).secret,
          'search|ingest': (await t.key(['admin'])).secret,
        };
        const image = (query: string): Send => ({ path: `/v1/collections/${col}/search/image?${query}`, raw: png, headers: { 'content-type': 'image/png' } });
        // Per route: a request refused for its shape, what the route needs of the key ('operator',
        // a scope, 'search|ingest' for either, '' for any tenant key), and the 400 it gets from a
        // key that may use the route. null: the route takes nothing a request can get wrong.
        type Row = { send: Send; needs: string; code: string; field?: string };
        const rows: Record<string, Row | null> = {
          'POST /v1/admin/tenants': { send: { path: '/v1/admin/tenants', body: { name: 'Bad Name' } }, needs: 'operator', code: 'invalid_field', field: 'name' },
          'GET /v1/admin/tenants': { send: { path: '/v1/admin/tenants?limit=0' }, needs: 'operator', code: 'invalid_field', field: 'limit' },
          'POST /v1/admin/tenants/{tenant}/keys': { send: { path: `/v1/admin/tenants/${t.id}/keys`, body: { scopes: ['root'] } }, needs: 'operator', code: 'invalid_field', field: 'scopes.0' },
          'GET /v1/admin/tenants/{tenant}/keys': { send: { path: `/v1/admin/tenants/${t.id}/keys?after=` }, needs: 'operator', code: 'invalid_field', field: 'after' },
          'POST /v1/admin/keys/{key}/rotate': null,
          'DELETE /v1/admin/keys/{key}': null,
          'GET /v1/admin/tenants/{tenant}/plan': null,
          'PUT /v1/admin/tenants/{tenant}/plan': { send: { path: `/v1/admin/tenants/${t.id}/plan`, body: { rate_per_second: 0, burst: 1, monthly_quota: null } }, needs: 'operator', code: 'invalid_field', field: 'rate_per_second' },
          'GET /v1/admin/tenants/{tenant}/usage': { send: { path: `/v1/admin/tenants/${t.id}/usage?format=xml` }, needs: 'operator', code: 'invalid_field', field: 'format' },
          'POST /v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest': { send: { path: `/v1/admin/tenants/${t.id}/collections/BAD!/adopt-manifest` }, needs: 'operator', code: 'invalid_path', field: 'collection' },
          'GET /v1/admin/orphans': null,
          'DELETE /v1/admin/orphans': null,
          'GET /v1/collections': null,
          'POST /v1/collections': { send: { path: '/v1/collections', body: { name: `c-${uniq()}`, bits: 48 } }, needs: 'admin', code: 'invalid_field', field: 'bits' },
          'GET /v1/collections/{collection}': { send: { path: '/v1/collections/BAD!' }, needs: '', code: 'invalid_path', field: 'collection' },
          'DELETE /v1/collections/{collection}': { send: { path: '/v1/collections/BAD!' }, needs: 'admin', code: 'invalid_path', field: 'collection' },
          'POST /v1/collections/{collection}/items': { send: { path: `/v1/collections/${col}/items`, body: { items: [] } }, needs: 'ingest', code: 'invalid_field', field: 'items' },
          'GET /v1/collections/{collection}/items/{id}': { send: { path: `/v1/collections/${col}/items/a%0Ab` }, needs: 'search', code: 'invalid_path', field: 'id' },
          'DELETE /v1/collections/{collection}/items/{id}': { send: { path: `/v1/collections/${col}/items/a%0Ab` }, needs: 'ingest', code: 'invalid_path', field: 'id' },
          'POST /v1/collections/{collection}/search': { send: { path: `/v1/collections/${col}/search`, body: { code: 'ffff', k: 0 } }, needs: 'search', code: 'invalid_field', field: 'k' },
          'POST /v1/collections/{collection}/search/image': { send: image('k=0'), needs: 'search', code: 'invalid_field', field: 'k' },
          'POST /v1/collections/{collection}/erase': { send: { path: `/v1/collections/${col}/erase`, body: {} }, needs: 'admin', code: 'invalid_field', field: 'patient_ref' },
          'POST /v1/encode': { send: { path: '/v1/encode', raw: new Uint8Array(0), headers: { 'content-type': 'image/png' } }, needs: 'search|ingest', code: 'empty_body' },
          'GET /v1/usage': { send: { path: '/v1/usage?format=xml' }, needs: 'admin', code: 'invalid_field', field: 'format' },
          'GET /v1/audit': { send: { path: '/v1/audit?limit=0' }, needs: 'admin', code: 'invalid_field', field: 'limit' },
        };
        // The model routes are the Node entry's only (the Worker serves none).
        if (runtime === 'node') {
          const long = 'm'.repeat(129);
          rows['GET /v1/models'] = null;
          rows['GET /v1/models/{model_id}/card'] = { send: { path: `/v1/models/${long}/card` }, needs: '', code: 'invalid_path', field: 'model_id' };
          rows['GET /v1/models/{model_id}/onnx'] = { send: { path: `/v1/models/${long}/onnx` }, needs: '', code: 'invalid_path', field: 'model_id' };
        }
        // Every /v1 route of the document has its row: a new route fails here until it says what it validates.
        const doc = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
        const v1 = Object.entries(doc.paths).filter(([p]) => p.startsWith('/v1/')).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
        expect(Object.keys(rows).sort()).toEqual(v1.sort());

        const got: Outcome[] = [];
        const want: Outcome[] = [];
        for (const [route, row] of Object.entries(rows)) {
          if (!row) continue;
          const [method, template] = route.split(' ');
          const { path, ...opts } = row.send;
          const expectAs = async (who: string, key: string | undefined, status: number, code: string, field?: string) => {
            const r = await call(method, path, { ...opts, key });
            got.push({ what: `${route} ${who}`, status: r.status, code: r.body?.error?.code, field: r.body?.error?.field });
            want.push({ what: `${route} ${who}`, status, code, field });
          };
          await expectAs('without a key', undefined, 401, 'missing_key');
          await expectAs('with an unknown key', 'mh_wrong', 401, 'invalid_key');
          if (row.needs === 'operator') {
            await expectAs('with a tenant key', all, 403, 'operator_only');
            await expectAs('with the operator key', op(), 400, row.code, row.field);
            continue;
          }
          await expectAs('with the operator key', op(), 403, 'tenant_only');
          if (row.needs) await expectAs(`with a key lacking ${row.needs}`, lacking[row.needs], 403, 'missing_scope');
          // the collection named in the path is the key's to use or not, whatever else the request says
          if (template.includes('{collection}')) await expectAs('with a key limited to another collection', limited, 403, 'collection_forbidden');
          // usage is the whole tenant's, which a key limited to collections may not read
          if (route === 'GET /v1/usage') await expectAs('with a key limited to collections', limited, 403, 'collection_limited');
          await expectAs('with a key that may use it', all, 400, row.code, row.field);
        }
        expect(got).toEqual(want);
        // POST /v1/collections names its collection in the body: a key's collection limit is checked
        // once the body is read, so the body's own mistakes come first there.
        const named = await call('POST', '/v1/collections', { key: limited, body: { name: `c-${uniq()}`, bits: 48 } });
        expect([named.status, named.body.error.code, named.body.error.field]).toEqual([400, 'invalid_field', 'bits']);
        const forbidden = await call('POST', '/v1/collections', { key: limited, body: { name: `c-${uniq()}`, bits: 16 } });
        expect([forbidden.status, forbidden.body.error.code]).toEqual([403, 'collection_forbidden']);
        // None of it was billed, nor audited: the log holds the keys and the collection made above.
        expect(await billed(all)).toBe(0);
        const log = await call('GET', '/v1/audit?limit=1000', { key: all });
        expect(new Set(log.body.events.map((e: { action: string }) => e.action))).toEqual(new Set(['key.create', 'collection.create']));
      });

      it('a malformed Idempotency-Key is a 400 on every /v1 route, after the key and its 403s and before the route reads anything; a well-formed one is ignored where it is not taken', async () => {
        const { t, all, col } = await world(16);
        const limited = (await t.key(['search', 'ingest', 'admin'], [`c-${uniq()}`])).secret;
        // the admin routes would rotate or revoke this key, were the request not refused
        const victim = await t.key(['search']);
        const doc = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { security: Record<string, string[]>[]; 'x-whole-tenant'?: boolean }>> };
        const params: Record<string, string> = { collection: col, id: 'a', tenant: t.id, key: victim.id, model_id: 'any-model' };
        const got: Outcome[] = [];
        const want: Outcome[] = [];
        for (const [template, ops] of Object.entries(doc.paths)) {
          if (!template.startsWith('/v1/')) continue;
          const path = template.replace(/\{(\w+)\}/g, (_, p: string) => params[p]);
          for (const [method, operation] of Object.entries(ops)) {
            const route = `${method.toUpperCase()} ${template}`;
            // no body: a route that read it would answer 415 or 400 for that instead
            const expectAs = async (who: string, key: string | undefined, idempotencyKey: string, status: number, code: string, field?: string) => {
              const r = await call(method.toUpperCase(), path, { key, headers: { 'idempotency-key': idempotencyKey } });
              got.push({ what: `${route} ${who}`, status: r.status, code: r.body?.error?.code, field: r.body?.error?.field });
              want.push({ what: `${route} ${who}`, status, code, field });
            };
            await expectAs('without a key', undefined, 'has space', 401, 'missing_key');
            const operator = operation.security.some((r) => 'operator' in r);
            await expectAs(operator ? 'with a tenant key' : 'with the operator key', operator ? all : op(), '', 403, operator ? 'operator_only' : 'tenant_only');
            // an operator route names a collection too (adopt-manifest): any tenant key is refused there as such
            if (!operator && template.includes('{collection}')) await expectAs('with a key limited to another collection', limited, 'x'.repeat(256), 403, 'collection_forbidden');
            if (operation['x-whole-tenant']) await expectAs('with a key limited to collections', limited, 'has space', 403, 'collection_limited');
            for (const bad of ['has space', '', 'x'.repeat(256), 'caf\u00e9']) {
              await expectAs(`with a key that may use it and Idempotency-Key ${JSON.stringify(bad.slice(0, 8))}`, operator ? op() : all, bad, 400, 'invalid_idempotency_key', 'Idempotency-Key');
            }
          }
        }
        expect(got).toEqual(want);
        // Nothing was done: the key neither rotated nor revoked, the collection not deleted, nothing billed.
        expect((await call('GET', `/v1/collections/${col}`, { key: victim.secret })).status).toBe(200);
        expect(await billed(all)).toBe(0);
        // An unknown route is a 404 whatever its headers.
        for (const key of [undefined, all]) {
          const r = await call('GET', '/v1/nope', { key, headers: { 'idempotency-key': 'has space' } });
          expect([r.status, r.body.error.code]).toEqual([404, 'route_not_found']);
        }
        // A well-formed key (255 characters at most) where none is taken: ignored, the request
        // runs each time and is never a replay.
        for (const key of ['k-1', 'k-1', 'x'.repeat(255)]) {
          const r = await call('GET', `/v1/collections/${col}`, { key: all, headers: { 'idempotency-key': key } });
          expect([r.status, r.headers.get('idempotent-replayed')]).toEqual([200, null]);
        }
      });

      it('shape checks made in the handlers keep that order, before any lookup: a usage window with from after to, a search by image with exclude_own_study and exclude_study_uid', async () => {
        const { t, all, col } = await world(16);
        const searchOnly = (await t.key(['search'])).secret;
        const ingestOnly = (await t.key(['ingest'])).secret;
        const limited = (await t.key(['search', 'ingest', 'admin'], [`c-${uniq()}`])).secret;
        const stranger = (await (await tenant()).key(['search', 'ingest', 'admin'])).secret;
        const backwards = 'from=2026-11-02&to=2026-11-01';
        const both = 'exclude_own_study=true&exclude_study_uid=1.2.3';
        const missing = `c-${uniq()}`;
        const dicom = { raw: png, headers: { 'content-type': 'application/dicom' } };
        const cases: Array<[string, () => Promise<Reply>, number, string, string?]> = [
          ['usage, from after to: no key', () => call('GET', `/v1/usage?${backwards}`), 401, 'missing_key'],
          ['usage, from after to: a key without admin', () => call('GET', `/v1/usage?${backwards}`, { key: searchOnly }), 403, 'missing_scope'],
          ['usage, from after to: a key limited to collections', () => call('GET', `/v1/usage?${backwards}`, { key: limited }), 403, 'collection_limited'],
          ['usage, from after to: an admin key', () => call('GET', `/v1/usage?${backwards}`, { key: all }), 400, 'invalid_field', 'from'],
          ["a tenant's usage, from after to: a tenant key", () => call('GET', `/v1/admin/tenants/${t.id}/usage?${backwards}`, { key: all }), 403, 'operator_only'],
          ["a tenant's usage, from after to: the operator", () => call('GET', `/v1/admin/tenants/${t.id}/usage?${backwards}`, { key: op() }), 400, 'invalid_field', 'from'],
          // the window is the request's own mistake, whether or not the tenant exists
          ["an unknown tenant's usage, from after to", () => call('GET', `/v1/admin/tenants/tn_nope/usage?${backwards}`, { key: op() }), 400, 'invalid_field', 'from'],
          ["an unknown tenant's usage, not a calendar date", () => call('GET', '/v1/admin/tenants/tn_nope/usage?from=2026-02-30', { key: op() }), 400, 'invalid_field', 'from'],
          ["an unknown tenant's usage, over a year", () => call('GET', '/v1/admin/tenants/tn_nope/usage?from=2020-01-01&to=2026-01-01', { key: op() }), 400, 'invalid_field', 'from'],
          ['image, both exclusions: no key', () => call('POST', `/v1/collections/${col}/search/image?${both}`, dicom), 401, 'missing_key'],
          ['image, both exclusions: a key without search', () => call('POST', `/v1/collections/${col}/search/image?${both}`, { ...dicom, key: ingestOnly }), 403, 'missing_scope'],
          ['image, both exclusions: a key limited to another collection', () => call('POST', `/v1/collections/${col}/search/image?${both}`, { ...dicom, key: limited }), 403, 'collection_forbidden'],
          ['image, both exclusions: a collection without a model', () => call('POST', `/v1/collections/${col}/search/image?${both}`, { ...dicom, key: all }), 400, 'invalid_field', 'exclude_own_study'],
          ['image, both exclusions: no such collection', () => call('POST', `/v1/collections/${missing}/search/image?${both}`, { ...dicom, key: all }), 400, 'invalid_field', 'exclude_own_study'],
          ["image, both exclusions: another tenant's collection", () => call('POST', `/v1/collections/${col}/search/image?${both}`, { ...dicom, key: stranger }), 400, 'invalid_field', 'exclude_own_study'],
          ['image, own study of a PNG: no such collection', () => call('POST', `/v1/collections/${missing}/search/image?exclude_own_study=true`, { key: all, raw: png, headers: { 'content-type': 'image/png' } }), 400, 'invalid_field', 'exclude_own_study'],
          ['image, not an image type: no such collection', () => call('POST', `/v1/collections/${missing}/search/image`, { key: all, raw: png, headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type'],
        ];
        const got: Outcome[] = [];
        const want: Outcome[] = [];
        for (const [what, send, status, code, field] of cases) {
          const r = await send();
          got.push({ what, status: r.status, code: r.body?.error?.code, field: r.body?.error?.field });
          want.push({ what, status, code, field });
        }
        expect(got).toEqual(want);
        expect(await billed(all)).toBe(0);
      });

      it('the OpenAPI document states what each /v1 route needs of the key, as the service enforces it', async () => {
        const doc = (await call('GET', '/openapi.json')).body as {
          paths: Record<string, Record<string, { security?: Record<string, string[]>[]; 'x-whole-tenant'?: boolean }>>;
          components: { securitySchemes: Record<string, { type: string; scheme: string }> };
        };
        expect(doc.components.securitySchemes).toEqual({
          bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
          operator: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
        });
        const security = (path: string, method: string) => doc.paths[path][method].security;
        expect(security('/v1/admin/tenants', 'post')).toEqual([{ operator: [] }]);
        expect(security('/v1/admin/tenants/{tenant}/usage', 'get')).toEqual([{ operator: [] }]);
        expect(security('/v1/collections', 'get')).toEqual([{ bearer: [] }]);
        expect(security('/v1/collections', 'post')).toEqual([{ bearer: ['admin'] }]);
        expect(security('/v1/collections/{collection}/items', 'post')).toEqual([{ bearer: ['ingest'] }]);
        expect(security('/v1/collections/{collection}/search', 'post')).toEqual([{ bearer: ['search'] }]);
        expect(security('/v1/collections/{collection}/search/image', 'post')).toEqual([{ bearer: ['search'] }]);
        // either scope: two requirements, one of which is enough
        expect(security('/v1/encode', 'post')).toEqual([{ bearer: ['search'] }, { bearer: ['ingest'] }]);
        expect(security('/v1/usage', 'get')).toEqual([{ bearer: ['admin'] }]);
        // usage alone refuses a key limited to collections (403 collection_limited)
        const whole = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).filter(([, o]) => o['x-whole-tenant'] !== undefined).map(([m]) => `${m} ${path}`));
        expect(whole).toEqual(['get /v1/usage']);
        expect(doc.paths['/v1/usage'].get['x-whole-tenant']).toBe(true);
        // every /v1 operation states one; the service routes need no key
        for (const [path, ops] of Object.entries(doc.paths)) {
          for (const [method, operation] of Object.entries(ops)) {
            if (path.startsWith('/v1/')) expect(operation.security?.length, `${method} ${path}`).toBeGreaterThan(0);
            else expect(operation.security, `${method} ${path}`).toBeUndefined();
          }
        }
        // and the /docs page says it in words
        const page = (await call('GET', '/docs')).body as string;
        expect(page).toContain('Key: a tenant key with the &quot;search&quot; or the &quot;ingest&quot; scope');
        expect(page).toContain('Key: the operator key');
        expect(page).toContain('Key: any tenant key');
        expect(page).toContain('Key: a tenant key with the &quot;admin&quot; scope, not limited to collections');
      });
    });

    describe('malformed requests answer 4xx naming the problem', () => {
      it('rejects each malformed body with the error shape', async () => {
        const { all, col } = await world(64, 2);
        const items = (extra: Record<string, unknown> = {}) => [{ id: 'a', code: 'ab'.repeat(8), descriptor: [1, 2], ...extra }];
        const post = (path: string, body: unknown, headers?: Record<string, string>) => call('POST', path, { key: all, body, headers });
        const itemsPath = `/v1/collections/${col}/items`;
        const searchPath = `/v1/collections/${col}/search`;
        const cases: Array<[string, () => Promise<Reply>, number, string, string | undefined, RegExp]> = [
          ['wrong bit length', () => post(itemsPath, { items: items({ code: 'ab'.repeat(4) }) }), 400, 'invalid_code', 'items.0.code', /16 hex characters or 12 base64 characters for a 64-bit collection; got 8/],
          ['bad hex', () => post(itemsPath, { items: items({ code: 'zz'.repeat(8) }) }), 400, 'invalid_code', 'items.0.code', /not valid hex/],
          ['bad base64', () => post(searchPath, { code: '!!!!!!!!!!!=' }), 400, 'invalid_code', 'code', /not valid padded base64/],
          ['k = 0', () => post(searchPath, { code: 'ab'.repeat(8), k: 0 }), 400, 'invalid_field', 'k', /k must be between 1 and 1000/],
          ['k = 1001', () => post(searchPath, { code: 'ab'.repeat(8), k: 1001 }), 400, 'invalid_field', 'k', /k must be between 1 and 1000/],
          ['k not an integer', () => post(searchPath, { code: 'ab'.repeat(8), k: 2.5 }), 400, 'invalid_field', 'k', /integer/],
          ['radius over the code length', () => post(searchPath, { code: 'ab'.repeat(8), radius: 65 }), 400, 'invalid_field', 'radius', /between 0 and 64/],
          ['query descriptor of the wrong length', () => post(searchPath, { code: 'ab'.repeat(8), descriptor: [1, 2, 3] }), 400, 'invalid_descriptor', 'descriptor', /2 values/],
          ['query descriptor out of int8', () => post(searchPath, { code: 'ab'.repeat(8), descriptor: [1, -129] }), 400, 'invalid_field', 'descriptor.1', /-128/],
          ['content_weight above 1', () => post(searchPath, { code: 'ab'.repeat(8), descriptor: [1, 2], content_weight: 1.5 }), 400, 'invalid_field', 'content_weight', /between 0 and 1/],
          ['content_weight not a number', () => post(searchPath, { code: 'ab'.repeat(8), descriptor: [1, 2], content_weight: 'high' }), 400, 'invalid_field', 'content_weight', /must be a number/],
          ['content_weight without a descriptor', () => post(searchPath, { code: 'ab'.repeat(8), content_weight: 0.5 }), 400, 'invalid_field', 'content_weight', /needs the query descriptor/],
          ['negative radius', () => post(searchPath, { code: 'ab'.repeat(8), radius: -1 }), 400, 'invalid_field', 'radius', />= 0/],
          ['unknown filter field', () => post(searchPath, { code: 'ab'.repeat(8), filter: { colour: 'red' } }), 400, 'unknown_field', 'filter.colour', /unknown field "colour" in filter/],
          ['empty filter value', () => post(searchPath, { code: 'ab'.repeat(8), filter: { modality: [] } }), 400, 'invalid_field', 'filter.modality', /filter\.modality must name at least one value/],
          ['filter of 101 values', () => post(searchPath, { code: 'ab'.repeat(8), filter: { modality: Array.from({ length: 101 }, (_, i) => `m${i}`) } }), 400, 'invalid_field', 'filter.modality', /^filter\.modality names at most 100 values$/],
          ['filter list with a number', () => post(searchPath, { code: 'ab'.repeat(8), filter: { label: ['a', 5] } }), 400, 'invalid_field', 'filter.label.1', /expected string, received number/],
          ['filter value a number', () => post(searchPath, { code: 'ab'.repeat(8), filter: { label: 5 } }), 400, 'invalid_field', 'filter.label', /filter\.label must be a non-empty string or an array of them/],
          ['bad study UID to exclude', () => post(searchPath, { code: 'ab'.repeat(8), exclude_study_uid: 'study-1' }), 400, 'invalid_field', 'exclude_study_uid', /DICOM UID/],
          ['allow_ood not a boolean', () => post(searchPath, { code: 'ab'.repeat(8), allow_ood: 'yes' }), 400, 'invalid_field', 'allow_ood', /true or false/],
          ['oversized batch', () => post(itemsPath, { items: Array.from({ length: 1001 }, (_, i) => ({ id: `i${i}`, code: 'ab'.repeat(8), descriptor: [0, 0] })) }), 413, 'batch_too_large', 'items', /at most 1000 items/],
          ['oversized batch of full items (three objects and arrays each)', () => post(itemsPath, { items: Array.from({ length: 1001 }, (_, i) => ({ id: `i${i}`, code: 'ab'.repeat(8), descriptor: [0, 0], metadata: { label: 'x' } })) }), 413, 'batch_too_large', 'items', /at most 1000 items/],
          ['empty batch', () => post(itemsPath, { items: [] }), 400, 'invalid_field', 'items', /at least one item/],
          ['unknown field in an item', () => post(itemsPath, { items: items({ colour: 'red' }) }), 400, 'unknown_field', 'items.0.colour', /unknown field "colour" in items.0/],
          ['unknown top-level field', () => post(itemsPath, { items: items(), force: true }), 400, 'unknown_field', 'force', /unknown field "force"/],
          ['unknown metadata field', () => post(itemsPath, { items: items({ metadata: { name: 'Jane Doe' } }) }), 400, 'unknown_field', 'items.0.metadata.name', /unknown field "name"/],
          ['bad DICOM UID', () => post(itemsPath, { items: items({ metadata: { study_uid: 'abc' } }) }), 400, 'invalid_field', 'items.0.metadata.study_uid', /DICOM UID/],
          ['duplicate ids in a batch', () => post(itemsPath, { items: [...items(), ...items()] }), 400, 'duplicate_id', 'items.1.id', /appears twice/],
          ['descriptor of the wrong length', () => post(itemsPath, { items: items({ descriptor: [1] }) }), 400, 'invalid_descriptor', 'items.0.descriptor', /2 values/],
          ['missing descriptor', () => post(itemsPath, { items: [{ id: 'a', code: 'ab'.repeat(8) }] }), 400, 'invalid_descriptor', 'items.0.descriptor', /got none/],
          ['descriptor value out of int8', () => post(itemsPath, { items: items({ descriptor: [1, 200] }) }), 400, 'invalid_field', 'items.0.descriptor.1', /127/],
          ['empty id', () => post(itemsPath, { items: items({ id: '' }) }), 400, 'invalid_field', 'items.0.id', /must not be empty/],
          ['id with a control character', () => post(itemsPath, { items: items({ id: 'a\nb' }) }), 400, 'invalid_field', 'items.0.id', /control characters/],
          // stored as UTF-8 a lone surrogate becomes U+FFFD, so it would alias the id '\ufffd'
          ['id with a lone surrogate', () => post(itemsPath, { items: items({ id: 'x\ud800' }) }), 400, 'invalid_field', 'items.0.id', /lone surrogate/],
          ['id ".." (a URL cannot address it)', () => post(itemsPath, { items: items({ id: '..' }) }), 400, 'invalid_field', 'items.0.id', /"\." or "\.\."/],
          ['id "."', () => post(itemsPath, { items: items({ id: '.' }) }), 400, 'invalid_field', 'items.0.id', /"\." or "\.\."/],
          ['missing items', () => post(itemsPath, {}), 400, 'missing_field', 'items', /items is required/],
          // fields whose schema words its own message are missing all the same, not malformed
          ['missing bits', () => post('/v1/collections', { name: `c-${uniq()}` }), 400, 'missing_field', 'bits', /bits is required/],
          ['missing monthly_quota', () => call('PUT', '/v1/admin/tenants/tn_x/plan', { key: op(), body: { rate_per_second: 1, burst: 1 } }), 400, 'missing_field', 'monthly_quota', /monthly_quota is required/],
          ['wrong content type', () => call('POST', itemsPath, { key: all, raw: JSON.stringify({ items: items() }), headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type', undefined, /application\/json/],
          ['invalid JSON', () => call('POST', itemsPath, { key: all, raw: '{"items": [', headers: { 'content-type': 'application/json' } }), 400, 'invalid_json', undefined, /not valid JSON/],
          ['body too large', () => call('POST', itemsPath, { key: all, raw: `{"items":[],"pad":"${'x'.repeat(8 << 20)}"}`, headers: { 'content-type': 'application/json' } }), 413, 'body_too_large', undefined, /exceeds/],
          ['bits not allowed', () => post('/v1/collections', { name: `c-${uniq()}`, bits: 48 }), 400, 'invalid_field', 'bits', /bits must be one of 16, 32, 64, 128, 256/],
          ['bad collection name', () => post('/v1/collections', { name: 'Bad Name', bits: 64 }), 400, 'invalid_field', 'name', /collection name/],
          ['negative descriptor_dims', () => post('/v1/collections', { name: `c-${uniq()}`, bits: 64, descriptor_dims: -1 }), 400, 'invalid_field', 'descriptor_dims', />= 0/],
          ['bad collection name in the path', () => call('GET', '/v1/collections/BAD!', { key: all }), 400, 'invalid_path', 'collection', /collection name/],
          ['unknown scope', () => call('POST', '/v1/admin/tenants/tn_x/keys', { key: op(), body: { scopes: ['root'] } }), 400, 'invalid_field', 'scopes.0', /scopes must be among/],
        ];
        for (const [what, send, status, code, field, message] of cases) {
          const r = await send();
          expect({ what, status: r.status, code: r.body?.error?.code, field: r.body?.error?.field }).toEqual({ what, status, code, field });
          expect(r.body.error.message, what).toMatch(message);
        }
        // None of it reached the index.
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body).toMatchObject({ count: 0, generation: 0 });
      });

      it("quotes a caller's input back in an error cut short, however long it is", async () => {
        const { t, all, col } = await world(16);
        const limited = (await t.key(['search'], [col])).secret;
        const long = (c: string) => c.repeat(5000);
        const cases: Array<[string, () => Promise<Reply>, number, string]> = [
          ['unknown field with a long name', () => call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'abcd', [long('x')]: 1 } }), 400, 'unknown_field'],
          ['Content-Type', () => call('POST', `/v1/collections/${col}/search`, { key: all, raw: '{}', headers: { 'content-type': `text/${long('x')}` } }), 415, 'unsupported_media_type'],
          ["an image's Content-Type", () => call('POST', `/v1/collections/${col}/search/image`, { key: all, raw: 'x', headers: { 'content-type': `image/${long('x')}` } }), 415, 'unsupported_media_type'],
          ['unknown route', () => call('GET', `/${long('x')}`), 404, 'route_not_found'],
          ['a collection the key may not use', () => call('GET', `/v1/collections/${long('x')}`, { key: limited }), 403, 'collection_forbidden'],
          ['tenant', () => call('GET', `/v1/admin/tenants/${long('x')}/keys`, { key: op() }), 404, 'tenant_not_found'],
          ['key', () => call('DELETE', `/v1/admin/keys/${long('x')}`, { key: op() }), 404, 'key_not_found'],
        ];
        for (const [what, send, status, code] of cases) {
          const r = await send();
          expect({ what, status: r.status, code: r.body?.error?.code }).toEqual({ what, status, code });
          // the value's first 256 characters, and how long it was
          expect(r.body.error.message, what).toMatch(/"[^"]{256}"\.\.\. \(500\d characters\)/);
          expect(JSON.stringify(r.body).length, what).toBeLessThan(1000);
        }
        // of many unknown fields, ten are named and the rest counted
        const many = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code: 'abcd', ...Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, 1])) } });
        expect([many.status, many.body.error.code, many.body.error.field]).toEqual([400, 'unknown_field', 'f0']);
        expect(many.body.error.message).toBe(`unknown fields ${Array.from({ length: 10 }, (_, i) => `"f${i}"`).join(', ')} and 4990 more`);
      });

      it('bounds what a body may cost its route before it is parsed: 1 MiB unless the route states more, and the objects, arrays and values of a JSON body', async () => {
        const { all, col } = await world(64, 2);
        const search = `/v1/collections/${col}/search`;
        const itemsPath = `/v1/collections/${col}/items`;
        const json = { 'content-type': 'application/json' };
        const code = 'ab'.repeat(8);
        // over the route's limit: a 413 naming it, after the key like every check of the request itself
        const big = `{"code":"${code}","pad":"${'x'.repeat(DEFAULT_BODY_BYTES)}"}`;
        expect((await call('POST', search, { raw: big, headers: json })).status).toBe(401);
        const over = await call('POST', search, { key: all, raw: big, headers: json });
        expect([over.status, over.body.error.code]).toEqual([413, 'body_too_large']);
        expect(over.body.error.message).toMatch(new RegExp(`exceeds ${DEFAULT_BODY_BYTES} bytes, the most this route takes`));
        // a batch may be larger (the route states its limit): 1000 items with 2 KiB source URIs, ~2.2 MB
        const batch = { items: Array.from({ length: 1000 }, (_, i) => ({ id: `b${i}`, code, descriptor: [1, 2], metadata: { source_uri: 'u'.repeat(2048) } })) };
        expect(JSON.stringify(batch).length).toBeGreaterThan(2 * DEFAULT_BODY_BYTES);
        expect((await call('POST', itemsPath, { key: all, body: batch })).status).toBe(200);
        // more objects and arrays, or more values, than the largest valid batch holds: refused unparsed
        const nested = await call('POST', search, { key: all, raw: `{"code":"${code}","filter":[${Array(JSON_BUDGET.containers).fill('{}').join(',')}]}`, headers: json });
        expect([nested.status, nested.body.error.code]).toEqual([413, 'json_too_complex']);
        expect(nested.body.error.message).toMatch(new RegExp(`at most ${JSON_BUDGET.containers} objects and arrays and ${JSON_BUDGET.values} values .* holds more objects and arrays$`));
        const values = await call('POST', itemsPath, { key: all, raw: `{"items":[{"id":"v","code":"${code}","descriptor":[${Array(JSON_BUDGET.values).fill(0).join(',')}]}]}`, headers: json });
        expect([values.status, values.body.error.code, values.body.error.message]).toEqual([413, 'json_too_complex', expect.stringMatching(/holds more values$/)]);
        // any application/*+json, which the JSON validator parses as it parses application/json
        const suffixed = await call('POST', search, { key: all, raw: `{"code":"${code}","filter":[${Array(JSON_BUDGET.containers).fill('{}').join(',')}]}`, headers: { 'content-type': 'application/vnd.medhash+json' } });
        expect([suffixed.status, suffixed.body.error.code]).toEqual([413, 'json_too_complex']);
        // the document states every limit above the default
        const doc = (await call('GET', '/openapi.json')).body;
        expect(doc.paths['/v1/collections/{collection}/items'].post['x-max-body-bytes']).toBe(MAX_BODY_BYTES);
        expect(doc.paths['/v1/collections/{collection}/search'].post['x-max-body-bytes']).toBeUndefined();
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.count).toBe(1000);
      });

      it('reads a body sent without Content-Length only after the key, and cuts it off at the route\'s limit', async () => {
        const { all, col } = await world(64);
        // chunked: no Content-Length to refuse it by unread
        const streamed = (text: string, mib = 0) => new ReadableStream<Uint8Array>({
          start(controller) {
            for (let i = 0; i < mib; i++) controller.enqueue(new Uint8Array(1 << 20).fill(0x20));
            controller.enqueue(new TextEncoder().encode(text));
            controller.close();
          },
        });
        const send = async (path: string, body: ReadableStream<Uint8Array>, key?: string) => {
          const headers: Record<string, string> = { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) };
          const req = new Request(BASE + path, { method: 'POST', headers, body, duplex: 'half' } as RequestInit);
          expect(req.headers.get('content-length')).toBeNull();
          const res = await harness().fetch(req);
          return { status: res.status, code: ((await res.json()) as { error?: { code: string } }).error?.code };
        };
        const search = `/v1/collections/${col}/search`;
        const code = JSON.stringify({ code: 'ab'.repeat(8) });
        // over the limit of every request, it was read (8 MiB) and refused before the key was looked at
        expect(await send(search, streamed(code, 9))).toEqual({ status: 401, code: 'missing_key' });
        expect(await send(search, streamed(code, 9), 'mh_unknown')).toEqual({ status: 401, code: 'invalid_key' });
        expect(await send(search, streamed(code, 2), all)).toEqual({ status: 413, code: 'body_too_large' });
        expect(await send(`/v1/collections/${col}/items`, streamed(code, 9), all)).toEqual({ status: 413, code: 'body_too_large' });
        expect(await send(search, streamed(code), all)).toEqual({ status: 200, code: undefined });
      });

      it('answers a body of many bad values within its budget with a 400 naming the first, not a 500', async () => {
        const { t, all, col } = await world(64, 1024);
        const code = 'ab'.repeat(8);
        // 200 items of 1024 strings each: zod's 204,800 issues, spread into one call, overflowed the stack
        const item = `{"id":"a","code":"${code}","descriptor":[${Array(1024).fill('"x"').join(',')}]}`;
        const batch = await call('POST', `/v1/collections/${col}/items`, { key: all, raw: `{"items":[${Array(200).fill(item).join(',')}]}`, headers: { 'content-type': 'application/json' } });
        expect([batch.status, batch.body.error.code, batch.body.error.field]).toEqual([400, 'invalid_field', 'items.0.descriptor.0']);
        const scopes = await call('POST', `/v1/admin/tenants/${t.id}/keys`, { key: op(), raw: `{"scopes":["search",${Array(200_000).fill('"x"').join(',')}]}`, headers: { 'content-type': 'application/json' } });
        expect([scopes.status, scopes.body.error.code, scopes.body.error.field]).toEqual([400, 'invalid_field', 'scopes.1']);
        const names = await call('POST', `/v1/admin/tenants/${t.id}/keys`, { key: op(), raw: `{"scopes":["search"],"collections":[${Array(200_000).fill('"X"').join(',')}]}`, headers: { 'content-type': 'application/json' } });
        expect([names.status, names.body.error.field]).toEqual([400, 'collections.0']);
        const query = await call('POST', `/v1/collections/${col}/search`, { key: all, raw: `{"code":"${code}","descriptor":[${Array(200_000).fill('"x"').join(',')}]}`, headers: { 'content-type': 'application/json' } });
        expect([query.status, query.body.error.field]).toEqual([400, 'descriptor.0']);
        // a descriptor too long says so, not that its values are not integers
        const long = await call('POST', `/v1/collections/${col}/search`, { key: all, body: { code, descriptor: Array(1025).fill(0) } });
        expect([long.status, long.body.error.field, long.body.error.message]).toEqual([400, 'descriptor', 'descriptor holds at most 1024 values']);
      });

      it('reads Content-Type as a media type (RFC 9110): any case, parameters and spaces around ";" ignored; another type is a 415', async () => {
        const { all } = await world(16);
        const create = (type: string) => call('POST', '/v1/collections', { key: all, body: { name: `c-${uniq()}`, bits: 64 }, headers: { 'content-type': type } });
        const taken = ['application/json;', 'application/json ; charset=utf-8', 'Application/JSON;charset="UTF-8"', 'application/json\t;', 'application/json;;'];
        const refused = ['application/jsonx', 'application/json x', 'application/json/x', 'text/json', 'application/x-json;'];
        const got = async (types: string[]) => Promise.all(types.map(async (type) => [type, (await create(type)).status]));
        expect(await got(taken)).toEqual(taken.map((type) => [type, 201]));
        expect(await got(refused)).toEqual(refused.map((type) => [type, 415]));
        const r = await create('text/json; charset=utf-8');
        expect(r.body.error.message).toBe('Content-Type must be application/json, got "text/json; charset=utf-8"');
      });

      it('refuses a JSON body that is not UTF-8 or starts with a byte order mark (400 invalid_json), rather than reading its bad bytes as U+FFFD', async () => {
        const { all, col } = await world(64);
        const bytes = (...parts: (string | number[])[]) => new Uint8Array(parts.flatMap((p) => (typeof p === 'string' ? [...new TextEncoder().encode(p)] : p)));
        // ids \xff and \xfe both read as "\ufffd": the second batch replaced the first one's item
        const batch = (id: number[], type = 'application/json') =>
          call('POST', `/v1/collections/${col}/items`, { key: all, raw: bytes('{"items":[{"id":"', id, `","code":"${'ab'.repeat(8)}"}]}`), headers: { 'content-type': type } });
        for (const r of [await batch([0xff]), await batch([0xfe]), await batch([0x63, 0xe9], 'application/json; charset=iso-8859-1'), await batch([0xed, 0xa0, 0x80])]) {
          expect([r.status, r.body.error.code, r.body.error.message]).toEqual([400, 'invalid_json', 'request body is not valid JSON: it is not UTF-8']);
        }
        expect((await call('GET', `/v1/collections/${col}`, { key: all })).body.count).toBe(0);
        // a byte order mark: one runtime's parser skipped it and the other's refused it; both refuse it
        const bom = await call('POST', `/v1/collections/${col}/items`, { key: all, raw: bytes([0xef, 0xbb, 0xbf], '{"items":[]}'), headers: { 'content-type': 'application/json' } });
        expect([bom.status, bom.body.error.message]).toEqual([400, 'request body is not valid JSON: it starts with a byte order mark (send UTF-8 without one)']);
        // valid UTF-8 is read as before
        expect((await batch([0xc3, 0xa9])).status).toBe(200);
        expect((await call('GET', `/v1/collections/${col}/items/%C3%A9`, { key: all })).body.id).toBe('é');
      });

      it('404s an unknown collection and item', async () => {
        const { all, col } = await world(16);
        const r = await call('POST', `/v1/collections/c-${uniq()}/search`, { key: all, body: { code: 'ffff' } });
        expect(r.status).toBe(404);
        expect(r.body.error.code).toBe('collection_not_found');
        const i = await call('GET', `/v1/collections/${col}/items/nope`, { key: all });
        expect(i.status).toBe(404);
        expect(i.body.error.code).toBe('item_not_found');
      });
    });
  });
}
