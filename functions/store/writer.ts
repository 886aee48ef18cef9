// The collection writer: applies upserts and deletes by copy-on-write of the shards whose id
// ranges cover them, publishes the new shard blobs first, swaps the manifest last, and
// garbage-collects replaced shards after a grace period. One instance per collection behind a
// mutex; Node runs it in-process, Workers inside the collection's Durable Object (the single
// writer). Both runtimes share this file, only the KV and the head store differ.
import type { Bits } from '../../wasm/hamming.ts';
import { compareIdBytes } from '../../wasm/hamming.ts';
import { EMPTY_SHARD_BYTES, Shard, encodeShard, recordBytes, type ShardRecord } from '../shards/codec.ts';
import {
  checkShardBytes,
  collectionPrefix,
  decodeManifest,
  emptyManifest,
  encodeManifest,
  ManifestFormatError,
  manifestKey,
  routeId,
  shardKey,
  shardPrefix,
  type Manifest,
  type ManifestShard,
} from '../shards/manifest.ts';
import { MedhashError } from '../util/errors.ts';
import { sha256Hex } from '../util/bytes.ts';
import { writeConflict, type Head, type HeadStore } from './head.ts';
import type { KV } from './kv.ts';
import { Mutex } from './mutex.ts';
import { CollectionReader } from './reader.ts';

export interface CollectionSpec {
  /** Internal id (never reused), not the tenant-visible name. */
  id: string;
  bits: Bits;
  descriptor_dims: number;
}

export interface WriterLimits {
  maxShardBytes: number;
  maxShardItems: number;
  /** How long a replaced shard outlives the manifest that dropped it (readers may hold it). */
  graceMs: number;
}

// 4 MiB keeps a shard far under KV's 25 MiB value cap and cheap to re-read on a cache miss;
// the grace period covers Workers KV's ~60 s propagation of the manifest with a wide margin.
export const DEFAULT_WRITER_LIMITS: WriterLimits = { maxShardBytes: 4 << 20, maxShardItems: 16384, graceMs: 10 * 60_000 };

export type WriteOp = { op: 'put'; record: ShardRecord } | { op: 'delete'; id: string };

/** Metadata fields an erasure can select by: one patient's or one study's images. */
export type ErasableField = 'patient_ref' | 'study_uid';

/** Items one erasure deletes at most: bounds its work and the audit event that lists them. */
export const MAX_ERASE_ITEMS = 1000;

export interface EraseResult extends ApplyResult {
  /** The ids deleted, in id order. */
  ids: string[];
  /** Matching items left for the next call (beyond MAX_ERASE_ITEMS). */
  remaining: number;
  /** False when the deletion is committed but its manifest not yet published (maintenance retries it). */
  visible: boolean;
}

/** What adoptManifest() replaced, and the state it made. */
export interface AdoptResult {
  /** The writer state it replaced: failing its check, absent, or older than KV's manifest. */
  state: 'damaged' | 'missing' | 'behind';
  /** That state's generation, where it could be read (behind); else null. */
  previous_generation: number | null;
  /** KV's manifest, now the writer state. */
  generation: number;
  count: number;
  shards: number;
}

export interface ApplyResult {
  generation: number;
  count: number;
  /** Items whose stored record changed (inserted, replaced or deleted). */
  changed: number;
  /** Ids of delete ops that found nothing. */
  missing: string[];
}

export interface WriterHooks {
  now?: () => number;
  /**
   * Asks the runtime to call maintain() at `atMs` (a DO alarm, a Node timer), or earlier if
   * already asked; settles once that is on record, so a failure to ask fails the caller.
   */
  schedule?: (atMs: number) => Promise<void> | void;
  /** Bounds the records this writer keeps of its last change together with other writers' (RecentBudget). */
  recent?: RecentBudget;
}

const MAINTENANCE_RETRY_MS = 1000;

/** The most shards whose records a writer keeps from its last change: a tail shard, and the one it split off. */
export const MAX_RECENT_SHARDS = 2;

/** What a RecentBudget can take back. */
interface RecentHolder {
  dropRecent(): void;
}

/**
 * A bound on the records that the writers of one process keep of the shards they wrote last,
 * together, in bytes of those shards' blobs. A Node process keeps a writer for every collection
 * written since it started, and each kept its last tail shard until its next change: memory grew
 * with the collections written (about 2 MB each for a batch of 1000 items of 1024-value
 * descriptors) and was never given back. Over the bound, the writers that wrote least recently
 * drop theirs; their next change reads its shard from KV, as after a restart.
 */
export class RecentBudget {
  // in the order the holders last wrote: the least recent first
  private readonly held = new Map<RecentHolder, number>();
  private bytes = 0;

  constructor(readonly maxBytes: number) {}

  /** `holder` now keeps `bytes` (0: nothing); others give theirs up, least recent first, until the total fits. */
  hold(holder: RecentHolder, bytes: number): void {
    this.release(holder);
    if (bytes === 0) return;
    this.held.set(holder, bytes);
    this.bytes += bytes;
    for (const [other] of this.held) {
      if (this.bytes <= this.maxBytes || other === holder) return;
      this.release(other);
      other.dropRecent();
    }
  }

  release(holder: RecentHolder): void {
    const n = this.held.get(holder);
    if (n === undefined) return;
    this.held.delete(holder);
    this.bytes -= n;
  }
}

/**
 * New shards one change uploads at once, and shards it reads ahead of the one it is changing:
 * enough to overlap KV's latency, few enough that a change spread over the whole collection
 * (a batch of ids all over the range, an erasure) holds a handful of shards in memory, not all
 * of them (a Durable Object has 128 MB).
 */
export const WRITE_WINDOW = 2;
export const READ_AHEAD = 1;

/**
 * The same windows in bytes of shard blobs: as many default-size shards. Larger shards
 * (MEDHASH_SHARD_MAX_BYTES up to 24 MiB) narrow them, down to no read ahead and one upload at a
 * time: counted in shards, a change's windows would grow with the shard size limit.
 */
export const WRITE_WINDOW_BYTES = WRITE_WINDOW * DEFAULT_WRITER_LIMITS.maxShardBytes;
export const READ_AHEAD_BYTES = READ_AHEAD * DEFAULT_WRITER_LIMITS.maxShardBytes;

const isPublishFailure = (e: unknown): e is MedhashError => e instanceof MedhashError && e.code === 'publish_failed';

/** A change's own publish failed after its commit: the change holds, readers see it shortly. */
export const isCommittedNotVisible = (e: unknown): boolean => isPublishFailure(e) && e.details?.committed === true;

const opId = (op: WriteOp): string => (op.op === 'put' ? op.record.id : op.id);

/** Every shard key the writer state names: the live manifest's, pending uploads, garbage. */
const namedKeys = (head: Head): string[] => [...head.manifest.shards.map((s) => s.key), ...head.pending, ...head.garbage.map((g) => g.key)];

function sameRecord(a: ShardRecord, b: ShardRecord): boolean {
  return a.metadata === b.metadata && bytesEqual(a.code, b.code) && bytesEqual(a.descriptor, b.descriptor);
}

function bytesEqual(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Waits for every KV call to settle, then throws the first failure. Promise.all would reject at
 * the first failure with the others still in flight, and release the lock: a late GC delete could
 * then remove a shard the next change made live again (content addresses recur), a late upload
 * land after the next change collected it as an orphan.
 */
async function settleAll(calls: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(calls)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Fetches the blobs of the shards a change will rewrite, in order, at most READ_AHEAD of them and
 * READ_AHEAD_BYTES (by the sizes the manifest records) ahead of the one in hand, which always loads.
 */
class ReadAhead<T> {
  private ahead = 0;
  private stopped = false;
  private readonly started = new Map<string, { read: Promise<T>; bytes: number }>();
  private startedBytes = 0;

  constructor(
    private readonly load: (entry: ManifestShard) => Promise<T>,
    private readonly plan: ManifestShard[],
  ) {}

  take(entry: ManifestShard): Promise<T> {
    const started = this.started.get(entry.key);
    let read: Promise<T>;
    if (started) {
      this.started.delete(entry.key);
      this.startedBytes -= started.bytes;
      read = started.read;
    } else {
      read = this.load(entry);
      if (this.plan[this.ahead] === entry) this.ahead++;
    }
    while (
      !this.stopped &&
      this.ahead < this.plan.length &&
      this.started.size < READ_AHEAD &&
      this.startedBytes + this.plan[this.ahead].bytes <= READ_AHEAD_BYTES
    ) {
      const next = this.plan[this.ahead++];
      const ahead = this.load(next);
      ahead.catch(() => {}); // a read the change never takes (it failed first) must not be an unhandled rejection
      this.started.set(next.key, { read: ahead, bytes: next.bytes });
      this.startedBytes += next.bytes;
    }
    return read;
  }

  stop(): void {
    this.stopped = true;
    this.started.clear();
    this.startedBytes = 0;
  }
}

/**
 * The code for a writer state that is missing or older than the manifest in KV: a change would
 * publish over the items written since, and sweepStrays would take live shards for strays
 * (store/orphans.ts reports it under `damaged`).
 */
export const WRITER_STATE_BEHIND = 'writer_state_behind';
const writerStateBehind = (message: string) => new MedhashError(409, WRITER_STATE_BEHIND, message);

/**
 * Why `head` is older than `published`, the manifest in KV, or null. A commit precedes its
 * publish, so KV may lag the state (a failed publish, Workers KV's propagation), never lead it.
 */
function stateBehind(head: Head, published: Manifest | null): string | null {
  if (!published || published.generation <= head.manifest.generation) return null;
  return head.rev === 0
    ? `its writer state is missing while KV holds its manifest (generation ${published.generation})`
    : `its writer state (generation ${head.manifest.generation}) is older than its published manifest (generation ${published.generation})`;
}

export class CollectionWriter {
  private readonly mutex = new Mutex();
  private readonly now: () => number;
  // Records of the shards this writer wrote last, when few: sequential ingest rewrites the same
  // tail shard batch after batch, and this spares re-reading (and re-verifying) it from KV. A
  // change that rewrote more (ids spread over the collection) keeps none: held until the next
  // write, they would pin most of the collection in memory. Bounded across writers by hooks.recent.
  private recent = new Map<string, ShardRecord[]>();
  // The rev of the state this writer last saved or checked against KV (checked()).
  private checkedRev = 0;

  constructor(
    private readonly kv: KV,
    private readonly heads: HeadStore,
    private readonly spec: CollectionSpec,
    private readonly limits: WriterLimits = DEFAULT_WRITER_LIMITS,
    private readonly hooks: WriterHooks = {},
  ) {
    this.now = hooks.now ?? Date.now;
  }

  apply(ops: WriteOp[]): Promise<ApplyResult> {
    return this.mutex.run(async () => this.change(await this.current(), ops));
  }

  /**
   * Deletes the items whose metadata `field` is `value`, the first MAX_ERASE_ITEMS in id order,
   * in one change. The selection reads the writer's own manifest under its lock, never a
   * reader's (on Workers, KV may still show an older one), so no item written before the call
   * is missed and none can slip in between.
   */
  erase(field: ErasableField, value: string): Promise<EraseResult> {
    return this.mutex.run(async () => {
      const head = await this.current();
      // Stored metadata is JSON.stringify's output, so a match holds `"field":"value"` verbatim: a
      // search of each shard's metadata bytes first, with no record built (the whole collection
      // is read), the parse only for the few rows that hold it.
      const needle = `${JSON.stringify(field)}:${JSON.stringify(value)}`;
      const needleBytes = new TextEncoder().encode(needle);
      const holds = (metadata: string) => (JSON.parse(metadata) as Record<string, unknown>)[field] === value;
      const matches: string[] = [];
      for (const entry of head.manifest.shards) {
        const recent = this.recent.get(entry.key);
        if (recent) {
          for (const r of recent) if (r.metadata.includes(needle) && holds(r.metadata)) matches.push(r.id);
          continue;
        }
        const shard = await this.shard(entry);
        for (const row of shard.rowsWithMetadata(needleBytes)) if (holds(shard.metadataJson(row))) matches.push(shard.ids[row]);
      }
      const ids = matches.slice(0, MAX_ERASE_ITEMS);
      const remaining = matches.length - ids.length;
      try {
        return { ...(await this.change(head, ids.map((id) => ({ op: 'delete', id })))), ids, remaining, visible: true };
      } catch (e) {
        if (!isCommittedNotVisible(e)) throw e;
        // Committed, only not yet visible: an answer, not an error, or a retry would find nothing
        // and the ids deleted would never reach the audit log.
        const m = head.manifest;
        return { generation: m.generation, count: m.count, changed: ids.length, missing: [], ids, remaining, visible: false };
      }
    });
  }

  /** The head, checked against KV and recovered from any unfinished change; 404 once the collection is deleted. */
  private async current(): Promise<Head> {
    const loaded = await this.checked(this.loadHead());
    if (loaded.destroyed) throw new MedhashError(404, 'collection_not_found', 'the collection was deleted');
    return this.recover(loaded);
  }

  /**
   * `head`, or, when it is not the state this writer last saved or checked, the state read again
   * after the manifest in KV; throws WRITER_STATE_BEHIND, before anything is written, when that
   * state is older than the manifest. A lost state (a control store restored from an older copy,
   * a Durable Object's storage gone) starts from an empty manifest, a rolled-back one from an old
   * one: their next publish would drop the items written since, and the GC then their shards.
   * Only a state this writer did not make can be behind, so the KV read is paid once per writer
   * (on Workers, per Durable Object instance) and after another process's change, not per change;
   * a state at rev 0 (none) is always checked. The one case missed: the state replaced, under a
   * running writer, by a copy at exactly the rev that writer last saved.
   */
  private async checked(head: Head): Promise<Head> {
    if (head.destroyed || (head.rev > 0 && head.rev === this.checkedRev)) return head;
    // Read before the state is read again: a commit precedes its publish, so a state read after
    // this manifest is never older than it while the state is the collection's own.
    const published = await this.published();
    const again = this.loadHead();
    // A damaged copy in KV cannot say its generation. Beside a state of this collection's own,
    // the next publish replaces it (as before the check): refusing would leave the collection
    // unreadable and unwritable. Without a state there is nothing to replace it with.
    const damaged = published instanceof ManifestFormatError;
    if (damaged && again.rev === 0 && !again.destroyed) throw writerStateBehind(`its writer state is missing and its manifest in KV fails its check (${published.message}): nothing written; the operator must restore the writer state and KV together from one consistent backup (docs/SHARD_FORMAT.md, "Writer state behind KV")`);
    const behind = again.destroyed || damaged ? null : stateBehind(again, published);
    if (behind) {
      throw writerStateBehind(
        `${behind}: nothing written (a change from it would drop the items written since); the operator must make KV's manifest its writer state (medhash admin adopt-manifest) or restore the writer state and KV together from one consistent backup (docs/SHARD_FORMAT.md, "Writer state behind KV")`,
      );
    }
    this.checkedRev = again.rev;
    return again;
  }

  /** The manifest in KV, which readers use; the ManifestFormatError in its place when it fails its check. */
  private async published(): Promise<Manifest | ManifestFormatError | null> {
    try {
      return await new CollectionReader(this.kv, 0).manifest(this.spec.id);
    } catch (e) {
      if (e instanceof ManifestFormatError) return e;
      throw e;
    }
  }

  /** Saves `head` (compare-and-swap): this writer made that state, so checked() need not read KV for it. */
  private save(head: Head): void {
    head.rev = this.heads.save(head);
    this.checkedRev = head.rev;
  }

  /**
   * One change under the lock (see the steps in docs/SHARD_FORMAT.md, "Writing"). The shards it
   * rewrites are read, changed, cut and uploaded a few at a time in id order, so a change spread
   * over the whole collection holds a handful of shards in memory, never all of them.
   */
  private async change(head: Head, ops: WriteOp[]): Promise<ApplyResult> {
    const m = head.manifest;
    const sorted = [...ops].sort((a, b) => compareIdBytes(opId(a), opId(b)));
    for (let i = 1; i < sorted.length; i++) {
      if (opId(sorted[i - 1]) === opId(sorted[i])) throw new Error(`duplicate id ${opId(sorted[i])} in one apply`);
    }
    const groups = new Map<number, WriteOp[]>();
    for (const op of sorted) {
      const i = m.shards.length ? routeId(m.shards, opId(op)) : 0;
      (groups.get(i) ?? groups.set(i, []).get(i)!).push(op);
    }
    let changed = 0;
    const missing: string[] = [];
    /** A shard's records with its group applied, or null when the group changes nothing. */
    const merge = (base: ShardRecord[], group: WriteOp[]): ShardRecord[] | null => {
      const out: ShardRecord[] = [];
      let b = 0;
      let touched = 0;
      for (const op of group) {
        const id = opId(op);
        while (b < base.length && compareIdBytes(base[b].id, id) < 0) out.push(base[b++]);
        const existing = b < base.length && base[b].id === id ? base[b++] : null;
        if (op.op === 'put') {
          if (existing && sameRecord(existing, op.record)) out.push(existing);
          else {
            out.push(op.record);
            touched++;
          }
        } else if (existing) touched++;
        else missing.push(id);
      }
      while (b < base.length) out.push(base[b++]);
      changed += touched;
      return touched > 0 ? out : null;
    };

    const { bits, descriptor_dims: dims } = this.spec;
    const small = (records: ShardRecord[]) =>
      records.length * 4 < this.limits.maxShardItems &&
      records.reduce((n, r) => n + recordBytes(r, bits, dims), 0) * 4 < this.limits.maxShardBytes - EMPTY_SHARD_BYTES;
    // Blobs, not records, are read ahead: a shard's records take about three times its bytes.
    const reads = new ReadAhead((entry) => (this.recent.has(entry.key) ? Promise.resolve(null) : this.blob(entry)), [...groups.keys()].map((i) => m.shards[i]).filter((s) => s !== undefined));
    const nextShards: ManifestShard[] = [];
    const ours = new Set<string>(); // keys of the shards this change wrote
    const replaced: string[] = [];
    let window: { key: string; bytes: Uint8Array }[] = [];
    let written: { key: string; records: ShardRecord[]; bytes: number }[] | null = [];
    let asked = false;
    // 1-2. Intent, then upload: the keys of a window of new shards go on record as pending before
    // their blobs are put, so a crash leaves them collectable. What a crash from here on leaves
    // (orphan uploads, an unpublished commit) is the maintenance's to finish, and on Workers
    // nothing else may come back to this collection: ask for it before the first upload, or
    // before the commit when there is none (deletes that only empty shards). A failure leaves
    // the live manifest untouched.
    const ask = async () => {
      if (!asked) await this.hooks.schedule?.(this.now() + MAINTENANCE_RETRY_MS);
      asked = true;
    };
    const upload = async () => {
      if (window.length === 0) return;
      await ask();
      head.pending = [...head.pending, ...window.map((b) => b.key)];
      this.save(head);
      const puts = window.map((b) => this.kv.put(b.key, b.bytes));
      window = [];
      await settleAll(puts);
    };
    const cut = async (records: ShardRecord[]) => {
      for (const { records: chunk, maxBytes } of this.split(records)) {
        // Room first, then the blob: with this one, the window's blobs stay within
        // WRITE_WINDOW_BYTES, unless it goes alone.
        if (window.length > 0 && window.reduce((n, b) => n + b.bytes.length, maxBytes) > WRITE_WINDOW_BYTES) await upload();
        const bytes = encodeShard(chunk, bits, dims);
        const sha256 = await sha256Hex(bytes);
        const key = shardKey(this.spec.id, sha256);
        nextShards.push({ key, sha256, first_id: chunk[0].id, last_id: chunk[chunk.length - 1].id, count: chunk.length, bytes: bytes.length });
        ours.add(key);
        written = written && written.length < MAX_RECENT_SHARDS ? [...written, { key, records: chunk, bytes: bytes.length }] : null;
        window.push({ key, bytes });
        if (window.length >= WRITE_WINDOW) await upload();
      }
    };

    // A finished run waits here, uncut, while a small run at the end of the id range may still
    // merge into it. `run` is a rewritten run under a quarter of both caps (mostly by deletes): it
    // takes in its right neighbours until it is no longer small (compaction), so deletes cannot
    // leave a trail of tiny shards that every search must fetch.
    let held: ShardRecord[] | null = null;
    let run: ShardRecord[] | null = null;
    const finish = async (next: ShardRecord[] | null) => {
      if (held) await cut(held);
      held = next;
    };
    try {
      for (let i = 0; i < Math.max(m.shards.length, 1); i++) {
        const entry: ManifestShard | undefined = m.shards[i];
        const group = groups.get(i);
        const base: ShardRecord[] | null = group || run ? (entry ? await this.records(entry, await reads.take(entry)) : []) : null;
        const records: ShardRecord[] | null = base && group ? merge(base, group) : null;
        if (!run && !records) {
          await finish(null);
          if (entry) nextShards.push(entry);
          continue;
        }
        if (entry) replaced.push(entry.key);
        const items: ShardRecord[] = records ?? base!;
        if (items.length > 0) run = run ? [...run, ...items] : items;
        if (run && !small(run)) {
          await finish(run);
          run = null;
        }
      }
      if (changed === 0) return { generation: m.generation, count: m.count, changed, missing };
      // A small run at the end of the id range takes in its left neighbours instead.
      while (run && small(run)) {
        if (held) {
          run = [...held, ...run];
          held = null;
          continue;
        }
        const left = nextShards.at(-1);
        if (!left || ours.has(left.key)) break;
        nextShards.pop();
        replaced.push(left.key);
        run = [...(await this.records(left)), ...run];
      }
      await finish(run);
      await finish(null);
      await upload();
      await ask();
    } finally {
      reads.stop();
    }

    const next: Manifest = {
      ...m,
      generation: m.generation + 1,
      count: nextShards.reduce((n, s) => n + s.count, 0),
      shards: nextShards,
      updated_at: new Date(this.now()).toISOString(),
    };
    decodeManifest(encodeManifest(next)); // the same checks a reader will run, before anyone can see it

    // 3. Commit: the new manifest becomes the writer's truth; replaced shards start their grace.
    const live = new Set(nextShards.map((s) => s.key));
    const now = this.now();
    const dropped = replaced.filter((key) => !live.has(key));
    head.manifest = next;
    head.pending = [];
    head.garbage = [...head.garbage.filter((g) => !live.has(g.key)), ...dropped.map((key) => ({ key, since: now }))];
    this.save(head);
    this.recent = new Map((written ?? []).map((w) => [w.key, w.records]));
    this.hooks.recent?.hold(this, (written ?? []).reduce((n, w) => n + w.bytes, 0));
    // 4. Swap the manifest readers see, then collect what has outlived its grace. The apply
    // has succeeded at the commit: if another process took the head over meanwhile, its own
    // recover() finishes both steps, and this request must not report a conflict.
    let published: boolean;
    try {
      published = await this.publish(head);
    } catch (e) {
      if (!isPublishFailure(e)) throw e;
      // Said in `details` (which crosses a Durable Object hop, unlike a subclass): a caller
      // that must record what it did (an audit) can tell this change is committed.
      throw new MedhashError(e.status, e.code, e.message, undefined, { committed: true, generation: next.generation });
    }
    if (published) {
      // Collecting is bookkeeping of earlier changes: its failure must not turn this committed
      // one into an error (a retry would find nothing to do, and an erasure's ids would never
      // be audited). The maintenance tries again.
      await this.collect(head).catch(async (e: unknown) => {
        console.error(`collection ${this.spec.id}: GC after generation ${next.generation} failed (${String(e)}); retrying in maintenance`);
        await this.scheduleAfterCommit();
      });
    }
    return { generation: next.generation, count: next.count, changed, missing };
  }

  /**
   * Marks the collection destroyed (late writes then fail) and deletes all of its KV data;
   * idempotent. Every key the head knows goes on the garbage list first: KV's list may not show
   * recent puts yet (eventually consistent on Workers), and nothing but the maintenance comes back
   * to a deleted collection, so a failed delete must leave the keys on record for it. The state
   * left behind (a tombstone) names no shard: their id ranges are item ids, which may be
   * patient-derived. Resolves false when a delete failed (the maintenance retries it).
   */
  destroy(): Promise<boolean> {
    return this.mutex.run(async () => {
      const head = this.loadHead();
      // A head destroyed by an older version may still name its shards: emptied the same way.
      if (!head.destroyed || head.manifest.shards.length > 0) {
        const known = namedKeys(head);
        head.destroyed = true;
        head.manifest = { ...head.manifest, count: 0, shards: [] };
        head.pending = [];
        head.garbage = known.map((key) => ({ key, since: 0 }));
        this.save(head);
      }
      this.dropRecent();
      this.hooks.recent?.release(this);
      return this.purge(head);
    });
  }

  /**
   * Deletes a destroyed collection's KV data; false when a delete failed. The maintenance retries
   * it; the deletion itself is committed, so the API reports no error.
   */
  private async purge(head: Head): Promise<boolean> {
    try {
      const listed = await this.kv.list(collectionPrefix(this.spec.id));
      const keys = new Set([manifestKey(this.spec.id), ...head.garbage.map((g) => g.key), ...listed]);
      await settleAll([...keys].map((k) => this.kv.delete(k)));
    } catch (e) {
      console.error(`collection ${this.spec.id}: deleting its data failed (${String(e)}); retrying in maintenance`);
      await this.hooks.schedule?.(this.now() + MAINTENANCE_RETRY_MS);
      return false;
    }
    if (head.garbage.length > 0) {
      head.garbage = [];
      this.saveIfCurrent(head);
    }
    return true;
  }

  /**
   * Finds the shard keys under this collection's prefix that its writer state names nowhere, and
   * with `remove` deletes them; for the operator's sweep (store/orphans.ts). Two Node processes on
   * one data dir leave such strays when an upload is slower than the grace period (or it is 0): A
   * records key K; B takes the state over, and its GC deletes K once due; A's upload of K lands,
   * and A's commit fails with 409. Throws write_conflict when the state changed before the deletes
   * (run it again), and WRITER_STATE_BEHIND, deleting nothing, when the state is missing or older
   * than the published manifest.
   */
  sweepStrays(remove: boolean): Promise<string[]> {
    return this.mutex.run(async () => {
      // KV keeps no time per key, so no grace period can tell a stray from an upload in flight; the
      // order of the reads does. A writer records a key before it uploads it, so a key the listing
      // shows was recorded before the listing. Unnamed by the state read after the listing, its
      // record was dropped without a commit (the ordering above), and no change of this collection
      // will name it unless it records it again, which changes the state: the deletes happen only
      // while the state is still that one (as the GC's). The read before the listing keeps out a
      // key the GC of another process deletes between the listing and the second read.
      const before = this.loadHead();
      const listed = await this.kv.list(shardPrefix(this.spec.id));
      // Read before the second state read: a commit precedes its publish, so that read is never
      // older than this manifest while the state is the collection's own.
      const published = await this.published();
      const head = this.loadHead();
      if (head.destroyed) return []; // purge() deletes all it lists
      // A state lost (a control store restored from an older copy, a Durable Object's storage gone)
      // or rolled back names none, or only old ones, of the shards readers use: every live shard
      // would look a stray. Refusing the whole collection is the conservative answer: its pending
      // uploads and garbage cannot be told apart either, and in the normal case the state is there
      // and at least as new as KV's manifest, so real strays are still collected. A key the
      // published manifest names is never a stray in any case: readers use it.
      if (head.rev === 0 && listed.length > 0) {
        throw writerStateBehind(`its writer state is missing while KV holds ${listed.length} shard(s) of it: nothing of it swept`);
      }
      // A damaged copy in KV cannot say its generation nor its shards: as for a change (checked()),
      // a state of the collection's own decides, and names every key such a copy could.
      const readable = published instanceof ManifestFormatError ? null : published;
      const behind = stateBehind(head, readable);
      if (behind) throw writerStateBehind(`${behind}: nothing of it swept`);
      const named = new Set([...namedKeys(before), ...namedKeys(head), ...(readable?.shards.map((s) => s.key) ?? [])]);
      const strays = listed.filter((key) => !named.has(key));
      if (remove && strays.length > 0 && !(await this.deleteWhileCurrent(strays, head.rev))) throw writeConflict();
      return strays;
    });
  }

  /**
   * The operator's recovery of a writer state that is damaged (fails its check), missing or
   * behind the manifest in KV: that manifest, verified, becomes the state, with nothing pending
   * and no garbage, by the head store's compare-and-swap. Refused (409, nothing written) when the
   * state is none of those, so it never rolls a healthy collection back; when KV holds no manifest
   * that verifies; and when a shard the manifest names is missing from KV or not its recorded
   * length (each one listed). Reads every live shard once. Items committed after the published
   * generation and never published are lost; the shards only the old state named become strays
   * for the orphan sweep.
   */
  adoptManifest(): Promise<AdoptResult> {
    return this.mutex.run(async () => {
      // Read before the state, as checked() does: a state read after it is never older than it
      // while the state is the collection's own, so another process's publish is no rollback.
      const published = await this.published();
      const rev = this.heads.rev();
      let state: AdoptResult['state'];
      let previous: number | null = null;
      try {
        const head = this.loadHead();
        if (head.destroyed) throw new MedhashError(404, 'collection_not_found', 'the collection was deleted');
        // A missing state beside a manifest in KV that fails its check is still missing: refused below.
        const missing = head.rev === 0 && published !== null;
        if (!missing && (published instanceof ManifestFormatError || !stateBehind(head, published))) {
          const why = head.rev === 0 ? 'it has no writer state and KV holds no manifest of it (nothing was written to it)' : `its writer state is intact at generation ${head.manifest.generation}, not behind KV's manifest`;
          throw new MedhashError(409, 'adopt_not_needed', `${why}: nothing changed (adopting could only roll it back)`);
        }
        state = missing ? 'missing' : 'behind';
        previous = head.rev === 0 ? null : head.manifest.generation;
      } catch (e) {
        if (!(e instanceof ManifestFormatError)) throw e;
        state = 'damaged';
      }
      if (!published || published instanceof ManifestFormatError) {
        throw new MedhashError(409, 'no_verified_manifest', `KV holds no verified manifest of it to adopt (${published ? published.message : 'none'}): nothing changed`);
      }
      const { bits, descriptor_dims: dims } = this.spec;
      if (published.bits !== bits || published.descriptor_dims !== dims) {
        throw new MedhashError(409, 'no_verified_manifest', `KV's manifest is of ${published.bits}-bit codes and ${published.descriptor_dims}-value descriptors, the collection of ${bits} and ${dims}: nothing changed`);
      }
      const missing: { key: string; bytes: number; found: number | null }[] = [];
      for (const s of published.shards) {
        const blob = await this.kv.get(s.key);
        if (blob?.length !== s.bytes) missing.push({ key: s.key, bytes: s.bytes, found: blob ? blob.length : null });
      }
      if (missing.length > 0) {
        throw new MedhashError(
          409, 'shards_missing',
          `${missing.length} of the ${published.shards.length} shard(s) KV's manifest names are missing from KV or not their recorded length: ${missing.map((m) => m.key).join(', ')}; nothing changed`,
          undefined, { missing },
        );
      }
      this.dropRecent();
      this.hooks.recent?.release(this);
      this.save({ rev, manifest: published, published: published.generation, pending: [], garbage: [], destroyed: false });
      return { state, previous_generation: previous, generation: published.generation, count: published.count, shards: published.shards.length };
    });
  }

  /** Forgets the records of the shards of the last change (RecentBudget): the next change reads them from KV. */
  dropRecent(): void {
    this.recent = new Map();
  }

  /** Finishes an interrupted publish or deletion and collects expired garbage; runtimes call it when scheduled. */
  maintain(): Promise<void> {
    return this.mutex.run(async () => {
      const head = this.loadHead();
      if (head.rev === 0) return;
      if (head.destroyed) {
        await this.purge(head);
        return;
      }
      await this.collect(await this.recover(await this.checked(head)));
    });
  }

  private loadHead(): Head {
    const head = this.heads.load() ?? {
      rev: 0,
      manifest: emptyManifest(this.spec.id, this.spec.bits, this.spec.descriptor_dims),
      published: 0,
      pending: [],
      garbage: [],
      destroyed: false,
    };
    const m = head.manifest;
    if (m.collection !== this.spec.id || m.bits !== this.spec.bits || m.descriptor_dims !== this.spec.descriptor_dims) {
      throw new Error(`writer state for ${m.collection} does not match collection ${this.spec.id}`);
    }
    return head;
  }

  /** Undoes what a crashed apply left behind: orphaned uploads become garbage, a missed swap is redone. */
  private async recover(head: Head): Promise<Head> {
    if (head.pending.length > 0) {
      const live = new Set(head.manifest.shards.map((s) => s.key));
      const now = this.now();
      // Their grace starts now: the change may be another process's, its uploads still in flight.
      // That holds for a key already on the garbage list too (a change wrote the records of a
      // replaced shard again): kept at its old time, it could be due at once, and the upload
      // landing after the GC's delete would leave a stray (docs/SHARD_FORMAT.md, "Stray shards").
      const orphans = new Set(head.pending.filter((k) => !live.has(k)));
      head.garbage = [...head.garbage.filter((g) => !orphans.has(g.key)), ...[...orphans].map((key) => ({ key, since: now }))];
      head.pending = [];
      this.save(head);
    }
    if (head.published !== head.manifest.generation && !(await this.publish(head))) throw writeConflict();
    return head;
  }

  /**
   * Asks for maintenance again after a commit, to retry sooner. The change asked first (step 1),
   * so a failure to ask again is logged, not made this committed change's error.
   */
  private async scheduleAfterCommit(): Promise<void> {
    try {
      await this.hooks.schedule?.(this.now() + MAINTENANCE_RETRY_MS);
    } catch (e) {
      console.error(`collection ${this.spec.id}: asking for maintenance failed (${String(e)})`);
    }
  }

  /**
   * Puts the head's manifest into KV and records that it did. Two Node processes on one data
   * dir can interleave here: a put of generation g may land after another process committed
   * g+1, so after each put the head is re-read and any newer manifest put too; KV thus never
   * ends behind the head. Returns false when another writer saved the head meanwhile: it owns
   * the bookkeeping from then on (its recover() republishes what is unrecorded).
   */
  private async publish(head: Head): Promise<boolean> {
    let manifest = head.manifest;
    for (;;) {
      try {
        await this.kv.put(manifestKey(this.spec.id), encodeManifest(manifest));
      } catch (e) {
        await this.scheduleAfterCommit();
        throw new MedhashError(503, 'publish_failed', `the update is committed but not yet visible (${String(e)}); retrying the request is safe`);
      }
      const stored = this.heads.load();
      if (stored?.destroyed) {
        await this.kv.delete(manifestKey(this.spec.id)); // a late put must not resurrect a deleted collection
        return false;
      }
      if (!stored || stored.manifest.generation <= manifest.generation) break;
      manifest = stored.manifest;
    }
    if (manifest !== head.manifest) return false;
    head.published = manifest.generation;
    return this.saveIfCurrent(head);
  }

  /** Deletes garbage past its grace period; never a live shard, never before the swap is published. */
  private async collect(head: Head): Promise<void> {
    if (head.published !== head.manifest.generation) return;
    const live = new Set(head.manifest.shards.map((s) => s.key));
    const now = this.now();
    const due = head.garbage.filter((g) => !live.has(g.key) && now - g.since >= this.limits.graceMs);
    if (due.length > 0) {
      // Shard keys are content hashes, so another process may have made a collected key live
      // again; only delete while this head is still the stored one.
      if (!(await this.deleteWhileCurrent(due.map((g) => g.key), head.rev))) return;
      const gone = new Set(due.map((g) => g.key));
      head.garbage = head.garbage.filter((g) => !gone.has(g.key) && !live.has(g.key));
      if (!this.saveIfCurrent(head)) return;
    }
    if (head.garbage.length > 0) {
      await this.hooks.schedule?.(Math.min(...head.garbage.map((g) => g.since)) + this.limits.graceMs);
    }
  }

  /**
   * Deletes `keys` if the stored head is still at `rev`; false (nothing deleted) if it is not. A
   * writer records a key (changing the head) before it uploads it; where the KV makes the check and
   * the deletes one step that uploads wait for (Node), that upload lands before the check, which
   * then fails, or after the deletes. On Workers the Durable Object is the collection's only writer.
   */
  private async deleteWhileCurrent(keys: string[], rev: number): Promise<boolean> {
    // The stored rev alone: a whole head (its manifest checked) is not decoded inside the KV's lock.
    const current = () => this.heads.rev() === rev;
    if (this.kv.deleteIf) return this.kv.deleteIf(keys, current);
    if (!current()) return false;
    await settleAll(keys.map((key) => this.kv.delete(key)));
    return true;
  }

  /** Saves bookkeeping that another writer may already have superseded; false if it had. */
  private saveIfCurrent(head: Head): boolean {
    try {
      this.save(head);
      return true;
    } catch (e) {
      if (e instanceof MedhashError && e.code === 'write_conflict') return false;
      throw e;
    }
  }

  /** A live shard's records: those this writer wrote last, else its blob (read now unless given), decoded. */
  private async records(entry: ManifestShard, blob?: Uint8Array | null): Promise<ShardRecord[]> {
    const recent = this.recent.get(entry.key);
    if (recent) return recent;
    const shard = Shard.decode(blob ?? (await this.blob(entry)));
    return shard.ids.map((_, row) => shard.record(row));
  }

  private async shard(entry: ManifestShard): Promise<Shard> {
    return Shard.decode(await this.blob(entry));
  }

  private async blob(entry: ManifestShard): Promise<Uint8Array> {
    const blob = await this.kv.get(entry.key);
    if (!blob) throw new Error(`live shard ${entry.key} is missing from KV`);
    return checkShardBytes(entry, blob);
  }

  /**
   * Cuts sorted records into shards under both caps, balanced by item count; `maxBytes` bounds
   * each one's blob (encodeShard's padding may leave it a few bytes smaller).
   */
  private split(records: ShardRecord[]): { records: ShardRecord[]; maxBytes: number }[] {
    if (records.length === 0) return [];
    const { bits, descriptor_dims: dims } = this.spec;
    const budget = this.limits.maxShardBytes - EMPTY_SHARD_BYTES;
    const sizes = records.map((r) => recordBytes(r, bits, dims));
    const total = sizes.reduce((a, b) => a + b, 0);
    const parts = Math.max(1, Math.ceil(records.length / this.limits.maxShardItems), Math.ceil(total / budget));
    const chunks: { records: ShardRecord[]; maxBytes: number }[] = [];
    let cur: ShardRecord[] = [];
    let curBytes = 0;
    let done = 0;
    records.forEach((r, i) => {
      if (sizes[i] > budget) throw new Error(`item ${r.id} (${sizes[i]} bytes) exceeds the shard byte cap`);
      // what is left shared among the parts left, so the last chunk is not a remainder (21 items
      // under a cap of 5: 5, 4, 4, 4, 4, not 5, 5, 5, 5, 1); a cut by bytes leaves fewer parts to share
      const target = Math.min(this.limits.maxShardItems, Math.ceil((records.length - done) / Math.max(1, parts - chunks.length)));
      if (cur.length > 0 && (cur.length >= target || curBytes + sizes[i] > budget)) {
        chunks.push({ records: cur, maxBytes: EMPTY_SHARD_BYTES + curBytes });
        done += cur.length;
        cur = [];
        curBytes = 0;
      }
      cur.push(r);
      curBytes += sizes[i];
    });
    chunks.push({ records: cur, maxBytes: EMPTY_SHARD_BYTES + curBytes });
    return chunks;
  }
}

/** Limits from MEDHASH_SHARD_MAX_BYTES, MEDHASH_SHARD_MAX_ITEMS, MEDHASH_GC_GRACE_MS (env vars or Worker vars). */
export function writerLimitsFromEnv(env: Record<string, unknown>): WriterLimits {
  const num = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const v = Number(raw);
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
    return v;
  };
  return {
    // The floor fits the largest item the API accepts; the ceiling stays under KV's 25 MiB.
    maxShardBytes: num('MEDHASH_SHARD_MAX_BYTES', DEFAULT_WRITER_LIMITS.maxShardBytes, 64 << 10, 24 << 20),
    maxShardItems: num('MEDHASH_SHARD_MAX_ITEMS', DEFAULT_WRITER_LIMITS.maxShardItems, 1, 1 << 20),
    graceMs: num('MEDHASH_GC_GRACE_MS', DEFAULT_WRITER_LIMITS.graceMs, 0, 7 * 24 * 3600_000),
  };
}
