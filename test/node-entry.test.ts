// Node entry specifics: state persists on disk across restarts, maintenance that a timer
// would have done before a restart is picked up at start, and the processes stop cleanly.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, expect, it, vi } from 'vitest';
import { startBackend } from '../functions/backend/node.ts';
import { spawnBackend } from '../functions/backend/process.ts';
import { createNodeBackend, MAINTENANCE_FAILED_RETRY_MS, startNodeServer } from '../functions/entries/node.ts';
import { ManifestFormatError } from '../functions/shards/manifest.ts';
import { openSqlite, SqliteKV } from '../functions/store/sqlite.ts';
import { CollectionWriter, DEFAULT_WRITER_LIMITS } from '../functions/store/writer.ts';
import mednistCard from '../models/mednist-darf-b64.card.json';
import { png } from './encode/png-fixtures.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';
import { damageHead } from './shared/damaged-manifest.ts';

const dir = mkdtempSync(join(tmpdir(), 'medhash-entry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('persists across restarts and collects garbage left by a stopped process', async () => {
  const limits = { ...DEFAULT_WRITER_LIMITS, graceMs: 50 };
  const first = await createNodeBackend({ dataDir: dir, limits });
  const col = await first.backend.control.createCollection((await first.backend.control.createTenant('t')).id, { name: 'c', bits: 16, descriptor_dims: 0 });
  const record = (v: number) => ({ id: 'a', code: new Uint8Array([v, v]), descriptor: new Int8Array(0), metadata: '{}' });
  await first.backend.writer(col).apply([{ op: 'put', record: record(1) }]);
  const old = (await first.backend.reader.manifest(col.id))!.shards[0].key;
  await first.backend.writer(col).apply([{ op: 'put', record: record(2) }]);
  first.close(); // its GC timer dies with it
  await sleep(60);

  const kvDb = openSqlite(join(dir, 'kv.sqlite'));
  expect(await new SqliteKV(kvDb).get(old)).not.toBeNull();
  const second = await createNodeBackend({ dataDir: dir, limits });
  await vi.waitFor(async () => expect(await new SqliteKV(kvDb).get(old)).toBeNull(), { timeout: 5000 });
  const m = (await second.backend.reader.manifest(col.id))!;
  expect(m).toMatchObject({ generation: 2, count: 1 });
  expect(await second.backend.control.getCollection(col.tenant_id, 'c')).toEqual(col);
  kvDb.close();
  second.close();
});

it("starts with a collection's writer state damaged, serving the others; that collection's writes are refused as corrupt", async () => {
  const sub = join(dir, 'damaged-head');
  const first = await createNodeBackend({ dataDir: sub });
  const tenant = (await first.backend.control.createTenant('t')).id;
  for (const name of ['damaged', 'intact']) {
    const col = await first.backend.control.createCollection(tenant, { name, bits: 16, descriptor_dims: 0 });
    await first.backend.writer(col).apply([{ op: 'put', record: { id: 'a', code: new Uint8Array([1, 1]), descriptor: new Int8Array(0), metadata: '{}' } }]);
  }
  first.close();
  const db = openSqlite(join(sub, 'control.sqlite'));
  const row = db.prepare("SELECT h.collection, h.head FROM writer_heads h JOIN collections c ON c.id = h.collection WHERE c.name = 'damaged'").get() as { collection: string; head: string };
  // Left for the maintenance at start, so that the start reads it.
  const unpublished = JSON.stringify({ ...JSON.parse(row.head), published: 0 });
  db.prepare('UPDATE writer_heads SET head = ? WHERE collection = ?').run(damageHead(unpublished), row.collection);
  db.close();

  const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
  const second = await createNodeBackend({ dataDir: sub });
  try {
    expect(logged).toHaveBeenCalledWith(expect.stringMatching(new RegExp(`^maintenance of ${row.collection}: ManifestFormatError: invalid manifest: checksum mismatch`)));
    const col = async (name: string) => (await second.backend.control.getCollection(tenant, name))!;
    const record = { id: 'b', code: new Uint8Array([2, 2]), descriptor: new Int8Array(0), metadata: '{}' };
    await expect(second.backend.writer(await col('damaged')).apply([{ op: 'put', record }])).rejects.toThrow(ManifestFormatError);
    await second.backend.writer(await col('intact')).apply([{ op: 'put', record }]);
    expect((await second.backend.reader.manifest((await col('intact')).id))!.count).toBe(2);
  } finally {
    logged.mockRestore();
    second.close();
  }
});

it('tries a failed maintenance run again later', async () => {
  const failOnce = vi.spyOn(CollectionWriter.prototype, 'maintain').mockRejectedValueOnce(new Error('disk I/O error'));
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const node = await createNodeBackend({ dataDir: join(dir, 'retry'), limits: { ...DEFAULT_WRITER_LIMITS, graceMs: 50 } });
  try {
    const col = await node.backend.control.createCollection((await node.backend.control.createTenant('t')).id, { name: 'c', bits: 16, descriptor_dims: 0 });
    const record = (v: number) => ({ id: 'a', code: new Uint8Array([v, v]), descriptor: new Int8Array(0), metadata: '{}' });
    await node.backend.writer(col).apply([{ op: 'put', record: record(1) }]);
    const old = (await node.backend.reader.manifest(col.id))!.shards[0].key;
    await node.backend.writer(col).apply([{ op: 'put', record: record(2) }]);
    const kv = new SqliteKV(openSqlite(join(dir, 'retry', 'kv.sqlite')));
    await vi.advanceTimersByTimeAsync(1000); // past the grace period: the run that fails
    expect(failOnce).toHaveBeenCalledTimes(1);
    expect(await kv.get(old)).not.toBeNull();
    await vi.advanceTimersByTimeAsync(MAINTENANCE_FAILED_RETRY_MS);
    expect(failOnce).toHaveBeenCalledTimes(2);
    expect(await kv.get(old)).toBeNull();
  } finally {
    vi.useRealTimers();
    failOnce.mockRestore();
    node.close();
  }
});

// A state the writer cannot use while it runs: damaged (fails its check), or rolled back behind the
// manifest in KV. Each is a change's scheduled maintenance run a second later that would fail again
// every MAINTENANCE_FAILED_RETRY_MS, logging each time, were it not stopped.
const unusable: [string, (head: string, write: () => Promise<unknown>) => Promise<string>, RegExp][] = [
  ['is damaged', async (head) => damageHead(head), /checksum mismatch.*writer state is damaged.*stopped.*docs\/SHARD_FORMAT\.md/],
  [
    'fell behind KV',
    async (head, write) => {
      await write(); // generation 2 published; the state is then set back to generation 1's
      return head;
    },
    /^maintenance of \S+: writer_state_behind: its writer state \(generation 1\) is older than its published manifest \(generation 2\).*restore the writer state and KV together.*; its maintenance is stopped/,
  ],
];

it.each(unusable)('stops the maintenance of a collection whose writer state %s while it runs: one run, one log line saying what to do', async (what, spoil, said) => {
  const maintain = vi.spyOn(CollectionWriter.prototype, 'maintain');
  const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const sub = join(dir, `unusable-${what.replaceAll(' ', '-')}`);
  const node = await createNodeBackend({ dataDir: sub });
  const db = openSqlite(join(sub, 'control.sqlite'));
  try {
    const col = await node.backend.control.createCollection((await node.backend.control.createTenant('t')).id, { name: 'c', bits: 16, descriptor_dims: 0 });
    const put = (id: string) => node.backend.writer(col).apply([{ op: 'put', record: { id, code: new Uint8Array([1, 1]), descriptor: new Int8Array(0), metadata: '{}' } }]);
    // The change asks for a maintenance run a second later; the state is spoiled before it.
    await put('a');
    const { rev, head } = db.prepare('SELECT rev, head FROM writer_heads WHERE collection = ?').get(col.id) as { rev: number; head: string };
    // The whole row, as a copy restores it (a text whose rev is not its row's is damaged too).
    db.prepare('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?').run(rev, await spoil(head, () => put('b')), col.id);
    await vi.advanceTimersByTimeAsync(1000 + 10 * MAINTENANCE_FAILED_RETRY_MS);
    expect(maintain).toHaveBeenCalledTimes(1);
    const lines = logged.mock.calls.map(([line]) => String(line)).filter((line) => line.startsWith(`maintenance of ${col.id}:`));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(said);
  } finally {
    vi.useRealTimers();
    logged.mockRestore();
    maintain.mockRestore();
    db.close();
    node.close();
  }
});

const CLI = join(import.meta.dirname, '..', 'scripts', 'medhash.mjs');

it('`medhash serve` stops on SIGTERM: exit 0, its stores closed (no WAL left behind)', async () => {
  const data = join(dir, 'serve');
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--data-dir', data], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.setEncoding('utf8');
  const url = await new Promise<string>((ok, fail) => {
    child.stderr.on('data', (d: string) => {
      log += d;
      const m = log.match(/medhash listening on (http:\/\/\S+)/);
      if (m) ok(m[1]);
    });
    child.once('exit', () => fail(new Error(`serve exited before listening:\n${log}`)));
  });
  expect((await fetch(`${url}/healthz`)).status).toBe(200);
  expect(existsSync(join(data, 'kv.sqlite-wal'))).toBe(true);
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code, signal] = await exited;
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(log).toMatch(/SIGTERM, stopping[\s\S]*stopped/);
  // SQLite removes the WAL when the last connection closes: the process closed its stores.
  expect(existsSync(join(data, 'kv.sqlite-wal'))).toBe(false);
  expect(existsSync(join(data, 'control.sqlite-wal'))).toBe(false);
});

it('`medhash backend` stops on SIGTERM with exit code 0', async () => {
  const backend = await spawnBackend(join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'));
  expect((await fetch(`${backend.url}/healthz`)).status).toBe(200);
  const exited = once(backend.child, 'exit');
  await backend.stop();
  expect(await exited).toEqual([0, null]);
});

it('`medhash backend` under steady keep-alive load stops on SIGTERM: what it answers is whole, exit 0 within the grace period', async () => {
  const backend = await spawnBackend(join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'), ['--threads', '1']);
  const tensor = Buffer.from(new Float32Array(64 * 64).fill(0.5).buffer).toString('base64');
  const body = JSON.stringify({ inputs: Array.from({ length: 8 }, () => ({ tensor })) });
  const exited = once(backend.child, 'exit');
  let stopped = false;
  void exited.then(() => (stopped = true));
  const statuses: number[] = [];
  // back to back on fetch's keep-alive connections, as the edge's pool calls the backend
  const client = async () => {
    while (!stopped) {
      const r = await fetch(`${backend.url}/v1/encode`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).catch(() => null);
      if (r) statuses.push((await r.json(), r.status));
    }
  };
  const clients = [client(), client(), client()];
  await vi.waitFor(() => expect(statuses.length).toBeGreaterThanOrEqual(6), { timeout: 30_000, interval: 20 });
  const t0 = Date.now();
  backend.child.kill('SIGTERM');
  // the grace period is 10 s: a stop that waits it out exits 1 and cuts a request off
  expect(await exited).toEqual([0, null]);
  expect(Date.now() - t0).toBeLessThan(8000);
  await Promise.all(clients);
  expect(new Set(statuses)).toEqual(new Set([200]));
});

it('closing the backend while its batcher holds work of clients that hung up: the running batch ends before the model is released, the rest is dropped', async () => {
  const be = await startBackend({ model: join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'), port: 0, hostname: '127.0.0.1', cuda: false, threads: 1, batcher: { maxBatch: 4, maxWaitMs: 1, maxQueue: 64 } });
  const { batcher } = be.service;
  // the first batch waits on a gate, so that the others queue behind it
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const run = be.encoder.run.bind(be.encoder);
  const runs: Promise<unknown>[] = [];
  be.encoder.run = (x, n) => {
    const p = gate.then(() => run(x, n));
    runs.push(p);
    return p;
  };
  let released = false;
  const release = be.encoder.close.bind(be.encoder);
  be.encoder.close = () => ((released = true), release());

  const tensor = Buffer.from(new Float32Array(64 * 64).fill(0.5).buffer).toString('base64');
  const body = JSON.stringify({ inputs: Array.from({ length: 4 }, () => ({ tensor })) });
  const clients = Array.from({ length: 4 }, () => {
    const r = request(`${be.url}/v1/encode`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    r.on('error', () => {}); // hung up below
    r.end(body);
    return r;
  });
  await vi.waitFor(() => expect([runs.length, batcher.waiting]).toEqual([1, 12]), { timeout: 30_000, interval: 5 });
  for (const r of clients) r.destroy();
  await vi.waitFor(async () => expect(await new Promise((ok) => be.server.getConnections((_, n) => ok(n)))).toBe(0), { interval: 5 });

  const closing = be.close();
  // once the server has closed, the model would be released under the gated batch
  await vi.waitFor(() => expect(released || batcher.waiting === 0).toBe(true), { interval: 5 });
  open();
  await closing;
  const settled = await Promise.allSettled(runs);
  expect(settled.map((s) => s.status)).toEqual(['fulfilled']);
  expect(released).toBe(true);
  // a request that reaches the app after close (its client gone too) is refused, not run
  const late = await be.service.app.request('/v1/encode', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  expect([late.status, late.headers.get('retry-after'), ((await late.json()) as { error: { message: string } }).error.message]).toEqual([503, '1', 'the backend is stopping; retry after 1 s']);
});

it('a backend client that hangs up while its request waits behind a slow batch: its image is never encoded, and its place in the queue is free again', async () => {
  // one input per model run, and room for one waiting
  const be = await startBackend({ model: join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'), port: 0, hostname: '127.0.0.1', cuda: false, threads: 1, batcher: { maxBatch: 1, maxWaitMs: 1, maxQueue: 1 } });
  const { batcher } = be.service;
  // each client's tensor holds one value of its own: the first value of each input the model runs on says whose it is
  const { channels, size } = be.encoder.card.input;
  const length = channels * size * size;
  const encoded: number[] = [];
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const run = be.encoder.run.bind(be.encoder);
  be.encoder.run = (x, n) => {
    for (let i = 0; i < n; i++) encoded.push(x[i * length]);
    return gate.then(() => run(x, n));
  };
  const post = (v: number, signal?: AbortSignal) =>
    fetch(`${be.url}/v1/encode`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ tensor: Buffer.from(new Float32Array(length).fill(v).buffer).toString('base64') }] }),
      signal,
    });
  try {
    const slow = post(0.25);
    await vi.waitFor(() => expect(encoded).toEqual([0.25]), { timeout: 30_000, interval: 5 });
    const hangUp = new AbortController();
    post(0.5, hangUp.signal).catch(() => {});
    await vi.waitFor(() => expect(batcher.waiting).toBe(1), { timeout: 10_000, interval: 5 });
    const full = await post(0.75);
    expect([full.status, (await full.json()) as unknown]).toMatchObject([503, { error: { code: 'overloaded' } }]);
    hangUp.abort();
    await vi.waitFor(() => expect(batcher.waiting).toBe(0), { timeout: 10_000, interval: 5 });
    const live = post(0.75); // admitted to the place the client that hung up left
    await vi.waitFor(() => expect(batcher.waiting).toBe(1), { timeout: 10_000, interval: 5 });
    open();
    expect([(await slow).status, (await live).status]).toEqual([200, 200]);
    expect(encoded).toEqual([0.25, 0.75]);
  } finally {
    open();
    await be.close();
  }
});

it('closing `medhash serve` while a search by image of a client that hung up waits on the inference backend: the search ends before the stores close', async () => {
  const model = mednistCard.model_id;
  // an inference backend that answers when told to
  let answer!: () => void;
  const gate = new Promise<void>((r) => (answer = r));
  let asked = 0;
  const inference = createServer((req, res) => {
    asked++;
    req.resume();
    void gate.then(() => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ version: 1, model_id: model, runtime: 'cpu', results: [{ code: '0123456789abcdef', descriptor: Array(64).fill(0), classes: [], ood: { score: 0, recon: 0, maha: 0, stats: null, threshold: 1 } }] }));
    });
  });
  await new Promise<void>((ok) => inference.listen(0, '127.0.0.1', ok));
  const data = join(dir, 'hung-up');
  const s = await startNodeServer({
    dataDir: data, operatorKey: TEST_OPERATOR_KEY, port: 0, hostname: '127.0.0.1',
    images: { model: join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'), backendUrl: `http://127.0.0.1:${(inference.address() as AddressInfo).port}`, timeoutMs: 30_000 },
  });
  const call = async (path: string, key: string, body: unknown) =>
    (await fetch(s.url + path, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<Record<string, string>>;
  const tenant = await call('/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 't' });
  const { secret } = await call(`/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['search', 'admin'] });
  await call('/v1/collections', secret, { name: 'c', bits: 64, model_id: model });

  const logged = vi.spyOn(console, 'error');
  const client = request(`${s.url}/v1/collections/c/search/image?allow_ood=true`, { method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'image/png' } });
  client.on('error', () => {}); // hung up below
  client.end(png({ width: 64, height: 64, colorType: 0, bitDepth: 8 }));
  await vi.waitFor(() => expect(asked).toBe(1), { timeout: 30_000, interval: 5 });
  client.destroy();

  // the server lets go of its last connection (the one hung up) while the search still runs
  const serverClosed = once(s.server, 'close');
  let closed = false;
  const closing = s.close().then(() => (closed = true));
  await serverClosed;
  await sleep(20);
  expect(closed).toBe(false);
  answer();
  await closing;
  inference.closeAllConnections();
  inference.close();
  const lines = [...logged.mock.calls];
  logged.mockRestore();
  // not "database is not open": the search ran on open stores, and was billed and audited as any other
  expect(lines).toEqual([]);
  const after = await createNodeBackend({ dataDir: data });
  try {
    expect((await after.backend.ledger(tenant.id).audit(tenant.id, 10)).events.map((e) => e.action)).toContain('search');
  } finally {
    after.close();
  }
});

it('a client that hangs up mid-body is logged as 499, not as an internal error, and is not metered', async () => {
  const lines: string[] = [];
  const s = await startNodeServer({ dataDir: join(dir, 'mid-body'), operatorKey: TEST_OPERATOR_KEY, port: 0, hostname: '127.0.0.1', accessLog: (l) => lines.push(l) });
  try {
    const call = async (path: string, key: string, body?: unknown) =>
      (await fetch(s.url + path, { method: body === undefined ? 'GET' : 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })).json() as Promise<Record<string, never>>;
    const tenant = await call('/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 't' });
    const { secret } = await call(`/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['search', 'ingest', 'admin'] });
    await call('/v1/collections', secret, { name: 'c', bits: 16 });
    const logged = vi.spyOn(console, 'error');
    const { port } = new URL(s.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`POST /v1/collections/c/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${secret}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"items":[`);
    await sleep(100);
    socket.destroy();
    const line = await vi.waitFor(() => {
      const found = lines.map((l) => JSON.parse(l) as { route: string; status: number }).find((l) => l.route === '/v1/collections/:collection/items');
      expect(found).toBeDefined();
      return found!;
    }, { timeout: 10_000, interval: 10 });
    const errors = [...logged.mock.calls];
    logged.mockRestore();
    expect([line.status, errors]).toEqual([499, []]);
    const usage = (await call('/v1/usage', secret)) as unknown as { totals: { ingest_item?: number } };
    expect(usage.totals.ingest_item ?? 0).toBe(0);
  } finally {
    await s.close();
  }
});
