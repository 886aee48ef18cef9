// Collection store: copy-on-write upserts/deletes, shard caps, idempotency, serialised writes,
// crash safety (interrupted ingest at every step), readers racing manifest swaps, GC, two
// processes on one data dir, and the stray shards they can leave; a writer state lost or rolled
// back behind the manifest in KV, refused.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { searchManifest } from '../functions/search/search.ts';
import { encodeShard, Shard, ShardFormatError, type ShardRecord } from '../functions/shards/codec.ts';
import { encodeManifest, ManifestFormatError, manifestKey, shardKey, type Manifest } from '../functions/shards/manifest.ts';
import { encodeHead, migrateHeads, sqlHeadStore, type HeadStore } from '../functions/store/head.ts';
import type { KV } from '../functions/store/kv.ts';
import { sqlWriterStates } from '../functions/store/orphans.ts';
import { CollectionReader } from '../functions/store/reader.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import type { SqlDb } from '../functions/store/sql.ts';
import { CollectionWriter, DEFAULT_WRITER_LIMITS, MAX_ERASE_ITEMS, MAX_RECENT_SHARDS, READ_AHEAD, READ_AHEAD_BYTES, RecentBudget, WRITE_WINDOW, WRITE_WINDOW_BYTES, type CollectionSpec, type WriteOp, type WriterLimits } from '../functions/store/writer.ts';
import { sha256Hex } from '../functions/util/bytes.ts';
import { MedhashError } from '../functions/util/errors.ts';
import { damageHead } from './shared/damaged-manifest.ts';
import { seededRandom } from './shared/random.ts';
import type { SecondWriterJob } from './shared/second-writer.ts';
import { loadHammingKernel } from '../wasm/load-node.ts';
import type { DatabaseSync } from 'node:sqlite';

const SPEC: CollectionSpec = { id: 'col_test', bits: 16, descriptor_dims: 2 };

const rec = (id: string, v: number, label = ''): ShardRecord => ({
  id,
  code: new Uint8Array([v & 0xff, (v >> 8) & 0xff]),
  descriptor: new Int8Array([v % 100, -(v % 100)]),
  metadata: label ? JSON.stringify({ label }) : '{}',
});
const put = (id: string, v: number, label = ''): WriteOp => ({ op: 'put', record: rec(id, v, label) });
const ids = (n: number, prefix = 'id') => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);

/** KV decorator: optional failures and random delays (to interleave readers and writers). */
class TestKV implements KV {
  failPut: ((key: string, n: number) => boolean) | null = null;
  failDelete = false;
  jitterMs = 0;
  puts = 0;
  /** Shard blobs read. */
  shardGets = 0;
  /** Shard blobs written. */
  shardPuts = 0;
  /** The most shards read at any time and not matched by a shard written since (a change's working set). */
  mostUnwritten = 0;
  /** The most shard blobs being read, and being written, at once. */
  mostShardGetsAtOnce = 0;
  mostShardPutsAtOnce = 0;
  private shardGetsNow = 0;
  private shardPutsNow = 0;
  constructor(readonly inner: KV) {}
  private async jitter() {
    if (this.jitterMs) await sleep(Math.random() * this.jitterMs);
  }
  async get(key: string) {
    const shard = key.includes('/s/');
    if (shard) this.mostShardGetsAtOnce = Math.max(this.mostShardGetsAtOnce, ++this.shardGetsNow);
    try {
      await this.jitter();
      if (shard) this.mostUnwritten = Math.max(this.mostUnwritten, ++this.shardGets - this.shardPuts);
      return await this.inner.get(key);
    } finally {
      if (shard) this.shardGetsNow--;
    }
  }
  async put(key: string, value: Uint8Array | string) {
    const shard = key.includes('/s/');
    if (shard) this.mostShardPutsAtOnce = Math.max(this.mostShardPutsAtOnce, ++this.shardPutsNow);
    try {
      await this.jitter();
      if (this.failPut?.(key, this.puts)) throw new Error(`simulated crash putting ${key}`);
      this.puts++;
      await this.inner.put(key, value);
      if (shard) this.shardPuts++;
    } finally {
      if (shard) this.shardPutsNow--;
    }
  }
  async delete(key: string) {
    if (this.failDelete) throw new Error(`simulated failure deleting ${key}`);
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
}

let kvDb: DatabaseSync;
let ctlDb: DatabaseSync;
let sql: SqlDb;
let kv: TestKV;
let clock: number;

/** Empty KV and control stores (in memory), closing the previous ones. */
function freshStores(): void {
  kvDb?.close();
  ctlDb?.close();
  kvDb = openSqlite(':memory:');
  ctlDb = openSqlite(':memory:');
  sql = sqliteDb(ctlDb);
  migrateHeads(sql);
  kv = new TestKV(new SqliteKV(kvDb));
}

beforeEach(() => {
  freshStores();
  clock = 1_000_000;
});

afterAll(() => {
  kvDb.close();
  ctlDb.close();
});

function writer(limits: Partial<WriterLimits> = {}, heads: HeadStore = sqlHeadStore(sql, SPEC.id)): CollectionWriter {
  return new CollectionWriter(kv, heads, SPEC, { ...DEFAULT_WRITER_LIMITS, ...limits }, { now: () => clock });
}

async function published(): Promise<Manifest | null> {
  return new CollectionReader(kv.inner, 1 << 20).manifest(SPEC.id);
}

/** Every item of the published index, read shard by shard (fails on a missing shard). */
async function snapshot(): Promise<Map<string, ShardRecord>> {
  const m = await published();
  const out = new Map<string, ShardRecord>();
  for (const s of m?.shards ?? []) {
    const blob = await kv.inner.get(s.key);
    expect(blob, `shard ${s.key} named by the manifest exists`).not.toBeNull();
    const shard = Shard.decode(blob!);
    shard.ids.forEach((id, row) => out.set(id, shard.record(row)));
  }
  expect(out.size).toBe(m?.count ?? 0);
  return out;
}

const shardKeys = async () => (await kv.inner.list(`c/${SPEC.id}/s/`)).sort();

describe('collection writer', () => {
  it('splits into shards under the item cap, ordered and non-overlapping', async () => {
    const w = writer({ maxShardItems: 10 });
    const all = ids(95);
    for (let i = 0; i < all.length; i += 20) await w.apply(all.slice(i, i + 20).map((id, j) => put(id, i + j)));
    const m = (await published())!;
    expect(m.count).toBe(95);
    expect(m.shards.length).toBeGreaterThanOrEqual(10);
    for (const s of m.shards) expect(s.count).toBeLessThanOrEqual(10);
    expect([...(await snapshot()).keys()]).toEqual(all);
  });

  it('cuts a run into shards that differ by one item at most: no small last shard', async () => {
    const w = writer({ maxShardItems: 5 });
    await w.apply(ids(21).map((id, i) => put(id, i)));
    expect((await published())!.shards.map((s) => s.count)).toEqual([5, 4, 4, 4, 4]);
  });

  it('splits under the byte cap', async () => {
    const w = writer({ maxShardBytes: 64 << 10 });
    const big = 'x'.repeat(3000);
    await w.apply(ids(80).map((id, i) => put(id, i, big)));
    const m = (await published())!;
    expect(m.shards.length).toBeGreaterThanOrEqual(4);
    for (const s of m.shards) expect(s.bytes).toBeLessThanOrEqual(64 << 10);
  });

  it('rewrites only the shard covering an upserted or deleted id', async () => {
    const w = writer({ maxShardItems: 10 });
    await w.apply(ids(50).map((id, i) => put(id, i)));
    const before = (await published())!;
    const r = await w.apply([put('id-0023', 999, 'changed')]);
    expect(r).toMatchObject({ generation: before.generation + 1, changed: 1, count: 50 });
    const after = (await published())!;
    const changed = after.shards.filter((s, i) => s.key !== before.shards[i].key);
    expect(changed).toHaveLength(1);
    expect(changed[0].first_id <= 'id-0023' && 'id-0023' <= changed[0].last_id).toBe(true);
    expect((await snapshot()).get('id-0023')!.metadata).toBe('{"label":"changed"}');

    const d = await w.apply([{ op: 'delete', id: 'id-0042' }, { op: 'delete', id: 'nope' }]);
    expect(d).toMatchObject({ changed: 1, missing: ['nope'], count: 49 });
    expect((await snapshot()).has('id-0042')).toBe(false);
  });

  it('drops a shard emptied by deletes', async () => {
    const w = writer({ maxShardItems: 5 });
    await w.apply(ids(15).map((id, i) => put(id, i)));
    expect((await published())!.shards).toHaveLength(3);
    await w.apply(ids(15).slice(5, 10).map((id) => ({ op: 'delete', id })));
    const m = (await published())!;
    expect(m.shards).toHaveLength(2);
    expect(m.count).toBe(10);
  });

  it('merges a shard that deletes left small into its neighbour (the left one at the end)', async () => {
    const w = writer({ maxShardItems: 10 });
    await w.apply(ids(40).map((id, i) => put(id, i)));
    expect((await published())!.shards.map((s) => s.count)).toEqual([10, 10, 10, 10]);
    await w.apply(ids(40).slice(10, 18).map((id) => ({ op: 'delete', id }))); // shard 1 keeps 2
    expect((await published())!.shards.map((s) => s.count)).toEqual([10, 6, 6, 10]);
    await w.apply(ids(40).slice(30, 38).map((id) => ({ op: 'delete', id }))); // the last keeps 2
    const m = (await published())!;
    expect(m.shards.map((s) => s.count)).toEqual([10, 6, 8]);
    const left = new Set([...ids(10), ...ids(40).slice(18, 30), ...ids(40).slice(38)]);
    expect(new Set((await snapshot()).keys())).toEqual(left);
  });

  it('keeps every shard at a quarter of the item cap or more (bar a lone shard), whatever deletes and puts come', async () => {
    const w = writer({ maxShardItems: 8 });
    const rng = seededRandom(7).next;
    const all = ids(200);
    const stored = new Set<string>();
    for (let round = 0; round < 40; round++) {
      const ops: WriteOp[] = [];
      for (const id of all) {
        const r = rng();
        if (stored.has(id) && r < 0.3) ops.push({ op: 'delete', id });
        else if (!stored.has(id) && r < 0.2) ops.push(put(id, round));
      }
      await w.apply(ops);
      for (const op of ops) op.op === 'delete' ? stored.delete(op.id) : stored.add(op.record.id);
      const m = (await published())!;
      if (m.shards.length > 1) for (const s of m.shards) expect(s.count * 4, `round ${round}`).toBeGreaterThanOrEqual(8);
      expect(new Set((await snapshot()).keys())).toEqual(stored);
    }
  });

  it('treats an identical batch as a no-op: no new shard, same generation', async () => {
    const w = writer();
    const batch = ids(30).map((id, i) => put(id, i, `l${i}`));
    const first = await w.apply(batch);
    const keys = await shardKeys();
    const puts = kv.puts;
    const again = await w.apply([...batch].reverse());
    expect(again).toEqual({ ...first, changed: 0 });
    expect(kv.puts).toBe(puts);
    expect(await shardKeys()).toEqual(keys);
  });

  it('serialises concurrent applies: nothing is lost', async () => {
    kv.jitterMs = 3;
    const w = writer({ maxShardItems: 16 });
    const batches = Array.from({ length: 12 }, (_, b) => ids(10, `b${b}`).map((id, i) => put(id, b * 10 + i)));
    const results = await Promise.all(batches.map((batch) => w.apply(batch)));
    expect(results.map((r) => r.generation).sort((a, b) => a - b)).toEqual(batches.map((_, i) => i + 1));
    const snap = await snapshot();
    expect(snap.size).toBe(120);
    for (const batch of batches) for (const op of batch) expect(snap.has((op as { record: ShardRecord }).record.id)).toBe(true);
  });

  it('two writers on one store (two processes): a conflicting write is refused, never lost', async () => {
    // The race needs a particular interleaving (about 1 round in 40 hit it before the fix), so
    // many rounds, each on fresh stores.
    for (let round = 0; round < 100; round++) {
      if (round > 0) freshStores();
      kv.jitterMs = 3;
      const a = writer();
      const b = writer();
      const outcomes = await Promise.allSettled(
        Array.from({ length: 8 }, (_, n) => (n % 2 ? a : b).apply(ids(5, `w${n}`).map((id, i) => put(id, i)))),
      );
      const snap = await snapshot();
      let succeeded = 0;
      outcomes.forEach((o, n) => {
        if (o.status === 'fulfilled') {
          succeeded++;
          for (const id of ids(5, `w${n}`)) expect(snap.has(id)).toBe(true);
        } else {
          expect(o.reason).toBeInstanceOf(MedhashError);
          expect((o.reason as MedhashError).code).toBe('write_conflict');
        }
      });
      expect(succeeded).toBeGreaterThan(0);
      expect(snap.size, `round ${round}: only the writes reported as done are stored`).toBe(succeeded * 5);
      // A late manifest put from one writer never leaves KV behind the other's commit.
      expect((await published())!.generation).toBe(sqlHeadStore(sql, SPEC.id).load()!.manifest.generation);
    }
  });

  it('an ingest interrupted while uploading shards loses nothing and shows no half index', async () => {
    const w = writer({ maxShardItems: 10, graceMs: 60_000 });
    await w.apply(ids(40).map((id, i) => put(id, i)));
    const before = await published();
    const snapBefore = await snapshot();
    // Crash on the third blob of the next ingest (uploads run in parallel, so others may land).
    let blobs = 0;
    kv.failPut = (key) => key.includes('/s/') && ++blobs === 3;
    await expect(w.apply([...ids(40).map((id, i) => put(id, i + 1000)), ...ids(20, 'new').map((id, i) => put(id, i))])).rejects.toThrow(/simulated crash/);
    expect(await published()).toEqual(before);
    expect(await snapshot()).toEqual(snapBefore);
    const orphans = (await shardKeys()).filter((k) => !before!.shards.some((s) => s.key === k));
    expect(orphans.length).toBeGreaterThan(0);

    // The next write recovers: orphans become garbage, collected after the grace period.
    kv.failPut = null;
    await w.apply([put('later', 1)]);
    expect((await snapshot()).get('later')).toBeTruthy();
    clock += 60_001;
    await w.maintain();
    for (const k of orphans) expect(await kv.inner.get(k)).toBeNull();
    expect((await snapshot()).size).toBe(41);
  });

  it('a crash between shard upload and the commit leaves the old index intact', async () => {
    const base = sqlHeadStore(sql, SPEC.id);
    let saves = 0;
    let crashAt = -1;
    const heads: HeadStore = {
      load: () => base.load(),
      rev: () => base.rev(),
      save: (h) => {
        if (saves++ === crashAt) throw new Error('simulated crash at commit');
        return base.save(h);
      },
    };
    const w = writer({ maxShardItems: 10 }, heads);
    await w.apply(ids(25).map((id, i) => put(id, i)));
    const before = await published();
    const snapBefore = await snapshot();
    crashAt = saves + 1; // the save after the intent log: the commit of the new manifest
    await expect(w.apply([put('id-0003', 77), put('zzz', 1)])).rejects.toThrow(/simulated crash at commit/);
    expect(await published()).toEqual(before);
    expect(await snapshot()).toEqual(snapBefore);
    const r = await w.apply([put('id-0003', 77), put('zzz', 1)]);
    expect(r.generation).toBe(before!.generation + 1);
    expect((await snapshot()).get('zzz')).toBeTruthy();
  });

  it('a change that uploads no shard (deletes emptying one) still asks for maintenance before its commit', async () => {
    const heads = sqlHeadStore(sql, SPEC.id);
    // the generation committed when each maintenance run is asked for
    const asked: number[] = [];
    const schedule = () => void asked.push(heads.load()?.manifest.generation ?? 0);
    const w = new CollectionWriter(kv, heads, SPEC, { ...DEFAULT_WRITER_LIMITS, maxShardItems: 5 }, { now: () => clock, schedule });
    await w.apply(ids(10).map((id, i) => put(id, i)));
    expect((await published())!.shards).toHaveLength(2);
    asked.length = 0;
    const puts = kv.shardPuts;
    // a crash between the commit and the publish is the maintenance's to repair: it must be asked for first
    await w.apply(ids(10).slice(5).map((id) => ({ op: 'delete', id })));
    expect(kv.shardPuts).toBe(puts);
    expect((await published())!.shards).toHaveLength(1);
    expect(asked[0]).toBe(1);
  });

  it('a failed manifest publish after the commit is reported, then repaired by a retry', async () => {
    const w = writer();
    await w.apply([put('a', 1)]);
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(w.apply([put('b', 2)])).rejects.toMatchObject({ status: 503, code: 'publish_failed', details: { committed: true, generation: 2 } });
    expect((await published())!.generation).toBe(1);
    kv.failPut = null;
    const retry = await w.apply([put('b', 2)]);
    expect(retry).toMatchObject({ generation: 2, changed: 0 });
    expect((await published())!.generation).toBe(2);
    expect((await snapshot()).has('b')).toBe(true);
  });

  it(`keeps the records of the shards it wrote last only when they are few (${MAX_RECENT_SHARDS}): a tail shard, not a spread batch's collection`, async () => {
    const w = writer({ maxShardItems: 16 });
    await w.apply(ids(100).map((id, i) => put(id, i)));
    // appending after the last id rewrites the tail shard, held from the previous append
    await w.apply([put('id-0100', 1)]);
    kv.shardGets = 0;
    await w.apply([put('id-0101', 2)]);
    expect(kv.shardGets).toBe(0);
    // a batch spread over every shard rewrites them all, and is not held: the next change reads its shard
    await w.apply(ids(100).filter((_, i) => i % 8 === 0).map((id) => put(id, 999)));
    kv.shardGets = 0;
    await w.apply([put('id-0102', 3)]);
    expect(kv.shardGets).toBe(1);
  });

  it('keeps those records within a budget shared by the writers of a process: the writer that wrote least recently drops its own', async () => {
    const budget = new RecentBudget(1);
    const specs = [SPEC, { ...SPEC, id: 'col_other' }];
    const [a, b] = specs.map((spec) => new CollectionWriter(kv, sqlHeadStore(sql, spec.id), spec, DEFAULT_WRITER_LIMITS, { now: () => clock, recent: budget }));
    await a.apply([put('a-1', 1)]);
    // one writer alone over the budget keeps its tail shard: its next change reads nothing
    kv.shardGets = 0;
    await a.apply([put('a-2', 2)]);
    expect(kv.shardGets).toBe(0);
    // a second writer's change takes the budget, so the first reads its shard again; before, every
    // writer kept its own, and a Node process held one tail shard for every collection it wrote to
    await b.apply([put('b-1', 1)]);
    kv.shardGets = 0;
    await a.apply([put('a-3', 3)]);
    expect(kv.shardGets).toBe(1);
    kv.shardGets = 0;
    await b.apply([put('b-2', 2)]);
    expect(kv.shardGets).toBe(1);
  });

  it(`rewrites a change spread over many shards a few at a time (${WRITE_WINDOW} uploads at once), never holding most of them`, async () => {
    const w = writer({ maxShardItems: 10 });
    await w.apply(ids(400).map((id, i) => put(id, i)));
    const before = (await published())!;
    expect(before.shards).toHaveLength(40);
    kv.shardGets = kv.shardPuts = kv.mostUnwritten = 0;
    kv.jitterMs = 2;
    const spread = ids(400).filter((_, i) => i % 10 === 3);
    const r = await w.apply(spread.map((id) => put(id, 999, 'spread')));
    expect(r).toMatchObject({ changed: 40, count: 400 });
    expect(kv.shardGets).toBe(40);
    // Read, not yet matched by an upload: the shard in hand, those read ahead, the run held back
    // for compaction, and a window of uploads (all at once, it would be 40).
    expect(kv.mostUnwritten).toBeLessThanOrEqual(1 + READ_AHEAD + 1 + WRITE_WINDOW);
    // Shards of the default size fit the byte windows: both windows stay full.
    expect(kv.mostShardGetsAtOnce).toBe(1 + READ_AHEAD);
    expect(kv.mostShardPutsAtOnce).toBe(WRITE_WINDOW);
    const after = await snapshot();
    expect(after.size).toBe(400);
    for (const id of spread) expect(after.get(id)!.metadata).toBe('{"label":"spread"}');
    expect((await published())!.shards.every((s, i) => s.key !== before.shards[i].key)).toBe(true);
  });

  it('narrows the read ahead and the upload window by bytes (READ_AHEAD_BYTES, WRITE_WINDOW_BYTES) for large shards, one shard going however large', async () => {
    // Items of a quarter of a default-size shard, 5 to a shard (MEDHASH_SHARD_MAX_BYTES allows up
    // to 24 MiB): no shard fits the read-ahead window, no two fit the upload window.
    const limits = { maxShardBytes: 24 << 20, maxShardItems: 5 };
    const pad = 'x'.repeat(DEFAULT_WRITER_LIMITS.maxShardBytes / 4);
    const big = (id: string, v: number): WriteOp => ({ op: 'put', record: { ...rec(id, v), metadata: JSON.stringify({ label: pad }) } });
    const w = writer(limits);
    await w.apply(ids(15).map((id, i) => big(id, i)));
    const before = (await published())!;
    expect(before.shards).toHaveLength(3);
    for (const s of before.shards) expect(s.bytes).toBeGreaterThan(READ_AHEAD_BYTES);
    expect(2 * Math.min(...before.shards.map((s) => s.bytes))).toBeGreaterThan(WRITE_WINDOW_BYTES);
    kv.shardGets = kv.shardPuts = kv.mostShardGetsAtOnce = kv.mostShardPutsAtOnce = 0;
    kv.jitterMs = 2;
    const spread = ['id-0002', 'id-0007', 'id-0012'];
    expect(await w.apply(spread.map((id) => big(id, 999)))).toMatchObject({ changed: 3, count: 15 });
    expect(kv.shardGets).toBe(3);
    expect(kv.shardPuts).toBe(3);
    // Counted in shards only, the windows read one ahead and uploaded two at once, whatever their size.
    expect(kv.mostShardGetsAtOnce).toBe(1);
    expect(kv.mostShardPutsAtOnce).toBe(1);
    // The same shards as the same items written at once into an empty collection.
    const fresh = { ...SPEC, id: 'col_fresh' };
    const final = ids(15).map((id, i) => big(id, spread.includes(id) ? 999 : i));
    await new CollectionWriter(kv, sqlHeadStore(sql, fresh.id), fresh, { ...DEFAULT_WRITER_LIMITS, ...limits }).apply(final);
    const whole = (await new CollectionReader(kv.inner, 1 << 20).manifest(fresh.id))!;
    expect((await published())!.shards.map((s) => s.sha256)).toEqual(whole.shards.map((s) => s.sha256));
  });

  it('erases at most MAX_ERASE_ITEMS matching items per call, in id order, and says how many remain', async () => {
    const w = writer({ maxShardItems: 256 });
    const patient = (id: string, p: string): WriteOp => ({ op: 'put', record: { ...rec(id, 1), metadata: JSON.stringify({ patient_ref: p }) } });
    await w.apply([...ids(MAX_ERASE_ITEMS + 5).map((id) => patient(id, 'p-1')), patient('other', 'p-10'), put('plain', 3, 'p-1')]);
    const first = await w.erase('patient_ref', 'p-1');
    expect(first).toMatchObject({ changed: MAX_ERASE_ITEMS, remaining: 5, visible: true });
    expect(first.ids).toEqual(ids(MAX_ERASE_ITEMS));
    const second = await w.erase('patient_ref', 'p-1');
    expect(second).toMatchObject({ ids: ids(MAX_ERASE_ITEMS + 5).slice(MAX_ERASE_ITEMS), remaining: 0 });
    // A label that happens to equal the value, and a longer value, are not matches.
    expect([...(await snapshot()).keys()].sort()).toEqual(['other', 'plain']);
    expect(await w.erase('patient_ref', 'p-1')).toMatchObject({ ids: [], remaining: 0, changed: 0 });
  });

  it('an erasure finds its items in shards read from KV as in the records it wrote last, escapes in the value included', async () => {
    const tricky = 'p"1\\é';
    const item = (id: string, meta: Record<string, string>): WriteOp => ({ op: 'put', record: { ...rec(id, 1), metadata: JSON.stringify(meta) } });
    const ops = ids(600).map((id, i) => item(id, i % 7 === 0 ? { patient_ref: tricky } : i % 7 === 1 ? { label: tricky, patient_ref: 'x' } : { patient_ref: `${tricky}2` }));
    const wanted = ids(600).filter((_, i) => i % 7 === 0);
    await writer({ maxShardItems: 64 }).apply(ops);
    // a new writer holds no records: every shard is searched as stored
    expect((await writer({ maxShardItems: 64 }).erase('patient_ref', tricky)).ids).toEqual(wanted);
    freshStores();
    const w = writer({ maxShardItems: 10_000 });
    await w.apply(ops); // one shard, whose records this writer keeps
    expect((await w.erase('patient_ref', tricky)).ids).toEqual(wanted);
  });

  it('an erasure whose manifest publish fails is still an answer with its ids, not a retryable error', async () => {
    const w = writer();
    const patient = (id: string): WriteOp => ({ op: 'put', record: { ...rec(id, 1), metadata: JSON.stringify({ patient_ref: 'p-9' }) } });
    await w.apply([patient('a'), patient('b'), put('c', 2)]);
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    const erased = await w.erase('patient_ref', 'p-9');
    expect(erased).toMatchObject({ ids: ['a', 'b'], remaining: 0, visible: false, generation: 2 });
    expect((await published())!.generation).toBe(1);
    kv.failPut = null;
    await w.maintain();
    expect((await published())!.generation).toBe(2);
    expect([...(await snapshot()).keys()]).toEqual(['c']);
  });

  it('a change that committed succeeds even when collecting older garbage fails; maintenance collects it later', async () => {
    const w = writer({ graceMs: 0 });
    await w.apply([put('a', 1)]);
    const first = await shardKeys();
    kv.failDelete = true;
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
    const r = await w.apply([put('a', 2)]);
    expect(r).toMatchObject({ generation: 2, changed: 1 });
    expect(String(logged.mock.calls[0]?.[0])).toMatch(/GC after generation 2 failed .*retrying in maintenance/);
    logged.mockRestore();
    expect((await published())!.generation).toBe(2);
    expect(await shardKeys()).toEqual(expect.arrayContaining(first)); // not collected yet
    kv.failDelete = false;
    await w.maintain();
    expect(await shardKeys()).not.toEqual(expect.arrayContaining(first));
  });

  it('keeps replaced shards for the grace period, then deletes them, never a live one', async () => {
    const w = writer({ graceMs: 10_000 });
    await w.apply([put('a', 1)]);
    const old = (await published())!.shards[0].key;
    await w.apply([put('a', 2)]);
    const live = (await published())!.shards[0].key;
    clock += 9_999;
    await w.maintain();
    expect(await kv.inner.get(old)).not.toBeNull();
    clock += 2;
    await w.maintain();
    expect(await kv.inner.get(old)).toBeNull();
    expect(await kv.inner.get(live)).not.toBeNull();
    // Content that comes back to an earlier state reuses its key: it must survive GC.
    await w.apply([put('a', 1)]);
    await w.apply([put('a', 2)]);
    clock += 20_000;
    await w.maintain();
    expect(await kv.inner.get(live)).not.toBeNull();
    expect((await snapshot()).get('a')!.code).toEqual(new Uint8Array([2, 0]));
  });

  it('destroy removes all data and refuses later writes', async () => {
    const w = writer();
    await w.apply(ids(5).map((id, i) => put(id, i)));
    await w.destroy();
    expect(await kv.inner.list(`c/${SPEC.id}/`)).toEqual([]);
    await w.destroy(); // idempotent, and maintenance of a destroyed collection is a no-op
    await w.maintain();
    await expect(w.apply([put('x', 1)])).rejects.toMatchObject({ status: 404 });
    await expect(writer().apply([put('x', 1)])).rejects.toMatchObject({ status: 404 });
  });

  it('destroy leaves a tombstone that names no shard (their id ranges are item ids), and says whether every delete succeeded', async () => {
    const heads = sqlHeadStore(sql, SPEC.id);
    const w = writer({ maxShardItems: 2 });
    await w.apply(ids(5).map((id, i) => put(id, i)));
    kv.failDelete = true;
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
    expect(await w.destroy()).toBe(false);
    logged.mockRestore();
    const tomb = heads.load()!;
    expect(tomb).toMatchObject({ destroyed: true, manifest: { count: 0, shards: [] } });
    expect(JSON.stringify(tomb)).not.toContain('id-0000');
    expect(tomb.garbage.length).toBe(3); // the shards' keys, kept for the retry
    kv.failDelete = false;
    expect(await w.destroy()).toBe(true);
    expect(await kv.inner.list(`c/${SPEC.id}/`)).toEqual([]);
    expect(heads.load()).toMatchObject({ destroyed: true, garbage: [] });

    // A tombstone written before destroy emptied it still names its shards: destroying again empties it.
    const oldSpec = { ...SPEC, id: 'col_old' };
    const o = new CollectionWriter(kv, sqlHeadStore(sql, oldSpec.id), oldSpec, { ...DEFAULT_WRITER_LIMITS, maxShardItems: 2 });
    await o.apply(ids(5).map((id, i) => put(id, i)));
    const oldHeads = sqlHeadStore(sql, oldSpec.id);
    const h = oldHeads.load()!;
    oldHeads.save({ ...h, destroyed: true });
    expect(await o.destroy()).toBe(true);
    expect(oldHeads.load()).toMatchObject({ destroyed: true, garbage: [], manifest: { count: 0, shards: [] } });
    expect(await kv.inner.list(`c/${oldSpec.id}/`)).toEqual([]);
  });
});

describe('readers during manifest swaps', () => {
  it('always see a complete old or new index', async () => {
    kv.jitterMs = 2;
    const w = writer({ maxShardItems: 8 });
    const all = ids(40);
    const generations = 12;
    await w.apply(all.map((id) => put(id, 0)));
    let done = false;
    const seen = new Set<number>();
    const readerLoop = async () => {
      const reader = new CollectionReader(kv, 1 << 20);
      let reads = 0;
      while (!done || reads === 0) {
        await reader.withManifest(SPEC.id, async (m) => {
          // Generation g wrote value g - 1 into every item: one value throughout, or a torn read.
          const values = new Set<number>();
          let count = 0;
          for (const s of m!.shards) {
            const { shard } = await reader.shard(s, m!);
            for (let row = 0; row < shard.count; row++) values.add(shard.code(row)[0]);
            count += shard.count;
          }
          expect(count).toBe(all.length);
          expect([...values]).toEqual([m!.generation - 1]);
          seen.add(m!.generation);
        });
        reads++;
      }
    };
    const readers = Array.from({ length: 4 }, readerLoop);
    for (let g = 1; g < generations; g++) await w.apply(all.map((id) => put(id, g)));
    done = true;
    await Promise.all(readers);
    expect(seen.size).toBeGreaterThan(2); // the readers really raced the swaps
  });

  it('a reader that outlives the grace period retries once with the fresh manifest', async () => {
    const w = writer({ graceMs: 0 });
    await w.apply([put('a', 1)]);
    const reader = new CollectionReader(kv, 1 << 20);
    let attempts = 0;
    const value = await reader.withManifest(SPEC.id, async (m) => {
      if (attempts++ === 0) {
        await w.apply([put('a', 2)]); // swaps, and GC (grace 0) deletes the shard m names
        await w.maintain();
      }
      const found = await reader.item(m, 'a');
      return found!.shard.code(found!.row)[0];
    });
    expect(attempts).toBe(2);
    expect(value).toBe(2);
  });
});

describe('reader checks', () => {
  it("refuses a manifest stored under another collection's key, and shards of another shape than their manifest's", async () => {
    await writer().apply([put('a', 1)]);
    const m = (await published())!;
    const reader = new CollectionReader(kv, 1 << 20);
    await kv.put(manifestKey('col_other'), encodeManifest(m));
    await expect(reader.manifest('col_other')).rejects.toThrow(/is collection col_test's/);
    // A manifest that says 32-bit codes over 16-bit shards: the kernel would read rows of the wrong width.
    await expect(reader.item({ ...m, bits: 32 }, 'a')).rejects.toThrow(/16-bit codes and 2-value descriptors, manifest says 32 and 2/);
    // Another descriptor size: every similarity would silently be 0.
    await expect(reader.item({ ...m, descriptor_dims: 3 }, 'a')).rejects.toThrow(/manifest says 16 and 3/);
    expect((await reader.item(m, 'a'))!.shard.code(0)[0]).toBe(1);
  });

  it("refuses, as a corrupt index, a shard blob whose length is not its manifest's, read for a lookup or for a change", async () => {
    await writer().apply([put('a', 1), put('b', 2)]);
    const m = (await published())!;
    const recordedAs = (bytes: number): Manifest => ({ ...m, shards: m.shards.map((s) => ({ ...s, bytes })) });
    const reader = new CollectionReader(kv, 1 << 20);
    const [{ key, bytes }] = m.shards;
    await expect(reader.item(recordedAs(bytes + 1), 'a')).rejects.toThrow(ShardFormatError);
    await expect(reader.item(recordedAs(bytes - 1), 'a')).rejects.toThrow(`invalid shard: ${key} is ${bytes} bytes, manifest says ${bytes - 1}`);
    // So is a shard of another shape than its manifest says (a 500 corrupt_index, not internal).
    await expect(reader.item({ ...m, bits: 32 }, 'a')).rejects.toThrow(ShardFormatError);
    const heads = sqlHeadStore(sql, SPEC.id);
    heads.save({ ...heads.load()!, manifest: recordedAs(bytes + 1) });
    await expect(writer().apply([put('a', 3)])).rejects.toThrow(`invalid shard: ${key} is ${bytes} bytes, manifest says ${bytes + 1}`);
    expect((await reader.item(m, 'a'))!.shard.code(0)[0]).toBe(1);
  });
});

describe('writer state', () => {
  const storedHead = () => sql.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', SPEC.id)[0].head;
  const storeHead = (text: string) => sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', text, SPEC.id);

  it('keeps working from a state saved with a version 1 manifest, and saves and publishes version 2 from then on', async () => {
    await writer().apply([put('a', 1)]);
    const head = sqlHeadStore(sql, SPEC.id).load()!;
    // As writers before 2026-11-29 saved it: the manifest's fields as an object, version 1, no checksum.
    storeHead(JSON.stringify({ ...head, manifest: { ...head.manifest, version: 1 } }));
    expect(sqlHeadStore(sql, SPEC.id).load()).toEqual(head);
    await writer().apply([put('b', 2)]);
    const saved = sqlHeadStore(sql, SPEC.id).load()!.manifest;
    expect(JSON.parse(storedHead()).manifest).toBe(encodeManifest(saved));
    expect(new TextDecoder().decode((await kv.inner.get(manifestKey(SPEC.id)))!)).toBe(encodeManifest(saved));
    expect([...(await snapshot()).keys()]).toEqual(['a', 'b']);
  });

  it('refuses a state whose manifest has a damaged byte', async () => {
    await writer().apply([put('a', 1)]);
    storeHead(damageHead(storedHead()));
    await expect(writer().apply([put('b', 2)])).rejects.toThrow(ManifestFormatError);
    await expect(writer().apply([put('b', 2)])).rejects.toThrow(/invalid manifest: checksum mismatch/);
  });

  it('refuses a state whose damaged byte leaves it no JSON, as it does a damaged manifest', async () => {
    await writer().apply([put('a', 1)]);
    storeHead(storedHead().replace('"garbage":[', '"garbage":{'));
    await expect(writer().apply([put('b', 2)])).rejects.toThrow(ManifestFormatError);
    await expect(writer().apply([put('b', 2)])).rejects.toThrow(/invalid writer state: not JSON/);
  });

  it('refuses a state whose damaged byte renames a field, as it does a damaged manifest', async () => {
    await writer().apply([put('a', 1)]);
    storeHead(storedHead().replace('"pending":', '"pendinf":')); // one bit of the 'g'
    await expect(writer().apply([put('b', 2)])).rejects.toThrow(ManifestFormatError);
    await expect(writer().maintain()).rejects.toThrow(/invalid writer state: its fields are not rev, published, pending, garbage and destroyed/);
  });
});

describe('writer state behind the manifest in KV (a control store restored from an older copy, a Durable Object that lost its storage)', () => {
  const behind = (state: string) =>
    `${state}: nothing written (a change from it would drop the items written since); the operator must make KV's manifest its writer state (medhash admin adopt-manifest) or restore the writer state and KV together from one consistent backup (docs/SHARD_FORMAT.md, "Writer state behind KV")`;
  /** The published manifest's bytes and every shard blob, to compare after a refusal. */
  const kvNow = async () => {
    const keys = await kv.inner.list(`c/${SPEC.id}/`);
    return new Map(await Promise.all(keys.map(async (k) => [k, await kv.inner.get(k)] as const)));
  };

  it('refuses a change, writing nothing, when the state is missing while KV holds the manifest; the items stay readable', async () => {
    const w = writer({ maxShardItems: 2 });
    await w.apply(ids(5).map((id, i) => put(id, i)));
    const before = await kvNow();
    const items = await snapshot();
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    const refused = { status: 409, code: 'writer_state_behind', message: behind('its writer state is missing while KV holds its manifest (generation 1)') };
    // The writer that wrote it (cached), and a new one (a restart).
    await expect(w.apply([put('new', 9)])).rejects.toMatchObject(refused);
    await expect(writer().apply([{ op: 'delete', id: ids(5)[0] }])).rejects.toMatchObject(refused);
    await expect(writer().erase('patient_ref', 'p')).rejects.toMatchObject(refused);
    expect(await kvNow()).toEqual(before);
    expect(await snapshot()).toEqual(items);
    expect(sqlHeadStore(sql, SPEC.id).load()).toBeNull();
  });

  it('refuses a change, and the maintenance its republish, from a rolled-back state, writing nothing', async () => {
    const w = writer({ maxShardItems: 2 });
    await w.apply(ids(2).map((id, i) => put(id, i)));
    // Copied between a commit and its publish: the maintenance would publish generation 2.
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(w.apply([put('x', 1)])).rejects.toMatchObject({ code: 'publish_failed' });
    kv.failPut = null;
    const older = sqlHeadStore(sql, SPEC.id).load()!;
    await w.apply(ids(6).map((id, i) => put(id, i)));
    const before = await kvNow();
    const items = await snapshot();
    sql.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?', older.rev, encodeHead(older), SPEC.id);
    const refused = { status: 409, code: 'writer_state_behind', message: behind('its writer state (generation 2) is older than its published manifest (generation 3)') };
    await expect(w.apply([put('new', 9)])).rejects.toMatchObject(refused);
    await expect(writer().apply([put('new', 9)])).rejects.toMatchObject(refused);
    await expect(writer().maintain()).rejects.toMatchObject(refused);
    expect(await kvNow()).toEqual(before);
    expect(await snapshot()).toEqual(items);
    expect(sqlHeadStore(sql, SPEC.id).load()).toEqual(older);
  });

  it('lets a new collection, and a state ahead of KV (a failed publish, KV lagging), write; the maintenance republishes', async () => {
    await writer().apply([put('a', 1)]);
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(writer().apply([put('b', 2)])).rejects.toMatchObject({ code: 'publish_failed', details: { committed: true } });
    kv.failPut = null;
    expect((await published())!.generation).toBe(1);
    await writer().maintain(); // a restarted process
    expect((await published())!.generation).toBe(2);
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(writer().apply([put('c', 3)])).rejects.toMatchObject({ code: 'publish_failed' });
    kv.failPut = null;
    expect(await writer().apply([put('d', 4)])).toMatchObject({ generation: 4, changed: 1 });
    expect([...(await snapshot()).keys()]).toEqual(['a', 'b', 'c', 'd']);
  });

  it('replaces a damaged manifest in KV from its own state on the next change, and refuses one without a state', async () => {
    await writer().apply([put('a', 1)]);
    const damage = async () => {
      const bytes = (await kv.inner.get(manifestKey(SPEC.id)))!.slice();
      bytes[bytes.length - 20] ^= 0x01; // inside the manifest's checked text
      await kv.inner.put(manifestKey(SPEC.id), bytes);
    };
    await damage();
    await expect(published()).rejects.toThrow(ManifestFormatError);
    // A new writer (a restart) must check KV: the damaged copy cannot say its generation, and
    // the state is the collection's own, so the change goes through and republishes.
    expect(await writer().apply([put('b', 2)])).toMatchObject({ generation: 2, changed: 1 });
    expect((await published())!.generation).toBe(2);
    expect([...(await snapshot()).keys()]).toEqual(['a', 'b']);
    await damage();
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    const before = await kvNow();
    await expect(writer().apply([put('c', 3)])).rejects.toMatchObject({ status: 409, code: 'writer_state_behind', message: expect.stringMatching(/^its writer state is missing and its manifest in KV fails its check/) });
    expect(await kvNow()).toEqual(before);
  });

  it('reads the manifest in KV once per writer, and again only after another writer changed the state', async () => {
    const get = vi.spyOn(kv, 'get');
    const manifestGets = () => get.mock.calls.filter(([key]) => key === manifestKey(SPEC.id)).length;
    const w = writer();
    for (let i = 0; i < 3; i++) await w.apply([put(`a${i}`, i)]);
    expect(manifestGets()).toBe(1);
    await writer().apply([put('b', 1)]); // another process
    await w.apply([put('c', 1)]);
    await w.apply([put('d', 1)]);
    expect(manifestGets()).toBe(3);
  });
});

describe("adopting KV's manifest as the writer state (the operator's recovery)", () => {
  const storedHead = () => sql.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', SPEC.id)[0]?.head;
  const kvNow = async () => {
    const keys = await kv.inner.list(`c/${SPEC.id}/`);
    return new Map(await Promise.all(keys.map(async (k) => [k, await kv.inner.get(k)] as const)));
  };
  /** A collection over several shards at generation 3, published, then one change committed and not published. */
  const writtenThenUnpublished = async () => {
    const w = writer({ maxShardItems: 2 });
    await w.apply(ids(2).map((id, i) => put(id, i)));
    const older = sqlHeadStore(sql, SPEC.id).load()!;
    await w.apply(ids(5).map((id, i) => put(id, i)));
    await w.apply([put('zz', 1)]);
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(w.apply([put('never-published', 1)])).rejects.toMatchObject({ code: 'publish_failed' });
    kv.failPut = null;
    return { w, older, items: await snapshot() };
  };

  for (const [state, lose, expected] of [
    ['damaged', () => sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', storedHead().replace('"garbage":[', '"garbage":{'), SPEC.id), null],
    ['missing', () => sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id), null],
    ['behind', (older: Parameters<typeof encodeHead>[0]) => sql.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?', older.rev, encodeHead(older), SPEC.id), 1],
  ] as const) {
    it(`makes a ${state} state the published manifest: writes work again, every published item is kept, the unpublished one is lost`, async () => {
      const { w, older, items } = await writtenThenUnpublished();
      expect((await published())!.generation).toBe(3);
      lose(older);
      await expect(w.apply([put('new', 9)])).rejects.toThrow();
      const m = (await published())!;
      expect(await writer().adoptManifest()).toEqual({ state, previous_generation: expected, generation: 3, count: items.size, shards: m.shards.length });
      expect(sqlHeadStore(sql, SPEC.id).load()).toEqual({ rev: expect.any(Number), manifest: m, published: 3, pending: [], garbage: [], destroyed: false });
      expect(await published()).toEqual(m); // KV unchanged
      // The writer that was refused, and a new one, write again; nothing published is dropped.
      expect(await w.apply([put('new', 9)])).toMatchObject({ generation: 4, changed: 1 });
      expect(await writer().apply([put('newer', 9)])).toMatchObject({ generation: 5, changed: 1 });
      const after = await snapshot();
      expect([...after.keys()].sort()).toEqual([...items.keys(), 'new', 'newer'].sort());
      expect(after.has('never-published')).toBe(false);
      await expect(writer().adoptManifest()).rejects.toMatchObject({ status: 409, code: 'adopt_not_needed' });
    });
  }

  it('refuses a healthy state, a state ahead of KV (an unpublished commit) and a new collection, changing nothing', async () => {
    await expect(writer().adoptManifest()).rejects.toMatchObject({
      status: 409, code: 'adopt_not_needed',
      message: 'it has no writer state and KV holds no manifest of it (nothing was written to it): nothing changed (adopting could only roll it back)',
    });
    expect(sqlHeadStore(sql, SPEC.id).load()).toBeNull();
    await writer().apply([put('a', 1)]);
    const head = storedHead();
    await expect(writer().adoptManifest()).rejects.toMatchObject({
      status: 409, code: 'adopt_not_needed',
      message: "its writer state is intact at generation 1, not behind KV's manifest: nothing changed (adopting could only roll it back)",
    });
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(writer().apply([put('b', 2)])).rejects.toMatchObject({ code: 'publish_failed' });
    kv.failPut = null;
    const ahead = storedHead();
    expect(ahead).not.toBe(head);
    await expect(writer().adoptManifest()).rejects.toMatchObject({ code: 'adopt_not_needed', message: expect.stringMatching(/^its writer state is intact at generation 2/) });
    expect(storedHead()).toBe(ahead);
  });

  it('refuses, writing nothing, when a shard the manifest names is missing or not its recorded length, listing each', async () => {
    await writer({ maxShardItems: 2 }).apply(ids(6).map((id, i) => put(id, i)));
    const m = (await published())!;
    expect(m.shards).toHaveLength(3);
    const [gone, cut] = m.shards;
    await kv.inner.delete(gone.key);
    await kv.inner.put(cut.key, (await kv.inner.get(cut.key))!.slice(1));
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    const before = await kvNow();
    await expect(writer().adoptManifest()).rejects.toMatchObject({
      status: 409, code: 'shards_missing',
      message: `2 of the 3 shard(s) KV's manifest names are missing from KV or not their recorded length: ${gone.key}, ${cut.key}; nothing changed`,
      details: { missing: [{ key: gone.key, bytes: gone.bytes, found: null }, { key: cut.key, bytes: cut.bytes, found: cut.bytes - 1 }] },
    });
    expect(sqlHeadStore(sql, SPEC.id).load()).toBeNull();
    expect(await kvNow()).toEqual(before);
  });

  it('refuses, writing nothing, when KV holds no manifest that verifies', async () => {
    await writer().apply([put('a', 1)]);
    const damaged = storedHead().replace('"garbage":[', '"garbage":{');
    sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damaged, SPEC.id);
    await kv.inner.delete(manifestKey(SPEC.id));
    await expect(writer().adoptManifest()).rejects.toMatchObject({ status: 409, code: 'no_verified_manifest', message: 'KV holds no verified manifest of it to adopt (none): nothing changed' });
    expect(storedHead()).toBe(damaged);
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    await kv.inner.put(manifestKey(SPEC.id), '{"version":2,"crc32":"00000000"}');
    await expect(writer().adoptManifest()).rejects.toMatchObject({ status: 409, code: 'no_verified_manifest', message: expect.stringMatching(/^KV holds no verified manifest of it to adopt \(invalid manifest: /) });
    expect(storedHead()).toBeUndefined();
  });

  it('takes a state whose text names another rev than the stored one (a damaged digit) for damaged: writes refused as such, and adopted', async () => {
    await writer().apply([put('a', 1)]);
    await writer().apply([put('b', 2)]);
    // The text's rev to 0 read as a missing state; to another number, every save failed with write_conflict and adopting was refused.
    for (const damagedRev of [0, 1]) {
      const stored = sql.all<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads WHERE collection = ?', SPEC.id)[0];
      const damaged = stored.head.replace(`{"rev":${stored.rev},`, `{"rev":${damagedRev},`);
      expect(damaged).not.toBe(stored.head);
      sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damaged, SPEC.id);
      const generation = (await published())!.generation;
      const why = `invalid writer state: its rev ${damagedRev} is not the stored rev ${stored.rev}`;
      await expect(writer().apply([put('c', 3)])).rejects.toThrow(new ManifestFormatError(why));
      expect(sqlWriterStates(sql).damaged.get(SPEC.id)).toBe(why); // the orphan sweep's listing agrees
      expect(storedHead()).toBe(damaged);
      expect(await writer().adoptManifest()).toMatchObject({ state: 'damaged', previous_generation: null, generation });
      expect(await writer().apply([put(`c${damagedRev}`, 3)])).toMatchObject({ generation: generation + 1, changed: 1 });
    }
  });

  it('refuses a state another process replaced meanwhile (compare-and-swap), and a deleted collection', async () => {
    await writer().apply([put('a', 1)]);
    const damaged = storedHead().replace('"garbage":[', '"garbage":{');
    sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damaged, SPEC.id);
    const base = sqlHeadStore(sql, SPEC.id);
    // Another process saves a state right after the adoption reads the rev.
    const heads: HeadStore = {
      load: () => base.load(),
      rev: () => {
        const rev = base.rev();
        sql.run('UPDATE writer_heads SET rev = rev + 1 WHERE collection = ?', SPEC.id);
        return rev;
      },
      save: (h) => base.save(h),
    };
    await expect(writer({}, heads).adoptManifest()).rejects.toMatchObject({ status: 409, code: 'write_conflict' });
    expect(storedHead()).toBe(damaged);
    expect(await writer().adoptManifest()).toMatchObject({ state: 'damaged', generation: 1 });
    await writer().destroy();
    await expect(writer().adoptManifest()).rejects.toMatchObject({ status: 404, code: 'collection_not_found' });
  });
});

describe('SqliteKV (the Node KV)', () => {
  it('leaves nothing of a deleted value readable in the file (an erased patient\'s shard)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medhash-secure-delete-'));
    try {
      const db = openSqlite(join(dir, 'kv.sqlite'));
      const store = new SqliteKV(db);
      const secret = new TextEncoder().encode(`{"patient_ref":"MRN-SECRET-77"}`.repeat(3000)); // spans overflow pages
      await store.put('c/x/s/old', secret);
      await store.put('c/x/s/other', new TextEncoder().encode('kept'));
      db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
      await store.delete('c/x/s/old');
      db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
      const bytes = readFileSync(join(dir, 'kv.sqlite'));
      expect(bytes.includes(Buffer.from('kept'))).toBe(true);
      expect(bytes.includes(Buffer.from('MRN-SECRET-77'))).toBe(false);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('converts a data dir made with the old WITHOUT ROWID table once, every value intact', async () => {
    const db = openSqlite(':memory:');
    db.exec('CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID');
    const big = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 31) & 0xff);
    const insert = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?)');
    insert.run('c/x/manifest', new TextEncoder().encode('{"m":1}'));
    insert.run('c/x/s/abc', big);
    const schema = () => (db.prepare("SELECT sql FROM sqlite_master WHERE name = 'kv'").get() as { sql: string }).sql;
    for (let open = 0; open < 2; open++) {
      const store = new SqliteKV(db);
      expect(schema()).not.toMatch(/WITHOUT\s+ROWID/i);
      expect(new TextDecoder().decode((await store.get('c/x/manifest'))!)).toBe('{"m":1}');
      expect(Buffer.from((await store.get('c/x/s/abc'))!).equals(Buffer.from(big))).toBe(true);
      expect(await store.list('c/x/')).toEqual(['c/x/manifest', 'c/x/s/abc']);
    }
    db.close();
  });

  it('leaves the old table as it was when the conversion fails', async () => {
    const db = openSqlite(':memory:');
    db.exec('CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID');
    db.prepare('INSERT INTO kv (key, value) VALUES (?, ?)').run('c/x/manifest', new Uint8Array([1, 2, 3]));
    // A table in the conversion's way makes its copy step fail (duplicate key) mid-transaction.
    db.exec("CREATE TABLE kv_rowid (key TEXT PRIMARY KEY, value BLOB NOT NULL); INSERT INTO kv_rowid VALUES ('c/x/manifest', x'00')");
    expect(() => new SqliteKV(db)).toThrow(/UNIQUE/);
    const sql = (db.prepare("SELECT sql FROM sqlite_master WHERE name = 'kv'").get() as { sql: string }).sql;
    expect(sql).toMatch(/WITHOUT\s+ROWID/i);
    expect([...(db.prepare('SELECT value FROM kv').get() as { value: Uint8Array }).value]).toEqual([1, 2, 3]);
    db.close();
  });
});

describe('writer operations still in flight after a failed change', () => {
  /** KV whose chosen puts/deletes fail at once, and whose held ones wait until released. */
  class HeldKV extends TestKV {
    failOp: ((op: 'put' | 'delete', key: string) => boolean) | null = null;
    holdOp: ((op: 'put' | 'delete', key: string) => boolean) | null = null;
    private held: (() => void)[] = [];
    private async gate(op: 'put' | 'delete', key: string) {
      if (this.failOp?.(op, key)) throw new Error(`simulated failure of ${op} ${key}`);
      if (this.holdOp?.(op, key)) await new Promise<void>((go) => this.held.push(go));
    }
    override async put(key: string, value: Uint8Array | string) {
      await this.gate('put', key);
      return this.inner.put(key, value);
    }
    override async delete(key: string) {
      await this.gate('delete', key);
      return this.inner.delete(key);
    }
    release(): number {
      const n = this.held.length;
      for (const go of this.held.splice(0)) go();
      return n;
    }
  }

  it('a GC delete still in flight when collecting failed cannot remove a shard a later change made live again', async () => {
    const hkv = new HeldKV(kv.inner);
    const w = new CollectionWriter(hkv, sqlHeadStore(sql, SPEC.id), SPEC, { ...DEFAULT_WRITER_LIMITS, graceMs: 1000 }, { now: () => clock });
    await w.apply([put('a', 1)]);
    const onlyA = (await published())!.shards[0].key; // the shard {a}
    await w.apply([put('b', 2)]);
    const ab = (await published())!.shards[0].key;
    await w.apply([put('c', 3)]);
    clock += 1000; // {a} and {a,b} are past their grace
    hkv.failOp = (op, key) => op === 'delete' && key === ab && !(hkv.failOp = null);
    hkv.holdOp = (op, key) => op === 'delete' && key === onlyA && !(hkv.holdOp = null);
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
    const pending = w.apply([put('d', 4)]); // commits; its GC of {a,b} fails, of {a} is slow
    const late = w.apply([{ op: 'delete', id: 'b' }, { op: 'delete', id: 'c' }, { op: 'delete', id: 'd' }]); // back to {a}
    await Promise.race([pending, late, sleep(200)]);
    await sleep(20);
    hkv.release();
    await Promise.all([pending, late]);
    logged.mockRestore();
    expect((await published())!.shards.map((s) => s.key)).toEqual([onlyA]);
    expect(await kv.inner.get(onlyA), 'the live shard {a} is in KV').not.toBeNull();
    expect([...(await snapshot()).keys()]).toEqual(['a']);
  });

  it('an upload still in flight when the change failed cannot outlive the orphan collection', async () => {
    const hkv = new HeldKV(kv.inner);
    const w = new CollectionWriter(hkv, sqlHeadStore(sql, SPEC.id), SPEC, { ...DEFAULT_WRITER_LIMITS, maxShardItems: 2, graceMs: 0 }, { now: () => clock });
    await w.apply([put('a', 1), put('b', 2)]);
    const before = await shardKeys();
    // Two new shards: the upload of one fails at once, the other is slow.
    hkv.failOp = (op, key) => op === 'put' && key.includes('/s/') && !(hkv.failOp = null);
    hkv.holdOp = (op, key) => op === 'put' && key.includes('/s/') && !(hkv.holdOp = null);
    const failed = w.apply([put('c', 3), put('d', 4), put('e', 5)]).catch((e: unknown) => e);
    const next = w.apply([put('a', 9)]); // recovers: the failed change's uploads become garbage
    const collected = w.maintain(); // grace 0: collected
    await Promise.race([collected, sleep(200)]);
    hkv.release();
    await Promise.all([failed, next, collected]);
    await w.maintain();
    const live = (await published())!.shards.map((s) => s.key);
    expect(await shardKeys(), 'no blob outside the live index is left').toEqual([...live].sort());
    expect(before.every((k) => !live.includes(k))).toBe(true);
  });
});

describe('two processes on one data dir', () => {
  /** Starts test/shared/second-writer.ts on `job`; resolves once its stores are open. */
  async function secondWriter(job: SecondWriterJob): Promise<ChildProcess> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'shared', 'second-writer.ts'), JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((ready, failed) => {
      child.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && ready());
      child.on('exit', (code) => failed(new Error(`the second writer exited (${code}) before it was ready`)));
    });
    return child;
  }

  /** Blocks the whole thread, as a step of a synchronous SQLite transaction does, until `path` exists. */
  function waitForFile(path: string): void {
    const cell = new Int32Array(new SharedArrayBuffer(4));
    for (const end = Date.now() + 30_000; !existsSync(path); Atomics.wait(cell, 0, 0, 5)) {
      if (Date.now() > end) throw new Error(`no ${path} after 30 s`);
    }
  }

  it("the GC cannot delete a due shard that the other process uploads again between the GC's check and its deletes", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medhash-two-processes-'));
    const kvDb = openSqlite(join(dir, 'kv.sqlite'));
    const ctlDb = openSqlite(join(dir, 'control.sqlite'));
    let child: ChildProcess | null = null;
    try {
      const sql = sqliteDb(ctlDb);
      migrateHeads(sql);
      const store = new SqliteKV(kvDb);
      const base = sqlHeadStore(sql, SPEC.id);
      const graceMs = 1000;
      const go = join(dir, 'go');
      const done = join(dir, 'done');
      let armed = false; // from maintain() on
      const heads: HeadStore = {
        load: () => base.load(),
        // maintain() reads the stored rev to check that its head is still the stored one before
        // deleting: the other process writes {a: 1} right after that check.
        rev: () => {
          const rev = base.rev();
          if (armed) {
            armed = false;
            writeFileSync(go, '');
            waitForFile(done);
          }
          return rev;
        },
        save: (head) => base.save(head),
      };
      const w = new CollectionWriter(store, heads, SPEC, { ...DEFAULT_WRITER_LIMITS, graceMs }, { now: () => clock });
      const liveKeys = async () => (await new CollectionReader(store, 1 << 20).manifest(SPEC.id))!.shards.map((s) => s.key);
      await w.apply([put('a', 1)]);
      const [due] = await liveKeys();
      await w.apply([put('a', 2)]); // the shard {a: 1} is garbage from here
      clock += graceMs;
      const a1 = rec('a', 1);
      child = await secondWriter({ dir, spec: SPEC, graceMs, now: clock, puts: [{ ...a1, code: [...a1.code], descriptor: [...a1.descriptor] }], go, done });
      armed = true;
      await w.maintain();

      const kernel = await loadHammingKernel();
      const search = async (code: Uint8Array) => {
        const reader = new CollectionReader(store, 1 << 20);
        const found = await reader.withManifest(SPEC.id, (m) => searchManifest(reader, kernel, m, { code, k: 1 }));
        return found.hits.map((h) => [h.id, h.distance]);
      };
      for (const key of await liveKeys()) expect(await store.get(key), `the shard ${key} the published manifest names is in KV`).not.toBeNull();
      expect((await search(a1.code))[0][0]).toBe('a');
      // The other process wrote in the window: it recorded the key, but its upload had to wait for
      // the GC's check and deletes (held here until it gave up), so its change failed, visible
      // nowhere. Sent again, it holds.
      expect(base.load()!.pending).toEqual([due]);
      expect((JSON.parse(readFileSync(done, 'utf8')) as { error?: string }).error).toMatch(/database is locked/);
      await w.apply([put('a', 1)]);
      expect(await liveKeys()).toEqual([due]);
      expect(await store.get(due)).not.toBeNull();
      expect(await search(a1.code)).toEqual([['a', 0]]);
    } finally {
      child?.kill(); // still waiting for `go` when the test failed before it
      kvDb.close();
      ctlDb.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('stray shards: blobs under the prefix that the writer state names nowhere', () => {
  const named = () => {
    const h = sqlHeadStore(sql, SPEC.id).load()!;
    return [...h.manifest.shards.map((x) => x.key), ...h.pending, ...h.garbage.map((g) => g.key)];
  };
  /** A valid shard blob of one item, and its key under the collection's prefix. */
  async function blob(id: string): Promise<{ key: string; bytes: Uint8Array }> {
    const bytes = encodeShard([rec(id, 99)], SPEC.bits, SPEC.descriptor_dims);
    return { key: shardKey(SPEC.id, await sha256Hex(bytes)), bytes };
  }
  /** Puts a valid shard blob that no writer state names. */
  async function plantStray(): Promise<string> {
    const { key, bytes } = await blob('zz');
    await kv.inner.put(key, bytes);
    return key;
  }

  /**
   * Two writers, as two processes. B replaces the shard {a: 1}, whose grace then passes; A writes
   * {a: 1} again, so it records that due garbage key as pending, and its upload of it waits at a
   * gate while B's maintenance takes the writer state over. `release` lets the upload land;
   * `change` is A's change.
   */
  async function dueKeyRecordedAgain(graceMs: number) {
    const b = writer({ graceMs });
    await b.apply([put('a', 1)]);
    const [due] = (await published())!.shards.map((x) => x.key);
    await b.apply([put('a', 2)]); // the shard {a: 1} is garbage from here
    clock += graceMs;
    let atGate!: () => void;
    const reached = new Promise<void>((ok) => (atGate = ok));
    let release!: () => void;
    const gate = new Promise<void>((ok) => (release = ok));
    const gated: KV = {
      get: (key) => kv.get(key),
      put: async (key, value) => {
        if (key === due) {
          atGate();
          await gate;
        }
        return kv.put(key, value);
      },
      delete: (key) => kv.delete(key),
      list: (prefix) => kv.list(prefix),
    };
    const a = new CollectionWriter(gated, sqlHeadStore(sql, SPEC.id), SPEC, { ...DEFAULT_WRITER_LIMITS, graceMs }, { now: () => clock });
    const change = a.apply([put('a', 1)]);
    await reached; // A has recorded the key as pending
    await b.maintain(); // B takes the state over: A's pending key goes (back) on the garbage list
    return { a, b, due, change, release };
  }

  it("are not left when one writer records a due garbage key again and the other's maintenance takes the state over: the key's grace restarts", async () => {
    const graceMs = DEFAULT_WRITER_LIMITS.graceMs;
    const { a, b, due, change, release } = await dueKeyRecordedAgain(graceMs);
    release();
    await expect(change).rejects.toMatchObject({ status: 409, code: 'write_conflict' });
    expect(await kv.inner.get(due)).not.toBeNull();
    expect(sqlHeadStore(sql, SPEC.id).load()!.garbage).toEqual([{ key: due, since: clock }]);
    expect(await b.sweepStrays(false)).toEqual([]);
    // Collected once its new grace has passed, as any garbage.
    clock += graceMs - 1;
    await b.maintain();
    expect(await kv.inner.get(due)).not.toBeNull();
    clock += 1;
    await b.maintain();
    expect(await kv.inner.get(due)).toBeNull();
    // A's change sent again holds: the key is live, and off the garbage list.
    await a.apply([put('a', 1)]);
    expect([...(await snapshot()).entries()].map(([id, r]) => [id, r.code[0]])).toEqual([['a', 1]]);
    expect((await published())!.shards.map((x) => x.key)).toEqual([due]);
    expect(sqlHeadStore(sql, SPEC.id).load()!.garbage.map((g) => g.key)).not.toContain(due);
  });

  it("are left by two writers when one's upload lands after the other's GC deleted the key (an upload slower than the grace period); the sweep finds and deletes them, nothing else", async () => {
    const graceMs = 1000;
    const { a, b, due, change, release } = await dueKeyRecordedAgain(graceMs);
    clock += graceMs;
    await b.maintain(); // A's upload still waits: B collects the key
    expect(await kv.inner.get(due)).toBeNull();
    release();
    await expect(change).rejects.toMatchObject({ status: 409, code: 'write_conflict' });
    expect(await kv.inner.get(due)).not.toBeNull();
    expect(named()).not.toContain(due);

    const keep = named();
    expect(await b.sweepStrays(false)).toEqual([due]);
    expect(await kv.inner.get(due)).not.toBeNull(); // listed only
    expect(await b.sweepStrays(true)).toEqual([due]);
    expect(await kv.inner.get(due)).toBeNull();
    for (const key of keep) expect(await kv.inner.get(key), key).not.toBeNull();
    expect([...(await snapshot()).entries()].map(([id, r]) => [id, r.code[0]])).toEqual([['a', 2]]);
    expect(await b.sweepStrays(true)).toEqual([]);
    // A's change sent again holds.
    await a.apply([put('a', 1)]);
    expect([...(await snapshot()).entries()].map(([id, r]) => [id, r.code[0]])).toEqual([['a', 1]]);
  });

  it('are never live, pending or garbage keys', async () => {
    const w = writer({ maxShardItems: 2, graceMs: 1000 });
    await w.apply(ids(6).map((id, i) => put(id, i)));
    await w.apply([put('id-0000', 100)]); // one shard replaced: garbage within its grace
    const heads = sqlHeadStore(sql, SPEC.id);
    const pending = await blob('zy'); // an upload in flight: recorded, then put
    heads.save({ ...heads.load()!, pending: [pending.key] });
    await kv.inner.put(pending.key, pending.bytes);
    const h = heads.load()!;
    expect([h.manifest.shards.length, h.pending.length, h.garbage.length]).toEqual([3, 1, 1]);
    const keep = named();
    const stray = await plantStray();

    expect(await w.sweepStrays(true)).toEqual([stray]);
    expect((await kv.inner.list(`c/${SPEC.id}/s/`)).sort()).toEqual([...keep].sort());
    expect(heads.load()).toEqual(h);
  });

  it('are never keys the published manifest names, even where the writer state does not (another copy of the control store, at the same generation)', async () => {
    const w = writer();
    // Unpublished, so that the copy's writer, whose state is missing, is not refused for being behind KV.
    kv.failPut = (key) => key === manifestKey(SPEC.id);
    await expect(w.apply([put('a', 1)])).rejects.toMatchObject({ code: 'publish_failed' });
    kv.failPut = null;
    const copy = sqliteDb(openSqlite(':memory:'));
    migrateHeads(copy);
    await new CollectionWriter(kv, sqlHeadStore(copy, SPEC.id), SPEC).apply([put('b', 2)]); // published last: what readers use
    const used = (await published())!.shards.map((x) => x.key);
    expect(named()).not.toContain(used[0]);

    expect(await w.sweepStrays(true)).toEqual([]);
    for (const key of used) expect(await kv.inner.get(key)).not.toBeNull();
  });

  it('are not sought while the writer state is missing or older than the published manifest: refused, nothing deleted', async () => {
    const w = writer({ maxShardItems: 2 });
    await w.apply(ids(2).map((id, i) => put(id, i)));
    const older = sqlHeadStore(sql, SPEC.id).load()!;
    await w.apply(ids(6).map((id, i) => put(id, i)));
    const keys = (await kv.inner.list(`c/${SPEC.id}/s/`)).sort();
    sql.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?', older.rev, encodeHead(older), SPEC.id);
    await expect(w.sweepStrays(true)).rejects.toMatchObject({ status: 409, code: 'writer_state_behind', message: 'its writer state (generation 1) is older than its published manifest (generation 2): nothing of it swept' });
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    await expect(w.sweepStrays(true)).rejects.toMatchObject({ code: 'writer_state_behind', message: `its writer state is missing while KV holds ${keys.length} shard(s) of it: nothing of it swept` });
    expect((await kv.inner.list(`c/${SPEC.id}/s/`)).sort()).toEqual(keys);
  });

  it('are sought from the writer state alone when the manifest in KV fails its check; refused without a state', async () => {
    const w = writer();
    await w.apply([put('a', 1)]);
    const live = (await published())!.shards.map((x) => x.key);
    const bytes = (await kv.inner.get(manifestKey(SPEC.id)))!.slice();
    bytes[bytes.length - 20] ^= 0x01; // inside the manifest's checked text
    await kv.inner.put(manifestKey(SPEC.id), bytes);
    await expect(published()).rejects.toThrow(ManifestFormatError);
    const stray = await plantStray();
    expect(await writer().sweepStrays(true)).toEqual([stray]);
    expect(await kv.inner.get(stray)).toBeNull();
    for (const key of live) expect(await kv.inner.get(key)).not.toBeNull();
    sql.run('DELETE FROM writer_heads WHERE collection = ?', SPEC.id);
    await expect(writer().sweepStrays(true)).rejects.toMatchObject({ code: 'writer_state_behind' });
    for (const key of live) expect(await kv.inner.get(key)).not.toBeNull();
  });

  it('are not deleted when a writer records the key between the sweep\'s read of the state and its deletes', async () => {
    await writer().apply([put('a', 1)]);
    const stray = await plantStray();
    const base = sqlHeadStore(sql, SPEC.id);
    let loads = 0;
    const heads: HeadStore = {
      // the sweep reads the state before and after its listing, then checks it inside its deletes:
      // another process records the key right after the second read
      load: () => {
        const head = base.load();
        if (++loads === 2) base.save({ ...head!, pending: [stray] });
        return head;
      },
      rev: () => base.rev(),
      save: (head) => base.save(head),
    };
    const w = new CollectionWriter(kv.inner, heads, SPEC, DEFAULT_WRITER_LIMITS, { now: () => clock });
    await expect(w.sweepStrays(true)).rejects.toMatchObject({ status: 409, code: 'write_conflict' });
    expect(await kv.inner.get(stray)).not.toBeNull();
    // Named now (pending), it is no stray.
    expect(await w.sweepStrays(true)).toEqual([]);
    expect(await kv.inner.get(stray)).not.toBeNull();
  });

  it("are not taken for a garbage key that another process's GC deletes between the listing and the second read of the state", async () => {
    const graceMs = 1000;
    const w = writer({ graceMs });
    await w.apply([put('a', 1)]);
    const [due] = (await published())!.shards.map((x) => x.key);
    await w.apply([put('a', 2)]);
    clock += graceMs;
    const other = writer({ graceMs });
    const listing: KV = {
      get: (key) => kv.get(key),
      put: (key, value) => kv.put(key, value),
      delete: (key) => kv.delete(key),
      list: async (prefix) => {
        const keys = await kv.list(prefix);
        await other.maintain();
        return keys;
      },
    };
    const sweeper = new CollectionWriter(listing, sqlHeadStore(sql, SPEC.id), SPEC, { ...DEFAULT_WRITER_LIMITS, graceMs }, { now: () => clock });
    expect(await sweeper.sweepStrays(false)).toEqual([]);
    expect(await kv.inner.get(due)).toBeNull(); // collected by the other's GC
  });
});
