// Workers-only behaviour: the collection Durable Object schedules an alarm for garbage it
// cannot collect yet, and the alarm deletes replaced shards once their grace period is over.
import { env, exports } from 'cloudflare:workers';
import { listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { expect, it } from 'vitest';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';

const call = async (method: string, path: string, key: string, body?: unknown) => {
  const res = await exports.default.fetch(
    new Request(`http://medhash.test${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    }),
  );
  return res.json() as Promise<any>;
};

const shardKeys = async () => (await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name).filter((k) => k.includes('/s/'));

it('collects replaced shards from an alarm after the grace period, never live ones', async () => {
  const tenant = await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 'gc-tenant' });
  const key = (await call('POST', `/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['ingest', 'admin', 'search'] })).secret;
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
