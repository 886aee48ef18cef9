// Online backup of a Node data dir (control.sqlite and kv.sqlite) while the service runs. The
// copy is a data dir of its own: restoring is pointing MEDHASH_DATA_DIR at it.
//
// The two files cannot be copied in one instant, so the copy is made exact afterwards. The
// control store (tenants, keys, ledgers and each collection's writer head, the authoritative
// state) is copied first and KV second. A shard that a head names was uploaded before that head
// was committed, and an unreferenced shard stays in KV for the GC grace period, so the later KV
// copy holds every shard the earlier heads name (each is checked: present, sha256 as the
// manifest says; the backup fails otherwise). KV's copy may also hold what writes committed
// between the two copies: its manifests are set back to the heads', and only the shards those
// manifests name are kept (not the replaced ones still in their grace period, which may hold
// erased items, nor keys of collections deleted or first written around the copy), so the
// backup is the state of one moment, the control copy's. The KV copy is then vacuumed, so that
// what was dropped is not left in its free pages.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectionOfKey, collectionPrefix, COLLECTIONS_PREFIX, encodeManifest, ManifestFormatError, manifestKey } from '../shards/manifest.ts';
import { IDEMPOTENCY_TTL_MS } from '../billing/ledger.ts';
import { sha256Hex } from '../util/bytes.ts';
import { sqlHeadStore, type Head } from './head.ts';
import { isFinishedTombstone } from './orphans.ts';
import { openSqlite, sqliteDb, SqliteKV } from './sqlite.ts';

const BACKUP_FORMAT = 'medhash-backup';
const BACKUP_VERSION = 1;
/** Copied in this order (see above). */
const FILES = ['control.sqlite', 'kv.sqlite'] as const;

export interface BackupSummary {
  out: string;
  collections: number;
  shards: number;
  /**
   * KV keys left out: shards replaced before the control copy or written after it, and every
   * key of a collection deleted, or first written, around the copy.
   */
  dropped: number;
}

export interface BackupOptions {
  /** Runs between the two copies; tests use it to commit writes there. */
  betweenCopies?: () => Promise<void>;
}

/**
 * Refuses to serve a data dir that is half of one, or a backup this version does not know: run
 * on control.sqlite alone, the service would find collections whose shards are nowhere and
 * answer empty searches until a write failed; on kv.sqlite alone, it would serve no collection.
 * A new (empty or missing) folder is fine: the service creates both files.
 */
export function checkDataDir(dataDir: string): void {
  const present = FILES.filter((f) => existsSync(join(dataDir, f)));
  if (present.length === 1) {
    const missing = FILES.find((f) => f !== present[0]);
    throw new Error(`${resolve(dataDir)} holds ${present[0]} but no ${missing}: not a whole medhash data dir (a backup holds both; restore the whole folder)`);
  }
  const manifest = join(dataDir, 'BACKUP.json');
  if (!existsSync(manifest)) return;
  let m: { format?: unknown; version?: unknown };
  try {
    m = JSON.parse(readFileSync(manifest, 'utf8')) as typeof m;
  } catch {
    throw new Error(`${manifest} is not JSON: not a backup this version can serve`);
  }
  if (m?.format !== BACKUP_FORMAT || m.version !== BACKUP_VERSION) {
    throw new Error(`${manifest} says format ${JSON.stringify(m?.format)} version ${JSON.stringify(m?.version)}; this version serves ${BACKUP_FORMAT} version ${BACKUP_VERSION} only`);
  }
  if (present.length === 0) throw new Error(`${resolve(dataDir)} holds a BACKUP.json but neither ${FILES.join(' nor ')}: the backup is incomplete`);
}

/** For the commands that work on an existing data dir (backup, orphan sweep): never one they would create. */
export function requireDataDir(dataDir: string): void {
  for (const f of FILES) {
    if (!existsSync(join(dataDir, f))) throw new Error(`${dataDir} holds no ${f}: not a medhash data dir`);
  }
}

export async function backupDataDir(dataDir: string, out: string, opts: BackupOptions = {}): Promise<BackupSummary> {
  requireDataDir(dataDir);
  if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`${out} is not empty: a backup goes to a new or empty folder`);
  mkdirSync(out, { recursive: true });
  try {
    return await copyAndCheck(dataDir, out, opts);
  } catch (err) {
    // A half-made copy must not pass for a backup; the folder was empty, so all of it goes.
    for (const f of readdirSync(out)) rmSync(join(out, f), { force: true });
    throw err;
  }
}

async function copyAndCheck(dataDir: string, out: string, opts: BackupOptions): Promise<BackupSummary> {
  for (const f of FILES) {
    const db = openSqlite(join(dataDir, f));
    try {
      // VACUUM INTO reads one consistent snapshot of the live database, whatever writes meanwhile.
      db.prepare('VACUUM INTO ?').run(join(out, f));
    } finally {
      db.close();
    }
    if (f === FILES[0]) await opts.betweenCopies?.();
  }

  const controlDb = openSqlite(join(out, 'control.sqlite'));
  const kvDb = openSqlite(join(out, 'kv.sqlite'));
  try {
    const kv = new SqliteKV(kvDb);
    const sql = sqliteDb(controlDb);
    const heads = sql.all<{ collection: string }>('SELECT collection FROM writer_heads ORDER BY collection');
    const registered = new Set(sql.all<{ id: string }>('SELECT id FROM collections').map((r) => r.id));
    const summary: BackupSummary = { out: resolve(out), collections: 0, shards: 0, dropped: 0 };
    for (const { collection } of heads) {
      const store = sqlHeadStore(sql, collection);
      let head: Head;
      try {
        head = store.load()!;
      } catch (e) {
        if (!(e instanceof ManifestFormatError)) throw e;
        // Failing, not skipping it: a backup without the collection would pass for a whole one.
        throw new Error(
          `backup: the writer state of collection ${collection} fails its check (${e.message}), so no backup was made: ` +
            'recover it first (docs/SHARD_FORMAT.md, "Damaged writer state"), then run the backup again',
        );
      }
      const keys = await kv.list(collectionPrefix(collection));
      // A delete marks the head first and removes the registry row last: either way, the
      // collection was gone (or going) at the backup's moment, and nothing of it is kept. Its
      // head becomes what a finished delete leaves: a tombstone naming no shard (their id
      // ranges are item ids) and no key (all deleted here), so the copy is no orphan to sweep.
      if (head.destroyed || !registered.has(collection)) {
        for (const key of keys) await kv.delete(key);
        summary.dropped += keys.length;
        if (!isFinishedTombstone(head)) {
          store.save({ ...head, destroyed: true, manifest: { ...head.manifest, count: 0, shards: [] }, pending: [], garbage: [] });
        }
        continue;
      }
      // Only the live manifest's shards are kept: replaced ones (which may hold erased items)
      // and uploads not yet committed are not part of the index at that moment.
      const live = new Set(head.manifest.shards.map((s) => s.key));
      for (const key of keys) {
        if (key === manifestKey(collection) || live.has(key)) continue;
        await kv.delete(key);
        summary.dropped++;
      }
      for (const shard of head.manifest.shards) {
        const blob = await kv.get(shard.key);
        if (!blob) {
          throw new Error(
            `backup: shard ${shard.key} was gone from KV by the time it was copied (the collection changed or was deleted during the copy, ` +
              'and the shard outlived its GC grace period); run the backup again',
          );
        }
        if ((await sha256Hex(blob)) !== shard.sha256) throw new Error(`backup: shard ${shard.key} does not match its sha256`);
      }
      await kv.put(manifestKey(collection), encodeManifest(head.manifest));
      // Nothing in the restored copy can hold an older manifest, so nothing is left to collect.
      store.save({ ...head, published: head.manifest.generation, pending: [], garbage: [] });
      summary.collections++;
      summary.shards += head.manifest.shards.length;
    }
    // A collection first written between the copies has keys in KV but no head in the control
    // copy: it did not exist yet at the backup's moment.
    const headed = new Set(heads.map((h) => h.collection));
    for (const key of await kv.list(COLLECTIONS_PREFIX)) {
      const id = collectionOfKey(key);
      if (id !== null && headed.has(id)) continue;
      await kv.delete(key);
      summary.dropped++;
    }
    // Answers stored for Idempotency-Key retries past their day are never replayed again (the
    // ledger only purges them at its next idempotent call), and they hold search results'
    // metadata, patient references of since-erased items included: a backup keeps none of them.
    if (sql.all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'idempotency'").length > 0) {
      sql.run('DELETE FROM idempotency WHERE created_ms < ?', Date.now() - IDEMPOTENCY_TTL_MS);
    }
    // Deleted rows would otherwise stay readable in the file's free pages.
    kvDb.exec('VACUUM');
    controlDb.exec('VACUUM');
    writeFileSync(
      join(out, 'BACKUP.json'),
      `${JSON.stringify({ format: BACKUP_FORMAT, version: BACKUP_VERSION, created_at: new Date().toISOString(), source: resolve(dataDir), ...summary }, null, 1)}\n`,
    );
    return summary;
  } finally {
    kvDb.close();
    controlDb.close();
  }
}
