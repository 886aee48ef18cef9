// Online backup of a Node data dir (control.sqlite and kv.sqlite) while the service runs. The
// copy is a data dir of its own: restoring is pointing MEDHASH_DATA_DIR at it.
//
// The two files cannot be copied in one instant, so the copy is made exact afterwards. The
// control store (tenants, keys, ledgers and each collection's writer head, the authoritative
// state) is copied first and KV second. A shard that a head names was uploaded before that head
// was committed, and an unreferenced shard stays in KV for the GC grace period, so the later KV
// copy holds every shard the earlier heads name (each is checked: present, sha256 as the
// manifest says; the backup fails otherwise). KV's copy may also hold what writes committed
// between the two copies: its manifests are set back to the heads', and shards no head knows
// (and every key of a collection first written meanwhile, which has no head in the copy) are
// dropped, so the backup is the state of one moment, the control copy's. The KV copy is then
// vacuumed, so that what was dropped is not left in its free pages.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectionPrefix, COLLECTIONS_PREFIX, encodeManifest, manifestKey } from '../shards/manifest.ts';
import { sha256Hex } from '../util/bytes.ts';
import type { Head } from './head.ts';
import { openSqlite, sqliteDb, SqliteKV } from './sqlite.ts';

const BACKUP_FORMAT = 'medhash-backup';
const BACKUP_VERSION = 1;
/** Copied in this order (see above). */
const FILES = ['control.sqlite', 'kv.sqlite'] as const;

export interface BackupSummary {
  out: string;
  collections: number;
  shards: number;
  /** Shards in the KV copy that no head knew (written after the control copy): dropped. */
  dropped: number;
}

export interface BackupOptions {
  /** Runs between the two copies; tests use it to commit writes there. */
  betweenCopies?: () => Promise<void>;
}

export async function backupDataDir(dataDir: string, out: string, opts: BackupOptions = {}): Promise<BackupSummary> {
  for (const f of FILES) {
    if (!existsSync(join(dataDir, f))) throw new Error(`${dataDir} holds no ${f}: not a medhash data dir`);
  }
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
    const heads = sqliteDb(controlDb).all<{ collection: string; head: string }>('SELECT collection, head FROM writer_heads ORDER BY collection');
    const summary: BackupSummary = { out: resolve(out), collections: 0, shards: 0, dropped: 0 };
    for (const row of heads) {
      const head = JSON.parse(row.head) as Head;
      const keys = await kv.list(collectionPrefix(row.collection));
      if (head.destroyed) {
        await Promise.all(keys.map((k) => kv.delete(k)));
        continue;
      }
      const known = new Set([...head.manifest.shards.map((s) => s.key), ...head.garbage.map((g) => g.key), ...head.pending]);
      for (const key of keys) {
        if (key === manifestKey(row.collection) || known.has(key)) continue;
        await kv.delete(key);
        summary.dropped++;
      }
      for (const shard of head.manifest.shards) {
        const blob = await kv.get(shard.key);
        if (!blob) throw new Error(`backup: shard ${shard.key} was collected before KV was copied (the copy took longer than the GC grace period); run the backup again`);
        if ((await sha256Hex(blob)) !== shard.sha256) throw new Error(`backup: shard ${shard.key} does not match its sha256`);
      }
      await kv.put(manifestKey(row.collection), encodeManifest(head.manifest));
      summary.collections++;
      summary.shards += head.manifest.shards.length;
    }
    // A collection first written between the copies has keys in KV but no head in the control
    // copy: it did not exist yet at the backup's moment.
    const headed = new Set(heads.map((h) => h.collection));
    for (const key of await kv.list(COLLECTIONS_PREFIX)) {
      if (headed.has(key.slice(COLLECTIONS_PREFIX.length).split('/')[0])) continue;
      await kv.delete(key);
      summary.dropped++;
    }
    // Deleted rows would otherwise stay readable in the file's free pages.
    kvDb.exec('VACUUM');
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
