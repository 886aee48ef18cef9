// What the collection's writer, in its Durable Object, answers when it fails: the same as the
// writer in a Node process, although workerd's RPC keeps only an error's message.
import { env } from 'cloudflare:workers';
import { runInDurableObject } from 'cloudflare:test';
import { expect, it } from 'vitest';
import { call, newTenantKey, send } from './client.ts';

it('answers a write or an erasure that reads a corrupt shard with 500 corrupt_index, as Node does, not internal', async () => {
  const key = await newTenantKey('writer-errors-corrupt');
  await call('POST', '/v1/collections', key, { name: 'c', bits: 16 });
  const before = new Set((await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name));
  // Spread over more shards than the writer keeps from its last change, so the next one reads KV.
  const items = Array.from({ length: 200 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, code: i.toString(16).padStart(4, '0'), metadata: { patient_ref: 'P1' } }));
  expect((await send('POST', '/v1/collections/c/items', key, { items })).status).toBe(200);
  const shards = (await env.MEDHASH_KV.list({ prefix: 'c/' })).keys.map((k) => k.name).filter((k) => !before.has(k) && k.includes('/s/'));
  expect(shards.length).toBeGreaterThan(2);
  for (const k of shards) await env.MEDHASH_KV.put(k, 'not a shard');

  const corrupt = { error: { code: 'corrupt_index', message: 'the stored index failed verification; the operator has been told' } };
  for (const [path, body] of [
    ['/v1/collections/c/items', { items: [{ id: 'i000', code: 'ffff' }] }],
    ['/v1/collections/c/erase', { patient_ref: 'P1' }],
    ['/v1/collections/c/search', { code: '0000' }],
  ] as const) {
    const r = await send('POST', path, key, body);
    expect([path, r.status, await r.json()]).toEqual([path, 500, corrupt]);
  }
});

it('answers a write or an erasure with 409 writer_state_behind, writing nothing, once the Durable Object lost its writer state while KV holds the manifest; the items stay readable', async () => {
  const key = await newTenantKey('writer-errors-state-lost');
  await call('POST', '/v1/collections', key, { name: 'lost', bits: 16 });
  await call('POST', '/v1/collections/lost/items', key, { items: [{ id: 'a', code: '0001', metadata: { patient_ref: 'P1' } }, { id: 'b', code: '0002' }] });
  const control = env.CONTROL.get(env.CONTROL.idFromName('control'));
  const id = await runInDurableObject(control, (_, state) => state.storage.sql.exec<{ id: string }>("SELECT id FROM collections WHERE name = 'lost'").one().id);
  const kvNow = async () => {
    const keys = (await env.MEDHASH_KV.list({ prefix: `c/${id}/` })).keys.map((k) => k.name);
    return Object.fromEntries(await Promise.all(keys.map(async (k) => [k, await env.MEDHASH_KV.get(k)] as const)));
  };
  const kept = await kvNow();
  // The Durable Object, already running with its writer, loses its state.
  await runInDurableObject(env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id)), (_, state) => {
    state.storage.sql.exec('DELETE FROM writer_heads');
  });

  for (const [method, path, body] of [
    ['POST', '/v1/collections/lost/items', { items: [{ id: 'c', code: '0003' }] }],
    ['DELETE', '/v1/collections/lost/items/a', undefined],
    ['POST', '/v1/collections/lost/erase', { patient_ref: 'P1' }],
  ] as const) {
    const r = await send(method, path, key, body);
    const { error } = await r.json<any>();
    expect([path, r.status, error.code]).toEqual([path, 409, 'writer_state_behind']);
    expect(error.message).toMatch(/^its writer state is missing while KV holds its manifest \(generation 1\): nothing written/);
  }
  expect(await kvNow()).toEqual(kept);
  expect((await call('GET', '/v1/collections/lost/items/a', key)).code).toBe('0001');
});
