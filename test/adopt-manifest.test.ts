// The operator's recovery of one collection whose writer state is damaged, missing or behind its
// published manifest (POST /v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest,
// medhash admin adopt-manifest) on Node: writes work again, searches answer every published item,
// the action is audited; refused for a healthy collection, a missing shard, another key, an
// unknown collection. The writer's own cases are in test/store.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import { manifestKey } from '../functions/shards/manifest.ts';
import { openSqlite, sqliteDb } from '../functions/store/sqlite.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';
import { operatorCli } from './shared/operator-cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'medhash-adopt-'));
let node: NodeBackend;
let app: ReturnType<typeof createApp>;
let server: ServerType;
let url: string;
let tenant: string;
let secret: string;

beforeAll(async () => {
  node = await createNodeBackend({ dataDir: dir, operatorKey: TEST_OPERATOR_KEY, limits: { maxShardBytes: 1 << 20, maxShardItems: 4, graceMs: 60_000 } });
  app = createApp(node.backend);
  server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => ok(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  tenant = ((await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 't' })).body as { id: string }).id;
  secret = ((await call('POST', `/v1/admin/tenants/${tenant}/keys`, TEST_OPERATOR_KEY, { scopes: ['ingest', 'search', 'admin'] })).body as { secret: string }).secret;
});

afterAll(async () => {
  await new Promise((ok) => server.close(ok));
  node.close();
  rmSync(dir, { recursive: true, force: true });
});

async function call(method: string, path: string, key: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}

const medhash = (...args: string[]) => operatorCli(url, join(dir, 'elsewhere'))(...args);

const item = (i: number) => ({ id: `i${String(i).padStart(3, '0')}`, code: (i + 1).toString(16).padStart(4, '0') });
const adoptPath = (name: string) => `/v1/admin/tenants/${tenant}/collections/${name}/adopt-manifest`;

/** A collection of 10 items over 3 shards, its id, and a second connection to the control store (what an operator's copy would replace). */
async function written(name: string) {
  expect((await call('POST', '/v1/collections', secret, { name, bits: 16 })).status).toBe(201);
  expect((await call('POST', `/v1/collections/${name}/items`, secret, { items: Array.from({ length: 10 }, (_, i) => item(i)) })).status).toBe(200);
  const id = (await node.backend.control.getCollection(tenant, name))!.id;
  return { id, sql: sqliteDb(openSqlite(join(dir, 'control.sqlite'))) };
}

const searchIds = async (name: string) =>
  ((await call('POST', `/v1/collections/${name}/search`, secret, { code: '0000', k: 100, radius: 16 })).body as { results: { id: string }[] }).results.map((r) => r.id).sort();

it('recovers a damaged, a missing and a rolled-back writer state through the API and the CLI: writes work again, every published item is found, the action is audited', async () => {
  for (const [name, state, lose] of [
    ['damaged', 'damaged', (sql, id) => sql.run("UPDATE writer_heads SET head = replace(head, '\"garbage\":[', '\"garbage\":{') WHERE collection = ?", id)],
    ['lost', 'missing', (sql, id) => sql.run('DELETE FROM writer_heads WHERE collection = ?', id)],
  ] as const satisfies readonly [string, string, (sql: ReturnType<typeof sqliteDb>, id: string) => unknown][]) {
    const { id, sql } = await written(name);
    lose(sql, id);
    expect((await call('POST', `/v1/collections/${name}/items`, secret, { items: [item(50)] })).status).toBeGreaterThanOrEqual(409);

    const r = await call('POST', adoptPath(name), TEST_OPERATOR_KEY);
    expect(r).toEqual({
      status: 200,
      body: {
        collection: id, state, previous_generation: null, generation: 1, count: 10, shards: 3,
        note: 'items committed after generation 1 and never published are lost; shards only the replaced state named are strays for the orphan sweep (DELETE /v1/admin/orphans)',
      },
    });
    expect((await call('POST', `/v1/collections/${name}/items`, secret, { items: [item(50)] })).body).toMatchObject({ generation: 2 });
    expect(await searchIds(name)).toEqual([...Array.from({ length: 10 }, (_, i) => item(i).id), item(50).id].sort());
  }

  // Rolled back, recovered with the CLI.
  const { id, sql } = await written('rolled');
  const [older] = sql.all<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads WHERE collection = ?', id);
  expect((await call('POST', '/v1/collections/rolled/items', secret, { items: [item(60)] })).status).toBe(200);
  sql.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?', older.rev, older.head, id);
  expect((await call('POST', '/v1/collections/rolled/items', secret, { items: [item(61)] })).body.error.code).toBe('writer_state_behind');
  const cli = await medhash('admin', 'adopt-manifest', '--tenant', tenant, '--collection', 'rolled');
  expect(cli.code).toBe(0);
  expect(JSON.parse(cli.stdout)).toMatchObject({ collection: id, state: 'behind', previous_generation: 1, generation: 2, count: 11 });
  expect((await call('POST', '/v1/collections/rolled/items', secret, { items: [item(61)] })).status).toBe(200);
  expect(await searchIds('rolled')).toEqual([...Array.from({ length: 10 }, (_, i) => item(i).id), item(60).id, item(61).id].sort());

  const audit = (await call('GET', '/v1/audit', secret)).body as { events: { key_id: string; action: string; collection: string | null; detail: unknown }[] };
  expect(audit.events.filter((e) => e.action === 'collection.adopt_manifest').reverse()).toEqual([
    expect.objectContaining({ key_id: 'operator', collection: 'damaged', detail: { state: 'damaged', previous_generation: null, generation: 1, count: 10 } }),
    expect.objectContaining({ key_id: 'operator', collection: 'lost', detail: { state: 'missing', previous_generation: null, generation: 1, count: 10 } }),
    expect.objectContaining({ key_id: 'operator', collection: 'rolled', detail: { state: 'behind', previous_generation: 1, generation: 2, count: 11 } }),
  ]);
});

it('refuses a healthy collection, a missing shard (writing nothing), a tenant key, an unknown tenant or collection, and a bad name', async () => {
  const { id, sql } = await written('healthy');
  const r = await call('POST', adoptPath('healthy'), TEST_OPERATOR_KEY);
  expect(r.status).toBe(409);
  expect(r.body.error).toEqual({ code: 'adopt_not_needed', message: "its writer state is intact at generation 1, not behind KV's manifest: nothing changed (adopting could only roll it back)" });

  const kv = node.backend.orphans.kv;
  const m = (await node.backend.reader.manifest(id))!;
  await kv.delete(m.shards[1].key);
  sql.run('DELETE FROM writer_heads WHERE collection = ?', id);
  const refused = await call('POST', adoptPath('healthy'), TEST_OPERATOR_KEY);
  expect(refused.status).toBe(409);
  expect(refused.body.error).toMatchObject({ code: 'shards_missing', details: { missing: [{ key: m.shards[1].key, bytes: m.shards[1].bytes, found: null }] } });
  expect(sql.all('SELECT 1 FROM writer_heads WHERE collection = ?', id)).toEqual([]);
  expect(await kv.get(manifestKey(id))).not.toBeNull();
  const cli = await medhash('admin', 'adopt-manifest', '--tenant', tenant, '--collection', 'healthy');
  expect(cli.code).toBe(1);
  expect(cli.stderr).toContain(`missing from KV or not their recorded length: ${m.shards[1].key}`);

  expect((await call('POST', adoptPath('healthy'), secret)).status).toBe(403);
  expect((await call('POST', adoptPath('nope'), TEST_OPERATOR_KEY)).body.error.code).toBe('collection_not_found');
  expect((await call('POST', '/v1/admin/tenants/tn_nope/collections/healthy/adopt-manifest', TEST_OPERATOR_KEY)).body.error.code).toBe('tenant_not_found');
  expect((await call('POST', adoptPath('bad%20name!'), TEST_OPERATOR_KEY)).status).toBe(400);
  expect((await medhash('admin', 'adopt-manifest', '--tenant', tenant)).code).toBe(2);
});
