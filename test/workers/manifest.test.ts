// What the Worker answers when the manifest it reads from KV fails verification: the same 500
// corrupt_index as Node (test/api.node.test.ts), not a 404 from the shard a damaged id range routes to.
import { env } from 'cloudflare:workers';
import { expect, it } from 'vitest';
import { TEST_SHARD_MAX_ITEMS } from '../shared/constants.ts';
import { damageItems, flipFirstId } from '../shared/damaged-manifest.ts';
import { call, newTenantKey, send } from './client.ts';

it('answers an item lookup through a published manifest with a flipped bit 500 corrupt_index, not 404', async () => {
  const key = await newTenantKey('manifest-damaged');
  await call('POST', '/v1/collections', key, { name: 'c', bits: 16 });
  const before = new Set((await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name));
  expect((await send('POST', '/v1/collections/c/items', key, { items: damageItems(TEST_SHARD_MAX_ITEMS) })).status).toBe(200);
  const [manifest] = (await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name).filter((k) => !before.has(k) && k.endsWith('/manifest'));
  const { damaged, id } = flipFirstId(new Uint8Array((await env.MEDHASH_KV.get(manifest, 'arrayBuffer'))!));
  expect((await send('GET', `/v1/collections/c/items/${id}`, key)).status).toBe(200);
  await env.MEDHASH_KV.put(manifest, damaged);
  const r = await send('GET', `/v1/collections/c/items/${id}`, key);
  expect([r.status, await r.json()]).toEqual([500, { error: { code: 'corrupt_index', message: 'the stored index failed verification; the operator has been told' } }]);
});
