// Query execution: exact Hamming retrieval over every live shard with the wasm kernel, the
// kernel's deterministic merge, then content re-ranking (rerank.ts) of the merged pool. Rows in
// a shard are sorted by id, so per-shard order (distance, row) is (distance, id): the pool is
// the global top by (distance, id) whatever the shard layout, and so is the final list.
// Shards load at most SHARD_WINDOW and SHARD_WINDOW_BYTES at a time and each is merged into the
// running pool as it arrives, keeping copies of its surviving rows only: a search holds a bounded
// amount of shards plus its pool, whatever the collection's size or shard size limit
// (docs/RUNTIMES.md, Workers: the memory of one search).
// Filters by value read per-shard columns of the filterable fields, built once per cached shard:
// a filter that keeps few rows (or none) would otherwise parse every row's metadata per query.
import { mergeTopK, type HammingKernel, type MergeInput, type TableHandle } from '../../wasm/hamming.ts';
import type { Shard } from '../shards/codec.ts';
import type { Manifest } from '../shards/manifest.ts';
import { parseMetadata, type ItemMetadata, type MetadataField } from '../shards/metadata.ts';
import type { CachedShard, CollectionReader } from '../store/reader.ts';
import { DEFAULT_WRITER_LIMITS } from '../store/writer.ts';
import { rerank } from './rerank.ts';

/** Candidates re-ranked per query: enough for content to pull in near, not just equal, codes. */
export const POOL_FACTOR = 4;
export const MIN_POOL = 100;

/** Metadata fields a search keeps items by (docs/API.md, Search): few distinct values in a collection. */
export const MATCH_FIELDS = ['label', 'modality', 'body_part'] as const satisfies readonly MetadataField[];
export type MatchField = (typeof MATCH_FIELDS)[number];

export interface SearchQuery {
  code: Uint8Array;
  k: number;
  /** Only items within this Hamming distance; `truncated` tells whether more than k were. */
  radius?: number;
  /** The query's int8 descriptor: turns on re-ranking of a widened pool by content. */
  descriptor?: Int8Array;
  /** Weight of content similarity in the final score, in [0, 1]; 0 = content only breaks ties. */
  contentWeight?: number;
  /**
   * Keep only items whose field holds one of its values; fields combine with AND, and an item
   * without the field does not match. Applied before ranking (they take no place in k).
   */
  match?: Partial<Record<MatchField, readonly string[]>>;
  /** Items whose metadata fails it are skipped before ranking (the exclusions): tested row by row, nearest first. */
  filter?: (meta: ItemMetadata) => boolean;
}

export interface SearchHit {
  id: string;
  distance: number;
  similarity: number | null;
  score: number;
  /** The item's stored metadata JSON, copied out of its shard. */
  metadataJson: string;
}

export interface SearchOutcome {
  hits: SearchHit[];
  truncated: boolean;
  /**
   * Distances of the merged pool in (distance, id) order, before re-ranking, when that pool is
   * the plain top of the whole index (no filter, no radius); else null. Lets the OOD gate take its
   * k-th nearest distance from this search instead of a second scan.
   */
  nearest: Uint16Array | null;
}

/** One shard's candidate rows in (distance, row) order. */
interface Candidates {
  rows: Uint32Array;
  dists: Uint16Array;
  truncated: boolean;
}

/** Shards one search loads and holds at once, at most: enough reads in flight to hide KV latency. */
export const SHARD_WINDOW = 8;

/**
 * Shard bytes (as the manifest records them) one search loads and holds at once, at most: 8
 * shards of the default size, far below a Worker's 128 MB. Larger shards (MEDHASH_SHARD_MAX_BYTES
 * up to 24 MiB) narrow the window, down to one shard at a time.
 */
export const SHARD_WINDOW_BYTES = SHARD_WINDOW * DEFAULT_WRITER_LIMITS.maxShardBytes;

export const poolSize = (k: number): number => Math.max(POOL_FACTOR * k, MIN_POOL);

export async function searchManifest(
  reader: CollectionReader,
  kernel: HammingKernel,
  m: Manifest | null,
  q: SearchQuery,
): Promise<SearchOutcome> {
  if (!m || m.shards.length === 0) return { hits: [], truncated: false, nearest: null };
  const pool = new Pool<{ descriptor: Int8Array | null; metadataJson: string }>(q.descriptor ? poolSize(q.k) : q.k);
  let found = 0;
  let anyTruncated = false;
  await eachShard(reader, m, (entry) => {
    const c = candidates(kernel, entry, q, pool.size);
    found += c.rows.length;
    anyTruncated ||= c.truncated;
    // Copies: a view would keep the shard's whole blob alive.
    pool.add(entry.shard, c, (row) => ({ descriptor: q.descriptor ? entry.shard.descriptor(row).slice() : null, metadataJson: entry.shard.metadataJson(row) }));
  });
  const ranked = rerank(
    pool.items.map((it, i) => ({ id: pool.ids[i], distance: pool.dists[i], descriptor: it.descriptor })),
    m.bits,
    q.descriptor ?? null,
    q.contentWeight ?? 0,
  ).slice(0, q.k);
  return {
    hits: ranked.map((r) => ({ id: r.id, distance: r.distance, similarity: r.similarity, score: r.score, metadataJson: pool.items[r.index].metadataJson })),
    truncated: q.radius !== undefined && (found > q.k || anyTruncated),
    nearest: q.filter || q.match || q.radius !== undefined ? null : Uint16Array.from(pool.dists),
  };
}

/**
 * Runs `visit` on every shard `m` names, at most SHARD_WINDOW of them and SHARD_WINDOW_BYTES
 * loading or held at once, in the order they arrive (the pool's merge does not depend on it).
 */
async function eachShard(reader: CollectionReader, m: Manifest, visit: (entry: CachedShard) => void): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let held = 0; // bytes of the shards in flight
  // A failure is kept here, not in a rejected promise: one that settles in the same tick as the
  // shard a race waited for leaves the window before the next race, which would never see it.
  const failures: unknown[] = [];
  for (const s of m.shards) {
    // A shard waits for room, but one goes alone however large it is. After a failure the search
    // fails and loads no more.
    while (failures.length === 0 && (inFlight.size >= SHARD_WINDOW || (inFlight.size > 0 && held + s.bytes > SHARD_WINDOW_BYTES))) await Promise.race(inFlight);
    if (failures.length > 0) throw failures[0];
    held += s.bytes;
    // The kernel call runs in the same tick as the shard arrives, so no eviction can free its table mid-query.
    const p: Promise<void> = reader
      .shard(s, m)
      .then(visit)
      .catch((e: unknown) => void failures.push(e))
      .finally(() => {
        held -= s.bytes;
        inFlight.delete(p);
      });
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  if (failures.length > 0) throw failures[0];
}

/**
 * The running top `size` of a search by (distance, id), with what the caller copied out of each
 * kept row. Ids are unique across a manifest's shards (disjoint id ranges), so the order is total
 * and the pool is the same whatever order the shards are added in.
 */
class Pool<T> {
  ids: string[] = [];
  dists: number[] = [];
  items: T[] = [];

  constructor(readonly size: number) {}

  /** Merges one shard's candidates in; `copy` runs only for the rows that stay. */
  add(shard: Shard, c: Candidates, copy: (row: number) => T): void {
    if (c.rows.length === 0) return;
    const fresh: MergeInput = { ids: Array.from(c.rows, (r) => shard.ids[r]), dists: c.dists };
    const merged = mergeTopK([{ ids: this.ids, dists: this.dists }, fresh], this.size);
    this.items = merged.map((h) => (h.list === 0 ? this.items[h.index] : copy(c.rows[h.index])));
    this.ids = merged.map((h) => h.id);
    this.dists = merged.map((h) => h.dist);
  }
}

/**
 * The k-th nearest distance as kthNearestDistance gives it, read from a search's pool when the
 * pool is the unfiltered top of the index and holds at least k items; else undefined.
 */
export function kthFromPool(outcome: SearchOutcome, k: number): number | undefined {
  return outcome.nearest && outcome.nearest.length >= k ? outcome.nearest[k - 1] : undefined;
}

/**
 * Hamming distance from `code` to its k-th nearest item in the whole index (no filters), or
 * null when the index holds fewer than k items: the OOD gate's feature-space score.
 */
export async function kthNearestDistance(
  reader: CollectionReader,
  kernel: HammingKernel,
  m: Manifest | null,
  code: Uint8Array,
  k: number,
): Promise<number | null> {
  if (!m || m.count < k) return null;
  const pool = new Pool<null>(k);
  await eachShard(reader, m, (entry) => pool.add(entry.shard, scan(kernel, entry, code, k), () => null));
  return pool.dists.length < k ? null : pool.dists[k - 1];
}

/**
 * The first `pool` rows of one shard in (distance, row) order that pass the match and the filter.
 * A narrow match gathers the shard's matching rows first (from its columns) and scans only them; a
 * broad one, like the filter, is tested along the scan, which widens until enough rows pass or
 * none are left.
 */
function candidates(kernel: HammingKernel, entry: CachedShard, q: SearchQuery, pool: number): Candidates {
  const { shard } = entry;
  const narrow: Narrowing = q.match ? narrowing(shard, q.match) : { rows: 'all' };
  if (narrow.rows === 'none') return { rows: new Uint32Array(0), dists: new Uint16Array(0), truncated: false };
  const subset = narrow.rows === 'subset' ? narrow.subset : null;
  // A table of the matching rows' codes for this call only; its rows are ascending, so its
  // (distance, row) order is the shard's.
  const table = subset && kernel.loadTable(gatherCodes(shard, subset), shard.bits);
  try {
    const scanRows = (want: number): Candidates => {
      if (!table) return scan(kernel, entry, q.code, want, q.radius);
      const c = run(kernel, table, q.code, want, q.radius);
      return { ...c, rows: c.rows.map((r) => subset![r]) };
    };
    const test = narrow.rows === 'test' ? narrow.test : undefined;
    const filter = q.filter;
    if (!test && !filter) return scanRows(pool);
    const passes = (row: number) => (!test || test(row)) && (!filter || filter(parseMetadata(shard.metadataJson(row))));
    const rowCount = subset?.length ?? shard.count;
    // One passing row beyond the pool tells whether the radius holds more than the pool.
    const target = pool + 1;
    for (let want = target; ; want = Math.min(2 * want, rowCount)) {
      const c = scanRows(want);
      const keep: number[] = [];
      for (let i = 0; i < c.rows.length && keep.length < target; i++) {
        if (passes(c.rows[i])) keep.push(i);
      }
      if (keep.length >= target || c.rows.length < want || want >= rowCount) {
        const rows = keep.slice(0, pool);
        return {
          rows: Uint32Array.from(rows, (i) => c.rows[i]),
          dists: Uint16Array.from(rows, (i) => c.dists[i]),
          truncated: keep.length > pool,
        };
      }
    }
  } finally {
    if (table) kernel.freeTable(table);
  }
}

/**
 * Each match field of one shard: every row's value as an index into the field's distinct values
 * (0: none), and how many rows hold each.
 */
type Columns = Record<MatchField, { ids: Map<string, number>; rows: Uint32Array; counts: number[] }>;

// Built on a shard's first search with a match, kept while the decoded shard lives (it is
// released with its reader cache entry); about 12 bytes a row beside a blob of ~100 or more.
const columns = new WeakMap<Shard, Columns>();

function columnsOf(shard: Shard): Columns {
  let cols = columns.get(shard);
  if (cols) return cols;
  cols = Object.fromEntries(MATCH_FIELDS.map((f) => [f, { ids: new Map<string, number>(), rows: new Uint32Array(shard.count), counts: [0] }])) as Columns;
  for (let row = 0; row < shard.count; row++) {
    const meta = parseMetadata(shard.metadataJson(row));
    for (const f of MATCH_FIELDS) {
      const value = meta[f];
      if (value === undefined) continue;
      const col = cols[f];
      let id = col.ids.get(value);
      if (id === undefined) {
        col.ids.set(value, (id = col.ids.size + 1));
        col.counts.push(0);
      }
      col.rows[row] = id;
      col.counts[id]++;
    }
  }
  columns.set(shard, cols);
  return cols;
}

/**
 * A match that keeps at least this share of a shard's rows is tested along the scan: the nearest
 * rows mostly pass, and gathering its rows would copy much of the shard on every query. A
 * narrower one is gathered, so that the scan never widens far past its rows.
 */
export const BROAD_SHARE = 1 / 16;

/** What a match leaves of one shard: no row, every row, rows to test along the scan, or the rows themselves (ascending). */
type Narrowing = { rows: 'none' } | { rows: 'all' } | { rows: 'test'; test: (row: number) => boolean } | { rows: 'subset'; subset: Uint32Array };

function narrowing(shard: Shard, match: NonNullable<SearchQuery['match']>): Narrowing {
  const cols = columnsOf(shard);
  const tests: { rows: Uint32Array; wanted: Uint8Array }[] = [];
  let share = 1; // the rarest field's
  for (const f of MATCH_FIELDS) {
    const values = match[f];
    if (values === undefined) continue;
    const { ids, rows, counts } = cols[f];
    const wanted = new Uint8Array(ids.size + 1);
    let held = 0;
    for (const v of new Set(values)) {
      const id = ids.get(v);
      if (id === undefined) continue;
      wanted[id] = 1;
      held += counts[id];
    }
    if (held === 0) return { rows: 'none' };
    if (held === shard.count) continue;
    share = Math.min(share, held / shard.count);
    tests.push({ rows, wanted });
  }
  if (tests.length === 0) return { rows: 'all' };
  const test = (row: number) => tests.every((t) => t.wanted[t.rows[row]] === 1);
  // One field's share is its count; fields together may keep far fewer rows than the rarest alone
  // (even none), so their share is counted.
  if (tests.length === 1 && share >= BROAD_SHARE) return { rows: 'test', test };
  const out = new Uint32Array(shard.count);
  let n = 0;
  for (let row = 0; row < shard.count; row++) if (test(row)) out[n++] = row;
  if (n === 0) return { rows: 'none' };
  return n >= BROAD_SHARE * shard.count ? { rows: 'test', test } : { rows: 'subset', subset: out.subarray(0, n) };
}

function gatherCodes(shard: Shard, rows: Uint32Array): Uint8Array {
  const width = shard.bits / 8;
  const out = new Uint8Array(rows.length * width);
  rows.forEach((row, i) => out.set(shard.code(row), i * width));
  return out;
}

// Wasm tables of cached shards; the reader's eviction calls `release`, which frees the table.
const tables = new WeakMap<CachedShard, TableHandle>();

function scan(kernel: HammingKernel, entry: CachedShard, code: Uint8Array, k: number, radius?: number): Candidates {
  const { shard } = entry;
  if (!entry.cached) {
    // Evicted while this query waited for it: a table for this call only.
    const table = kernel.loadTable(shard.codes, shard.bits);
    try {
      return run(kernel, table, code, k, radius);
    } finally {
      kernel.freeTable(table);
    }
  }
  let table = tables.get(entry);
  if (!table) {
    const t = kernel.loadTable(shard.codes, shard.bits);
    tables.set(entry, t);
    entry.release = () => kernel.freeTable(t);
    table = t;
  }
  return run(kernel, table, code, k, radius);
}

/** The nearest `k` rows of `table` (within `radius`, if given), in (distance, row) order. */
function run(kernel: HammingKernel, table: TableHandle, code: Uint8Array, k: number, radius?: number): Candidates {
  return radius === undefined ? { ...kernel.topK(table, code, k), truncated: false } : kernel.radius(table, code, radius, k);
}
