// What a search's metadata filter costs (docs/API.md, Search): a collection of N synthetic items
// (64-bit codes, 32-value descriptors; label one of 6, modality one of 4, by item number) built in
// a temporary Node data dir, then k=10 searches through the app with filters of different
// breadth, each 30 times in a row after 3 warm-up searches (the first builds the shard columns).
//
//   npx tsx scripts/bench/filters.ts [--n 200000] [--json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createApp } from '../../functions/api/app.ts';
import { createNodeBackend } from '../../functions/entries/node.ts';
import type { WriteOp } from '../../functions/store/writer.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '200000' }, json: { type: 'boolean', default: false } } });
const n = Number(values.n);
const OPERATOR = `op-${'x'.repeat(40)}`;
const MODALITIES = ['CT', 'MR', 'XR', 'US'];
const WARM = 3;
const TIMED = 30;

const dir = mkdtempSync(join(tmpdir(), 'medhash-filters-'));
const node = await createNodeBackend({ dataDir: dir, operatorKey: OPERATOR });
try {
  const app = createApp(node.backend);
  const call = async (path: string, key: string, body: unknown) =>
    app.request(path, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const tenant = (await (await call('/v1/admin/tenants', OPERATOR, { name: 'bench' })).json()) as { id: string };
  const { secret } = (await (await call(`/v1/admin/tenants/${tenant.id}/keys`, OPERATOR, { scopes: ['search', 'ingest', 'admin'] })).json()) as { secret: string };
  // a plan above the bench's rate, as bench:e2e gives its tenant: it measures time, not 429s
  await node.backend.ledger(tenant.id).setPlan(tenant.id, { rate_per_second: 1e6, burst: 1e6, monthly_quota: null }, { key_id: 'operator', action: 'plan.update' });
  await call('/v1/collections', secret, { name: 'big', bits: 64, descriptor_dims: 32 });
  const col = (await node.backend.control.getCollection(tenant.id, 'big'))!;
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  // straight into the collection's writer, as bench:e2e fills its index
  for (let start = 0; start < n; start += 16384) {
    const ops: WriteOp[] = [];
    for (let i = start; i < Math.min(n, start + 16384); i++) {
      ops.push({ op: 'put', record: {
        id: `item-${String(i).padStart(8, '0')}`,
        code: Uint8Array.from({ length: 8 }, () => rnd() * 256),
        descriptor: Int8Array.from({ length: 32 }, () => rnd() * 256 - 128),
        metadata: JSON.stringify({ label: `L${i % 6}`, modality: MODALITIES[i % 4] }),
      } });
    }
    await node.backend.writer(col).apply(ops);
  }
  const code = '5a'.repeat(8);
  const cases: Array<[string, object | undefined]> = [
    ['no filter', undefined],
    ['modality CT (1/4 of the items)', { modality: 'CT' }],
    ['label L3 (1/6)', { label: 'L3' }],
    ['label L3 and modality MR (1/12)', { label: 'L3', modality: 'MR' }],
    ['label L3 and modality XR (none: 1/6 and 1/4 that never meet)', { label: 'L3', modality: 'XR' }],
    ['a label no item holds', { label: 'nope' }],
  ];
  for (const [name, filter] of cases) {
    const search = async () => {
      const res = await call('/v1/collections/big/search', secret, { code, ...(filter && { filter }) });
      if (res.status !== 200) throw new Error(`${name}: HTTP ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    };
    for (let i = 0; i < WARM; i++) await search();
    const t0 = performance.now();
    for (let i = 0; i < TIMED; i++) await search();
    const ms = (performance.now() - t0) / TIMED;
    console.log(values.json ? JSON.stringify({ bench: 'filters', n_items: n, filter: name, mean_ms: Number(ms.toFixed(2)) }) : `${name}: ${ms.toFixed(1)} ms`);
  }
} finally {
  node.close();
  rmSync(dir, { recursive: true, force: true });
}
