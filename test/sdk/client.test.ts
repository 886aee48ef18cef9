// The SDK's MedhashApiError against the Node service (no browser: the request path is plain
// fetch): a pay-per-query partner backs off on 429 and 402 from what the error carries, the
// service's `details` and the Retry-After header.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { startNodeServer, type RunningServer } from '../../functions/entries/node.ts';
import { MedhashApiError, MedhashClient, MedhashTimeoutError } from '../../functions/sdk/index.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';

let dir: string;
let server: RunningServer;
let tenant: string;
let client: MedhashClient;

async function operator(method: string, path: string, body: unknown) {
  const res = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${TEST_OPERATOR_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.ok).toBe(true);
  return (await res.json()) as any;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-sdk-client-'));
  server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir, operatorKey: TEST_OPERATOR_KEY });
  tenant = (await operator('POST', '/v1/admin/tenants', { name: 'sdk-client' })).id;
  const key = (await operator('POST', `/v1/admin/tenants/${tenant}/keys`, { scopes: ['search', 'admin'] })).secret;
  const res = await fetch(`${server.url}/v1/collections`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'c', bits: 64 }) });
  expect(res.status).toBe(201);
  client = new MedhashClient({ apiKey: key, baseUrl: server.url, assetBase: `${server.url}/sdk/` });
});

afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const refusal = (p: Promise<unknown>) => p.then(() => expect.unreachable('no error'), (e: unknown) => e as MedhashApiError);

it('a 429 carries the seconds of Retry-After and the limit in details; a 402 the quota, the use and when it renews', async () => {
  // one request per 1000 s: the first search passes, the next is over the limit
  await operator('PUT', `/v1/admin/tenants/${tenant}/plan`, { rate_per_second: 0.001, burst: 1, monthly_quota: null });
  expect((await client.search('c', 'ab'.repeat(8), undefined)).results).toEqual([]);
  const limited = await refusal(client.search('c', 'ab'.repeat(8), undefined));
  expect(limited).toBeInstanceOf(MedhashApiError);
  expect([limited.status, limited.code]).toEqual([429, 'rate_limited']);
  expect(limited.retryAfterS).toBeGreaterThan(900);
  expect(limited.details).toEqual({ retry_after_s: limited.retryAfterS, limit: 1, window_s: 1000 });

  await operator('PUT', `/v1/admin/tenants/${tenant}/plan`, { rate_per_second: 100, burst: 100, monthly_quota: 1 });
  const quota = await refusal(client.search('c', 'ab'.repeat(8), undefined));
  expect([quota.status, quota.code, quota.retryAfterS]).toEqual([402, 'quota_exhausted', undefined]);
  expect(quota.details).toEqual({ quota: 1, used: 1, requested: 1, resets_at: expect.stringMatching(/^\d{4}-\d{2}-01T00:00:00\.000Z$/) });

  // an error without them has neither
  const missing = await refusal(client.search('nope', 'ab'.repeat(8), undefined));
  expect([missing.status, missing.details, missing.retryAfterS]).toEqual([404, undefined, undefined]);
});

it('reads Retry-After as an HTTP-date too (a proxy in front of the service may send one), and a malformed one as none', async () => {
  const answer = (retryAfter: string) => new Response(JSON.stringify({ error: { code: 'unavailable', message: 'busy' } }), { status: 503, headers: { 'content-type': 'application/json', 'retry-after': retryAfter } });
  const stub = vi.spyOn(globalThis, 'fetch');
  try {
    stub.mockResolvedValueOnce(answer(new Date(Date.now() + 120_000).toUTCString()));
    const dated = await refusal(client.collections());
    expect([dated.status, dated.code]).toEqual([503, 'unavailable']);
    expect(dated.retryAfterS).toBeGreaterThanOrEqual(118);
    expect(dated.retryAfterS).toBeLessThanOrEqual(120);
    stub.mockResolvedValueOnce(answer('in a while'));
    expect((await refusal(client.collections())).retryAfterS).toBeUndefined();
  } finally {
    stub.mockRestore();
  }
});

it('a service that does not answer (down, unreachable) is named as such, with its URL: not a bare "fetch failed"', async () => {
  // a port nothing listens on: taken, then freed
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const down = new MedhashClient({ apiKey: 'mh_x', baseUrl: url });
  const e = await refusal(down.collections());
  expect(e).not.toBeInstanceOf(MedhashApiError);
  expect(e.message).toMatch(new RegExp(`^${url.replace(/[.]/g, '\\.')}/v1/collections\\?limit=1000: no answer from the service \\(fetch failed\\); is it down, or unreachable from here\\?$`));
});

it('a search the service never answers fails after timeoutMs with MedhashTimeoutError naming the URL, as does an answer whose body stalls, an error\'s too', async () => {
  // a service that takes the request and holds it: no answer to a search of c, headers and half a
  // body to the list, an error's status and headers and no body to a search of e
  const held: ServerResponse[] = [];
  const stuck = createServer((req, res) => {
    held.push(res);
    if (req.url?.startsWith('/v1/collections?')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"collections": [');
    } else if (req.url === '/v1/collections/e/search') {
      res.writeHead(500, { 'content-type': 'application/json', 'content-length': '1000' });
      res.flushHeaders();
    }
  });
  await new Promise<void>((resolve) => stuck.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(stuck.address() as AddressInfo).port}`;
  try {
    const slow = new MedhashClient({ apiKey: 'mh_x', baseUrl: url, timeoutMs: 200 });
    const e = await refusal(slow.search('c', 'ab'.repeat(8), undefined));
    expect(e).toBeInstanceOf(MedhashTimeoutError);
    expect(e).not.toBeInstanceOf(MedhashApiError);
    expect([e.name, e.message]).toEqual(['MedhashTimeoutError', `${url}/v1/collections/c/search: no answer within 0.2 s; is the service overloaded, or the connection lost?`]);
    const list = await refusal(slow.collections());
    expect(list).toBeInstanceOf(MedhashTimeoutError);
    expect(list.message).toMatch(/\/v1\/collections\?limit=1000: no answer within 0\.2 s/);
    const error = await refusal(slow.search('e', 'ab'.repeat(8), undefined));
    expect(error).toBeInstanceOf(MedhashTimeoutError);
    expect(error.message).toBe(`${url}/v1/collections/e/search: no answer within 0.2 s; is the service overloaded, or the connection lost?`);
    expect(held).toHaveLength(3);
  } finally {
    stuck.closeAllConnections();
    await new Promise<void>((resolve) => stuck.close(() => resolve()));
  }
});

it('refuses a timeoutMs that is not a whole number of milliseconds from 1 to 2^31 - 1', () => {
  // past 2^31 - 1 a timer fires at once (Node, browsers): every call would time out
  for (const timeoutMs of [0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, Number.MAX_SAFE_INTEGER]) {
    expect(() => new MedhashClient({ apiKey: 'mh_x', timeoutMs })).toThrow(`timeoutMs must be a whole number of milliseconds from 1 to 2147483647 (about 24.8 days), got ${timeoutMs}`);
  }
  expect(() => new MedhashClient({ apiKey: 'mh_x', timeoutMs: 2 ** 31 - 1 })).not.toThrow();
});

it('an answer that is not the service\'s JSON (an HTML page from a proxy or a web server) says so, not "Unexpected token <"', async () => {
  const html = (status: number) => new Response('<!doctype html><title>Sign in</title>', { status, headers: { 'content-type': 'text/html' } });
  const stub = vi.spyOn(globalThis, 'fetch');
  try {
    stub.mockResolvedValueOnce(html(200));
    const e = await refusal(client.collections());
    expect(e).not.toBeInstanceOf(MedhashApiError);
    expect(e.message).toBe(`/v1/collections?limit=1000: the answer is not the service's JSON (HTTP 200, text/html); is ${server.url} the medhash service?`);
    stub.mockResolvedValueOnce(html(502));
    const bad = await refusal(client.search('c', 'ab'.repeat(8), undefined));
    expect([bad.status, bad.code, bad.message]).toEqual([502, 'http_error', '/v1/collections/c/search: HTTP 502']);
  } finally {
    stub.mockRestore();
  }
});
