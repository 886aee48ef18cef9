// Request ids and the access log (functions/api/access-log.ts) on the Node app: every answer
// carries an id, each request leaves one line saying who did what and how it ended, and nothing
// from the path's ids, the query string, the headers or the body reaches the log.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { accessLogFromEnv, type AccessLogLine } from '../functions/api/access-log.ts';
import { createApp } from '../functions/api/app.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';

const dir = mkdtempSync(join(tmpdir(), 'medhash-access-'));
const lines: string[] = [];
let node: NodeBackend;
let app: ReturnType<typeof createApp>;
let secret: string;
let tenantId: string;
let keyId: string;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function call(method: string, path: string, opts: { key?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  lines.length = 0;
  const res = await app.request(path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  expect(lines).toHaveLength(1);
  return { res, line: JSON.parse(lines[0]) as AccessLogLine, raw: lines[0] };
}

beforeAll(async () => {
  node = await createNodeBackend({ dataDir: dir, operatorKey: TEST_OPERATOR_KEY, accessLog: (l) => lines.push(l) });
  app = createApp(node.backend);
  const tenant = (await (await call('POST', '/v1/admin/tenants', { key: TEST_OPERATOR_KEY, body: { name: 'st-elsewhere' } })).res.json()) as { id: string };
  tenantId = tenant.id;
  const key = (await (await call('POST', `/v1/admin/tenants/${tenantId}/keys`, { key: TEST_OPERATOR_KEY, body: { scopes: ['search', 'ingest', 'admin'] } })).res.json()) as { id: string; secret: string };
  ({ id: keyId, secret } = key);
  await call('POST', '/v1/collections', { key: secret, body: { name: 'chest', bits: 16 } });
  await call('POST', '/v1/collections/chest/items', {
    key: secret,
    body: { items: [{ id: 'ACC-0042-PATIENT-X', code: 'ab12', metadata: { label: 'pneumonia', patient_ref: 'MRN-991' } }] },
  });
});

afterAll(() => {
  node.close();
  rmSync(dir, { recursive: true, force: true });
});

it('gives every answer a request id, and logs who searched which collection with what outcome', async () => {
  const { res, line } = await call('POST', '/v1/collections/chest/search', { key: secret, body: { code: 'ab12', k: 5 } });
  expect(res.status).toBe(200);
  const id = res.headers.get('x-request-id')!;
  expect(id).toMatch(UUID);
  expect(line).toEqual({
    time: expect.any(String), request_id: id, method: 'POST', route: '/v1/collections/:collection/search',
    collection: 'chest', status: 200, ms: expect.any(Number), tenant_id: tenantId, key_id: keyId,
  });
  expect(Date.parse(line.time)).not.toBeNaN();
});

it("never takes a caller's X-Request-Id, which could be a study UID, into the log", async () => {
  const { res, line, raw } = await call('GET', '/healthz', { headers: { 'X-Request-Id': '1.2.840.113619.2.55.3' } });
  expect(res.headers.get('x-request-id')).toMatch(UUID);
  expect(line).toMatchObject({ request_id: res.headers.get('x-request-id'), route: '/healthz', status: 200, tenant_id: null });
  expect(raw).not.toContain('113619');
});

it('logs refusals and errors too, with their status and the same id as the answer', async () => {
  const unauth = await call('POST', '/v1/collections/chest/search', { body: { code: 'ab12' } });
  expect(unauth.res.status).toBe(401);
  expect(unauth.line).toMatchObject({ status: 401, route: '/v1/collections/:collection/search', tenant_id: null, request_id: unauth.res.headers.get('x-request-id') });
  const bad = await call('POST', '/v1/collections/chest/search', { key: secret, body: { code: 'zz' } });
  expect(bad.res.status).toBe(400);
  expect(bad.line).toMatchObject({ status: 400, tenant_id: tenantId, collection: 'chest' });
  const nowhere = await call('GET', '/v2/nothing');
  expect(nowhere.res.status).toBe(404);
  expect(nowhere.line).toMatchObject({ status: 404, method: 'GET', route: '/*', collection: null });
  expect(nowhere.res.headers.get('x-request-id')).toMatch(UUID);
  // Answered by the body limit, before the route's handler: still logged under that route.
  lines.length = 0;
  const tooBig = await app.request('/v1/collections/chest%20x/items', {
    method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: 'x'.repeat(9 << 20),
  });
  expect(tooBig.status).toBe(413);
  expect(lines).toHaveLength(1);
  // Not a collection name (names are plain by rule): left out of the log.
  expect(JSON.parse(lines[0])).toMatchObject({ status: 413, route: '/v1/collections/:collection/items', collection: null });
  const named = await call('GET', '/v1/collections/John%20Smith%20MRN%2012345', { key: secret });
  expect(named.res.status).toBe(400);
  expect(named.line).toMatchObject({ route: '/v1/collections/:collection', collection: null });
  expect(named.raw).not.toMatch(/Smith|12345/);
});

it('names the key of a 403 (a scope or collection it lacks, the admin API), as the trail of who tried what', async () => {
  const limited = (await (await call('POST', `/v1/admin/tenants/${tenantId}/keys`, { key: TEST_OPERATOR_KEY, body: { scopes: ['search'], collections: ['chest'] } })).res.json()) as { id: string; secret: string };
  const who = { tenant_id: tenantId, key_id: limited.id };
  const scope = await call('POST', '/v1/collections/chest/items', { key: limited.secret, body: { items: [{ id: 'a', code: 'ab12' }] } });
  expect([scope.res.status, scope.line]).toEqual([403, expect.objectContaining({ ...who, status: 403, collection: 'chest' })]);
  const elsewhere = await call('POST', '/v1/collections/head/search', { key: limited.secret, body: { code: 'ab12' } });
  expect([elsewhere.res.status, elsewhere.line]).toEqual([403, expect.objectContaining({ ...who, status: 403, collection: 'head' })]);
  const admin = await call('GET', '/v1/admin/tenants', { key: limited.secret });
  expect([admin.res.status, admin.line]).toEqual([403, expect.objectContaining({ ...who, status: 403, route: '/v1/admin/tenants' })]);
});

it('an internal error is logged on one line with the request id, under the route pattern', async () => {
  const manifest = node.backend.reader.manifest;
  node.backend.reader.manifest = async () => {
    throw new Error('disk on fire\n[forged] GET /v1/x: Error: \u2028ok');
  };
  const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    const { res, line } = await call('GET', '/v1/collections/chest/items/ACC-0042-PATIENT-X', { key: secret });
    expect(res.status).toBe(500);
    expect(line).toMatchObject({ status: 500, request_id: res.headers.get('x-request-id') });
    expect(errors.mock.calls.map((args) => String(args[0]))).toEqual([`[${line.request_id}] GET /v1/collections/:collection/items/:id: Error: disk on fire\\u000a[forged] GET /v1/x: Error: \\u2028ok`]);
  } finally {
    errors.mockRestore();
    node.backend.reader.manifest = manifest;
  }
});

it('never logs item ids, query strings, headers or bodies', async () => {
  const got = await call('GET', '/v1/collections/chest/items/ACC-0042-PATIENT-X?trace=MRN-991', { key: secret, headers: { 'x-note': 'MRN-991' } });
  expect(got.res.status).toBe(200);
  expect(got.line.route).toBe('/v1/collections/:collection/items/:id');
  const search = await call('POST', '/v1/collections/chest/search?k=5', { key: secret, body: { code: 'ab12', filter: { label: 'pneumonia' }, exclude_patient_ref: 'MRN-991' } });
  expect(search.res.status).toBe(200);
  for (const raw of [got.raw, search.raw]) {
    for (const secretish of ['ACC-0042', 'MRN-991', 'trace', 'pneumonia', 'ab12', secret]) expect(raw).not.toContain(secretish);
  }
});

it('MEDHASH_ACCESS_LOG is on by default, can be turned off, and rejects anything else', () => {
  const write = () => {};
  expect(accessLogFromEnv(undefined, write)).toBe(write);
  expect(accessLogFromEnv('on', write)).toBe(write);
  expect(accessLogFromEnv('off', write)).toBeUndefined();
  expect(() => accessLogFromEnv('yes', write)).toThrow(/MEDHASH_ACCESS_LOG must be "on" or "off", got "yes"/);
});

/** `medhash serve` as its own process, on a free port; resolves once it listens. */
async function serve(dataDir: string) {
  const child = execFile(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'serve', '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, MEDHASH_ACCESS_LOG: 'on' },
  });
  const out = { child, url: '', stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (out.stdout += d));
  out.url = await new Promise<string>((ok, fail) => {
    child.stderr!.on('data', (d) => {
      out.stderr += d;
      const m = /listening on (http:\/\/\S+)/.exec(out.stderr);
      if (m) ok(m[1]);
    });
    child.on('exit', (code) => fail(new Error(`serve exited ${code}: ${out.stderr}`)));
  });
  return out;
}

const stop = (child: ReturnType<typeof execFile>) => new Promise((ok) => child.kill('SIGTERM') && child.on('exit', ok));

it('`medhash serve` writes the log as JSON lines on stdout, status messages on stderr', async () => {
  const s = await serve(join(dir, 'serve'));
  const res = await fetch(`${s.url}/healthz`);
  const id = res.headers.get('x-request-id');
  expect(id).toMatch(UUID);
  await stop(s.child);
  expect(JSON.parse(s.stdout.trim())).toMatchObject({ request_id: id, route: '/healthz', status: 200 });
  expect(s.stderr).toMatch(/medhash listening on/);
});

it('`medhash serve` keeps answering when the reader of its access log goes away', async () => {
  const s = await serve(join(dir, 'serve-epipe'));
  s.child.stdout!.destroy(); // the log reader dies: the next writes meet EPIPE
  for (let i = 0; i < 5; i++) expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  await vi.waitFor(() => expect(s.stderr).toMatch(/access log: stdout failed \(.*EPIPE.*\); no more access log lines/));
  expect(s.child.exitCode).toBeNull();
  await stop(s.child);
});
