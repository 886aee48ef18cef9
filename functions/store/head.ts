// A collection writer's authoritative state in the strongly consistent store (node:sqlite on
// Node, the collection's Durable Object SQLite on Workers). KV only holds a published copy of
// the manifest for readers; the writer never trusts KV (eventually consistent on Workers) for
// its own state. Saves are compare-and-swap on `rev`, so even two Node processes sharing a
// data dir cannot overwrite each other's updates.
import { decodeManifest, encodeManifest, ManifestFormatError, type Manifest } from '../shards/manifest.ts';
import type { SqlDb } from './sql.ts';
import { MedhashError } from '../util/errors.ts';

export interface Garbage {
  key: string;
  /** When the blob stopped being live (ms since epoch); deleted after the grace period. */
  since: number;
}

export interface Head {
  rev: number;
  manifest: Manifest;
  /** Generation last written to KV; GC waits until it equals manifest.generation. */
  published: number;
  /** Intent log: shard keys an apply is uploading. Left non-empty only by a crash. */
  pending: string[];
  garbage: Garbage[];
  /** Set when the collection is deleted, so a late write cannot resurrect its data. */
  destroyed: boolean;
}

export interface HeadStore {
  load(): Head | null;
  /** The stored rev (0: none), readable when the state itself is damaged: what adopting KV's manifest replaces. */
  rev(): number;
  /** Stores `head` if the stored rev is still `head.rev` (0: none stored); returns the new rev. */
  save(head: Head): number;
}

export const writeConflict = (): MedhashError =>
  new MedhashError(409, 'write_conflict', 'another writer updated this collection concurrently; retry the request');

/** A head as stored: its manifest in the manifest's own encoding, checksum included. */
export const encodeHead = (head: Head): string => JSON.stringify({ ...head, manifest: encodeManifest(head.manifest) });

/**
 * A stored row's state: its `text` and `rev`, the column that save() swaps on. Verifies the
 * manifest; one saved before 2026-11-29 is a version 1 manifest's fields as an object. Text that is
 * no JSON, whose other fields are not a writer state's (a damaged byte in a field's name), or whose
 * rev is not the row's (a damaged digit: every save would fail with write_conflict, and a rev of 0
 * would pass for a missing state) is refused as a damaged manifest is (the API's corrupt_index;
 * Node's maintenance stops), not as an internal error where a field is first used.
 */
export function decodeHead(text: string, rev: number): Head {
  let head: Omit<Head, 'manifest'> & { manifest: string | Manifest };
  try {
    head = JSON.parse(text) as typeof head;
  } catch {
    throw new ManifestFormatError('invalid writer state: not JSON');
  }
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const fields =
    typeof head === 'object' && head !== null &&
    count(head.rev) && count(head.published) && typeof head.destroyed === 'boolean' &&
    Array.isArray(head.pending) && head.pending.every((k) => typeof k === 'string') &&
    Array.isArray(head.garbage) && head.garbage.every((g) => typeof g?.key === 'string' && Number.isFinite(g.since));
  if (!fields) throw new ManifestFormatError('invalid writer state: its fields are not rev, published, pending, garbage and destroyed');
  if (head.rev !== rev) throw new ManifestFormatError(`invalid writer state: its rev ${head.rev} is not the stored rev ${rev}`);
  return { ...head, manifest: decodeManifest(typeof head.manifest === 'string' ? head.manifest : JSON.stringify(head.manifest)) };
}

export function migrateHeads(db: SqlDb): void {
  db.exec('CREATE TABLE IF NOT EXISTS writer_heads (collection TEXT PRIMARY KEY, rev INTEGER NOT NULL, head TEXT NOT NULL)');
}

export function sqlHeadStore(db: SqlDb, collection: string): HeadStore {
  return {
    load() {
      const rows = db.all<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads WHERE collection = ?', collection);
      return rows.length ? decodeHead(rows[0].head, rows[0].rev) : null;
    },
    rev() {
      const rows = db.all<{ rev: number }>('SELECT rev FROM writer_heads WHERE collection = ?', collection);
      return rows.length ? rows[0].rev : 0;
    },
    save(head) {
      const next = { ...head, rev: head.rev + 1 };
      const text = encodeHead(next);
      const { changes } =
        head.rev === 0
          ? db.run('INSERT INTO writer_heads (collection, rev, head) VALUES (?, 1, ?) ON CONFLICT (collection) DO NOTHING', collection, text)
          : db.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ? AND rev = ?', next.rev, text, collection, head.rev);
      if (changes === 0) throw writeConflict();
      return next.rev;
    },
  };
}
