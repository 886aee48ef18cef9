// Query execution with the real wasm kernel: exact against a brute-force oracle, and the same
// answer whatever the shard layout (cap of 1, 7 or 10,000 items per shard), cache size or
// insertion order.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DatabaseSync } from 'node:sqlite';
import type { Bits, HammingKernel } from '../wasm/hamming.ts';
import { compareIdBytes } from '../wasm/hamming.ts';
import { loadHammingKernel } from '../wasm/load-node.ts';
import { pearson } from '../functions/search/rerank.ts';
import { BROAD_SHARE, kthFromPool, kthNearestDistance, searchManifest, SHARD_WINDOW, SHARD_WINDOW_BYTES, type SearchQuery } from '../functions/search/search.ts';
import { Shard } from '../functions/shards/codec.ts';
import type { Manifest, ManifestShard } from '../functions/shards/manifest.ts';
import { parseMetadata } from '../functions/shards/metadata.ts';
import { migrateHeads, sqlHeadStore } from '../functions/store/head.ts';
import type { KV } from '../functions/store/kv.ts';
import { CollectionReader, ShardGoneError, type CachedShard } from '../functions/store/reader.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import { CollectionWriter, DEFAULT_WRITER_LIMITS } from '../functions/store/writer.ts';

let kernel: HammingKernel;
const dbs: DatabaseSync[] = [];

beforeAll(async () => {
  kernel = await loadHammingKernel();
});

afterAll(() => dbs.forEach((d) => d.close()));

function popcount(x: number): number {
  let n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}

const distance = (a: Uint8Array, b: Uint8Array): number => a.reduce((d, x, i) => d + popcount(x ^ b[i]), 0);

interface Item {
  id: string;
  code: Uint8Array;
  descriptor?: Int8Array;
  metadata?: string;
}

/** An index of `items` with at most `perShard` items per shard, inserted in `order`. */
async function index(items: Item[], bits: Bits, perShard: number, cacheBytes = 1 << 24, dims = 0) {
  const kvDb = openSqlite(':memory:');
  const ctlDb = openSqlite(':memory:');
  dbs.push(kvDb, ctlDb);
  const sql = sqliteDb(ctlDb);
  migrateHeads(sql);
  const kv = new SqliteKV(kvDb);
  const spec = { id: 'col_s', bits, descriptor_dims: dims };
  const w = new CollectionWriter(kv, sqlHeadStore(sql, spec.id), spec, { ...DEFAULT_WRITER_LIMITS, maxShardItems: perShard });
  for (let i = 0; i < items.length; i += 50) {
    await w.apply(items.slice(i, i + 50).map((it) => ({ op: 'put', record: { id: it.id, code: it.code, descriptor: it.descriptor ?? new Int8Array(0), metadata: it.metadata ?? '{}' } })));
  }
  const reader = new CollectionReader(kv, cacheBytes);
  const manifest = await reader.manifest(spec.id);
  const search = (code: Uint8Array, k: number, radius?: number) => searchManifest(reader, kernel, manifest, { code, k, radius });
  return Object.assign(search, { query: (q: SearchQuery) => searchManifest(reader, kernel, manifest, q), kv, manifest: manifest! });
}

const arbCase = (bits: Bits) =>
  fc.record({
    // Few distinct codes (2 bits of entropy per byte pair): lots of exact ties.
    items: fc.uniqueArray(
      fc.record({ id: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }), code: fc.uint8Array({ minLength: bits / 8, maxLength: bits / 8, max: 3 }) }),
      { selector: (r) => r.id, minLength: 1, maxLength: 120 },
    ),
    query: fc.uint8Array({ minLength: bits / 8, maxLength: bits / 8, max: 3 }),
    k: fc.integer({ min: 1, max: 130 }),
    radius: fc.option(fc.integer({ min: 0, max: bits }), { nil: undefined }),
  });

describe('search over shards', () => {
  it('matches the brute-force oracle and does not depend on the shard layout', async () => {
    for (const bits of [16, 64, 256] as Bits[]) {
      await fc.assert(
        fc.asyncProperty(arbCase(bits), async ({ items, query, k, radius }) => {
          const oracle = items
            .map((it) => ({ id: it.id, distance: distance(it.code, query) }))
            .filter((x) => radius === undefined || x.distance <= radius)
            .sort((a, b) => a.distance - b.distance || compareIdBytes(a.id, b.id));
          const layouts = [await index(items, bits, 1), await index([...items].reverse(), bits, 7), await index(items, bits, 10_000)];
          for (const search of layouts) {
            const outcome = await search(query, k, radius);
            const { hits, truncated } = outcome;
            expect(hits.map((h) => ({ id: h.id, distance: h.distance }))).toEqual(oracle.slice(0, k));
            expect(truncated).toBe(radius !== undefined && oracle.length > k);
            // The OOD gate's k-th nearest distance, read from the pool, is the index's own.
            const nth = Math.min(k, 10);
            expect(kthFromPool(outcome, nth)).toBe(radius === undefined && oracle.length >= nth ? oracle[nth - 1].distance : undefined);
          }
        }),
        { numRuns: 12 },
      );
    }
  });

  it('stays exact when the shard cache evicts tables between and during queries', async () => {
    const items = Array.from({ length: 300 }, (_, i) => ({ id: `i${i}`, code: new Uint8Array([i & 0xff, (i * 7) & 0xff]) }));
    const tiny = await index(items, 16, 16, 1); // every shard load evicts the previous one
    const roomy = await index(items, 16, 16);
    for (const q of [0, 0x55, 0xff]) {
      const code = new Uint8Array([q, q]);
      const a = await Promise.all([tiny(code, 25), tiny(code, 25)]);
      const b = await roomy(code, 25);
      expect(a[0].hits.map((h) => h.id)).toEqual(b.hits.map((h) => h.id));
      expect(a[1].hits.map((h) => h.id)).toEqual(b.hits.map((h) => h.id));
    }
  });
});

describe('filters and exclusions', () => {
  const arbFiltered = fc.record({
    items: fc.uniqueArray(
      fc.record({
        id: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }),
        code: fc.uint8Array({ minLength: 2, maxLength: 2, max: 3 }),
        // 'r' is rare: a match of it is narrow (rows gathered), of the others broad (tested along the scan)
        label: fc.option(fc.oneof({ arbitrary: fc.constantFrom('a', 'b', 'c'), weight: 30 }, { arbitrary: fc.constant('r'), weight: 1 }), { nil: undefined }),
        modality: fc.option(fc.constantFrom('CT', 'MR'), { nil: undefined }),
        patient_ref: fc.constantFrom('p1', 'p2', 'p3'),
      }),
      { selector: (r) => r.id, minLength: 1, maxLength: 150 },
    ),
    query: fc.uint8Array({ minLength: 2, maxLength: 2, max: 3 }),
    k: fc.integer({ min: 1, max: 40 }),
    radius: fc.option(fc.integer({ min: 0, max: 16 }), { nil: undefined }),
    // values the collection does not hold ('z', 'US') included: they match nothing
    label: fc.option(fc.uniqueArray(fc.constantFrom('a', 'b', 'r', 'z'), { minLength: 1, maxLength: 2 }), { nil: undefined }),
    modality: fc.option(fc.uniqueArray(fc.constantFrom('CT', 'US'), { minLength: 1, maxLength: 2 }), { nil: undefined }),
    exclude: fc.option(fc.constantFrom('p1', 'p2'), { nil: undefined }),
  });

  it('keep exactly the items an oracle keeps, whatever the shard layout and cache', async () => {
    await fc.assert(
      fc.asyncProperty(arbFiltered, async ({ items, query, k, radius, label, modality, exclude }) => {
        const meta = (it: (typeof items)[number]) => JSON.stringify({ label: it.label, modality: it.modality, patient_ref: it.patient_ref });
        const stored = items.map((it) => ({ id: it.id, code: it.code, metadata: meta(it) }));
        const match = label || modality ? { ...(label && { label }), ...(modality && { modality }) } : undefined;
        const q: SearchQuery = { code: query, k, radius, match, filter: exclude && ((m) => m.patient_ref !== exclude) };
        const kept = items
          .filter((it) => (!label || (label as string[]).includes(it.label!)) && (!modality || (modality as string[]).includes(it.modality!)))
          .filter((it) => it.patient_ref !== exclude)
          .map((it) => ({ id: it.id, distance: distance(it.code, query) }))
          .filter((x) => radius === undefined || x.distance <= radius)
          .sort((a, b) => a.distance - b.distance || compareIdBytes(a.id, b.id));
        for (const search of [await index(stored, 16, 1), await index([...stored].reverse(), 16, 7, 1), await index(stored, 16, 10_000)]) {
          const outcome = await search.query(q);
          expect(outcome.hits.map((h) => ({ id: h.id, distance: h.distance }))).toEqual(kept.slice(0, k));
          expect(outcome.truncated).toBe(radius !== undefined && kept.length > k);
          if (match || exclude) expect(outcome.nearest).toBeNull();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('match by the columns of each cached shard, broad or narrow: no metadata is parsed again on later searches', async () => {
    // 'R' (1 % of the items) is narrower than BROAD_SHARE, L0-L2 broader
    const label = (i: number) => (i % 100 === 7 ? 'R' : `L${i % 3}`);
    expect(1 / 100).toBeLessThan(BROAD_SHARE);
    const items = Array.from({ length: 3000 }, (_, i) => ({ id: `i${String(i).padStart(4, '0')}`, code: new Uint8Array([i & 0xff, i >> 8]), metadata: JSON.stringify({ label: label(i), modality: 'CT' }) }));
    const search = await index(items, 16, 1000);
    const q = (label: string): SearchQuery => ({ code: new Uint8Array([0, 0]), k: 10, match: { label: [label] } });
    expect((await search.query(q('L1'))).hits).toHaveLength(10);
    const parse = vi.spyOn(JSON, 'parse');
    try {
      // a value no item holds: every shard is passed over at once
      expect((await search.query(q('none'))).hits).toEqual([]);
      for (const wanted of ['L2', 'R']) {
        const nearest = items.filter((_, i) => label(i) === wanted).sort((a, b) => distance(a.code, new Uint8Array(2)) - distance(b.code, new Uint8Array(2)) || compareIdBytes(a.id, b.id));
        expect((await search.query(q(wanted))).hits.map((h) => h.id)).toEqual(nearest.slice(0, 10).map((it) => it.id));
      }
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
  });
});

describe('content-guided re-ranking', () => {
  const DIMS = 8;
  const arbRanked = fc.record({
    items: fc.uniqueArray(
      fc.record({
        id: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }),
        code: fc.uint8Array({ minLength: 2, maxLength: 2, max: 3 }),
        // Few distinct descriptors too: equal similarities exercise the id tie-break.
        descriptor: fc.array(fc.integer({ min: -2, max: 2 }), { minLength: DIMS, maxLength: DIMS }).map((a) => Int8Array.from(a)),
        label: fc.constantFrom('a', 'b', 'c'),
      }),
      { selector: (r) => r.id, minLength: 1, maxLength: 150 },
    ),
    query: fc.uint8Array({ minLength: 2, maxLength: 2, max: 3 }),
    descriptor: fc.array(fc.integer({ min: -128, max: 127 }), { minLength: DIMS, maxLength: DIMS }).map((a) => Int8Array.from(a)),
    k: fc.integer({ min: 1, max: 60 }),
    weight: fc.constantFrom(0, 0.3, 1),
    label: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
  });

  it('returns the identical list whatever the shard layout and ingest order', async () => {
    await fc.assert(
      fc.asyncProperty(arbRanked, async ({ items, query, descriptor, k, weight, label }) => {
        const stored = items.map((it) => ({ id: it.id, code: it.code, descriptor: it.descriptor, metadata: JSON.stringify({ label: it.label }) }));
        const layouts = [
          await index(stored, 16, 1, 1 << 24, DIMS),
          await index([...stored].reverse(), 16, 7, 1 << 24, DIMS),
          await index(stored, 16, 10_000, 1 << 24, DIMS),
          await index([...stored].sort((a, b) => (a.descriptor[0] - b.descriptor[0]) || compareIdBytes(b.id, a.id)), 16, 3, 1 << 10, DIMS),
        ];
        const q: SearchQuery = { code: query, k, descriptor, contentWeight: weight, match: label ? { label: [label] } : undefined };
        const lists = [];
        for (const l of layouts) lists.push((await l.query(q)).hits.map((h) => ({ id: h.id, distance: h.distance, similarity: h.similarity, score: h.score })));
        for (const list of lists.slice(1)) expect(list).toEqual(lists[0]);
        // And it is the list an oracle computes: the pool is the nearest max(4k, 100) by
        // (distance, id), ranked by (score desc, similarity desc, distance, id).
        const pool = stored
          .filter((it) => label === undefined || parseMetadata(it.metadata).label === label)
          .map((it) => ({ id: it.id, distance: distance(it.code, query), similarity: pearson(descriptor, it.descriptor) }))
          .sort((a, b) => a.distance - b.distance || compareIdBytes(a.id, b.id))
          .slice(0, Math.max(4 * k, 100))
          .map((c) => ({ ...c, score: (1 - weight) * (1 - c.distance / 16) + weight * (c.similarity + 1) / 2 }))
          .sort((a, b) => b.score - a.score || b.similarity - a.similarity || a.distance - b.distance || compareIdBytes(a.id, b.id));
        expect(lists[0]).toEqual(pool.slice(0, k));
      }),
      { numRuns: 15 },
    );
  });

  it('with weight 0 keeps the Hamming order and orders only equal distances by content', async () => {
    const items = Array.from({ length: 200 }, (_, i) => ({
      id: `i${String(i).padStart(3, '0')}`,
      code: new Uint8Array([i % 4, 0]),
      descriptor: Int8Array.from({ length: DIMS }, (_, j) => ((i * 31 + j * 17) % 23) - 11),
    }));
    const search = await index(items, 16, 16, 1 << 24, DIMS);
    const query = new Uint8Array([0, 0]);
    const descriptor = Int8Array.from({ length: DIMS }, (_, j) => j - 4);
    const { hits } = await search.query({ code: query, k: 120, descriptor, contentWeight: 0 });
    const plain = await search(query, 120);
    expect(hits.map((h) => h.distance)).toEqual(plain.hits.map((h) => h.distance));
    for (let i = 1; i < hits.length; i++) {
      if (hits[i].distance === hits[i - 1].distance) expect(hits[i].similarity!).toBeLessThanOrEqual(hits[i - 1].similarity!);
    }
    expect(hits.map((h) => h.id)).not.toEqual(plain.hits.map((h) => h.id));
  });
});

describe('memory of one search', () => {
  /** Counts the shards asked of it and not yet handed over, over a KV that answers after random delays. */
  class CountingReader extends CollectionReader {
    requests = 0;
    pending = 0;
    maxPending = 0;
    /** Shards as the index holds them, loaded for a manifest that records other sizes (the reader checks them). */
    private readonly stored: Map<string, ManifestShard>;
    constructor(kv: KV, stored: readonly ManifestShard[] = []) {
      const slow: KV = { ...kv, get: async (key) => { await new Promise((ok) => setTimeout(ok, Math.random() * 3)); return kv.get(key); } };
      super(slow, 1); // a cache of one shard: the search itself is what holds the others
      this.stored = new Map(stored.map((s) => [s.key, s]));
    }
    override async shard(entry: ManifestShard, m: Pick<Manifest, 'bits' | 'descriptor_dims'>): Promise<CachedShard> {
      this.requests++;
      this.maxPending = Math.max(this.maxPending, ++this.pending);
      try {
        return await super.shard(this.stored.get(entry.key) ?? entry, m);
      } finally {
        this.pending--;
      }
    }
  }

  const holdsShard = (x: unknown, seen = new Set<unknown>()): boolean => {
    if (x instanceof Shard) return true;
    if (x === null || typeof x !== 'object' || ArrayBuffer.isView(x) || seen.has(x)) return false;
    seen.add(x);
    return Object.values(x).some((v) => holdsShard(v, seen));
  };

  it('loads at most SHARD_WINDOW shards and SHARD_WINDOW_BYTES at once, keeps none in its answer, and answers as one shard does', async () => {
    const DIMS = 8;
    const items = Array.from({ length: 600 }, (_, i) => ({
      id: `i${String(i).padStart(3, '0')}`,
      code: new Uint8Array([(i * 37) & 0xff, (i * 11) & 0x0f]),
      descriptor: Int8Array.from({ length: DIMS }, (_, j) => ((i * 31 + j * 17) % 23) - 11),
      metadata: JSON.stringify({ label: `L${i % 5}`, patient_ref: `p${i % 7}` }),
    }));
    const sharded = await index(items, 16, 5, 1 << 24, DIMS);
    const whole = await index(items, 16, 10_000, 1 << 24, DIMS);
    expect(sharded.manifest.shards.length).toBeGreaterThan(10 * SHARD_WINDOW);
    // The same shards, recorded as large as MEDHASH_SHARD_MAX_BYTES lets them be (up to 24 MiB),
    // or larger than the whole byte window: the window narrows by the manifest's sizes, to one shard at least.
    const recordedAs = (bytes: number): Manifest => ({ ...sharded.manifest, shards: sharded.manifest.shards.map((s) => ({ ...s, bytes })) });
    const windows: [Manifest, number][] = [
      [sharded.manifest, SHARD_WINDOW],
      [recordedAs(Math.floor(SHARD_WINDOW_BYTES / 3)), 3],
      [recordedAs(24 << 20), 1],
      [recordedAs(2 * SHARD_WINDOW_BYTES), 1],
    ];
    const code = new Uint8Array([0x5a, 0x03]);
    const queries: SearchQuery[] = [
      { code, k: 10 },
      { code, k: 30, descriptor: Int8Array.from({ length: DIMS }, (_, j) => j - 4), contentWeight: 0.3 },
      { code, k: 20, radius: 6, match: { label: ['L1', 'L3'] }, filter: (m) => m.patient_ref !== 'p2' },
    ];
    for (const [manifest, window] of windows) {
      for (const q of queries) {
        const reader = new CountingReader(sharded.kv, sharded.manifest.shards);
        const outcome = await searchManifest(reader, kernel, manifest, q);
        expect(reader.requests).toBe(manifest.shards.length);
        expect(reader.maxPending).toBe(window);
        expect(holdsShard(outcome)).toBe(false);
        expect(outcome).toEqual(await whole.query(q));
      }
    }
    for (const [manifest, window] of windows) {
      const reader = new CountingReader(sharded.kv, sharded.manifest.shards);
      const kth = await kthNearestDistance(reader, kernel, manifest, code, 25);
      expect(reader.maxPending).toBe(window);
      expect(kth).toBe(items.map((it) => distance(it.code, code)).sort((a, b) => a - b)[24]);
    }
  });

  it('fails with the first shard that fails to load, and loads no more', async () => {
    const items = Array.from({ length: 200 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, code: new Uint8Array([i & 0xff, 0]) }));
    const sharded = await index(items, 16, 2);
    const m = sharded.manifest;
    const gone = { ...m, shards: m.shards.map((s, i) => (i === 10 ? { ...s, key: `${s.key}-gone` } : s)) };
    const reader = new CountingReader(sharded.kv);
    await expect(searchManifest(reader, kernel, gone, { code: new Uint8Array(2), k: 5 })).rejects.toThrow(ShardGoneError);
    const requested = reader.requests;
    await new Promise((ok) => setTimeout(ok, 20)); // the loads already in flight finish
    expect(reader.requests).toBe(requested);
    expect(requested).toBeLessThan(m.shards.length);
  });

  it('fails when a shard fails beside others that arrive in the same tick', async () => {
    // Node's KV answers from SQLite in microtasks: a window's shards settle together, and a
    // failure that settles after the one the window waited for must still fail the search.
    const items = Array.from({ length: 40 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, code: new Uint8Array([i, 0]) }));
    const sharded = await index(items, 16, 2);
    const m = sharded.manifest;
    for (const bad of [1, 3, SHARD_WINDOW - 1, SHARD_WINDOW + 4]) {
      const gone = { ...m, shards: m.shards.map((s, i) => (i === bad ? { ...s, key: `${s.key}-gone` } : s)) };
      await expect(searchManifest(new CollectionReader(sharded.kv, 1 << 24), kernel, gone, { code: new Uint8Array(2), k: 5 })).rejects.toThrow(ShardGoneError);
    }
  });
});
