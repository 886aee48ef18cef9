// Workers-only behaviour: the collection Durable Object schedules an alarm for garbage it
// cannot collect yet, and the alarm deletes replaced shards once their grace period is over,
// or what a failed deletion of the collection or a reset in the middle of a change left behind.
import { env } from 'cloudflare:workers';
import { listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { expect, it } from 'vitest';
import { call, newTenantKey, send } from './client.ts';

const shardKeys = async () => (await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name).filter((k) => k.includes('/s/'));

it('collects replaced shards from an alarm after the grace period, never live ones', async () => {
  const key = await newTenantKey('gc-tenant');
  await call('POST', '/v1/collections', key, { name: 'gc', bits: 16 });
  const before = new Set(await shardKeys());
  const doIds = new Set((await listDurableObjectIds(env.COLLECTIONS)).map((id) => id.toString()));

  await call('POST', '/v1/collections/gc/items', key, { items: [{ id: 'a', code: '0001' }] });
  const [first] = (await shardKeys()).filter((k) => !before.has(k));
  await call('POST', '/v1/collections/gc/items', key, { items: [{ id: 'a', code: '0002' }] });
  const live = (await shardKeys()).filter((k) => !before.has(k) && k !== first);
  expect(live).toHaveLength(1);
  expect(await env.MEDHASH_KV.get(first)).not.toBeNull(); // within the grace period

  const [doId] = (await listDurableObjectIds(env.COLLECTIONS)).filter((id) => !doIds.has(id.toString()));
  const stub = env.COLLECTIONS.get(doId);
  // Age the garbage past the grace period (clocks inside workerd cannot be faked from here).
  await runInDurableObject(stub, (_, state) => {
    state.storage.sql.exec(`UPDATE writer_heads SET head = json_set(head, '$.garbage[0].since', 0)`);
  });
  expect(await runDurableObjectAlarm(stub)).toBe(true);
  expect(await env.MEDHASH_KV.get(first)).toBeNull();
  expect(await env.MEDHASH_KV.get(live[0])).not.toBeNull();
  expect((await call('GET', '/v1/collections/gc/items/a', key)).code).toBe('0002');
});

it('finishes deleting a collection from an alarm when a KV delete failed, and deletes shards KV does not list yet', async () => {
  const key = await newTenantKey('gc-destroy-tenant');
  await call('POST', '/v1/collections', key, { name: 'gone', bits: 16 });
  const before = new Set((await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name));
  const doIds = new Set((await listDurableObjectIds(env.COLLECTIONS)).map((id) => id.toString()));
  await call('POST', '/v1/collections/gone/items', key, { items: [{ id: 'a', code: '0001', metadata: { patient_ref: 'P1' } }] });
  await call('POST', '/v1/collections/gone/items', key, { items: [{ id: 'a', code: '0002', metadata: { patient_ref: 'P1' } }] });
  const ours = async () => (await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name).filter((k) => !before.has(k));
  expect(await ours()).toHaveLength(3); // manifest, live shard, replaced shard in its grace period

  const [doId] = (await listDurableObjectIds(env.COLLECTIONS)).filter((id) => !doIds.has(id.toString()));
  const stub = env.COLLECTIONS.get(doId);
  // A thin double of the DO's KV binding (workerd cannot fail a KV call): its list has not caught
  // up with the puts yet, as Workers KV's may not, and its first delete of a shard fails. The
  // alarm is set an hour later than asked, so that it runs when the test says, not a second out
  // while the test still looks at what is left.
  await runInDurableObject(stub, async (instance, state) => {
    await state.storage.deleteAlarm();
    const setAlarm = state.storage.setAlarm.bind(state.storage);
    state.storage.setAlarm = (at, options) => setAlarm(new Date(at).getTime() + 3600_000, options);
    const o = instance as unknown as { env: { MEDHASH_KV: KVNamespace }; writer: unknown };
    const kv = o.env.MEDHASH_KV;
    let failed = false;
    const double = {
      get: kv.get.bind(kv),
      put: kv.put.bind(kv),
      list: async () => ({ keys: [], list_complete: true, cacheStatus: null }),
      delete: async (k: string) => {
        if (!failed && k.includes('/s/')) {
          failed = true;
          throw new Error('KV DELETE failed: 503');
        }
        return kv.delete(k);
      },
    };
    Object.defineProperty(instance, 'env', { value: { ...o.env, MEDHASH_KV: double } });
    o.writer = null; // the next call builds its writer over the double
  });
  expect((await send('DELETE', '/v1/collections/gone', key)).status).toBe(204);
  expect((await ours()).length).toBeGreaterThan(0);
  // The registry no longer names it, so only the alarm can finish the job.
  expect((await send('DELETE', '/v1/collections/gone', key)).status).toBe(404);
  expect(await runDurableObjectAlarm(stub)).toBe(true);
  expect(await ours()).toEqual([]);
});

it('publishes from an alarm a change committed by a Durable Object that was reset before publishing it', async () => {
  const key = await newTenantKey('gc-reset-tenant');
  await call('POST', '/v1/collections', key, { name: 'reset', bits: 16 });
  const doIds = new Set((await listDurableObjectIds(env.COLLECTIONS)).map((id) => id.toString()));
  await call('POST', '/v1/collections/reset/items', key, { items: [{ id: 'a', code: '0001' }] });
  const [doId] = (await listDurableObjectIds(env.COLLECTIONS)).filter((id) => !doIds.has(id.toString()));
  const stub = env.COLLECTIONS.get(doId);
  // A real reset (what a deploy or an exceeded limit does) at the manifest put, once the commit
  // is on disk; the KV double only picks that moment.
  await runInDurableObject(stub, (instance, state) => {
    const o = instance as unknown as { env: { MEDHASH_KV: KVNamespace }; writer: unknown };
    const kv = o.env.MEDHASH_KV;
    const double = {
      get: kv.get.bind(kv),
      delete: kv.delete.bind(kv),
      list: kv.list.bind(kv),
      put: async (k: string, v: string | ArrayBuffer | ArrayBufferView) => {
        if (k.endsWith('/manifest')) {
          await state.storage.sync();
          state.abort('reset before the publish');
        }
        return kv.put(k, v);
      },
    };
    Object.defineProperty(instance, 'env', { value: { ...o.env, MEDHASH_KV: double } });
    o.writer = null;
  });
  expect((await send('POST', '/v1/collections/reset/items', key, { items: [{ id: 'b', code: '0002' }] })).status).toBe(500);
  expect((await send('GET', '/v1/collections/reset/items/b', key)).status).toBe(404); // committed, not published
  expect(await runDurableObjectAlarm(env.COLLECTIONS.get(doId))).toBe(true);
  expect((await call('GET', '/v1/collections/reset/items/b', key)).code).toBe('0002');
});

it('keeps the earliest maintenance alarm asked for, whatever the order concurrent requests set theirs in', async () => {
  const key = await newTenantKey('gc-alarm-tenant');
  await call('POST', '/v1/collections', key, { name: 'alarm', bits: 16 });
  const doIds = new Set((await listDurableObjectIds(env.COLLECTIONS)).map((id) => id.toString()));
  await call('POST', '/v1/collections/alarm/items', key, { items: [{ id: 'a', code: '0001' }] });
  const [doId] = (await listDurableObjectIds(env.COLLECTIONS)).filter((id) => !doIds.has(id.toString()));
  await runInDurableObject(env.COLLECTIONS.get(doId), async (instance, state) => {
    const { schedule } = (instance as unknown as { writer: { hooks: { schedule: (at: number) => Promise<void> } } }).writer.hooks;
    await state.storage.deleteAlarm(); // the write's own, a second out
    const soon = Date.now() + 3600_000;
    // Two requests asking at once (a retry a second out, GC after the grace period): the later must not win.
    await Promise.all([schedule(soon), schedule(soon + 3600_000)]);
    expect(await state.storage.getAlarm()).toBe(soon);
    await schedule(soon + 1);
    expect(await state.storage.getAlarm()).toBe(soon);
    await schedule(soon - 1);
    expect(await state.storage.getAlarm()).toBe(soon - 1);
  });
});

it('fails a change whose maintenance alarm cannot be set, before anything is uploaded', async () => {
  const key = await newTenantKey('gc-alarm-fail-tenant');
  await call('POST', '/v1/collections', key, { name: 'noalarm', bits: 16 });
  const doIds = new Set((await listDurableObjectIds(env.COLLECTIONS)).map((id) => id.toString()));
  await call('POST', '/v1/collections/noalarm/items', key, { items: [{ id: 'a', code: '0001' }] });
  const [doId] = (await listDurableObjectIds(env.COLLECTIONS)).filter((id) => !doIds.has(id.toString()));
  const before = await shardKeys();
  await runInDurableObject(env.COLLECTIONS.get(doId), async (_, state) => {
    await state.storage.deleteAlarm();
    state.storage.setAlarm = async () => {
      throw new Error('setAlarm failed');
    };
  });
  expect((await send('POST', '/v1/collections/noalarm/items', key, { items: [{ id: 'b', code: '0002' }] })).status).toBe(500);
  expect(await shardKeys()).toEqual(before);
  expect((await send('GET', '/v1/collections/noalarm/items/b', key)).status).toBe(404);
});
