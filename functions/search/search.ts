// Query execution: exact Hamming top-k (or radius) over every live shard with the wasm kernel,
// then the kernel's deterministic merge. Rows in a shard are sorted by id, so per-shard order
// (distance, row) is (distance, id) and the merged answer does not depend on how items happen
// to be split into shards.
import { mergeTopK, type HammingKernel, type MergeInput, type TableHandle } from '../../wasm/hamming.ts';
import type { Shard } from '../shards/codec.ts';
import type { Manifest } from '../shards/manifest.ts';
import type { CachedShard, CollectionReader } from '../store/reader.ts';

export interface SearchQuery {
  code: Uint8Array;
  k: number;
  /** Only items within this Hamming distance; `truncated` tells whether more than k were. */
  radius?: number;
}

export interface SearchHit {
  id: string;
  distance: number;
  shard: Shard;
  row: number;
}

export interface SearchOutcome {
  hits: SearchHit[];
  truncated: boolean;
}

interface Candidates {
  shard: Shard;
  rows: Uint32Array;
  dists: Uint16Array;
  truncated: boolean;
}

/**
 * Re-ranking by descriptor (a later issue) plugs in between candidates and merge: it widens the
 * per-shard pool, computes a score per candidate row from `shard.descriptor(row)` and passes
 * `scores` in the MergeInput; mergeTopK already orders equal distances by score.
 */
export async function searchManifest(
  reader: CollectionReader,
  kernel: HammingKernel,
  m: Manifest | null,
  q: SearchQuery,
): Promise<SearchOutcome> {
  if (!m || m.shards.length === 0) return { hits: [], truncated: false };
  const perShard = await Promise.all(
    // The kernel call runs in the same tick as the shard arrives, so no eviction can free its table mid-query.
    m.shards.map(async (entry) => scan(kernel, await reader.shard(entry), q)),
  );
  const lists: MergeInput[] = perShard.map((c) => ({ ids: Array.from(c.rows, (r) => c.shard.ids[r]), dists: c.dists }));
  const merged = mergeTopK(lists, q.k);
  const found = perShard.reduce((n, c) => n + c.rows.length, 0);
  return {
    hits: merged.map((h) => ({ id: h.id, distance: h.dist, shard: perShard[h.list].shard, row: perShard[h.list].rows[h.index] })),
    truncated: q.radius !== undefined && (found > q.k || perShard.some((c) => c.truncated)),
  };
}

// Wasm tables of cached shards; the reader's eviction calls `release`, which frees the table.
const tables = new WeakMap<CachedShard, TableHandle>();

function scan(kernel: HammingKernel, entry: CachedShard, q: SearchQuery): Candidates {
  const { shard } = entry;
  const run = (table: TableHandle): Candidates =>
    q.radius === undefined
      ? { shard, ...kernel.topK(table, q.code, q.k), truncated: false }
      : { shard, ...kernel.radius(table, q.code, q.radius, q.k) };
  if (!entry.cached) {
    // Evicted while this query waited for it: a table for this call only.
    const table = kernel.loadTable(shard.codes, shard.bits);
    try {
      return run(table);
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
  return run(table);
}
