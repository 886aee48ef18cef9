// What one search holds in memory (docs/RUNTIMES.md, "Workers: the memory of one search"): a
// collection of `--items` items of the profile that section assumes (64-bit codes, 64-value
// descriptors, 20-byte ids, 60 bytes of metadata; full shards of 16,384 items) in a temporary
// SQLite KV, then one search by code with re-ranking (k 10, so a pool of 100) through a cold
// reader with the Worker's 32 MiB cache. What the process holds (V8's heap plus array buffers,
// wasm memory included, after a full GC, so garbage is not counted) is sampled at every KV read
// of that search; the peak over what it held before is printed.
//
//   npx node --expose-gc --import tsx scripts/bench/search-memory.ts [--items 600000] [--json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { searchManifest } from '../../functions/search/search.ts';
import { migrateHeads, sqlHeadStore } from '../../functions/store/head.ts';
import { CollectionReader } from '../../functions/store/reader.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../../functions/store/sqlite.ts';
import { CollectionWriter, type WriteOp } from '../../functions/store/writer.ts';
import { loadHammingKernel } from '../../wasm/load-node.ts';
import { MemoryProbe } from './memory.ts';

const { values } = parseArgs({ options: { items: { type: 'string', default: '600000' }, json: { type: 'boolean', default: false } } });
const items = Number(values.items);
const probe = new MemoryProbe();
/** The Worker's shard cache (functions/entries/worker.ts, which Node cannot import). */
const WORKER_CACHE_BYTES = 32 << 20;
const DIMS = 64;

const dir = mkdtempSync(join(tmpdir(), 'medhash-search-memory-'));
try {
  const kvDb = openSqlite(join(dir, 'kv.sqlite'));
  const ctl = sqliteDb(openSqlite(join(dir, 'control.sqlite')));
  migrateHeads(ctl);
  const spec = { id: 'col_bench', bits: 64 as const, descriptor_dims: DIMS };
  const kv = new SqliteKV(kvDb);
  const writer = new CollectionWriter(kv, sqlHeadStore(ctl, spec.id), spec);
  const item = (i: number): WriteOp => ({
    op: 'put',
    record: {
      id: `item-${String(i).padStart(15, '0')}`, // 20 bytes
      code: Uint8Array.from({ length: 8 }, (_, j) => (i * 2654435761 + j * 40503) >>> (j % 24)),
      descriptor: Int8Array.from({ length: DIMS }, (_, j) => ((i * 31 + j * 17) % 255) - 127),
      metadata: JSON.stringify({ label: `class-${i % 7}`, modality: 'CT', body_part: 'chest', p: `${i % 1000}` }).padEnd(60),
    },
  });
  for (let i = 0; i < items; i += 16384) {
    await writer.apply(Array.from({ length: Math.min(16384, items - i) }, (_, j) => item(i + j)));
    if (!values.json) process.stderr.write(`\rbuilding: ${Math.min(i + 16384, items)}/${items} items`);
  }
  if (!values.json) process.stderr.write('\n');
  const kernel = await loadHammingKernel();
  const reader = new CollectionReader(probe.wrap(kv), WORKER_CACHE_BYTES);
  const m = (await reader.manifest(spec.id))!;
  probe.start();
  const outcome = await searchManifest(reader, kernel, m, {
    code: new Uint8Array(8).fill(0x5a),
    k: 10,
    descriptor: Int8Array.from({ length: DIMS }, (_, j) => j - 32),
    contentWeight: 0.3,
  });
  if (outcome.hits.length !== 10) throw new Error(`expected 10 hits, got ${outcome.hits.length}`);
  const blobBytes = m.shards.reduce((n, s) => n + s.bytes, 0);
  const out = {
    bench: 'search-memory',
    items: m.count,
    shards: m.shards.length,
    shard_blobs_mb: Number((blobBytes / 2 ** 20).toFixed(1)),
    peak_extra_mb: Number(probe.peakExtraMb().toFixed(1)),
  };
  console.log(values.json ? JSON.stringify(out) : `one search of ${out.items} items in ${out.shards} shards (${out.shard_blobs_mb} MB of blobs): +${out.peak_extra_mb} MB held at its peak`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
