// What a write spread over a collection holds in memory (docs/API.md, Limits): a collection of
// `--shards` full shards (the default caps: 16384 items or 4 MiB each; items of ~250 bytes, so both
// caps bind alike) in a temporary SQLite KV, then one change that puts one item into every shard.
// What it holds (V8's heap plus array buffers, after a full GC, so garbage is not counted) is
// sampled at every KV call of that change; the peak over what the process held before it is
// printed. The time printed includes those GCs, so it is not the change's speed.
//
//   npx node --expose-gc --import tsx scripts/bench/spread-write.ts [--shards 24] [--json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrateHeads, sqlHeadStore } from '../../functions/store/head.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../../functions/store/sqlite.ts';
import { CollectionWriter, DEFAULT_WRITER_LIMITS, type WriteOp } from '../../functions/store/writer.ts';
import { MemoryProbe } from './memory.ts';

const { values } = parseArgs({ options: { shards: { type: 'string', default: '24' }, json: { type: 'boolean', default: false } } });
const shards = Number(values.shards);
const probe = new MemoryProbe();
const PER_SHARD = DEFAULT_WRITER_LIMITS.maxShardItems;

const dir = mkdtempSync(join(tmpdir(), 'medhash-spread-'));
try {
  const kvDb = openSqlite(join(dir, 'kv.sqlite'));
  const ctl = sqliteDb(openSqlite(join(dir, 'control.sqlite')));
  migrateHeads(ctl);
  const spec = { id: 'col_bench', bits: 64 as const, descriptor_dims: 32 };
  const writer = new CollectionWriter(probe.wrap(new SqliteKV(kvDb)), sqlHeadStore(ctl, spec.id), spec);
  const id = (i: number) => `item-${String(i).padStart(9, '0')}`;
  const item = (i: number, tag: string): WriteOp => ({
    op: 'put',
    record: {
      id: id(i),
      code: new Uint8Array(8).fill(i & 0xff),
      descriptor: new Int8Array(32).fill((i % 200) - 100),
      metadata: JSON.stringify({ label: tag, source_uri: `s3://archive/${'x'.repeat(150)}/${i}` }),
    },
  });
  for (let s = 0; s < shards; s++) {
    await writer.apply(Array.from({ length: PER_SHARD }, (_, j) => item(s * PER_SHARD + j, 'base')));
    if (!values.json) process.stderr.write(`\rbuilding: ${s + 1}/${shards} shards`);
  }
  if (!values.json) process.stderr.write('\n');
  const heads = sqlHeadStore(ctl, spec.id);
  const inCollection = heads.load()!.manifest.shards.length;
  probe.start();
  const t0 = performance.now();
  const r = await writer.apply(Array.from({ length: shards }, (_, s) => item(s * PER_SHARD + PER_SHARD / 2, 'spread')));
  const ms = performance.now() - t0;
  if (r.changed !== shards) throw new Error(`expected ${shards} items changed, got ${r.changed}`);
  const mb = probe.peakExtraMb();
  const out = { bench: 'spread-write', shards: inCollection, items: shards * PER_SHARD, changed: r.changed, peak_extra_mb: Number(mb.toFixed(1)), ms: Math.round(ms) };
  console.log(values.json ? JSON.stringify(out) : `a change touching all ${inCollection} shards (${shards * PER_SHARD} items): +${out.peak_extra_mb} MB held at its peak, ${out.ms} ms`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
