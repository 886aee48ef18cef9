// The orphan sweep on Workers (GET/DELETE /v1/admin/orphans): the KV keys of collections whose
// registry row an older version removed before their data, found by listing KV and deleted
// through each collection's Durable Object, which is left a tombstone; registered collections
// untouched but for stray shards (no writer state names them), which their Durable Object finds,
// and not even those where the Durable Object lost its writer state (reported under damaged).
import { env } from 'cloudflare:workers';
import { runInDurableObject } from 'cloudflare:test';
import { expect, it } from 'vitest';
import { encodeShard } from '../../functions/shards/codec.ts';
import { shardKey } from '../../functions/shards/manifest.ts';
import { decodeHead } from '../../functions/store/head.ts';
import { sha256Hex } from '../../functions/util/bytes.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';
import { call, newTenantKey, send } from './client.ts';

const control = () => env.CONTROL.get(env.CONTROL.idFromName('control'));
const keysOf = async (id: string) => (await env.MEDHASH_KV.list({ prefix: `c/${id}/` })).keys.map((k) => k.name);

it('finds the KV keys of collections deleted registry-first and deletes them through their Durable Objects, never a registered collection', async () => {
  const tenant = await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 'orphans-tenant' });
  const key = (await call('POST', `/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['ingest', 'admin', 'search'] })).secret;
  for (const name of ['live', 'orphan', 'just-created']) await call('POST', '/v1/collections', key, { name, bits: 16 });
  for (const name of ['live', 'orphan']) {
    await call('POST', `/v1/collections/${name}/items`, key, { items: [{ id: 'a', code: '0001', metadata: { patient_ref: 'MRN-1' } }, { id: 'b', code: '0002' }] });
  }
  const ids = Object.fromEntries(
    await runInDurableObject(control(), (_, state) =>
      state.storage.sql.exec<{ id: string; name: string }>('SELECT id, name FROM collections WHERE tenant_id = ?', tenant.id).toArray().map((r) => [r.name, r.id]),
    ),
  ) as Record<string, string>;
  // The older order: the registry row removed first, then the call to the writer failed.
  await runInDurableObject(control(), (_, state) => {
    state.storage.sql.exec('DELETE FROM collections WHERE id = ?', ids.orphan);
  });
  // And a shard put after an older destroy had listed the keys: no writer state knows it.
  const stray = `c/col_0123456789abcdef01234567/s/${'0'.repeat(64)}`;
  await env.MEDHASH_KV.put(stray, 'late upload');
  const orphanKeys = await keysOf(ids.orphan);
  expect(orphanKeys).toHaveLength(2); // manifest and one shard

  const mine = (r: { orphans: { collection: string; deleted?: boolean }[] }) => r.orphans.filter((o) => [ids.orphan, 'col_0123456789abcdef01234567', ids.live, ids['just-created']].includes(o.collection));
  const dry = await call('GET', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  expect(dry.dry_run).toBe(true);
  expect(mine(dry)).toEqual([
    { collection: 'col_0123456789abcdef01234567', prefix: 'c/col_0123456789abcdef01234567/', keys: 1 },
    { collection: ids.orphan, prefix: `c/${ids.orphan}/`, keys: 2 },
  ].sort((a, b) => (a.collection < b.collection ? -1 : 1)));
  expect(await keysOf(ids.orphan)).toEqual(orphanKeys);

  const swept = await call('DELETE', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  expect(swept).toMatchObject({ dry_run: false, failed: 0 });
  expect(mine(swept).map((o) => o.deleted)).toEqual([true, true]);
  expect(await keysOf(ids.orphan)).toEqual([]);
  expect(await env.MEDHASH_KV.get(stray)).toBeNull();
  // Its writer state is a tombstone naming no shard (no item id): a late write finds it deleted.
  const head = await runInDurableObject(env.COLLECTIONS.get(env.COLLECTIONS.idFromName(ids.orphan)), (_, state) => {
    const row = state.storage.sql.exec<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads').one();
    return decodeHead(row.head, row.rev);
  });
  expect(head).toMatchObject({ destroyed: true, garbage: [], pending: [], manifest: { shards: [], count: 0 } });

  expect((await call('GET', '/v1/collections/live/items/a', key)).code).toBe('0001');
  expect((await call('GET', '/v1/collections/just-created', key)).count).toBe(0);
  expect(mine(await call('GET', '/v1/admin/orphans', TEST_OPERATOR_KEY))).toEqual([]);
});

it('answers a sweep whose deletion failed with a 500 beside its record, never a 200; the same DELETE again finishes it', async () => {
  const key = await newTenantKey('orphans-failing');
  for (const name of ['kept', 'broken']) {
    await call('POST', '/v1/collections', key, { name, bits: 16 });
    await call('POST', `/v1/collections/${name}/items`, key, { items: [{ id: 'a', code: '0001' }] });
  }
  const id = await runInDurableObject(control(), (_, state) => {
    const row = state.storage.sql.exec<{ id: string }>("SELECT id FROM collections WHERE name = 'broken'").one();
    state.storage.sql.exec('DELETE FROM collections WHERE id = ?', row.id);
    return row.id;
  });
  // Its Durable Object's writer state unreadable: destroying it fails, as an unreachable one would.
  const writer = env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id));
  const setHead = (head: string) => runInDurableObject(writer, (_, state) => {
    const before = state.storage.sql.exec<{ head: string }>('SELECT head FROM writer_heads').one().head;
    state.storage.sql.exec('UPDATE writer_heads SET head = ?', head);
    return before;
  });
  const head = await setHead('{not json');
  const failed = await send('DELETE', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  const record = await failed.json<any>();
  await setHead(head);
  expect(failed.status).toBe(500);
  expect(record.error).toEqual({ code: 'orphans_delete_incomplete', message: expect.stringMatching(new RegExp(`deleting orphans failed for [^:]*${id}[^:]*: send the same DELETE again \\(it is idempotent\\)$`)) });
  expect(record).toMatchObject({ dry_run: false, failed: expect.any(Number) });
  expect(record.failed).toBeGreaterThanOrEqual(1);
  expect(record.orphans.find((o: { collection: string }) => o.collection === id)).toMatchObject({ keys: 2, error: expect.any(String) });
  expect(await keysOf(id)).toHaveLength(2);

  const again = await send('DELETE', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  expect(again.status).toBe(200);
  expect((await again.json<any>()).orphans.find((o: { collection: string }) => o.collection === id)).toMatchObject({ deleted: true });
  expect(await keysOf(id)).toEqual([]);
  expect((await call('GET', '/v1/collections/kept/items/a', key)).code).toBe('0001');
});

it("finds the shards of a registered collection that its writer state names nowhere through its Durable Object, and deletes only them", async () => {
  const key = await newTenantKey('orphans-strays');
  await call('POST', '/v1/collections', key, { name: 'strays', bits: 16 });
  await call('POST', '/v1/collections/strays/items', key, { items: [{ id: 'a', code: '0001' }, { id: 'b', code: '0002' }] });
  const id = await runInDurableObject(control(), (_, state) => state.storage.sql.exec<{ id: string }>("SELECT id FROM collections WHERE name = 'strays'").one().id);
  const named = await keysOf(id);
  const bytes = encodeShard([{ id: 'stray', code: new Uint8Array([9, 9]), descriptor: new Int8Array(0), metadata: '{}' }], 16, 0);
  const stray = shardKey(id, await sha256Hex(bytes));
  await env.MEDHASH_KV.put(stray, bytes);

  const mine = (r: { strays: { collection: string }[] }) => r.strays.filter((x) => x.collection === id);
  expect(mine(await call('GET', '/v1/admin/orphans', TEST_OPERATOR_KEY))).toEqual([{ collection: id, shards: [stray] }]);
  expect(await env.MEDHASH_KV.get(stray)).not.toBeNull();
  const swept = await call('DELETE', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  expect(swept).toMatchObject({ dry_run: false, failed: 0 });
  expect(mine(swept)).toEqual([{ collection: id, shards: [stray], deleted: true }]);
  expect(await env.MEDHASH_KV.get(stray)).toBeNull();
  expect(await keysOf(id)).toEqual(named);
  expect((await call('GET', '/v1/collections/strays/items/b', key)).code).toBe('0002');
});

it("refuses to sweep a collection whose Durable Object lost its writer state while KV holds its shards, and deletes none of them", async () => {
  const key = await newTenantKey('orphans-state-lost');
  await call('POST', '/v1/collections', key, { name: 'lost', bits: 16 });
  await call('POST', '/v1/collections/lost/items', key, { items: [{ id: 'a', code: '0001' }, { id: 'b', code: '0002' }] });
  const id = await runInDurableObject(control(), (_, state) => state.storage.sql.exec<{ id: string }>("SELECT id FROM collections WHERE name = 'lost'").one().id);
  const object = env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id));
  const row = await runInDurableObject(object, (_, state) => {
    const head = state.storage.sql.exec<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads').one();
    state.storage.sql.exec('DELETE FROM writer_heads');
    return head;
  });
  const kept = await keysOf(id);

  const res = await send('DELETE', '/v1/admin/orphans', TEST_OPERATOR_KEY);
  expect(res.status).toBe(500);
  const swept = await res.json<any>();
  expect(swept.damaged).toContainEqual({ collection: id, registered: true, error: 'its writer state is missing while KV holds 1 shard(s) of it: nothing of it swept' });
  expect(swept.strays.filter((x: { collection: string }) => x.collection === id)).toEqual([]);
  expect(await keysOf(id)).toEqual(kept);
  expect((await call('GET', '/v1/collections/lost/items/b', key)).code).toBe('0002');
  // Put back, so that the sweeps of the other tests find it whole.
  await runInDurableObject(object, (_, state) => {
    state.storage.sql.exec('INSERT INTO writer_heads (collection, rev, head) VALUES (?, ?, ?)', id, row.rev, row.head);
  });
});
