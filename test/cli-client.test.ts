// The CLI's HTTP client against a service that is down, slow, or answers what the API does not:
// each failure names what happened and where, and a 429's Retry-After is waited for; and an index
// run stopped by a signal while a batch is in flight.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Client } from '../scripts/cli/client.ts';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((ok) => s.close(ok));
});

/** A server answering each request with `answer`; its URL. */
async function fake(answer: Parameters<typeof createServer>[1]): Promise<string> {
  const s = createServer(answer);
  servers.push(s);
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** A URL nothing listens on. */
async function closedPort(): Promise<string> {
  const url = await fake(() => undefined);
  await new Promise((ok) => servers.pop()!.close(ok));
  return url;
}

describe('medhash client errors', () => {
  it('names the service and why it cannot be reached, not "fetch failed"', async () => {
    const url = await closedPort();
    await expect(new Client(url, 'k').request('GET', '/v1/collections', undefined, 1)).rejects.toThrow(`cannot reach the service at ${url} (--url or MEDHASH_URL): connect ECONNREFUSED`);
    const run = promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'collection', 'list'], { env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: 'k' } });
    await expect(run).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining(`medhash: cannot reach the service at ${url}`) });
  });

  it('refuses a service URL without its scheme before any request', () => {
    expect(() => new Client('localhost:8787', 'k')).toThrow('the service URL "localhost:8787" (--url or MEDHASH_URL) is not an http:// or https:// URL');
  });

  it("says what came back when it is not the API's JSON: a proxy's error page, a login portal, an empty 500", async () => {
    const proxy = await fake((_, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html>502 Bad Gateway</html>'));
    await expect(new Client(proxy, 'k').request('GET', '/v1/collections')).rejects.toThrow('502 http_error: Bad Gateway, not from the medhash API (text/html, 28 bytes: "<html>502 Bad Gateway</html>")');
    const portal = await fake((_, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>sign in</html>'));
    await expect(new Client(portal, 'k').request('GET', '/v1/collections')).rejects.toThrow(`GET ${portal}/v1/collections: the answer is not JSON (text/html, 20 bytes: "<html>sign in</html>"); is ${portal} the medhash service?`);
    const empty = await fake((_, res) => res.writeHead(500).end());
    await expect(new Client(empty, 'k').request('GET', '/v1/collections')).rejects.toThrow('500 http_error: Internal Server Error with an empty body');
  });

  it('gives up on a service that does not answer, saying so, rather than wait for ever', async () => {
    const url = await fake(() => undefined);
    const started = Date.now();
    await expect(new Client(url, 'k', 300).request('GET', '/v1/collections')).rejects.toThrow(`GET ${url}/v1/collections: no answer within 0.3 s`);
    expect(Date.now() - started).toBeLessThan(2000); // not retried
  });

  it("waits as long as a 429's Retry-After asks before retrying", async () => {
    const at: number[] = [];
    const url = await fake((_, res) => {
      at.push(Date.now());
      if (at.length === 1) res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '2' }).end(JSON.stringify({ error: { code: 'rate_limited', message: 'rate limit exceeded' } }));
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    expect(await new Client(url, 'k').request('POST', '/v1/collections/c/items', { items: [] })).toEqual({ ok: true });
    expect(at[1] - at[0]).toBeGreaterThanOrEqual(1900);
  });
});

// On a terminal the handler also stops the progress bar, which shows the cursor it hid again.
it('index stopped by a signal mid-run says how far it got and exits 128 + the signal', async () => {
  let posted!: () => void;
  const posting = new Promise<void>((ok) => (posted = ok));
  // the collection's GET answered, its first batch stored, the second never answered
  let batches = 0;
  const url = await fake((req, res) => {
    if (req.method === 'GET') return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bits: 32, descriptor_dims: 0, model_id: null, created_at: 'x', generation: 7 }));
    req.resume();
    if (++batches === 1) return res.writeHead(200, { 'content-type': 'application/json' }).end('{"ingested":2,"generation":8}');
    posted();
  });
  const dir = mkdtempSync(join(tmpdir(), 'medhash-signal-'));
  try {
    const codes = join(dir, 'codes.jsonl');
    writeFileSync(codes, ['a', 'b', 'c'].map((id) => JSON.stringify({ id, code: '00000000' })).join('\n'));
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'index', '--collection', 'c', '--codes', codes, '--batch', '2'], { env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: 'k' } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((ok) => child.on('exit', ok));
    await posting;
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(stderr).toContain('medhash: SIGTERM: stopped with 2 items published; run the same command again to resume');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
