// The operator's recovery of a collection whose Durable Object lost its writer state (no backup
// can restore one): POST /v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest makes
// the published manifest the Durable Object's state, and ingest works again; a missing shard refused.
import { env } from 'cloudflare:workers';
import { runInDurableObject } from 'cloudflare:test';
import { expect, it } from 'vitest';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';
import { call, send } from './client.ts';

it('recovers a Durable Object that lost its writer state: adopt-manifest, then ingest works and search finds every item; a missing shard refused', async () => {
  const tenant = await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name: 'adopt-manifest' });
  const key = (await call('POST', `/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['ingest', 'admin', 'search'] })).secret;
  await call('POST', '/v1/collections', key, { name: 'lost', bits: 16 });
  await call('POST', '/v1/collections/lost/items', key, { items: [{ id: 'a', code: '0001' }, { id: 'b', code: '0002' }] });
  const control = env.CONTROL.get(env.CONTROL.idFromName('control'));
  const id = await runInDurableObject(control, (_, state) => state.storage.sql.exec<{ id: string }>("SELECT id FROM collections WHERE name = 'lost'").one().id);
  const adopt = `/v1/admin/tenants/${tenant.id}/collections/lost/adopt-manifest`;
  const healthy = await send('POST', adopt, TEST_OPERATOR_KEY);
  expect([healthy.status, (await healthy.json<any>()).error.code]).toEqual([409, 'adopt_not_needed']);
  await runInDurableObject(env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id)), (_, state) => {
    state.storage.sql.exec('DELETE FROM writer_heads');
  });
  expect((await send('POST', '/v1/collections/lost/items', key, { items: [{ id: 'c', code: '0003' }] })).status).toBe(409);

  const r = await send('POST', adopt, TEST_OPERATOR_KEY);
  expect(r.status).toBe(200);
  expect(await r.json()).toMatchObject({ collection: id, state: 'missing', previous_generation: null, generation: 1, count: 2 });
  expect(await call('POST', '/v1/collections/lost/items', key, { items: [{ id: 'c', code: '0003' }] })).toMatchObject({ generation: 2 });
  const found = await call('POST', '/v1/collections/lost/search', key, { code: '0000', k: 10, radius: 16 });
  expect(found.results.map((x: { id: string }) => x.id).sort()).toEqual(['a', 'b', 'c']);

  // A shard the manifest names gone too: refused across the Durable Object hop, listing it, writing nothing.
  const [shard] = JSON.parse((await env.MEDHASH_KV.get(`c/${id}/manifest`))!).shards as { key: string; bytes: number }[];
  await env.MEDHASH_KV.delete(shard.key);
  await runInDurableObject(env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id)), (_, state) => {
    state.storage.sql.exec('DELETE FROM writer_heads');
  });
  const refused = await send('POST', adopt, TEST_OPERATOR_KEY);
  expect([refused.status, (await refused.json<any>()).error]).toEqual([409, expect.objectContaining({ code: 'shards_missing', details: { missing: [{ key: shard.key, bytes: shard.bytes, found: null }] } })]);
  const heads = await runInDurableObject(env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id)), (_, state) => state.storage.sql.exec('SELECT 1 FROM writer_heads').toArray().length);
  expect(heads).toBe(0);
});
