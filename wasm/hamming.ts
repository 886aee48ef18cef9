// Typed wrapper around hamming.wasm (the Rust kernel in wasm/kernel, ABI in docs/KERNEL.md)
// plus the deterministic k-way merge of per-shard top-k lists. Runtime-agnostic on purpose:
// no `fs` here (Node loading lives in load-node.ts; workerd passes its build-time import).

export type Bits = 16 | 32 | 64 | 128 | 256;
export interface TopK { rows: Uint32Array; dists: Uint16Array } // sorted (dist, row)

/** A code table living in wasm memory; valid until freeTable. */
export interface TableHandle {
  readonly n: number;
  readonly bits: Bits;
}

interface Exports {
  memory: WebAssembly.Memory;
  mh_alloc(bytes: number): number;
  mh_free(ptr: number): void;
  mh_query(): number;
  mh_out_rows(): number;
  mh_out_dists(): number;
  mh_truncated(): number;
  mh_topk(table: number, n: number, bits: number, k: number): number;
  mh_radius(table: number, n: number, bits: number, r: number, limit: number): number;
}

const BITS: ReadonlySet<number> = new Set([16, 32, 64, 128, 256]);

class Table implements TableHandle {
  constructor(readonly ptr: number, readonly n: number, readonly bits: Bits) {}
}

export class HammingKernel {
  // Handles this instance issued and has not freed: guards against use-after-free and
  // against handles from another kernel instance (whose pointers mean nothing here).
  private readonly live = new Set<Table>();
  private readonly queryPtr: number;

  private constructor(private readonly ex: Exports) {
    this.queryPtr = ex.mh_query() >>> 0;
  }

  /** For workerd, where the module comes from `import mod from './hamming.wasm'`. */
  static async fromModule(m: WebAssembly.Module): Promise<HammingKernel> {
    const instance = await WebAssembly.instantiate(m, {});
    return new HammingKernel(instance.exports as unknown as Exports);
  }

  /** For runtimes that may compile at run time (Node, browsers). */
  static async fromBytes(b: BufferSource): Promise<HammingKernel> {
    return HammingKernel.fromModule(await WebAssembly.compile(b));
  }

  /** Copies `codes` (rows of bits/8 bytes, bit order in docs/KERNEL.md) into wasm memory once. */
  loadTable(codes: Uint8Array, bits: Bits): TableHandle {
    if (!BITS.has(bits)) throw new RangeError(`unsupported code length ${bits}`);
    const rowBytes = bits / 8;
    if (codes.length % rowBytes !== 0) {
      throw new RangeError(`table of ${codes.length} bytes is not a whole number of ${bits}-bit rows`);
    }
    const ptr = this.ex.mh_alloc(codes.length) >>> 0;
    if (ptr === 0) throw new RangeError(`out of wasm memory loading ${codes.length} bytes`);
    new Uint8Array(this.ex.memory.buffer, ptr, codes.length).set(codes);
    const t = new Table(ptr, codes.length / rowBytes, bits);
    this.live.add(t);
    return t;
  }

  freeTable(t: TableHandle): void {
    const table = this.own(t);
    this.live.delete(table);
    this.ex.mh_free(table.ptr);
  }

  /** The min(k, n) rows nearest to `query`, sorted by (dist, row). */
  topK(t: TableHandle, query: Uint8Array, k: number): TopK {
    const table = this.own(t);
    if (!Number.isInteger(k) || k < 0) throw new RangeError(`k must be a non-negative integer, got ${k}`);
    this.setQuery(table, query);
    const count = this.check(this.ex.mh_topk(table.ptr, table.n, table.bits, Math.min(k, table.n)));
    return this.output(count);
  }

  /** Rows within distance `r`, nearest `limit` of them, sorted by (dist, row). */
  radius(t: TableHandle, query: Uint8Array, r: number, limit: number): TopK & { truncated: boolean } {
    const table = this.own(t);
    if (!Number.isInteger(r) || r < 0) throw new RangeError(`r must be a non-negative integer, got ${r}`);
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
    this.setQuery(table, query);
    // Clamping keeps both within u32 range; neither changes the result.
    const count = this.check(
      this.ex.mh_radius(table.ptr, table.n, table.bits, Math.min(r, table.bits), Math.min(limit, table.n)),
    );
    return { ...this.output(count), truncated: this.ex.mh_truncated() !== 0 };
  }

  /** Size of the wasm linear memory; it only grows when a bigger table or k is seen. */
  memoryBytes(): number {
    return this.ex.memory.buffer.byteLength;
  }

  private own(t: TableHandle): Table {
    if (!(t instanceof Table) || !this.live.has(t)) throw new Error('table handle is freed or belongs to another kernel');
    return t;
  }

  private setQuery(t: Table, query: Uint8Array): void {
    if (query.length !== t.bits / 8) throw new RangeError(`query has ${query.length} bytes, table rows have ${t.bits / 8}`);
    new Uint8Array(this.ex.memory.buffer, this.queryPtr, query.length).set(query);
  }

  private check(count: number): number {
    if (count === -2) throw new RangeError('out of wasm memory for the result buffer');
    if (count < 0) throw new Error(`kernel error ${count}`);
    return count;
  }

  // Copies out: views into wasm memory are invalidated by the next call or a memory.grow.
  private output(count: number): TopK {
    const buf = this.ex.memory.buffer;
    return {
      rows: new Uint32Array(buf, this.ex.mh_out_rows() >>> 0, count).slice(),
      dists: new Uint16Array(buf, this.ex.mh_out_dists() >>> 0, count).slice(),
    };
  }
}

export interface MergeInput { ids: string[]; dists: ArrayLike<number>; scores?: ArrayLike<number> }
export interface Merged { id: string; dist: number; score?: number; list: number; index: number }

/**
 * Ids ordered by their UTF-8 bytes (= code point order). Plain `<` on JS strings compares
 * UTF-16 units, which puts astral characters (surrogates) before U+E000..U+FFFF.
 */
export function compareIdBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      // Move surrogates (0xD800-0xDFFF) above 0xE000-0xFFFF.
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** Merge order: dist asc, score desc (a missing or NaN score ranks last), id bytewise asc. */
export function compareMerged(
  da: number, sa: number | undefined, ia: string,
  db: number, sb: number | undefined, ib: string,
): number {
  if (da !== db) return da - db;
  const xa = sa === undefined || Number.isNaN(sa) ? -Infinity : sa;
  const xb = sb === undefined || Number.isNaN(sb) ? -Infinity : sb;
  if (xa !== xb) return xa > xb ? -1 : 1;
  return compareIdBytes(ia, ib);
}

/**
 * k-way merge of per-shard lists, each already sorted in merge order (a kernel topK over
 * id-sorted rows is). Deterministic: the result does not depend on how items were split
 * into lists. Throws on an unsorted list, since merging it would silently depend on the split.
 */
export function mergeTopK(lists: MergeInput[], k: number): Merged[] {
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`k must be a non-negative integer, got ${k}`);
  lists.forEach((l, li) => {
    if (l.dists.length !== l.ids.length || (l.scores && l.scores.length !== l.ids.length)) {
      throw new RangeError(`list ${li}: ids, dists and scores differ in length`);
    }
  });
  const pos = lists.map(() => 0);
  const less = (a: number, b: number): boolean => {
    const la = lists[a], lb = lists[b];
    const c = compareMerged(
      la.dists[pos[a]], la.scores?.[pos[a]], la.ids[pos[a]],
      lb.dists[pos[b]], lb.scores?.[pos[b]], lb.ids[pos[b]],
    );
    return c < 0 || (c === 0 && a < b); // equal entries: lower list first, still deterministic
  };
  // Binary min-heap of list numbers keyed by each list's current head.
  const heap: number[] = [];
  const down = (i: number): void => {
    for (;;) {
      let m = i;
      const l = 2 * i + 1, r = l + 1;
      if (l < heap.length && less(heap[l], heap[m])) m = l;
      if (r < heap.length && less(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  lists.forEach((l, li) => { if (l.ids.length > 0) heap.push(li); });
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) down(i);

  const out: Merged[] = [];
  while (out.length < k && heap.length > 0) {
    const li = heap[0];
    const l = lists[li];
    const index = pos[li];
    const item: Merged = { id: l.ids[index], dist: l.dists[index], list: li, index };
    if (l.scores) item.score = l.scores[index];
    out.push(item);
    pos[li]++;
    if (pos[li] < l.ids.length) {
      if (compareMerged(l.dists[index], l.scores?.[index], l.ids[index],
        l.dists[pos[li]], l.scores?.[pos[li]], l.ids[pos[li]]) > 0) {
        throw new RangeError(`list ${li} is not sorted at index ${pos[li]}`);
      }
    } else {
      heap[0] = heap[heap.length - 1];
      heap.pop();
    }
    if (heap.length > 0) down(0);
  }
  return out;
}
