// The orphan sweep: KV keys and writer state of collection ids that the registry no longer
// holds. Deleting a collection now destroys its data first and removes its registry row last;
// older versions removed the row first and then deleted what KV listed, so a failed or cut-off
// call to the writer, or a KV list that had not caught up with recent puts (Workers KV's is
// eventually consistent), left data that no request can reach.
//
// Why data without a registry row is garbage, never a collection being created. A collection's
// registry row is committed when it is created (POST /v1/collections), and its id, random and
// never reused, is known from that row only; its writer state is first saved, and its first KV
// key put, by its first write, which resolves the collection through that row. So every key and
// every writer state belongs to an id whose row was committed before they were written. The sweep
// lists the data first and reads the registry after: an id that had data at the listing and has
// no row at the later read had its row committed and then removed, i.e. was deleted. A
// collection created during the sweep either has no data yet at the listing, or its row is in
// the later read. (The other order, registry first, would lose that race; this one needs no
// grace period.)
//
// It also finds the stray shards of registered collections: shard keys under `c/{id}/s/` that the
// collection's writer state names nowhere (two Node processes on one data dir leave them in one
// ordering). Only the collection's writer can tell them from an upload in flight, so the sweep
// asks it (CollectionWriter.sweepStrays; on Workers through its Durable Object), for each
// registered collection whose shard keys the listing shows.
//
// A collection whose writer state fails its check (decodeHead: a damaged byte) is reported and left
// as it is, whether registered or not: its writer cannot read what it owns, nor tell a stray from
// a live shard. So is a registered one whose writer state is missing while KV holds its shards, or
// older than its published manifest (sweepStrays refuses it). The sweep goes on with the others.
import { collectionOfKey, collectionPrefix, COLLECTIONS_PREFIX, ManifestFormatError, shardPrefix } from '../shards/manifest.ts';
import { decodeHead, type Head, type HeadStore } from './head.ts';
import type { KV } from './kv.ts';
import { CollectionReader } from './reader.ts';
import type { SqlDb } from './sql.ts';
import { MedhashError } from '../util/errors.ts';
import { WRITER_STATE_BEHIND, type CollectionSpec } from './writer.ts';

/** The writer state a runtime can list (sqlWriterStates). */
export interface WriterStates {
  /** Ids holding writer state other than a finished tombstone. */
  held: string[];
  /** Ids whose writer state fails its check, and why. */
  damaged: Map<string, string>;
}

/** What the sweep needs from a runtime (entries/node.ts, entries/worker.ts). */
export interface OrphanStores {
  kv: KV;
  /**
   * The writer state held; null where the runtime cannot list writer state (Workers: one Durable
   * Object per collection, and a Worker cannot list them).
   */
  writerStates(): Promise<WriterStates | null>;
  /** Every collection in the registry, of all tenants. */
  registered(): Promise<CollectionSpec[]>;
  /** Destroys collection `id` through its writer (destroyOrphan); false: a KV delete failed. */
  destroy(id: string): Promise<boolean>;
  /** Registered collection `spec`'s stray shard keys, deleted with `remove`, through its writer (CollectionWriter.sweepStrays). */
  strays(spec: CollectionSpec, remove: boolean): Promise<string[]>;
}

export interface Orphan {
  collection: string;
  prefix: string;
  /** KV keys listed under the prefix. */
  keys: number;
  /** Their total size, where the KV tells it cheaply (Node). */
  bytes?: number;
  /** Whether writer state other than a finished tombstone was found (absent where it cannot be listed). */
  writer_state?: boolean;
  /** With deletion: all of it deleted, the writer state left a tombstone. */
  deleted?: boolean;
  error?: string;
}

/** Shard keys of a registered collection that its writer state names nowhere. */
export interface Stray {
  collection: string;
  shards: string[];
  /** With deletion: all of them deleted. */
  deleted?: boolean;
  error?: string;
}

/** A collection whose writer state fails its check, or is missing or older than its published manifest: nothing of it swept. */
export interface DamagedState {
  collection: string;
  /** Whether the registry holds it. */
  registered: boolean;
  error: string;
}

export interface OrphanReport {
  /** True: found and listed only. */
  dry_run: boolean;
  orphans: Orphan[];
  /** Totals over the orphans. */
  keys: number;
  bytes?: number;
  /** Registered collections with stray shards (or whose search for them failed). */
  strays: Stray[];
  /** Collections whose writer state fails its check (where the runtime lists writer state), or is missing or behind its published manifest. */
  damaged: DamagedState[];
  /** Orphans and strays whose deletion (or search) failed (run the sweep again), and the collections under damaged. */
  failed: number;
}

/**
 * What in `r` was left, one phrase per kind, naming the collections: failed deletions (or searches,
 * in a dry run) with `again`, what re-runs the sweep; damaged writer states without it, as a re-run
 * leaves them as they are. Empty: nothing failed. Shared by the CLI and the API's 500.
 */
export function orphanProblems(r: OrphanReport, again: string): string[] {
  const failed = (found: { collection: string; error?: string }[], what: string) => {
    const ids = found.filter((o) => o.error !== undefined).map((o) => o.collection);
    return ids.length > 0 ? [`${what} failed for ${ids.join(', ')}`] : [];
  };
  // A dry run deletes nothing: there a stray's error is its search's.
  const failures = [...failed(r.orphans, 'deleting orphans'), ...failed(r.strays, r.dry_run ? 'finding stray shards' : 'deleting stray shards')];
  // `?? []`: the CLI may read the report of a service older than the field.
  const damaged = r.damaged ?? [];
  // adopt-manifest finds a collection by its registry row: a deleted one's state it cannot reach.
  const adoptable = damaged.filter((d) => d.registered).map((d) => d.collection);
  const adopt = adoptable.length ? ` (\`medhash admin adopt-manifest --tenant ID --collection NAME\` recovers ${adoptable.join(', ')} from its published manifest: docs/SHARD_FORMAT.md)` : '';
  return [
    ...(failures.length ? [`${failures.join('; ')}: ${again}`] : []),
    ...(damaged.length ? [`writer state damaged, missing or out of date for ${damaged.map((d) => d.collection).join(', ')}: nothing of it swept, and running the sweep again does not change that${adopt}`] : []),
  ];
}

export interface SweepOptions {
  /** Delete what is found (default: list only). */
  delete?: boolean;
  /** Delete even when every collection holding data is an orphan (see sweepOrphans). */
  force?: boolean;
  /** Runs between the listing of the data and the read of the registry; tests create collections there. */
  betweenReads?: () => Promise<void>;
}

/**
 * A destroyed writer state with nothing left to delete and no shard named: what deleting a
 * collection leaves on purpose, so that a late write cannot bring its data back. Not an orphan.
 */
export const isFinishedTombstone = (h: Head): boolean =>
  h.destroyed && h.pending.length === 0 && h.garbage.length === 0 && h.manifest.shards.length === 0;

const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** A `damaged` entry's error for a writer state that fails its check because `why`. */
const failsItsCheck = (why: string): string => `its writer state fails its check (${why}): nothing of it swept`;

/** The writer state in `db`'s writer_heads: more than a finished tombstone, or failing its check. */
export function sqlWriterStates(db: SqlDb): WriterStates {
  const states: WriterStates = { held: [], damaged: new Map() };
  for (const r of db.all<{ collection: string; rev: number; head: string }>('SELECT collection, rev, head FROM writer_heads ORDER BY collection')) {
    let head: Head;
    try {
      head = decodeHead(r.head, r.rev);
    } catch (e) {
      states.damaged.set(r.collection, errorMessage(e));
      continue;
    }
    if (!isFinishedTombstone(head)) states.held.push(r.collection);
  }
  return states;
}

/**
 * The writer spec to destroy unregistered collection `id` with: its writer state's (a writer
 * refuses a spec that differs from it), else its published manifest's, so that the tombstone
 * left answers a late write with 404. With neither (stray shards), any spec does.
 */
export async function orphanSpec(id: string, heads: HeadStore, kv: KV): Promise<CollectionSpec> {
  const m = heads.load()?.manifest ?? (await new CollectionReader(kv, 0).manifest(id).catch(() => null));
  return m ? { id, bits: m.bits, descriptor_dims: m.descriptor_dims } : { id, bits: 64, descriptor_dims: 0 };
}

export async function sweepOrphans(stores: OrphanStores, opts: SweepOptions = {}): Promise<OrphanReport> {
  // The data first, the registry after (see above).
  const keys = new Map<string, number>();
  const withShards = new Set<string>();
  for (const key of await stores.kv.list(COLLECTIONS_PREFIX)) {
    const id = collectionOfKey(key);
    if (id === null) continue;
    keys.set(id, (keys.get(id) ?? 0) + 1);
    if (key.startsWith(shardPrefix(id))) withShards.add(id);
  }
  const states = await stores.writerStates();
  await opts.betweenReads?.();
  const registered = new Map((await stores.registered()).map((spec) => [spec.id, spec]));

  const damaged = states?.damaged ?? new Map<string, string>();
  const holding = new Set([...keys.keys(), ...(states?.held ?? []), ...damaged.keys()]);
  const unregistered = [...holding].filter((id) => !registered.has(id));
  // The sweep trusts the registry it reads. An empty or replaced control store, or another
  // environment's registry over this KV namespace, makes every collection an orphan: deleting
  // them all is then almost surely that mistake, not old garbage, and it cannot be undone.
  if (opts.delete && !opts.force && unregistered.length > 0 && unregistered.length === holding.size) {
    throw new MedhashError(
      409, 'orphans_are_everything',
      `every collection holding data (${unregistered.length}) is missing from the registry, so nothing was deleted: check that the registry belongs to this data (an empty or replaced control store, another environment's registry), then, if they are all garbage, delete with force`,
      'force',
    );
  }
  const report: OrphanReport = { dry_run: !opts.delete, orphans: [], keys: 0, ...(stores.kv.bytes ? { bytes: 0 } : {}), strays: [], damaged: [], failed: 0 };
  for (const id of [...damaged.keys()].sort()) {
    report.damaged.push({ collection: id, registered: registered.has(id), error: failsItsCheck(damaged.get(id)!) });
    report.failed++;
  }
  for (const id of unregistered.filter((id) => !damaged.has(id)).sort()) {
    const o: Orphan = { collection: id, prefix: collectionPrefix(id), keys: keys.get(id) ?? 0 };
    if (stores.kv.bytes) o.bytes = await stores.kv.bytes(o.prefix);
    if (states) o.writer_state = states.held.includes(id);
    if (opts.delete) {
      try {
        if (await stores.destroy(id)) o.deleted = true;
        else o.error = 'a KV delete failed';
      } catch (e) {
        o.error = errorMessage(e);
      }
      if (o.error) report.failed++;
    }
    report.orphans.push(o);
    report.keys += o.keys;
    if (o.bytes !== undefined) report.bytes! += o.bytes;
  }
  for (const id of [...withShards].sort()) {
    const spec = registered.get(id);
    if (!spec || damaged.has(id)) continue;
    const s: Stray = { collection: id, shards: [] };
    try {
      s.shards = await stores.strays(spec, opts.delete === true);
      if (opts.delete && s.shards.length > 0) s.deleted = true;
    } catch (e) {
      report.failed++;
      if (e instanceof MedhashError && e.code === WRITER_STATE_BEHIND) {
        report.damaged.push({ collection: id, registered: true, error: e.message });
        continue;
      }
      // Its writer read its state and found it damaged: where the runtime cannot list writer
      // state (Workers), this is the only way the sweep learns it, and a re-run changes nothing.
      if (e instanceof ManifestFormatError) {
        report.damaged.push({ collection: id, registered: true, error: failsItsCheck(e.message) });
        continue;
      }
      s.error = errorMessage(e);
    }
    if (s.shards.length > 0 || s.error) report.strays.push(s);
  }
  return report;
}
