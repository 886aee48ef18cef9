// Node's stores on node:sqlite: a KV with the Workers KV interface (persisted on disk, never an
// in-memory map) and the SqlDb adapter behind the control plane and the writer heads.
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type { KV } from './kv.ts';
import type { SqlDb, SqlValue } from './sql.ts';

export function openSqlite(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  // WAL lets readers proceed while a writer commits; busy_timeout covers a second process.
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
  return db;
}

export function sqliteDb(db: DatabaseSync): SqlDb {
  // Each text is compiled once (compiling costs as much as running a control-plane lookup);
  // the texts are the code's own constants, so the map stays small.
  const statements = new Map<string, StatementSync>();
  const prepare = (text: string): StatementSync => {
    let st = statements.get(text);
    if (!st) statements.set(text, (st = db.prepare(text)));
    return st;
  };
  return {
    exec(text) {
      db.exec(text);
    },
    all<T>(text: string, ...params: SqlValue[]) {
      return prepare(text).all(...(params as SQLInputValue[])) as T[];
    },
    run(text, ...params) {
      const r = prepare(text).run(...(params as SQLInputValue[]));
      return { changes: Number(r.changes) };
    },
    transaction(fn) {
      db.exec('BEGIN IMMEDIATE');
      try {
        const out = fn();
        db.exec('COMMIT');
        return out;
      } catch (e) {
        db.exec('ROLLBACK');
        throw e;
      }
    },
  };
}

const kvTable = (name: string) => `CREATE TABLE IF NOT EXISTS ${name} (key TEXT PRIMARY KEY, value BLOB NOT NULL)`;

export class SqliteKV implements KV {
  private readonly sql: SqlDb;
  private readonly getSt: StatementSync;
  private readonly putSt: StatementSync;
  private readonly deleteSt: StatementSync;
  private readonly listSt: StatementSync;
  private readonly bytesSt: StatementSync;

  constructor(db: DatabaseSync) {
    // Deleted rows are overwritten with zeros, not left in free pages: a shard collected after
    // an erasure must not stay readable in the file.
    db.exec('PRAGMA secure_delete = ON');
    // A rowid table with a key index. Data dirs made before 2026-11-27 hold a WITHOUT ROWID
    // table, whose b-tree cells carry the shard blobs (hundreds of KB each) themselves: every
    // lookup, even of a missing key, then cost ~1 ms at 1M items (0.02 ms as a rowid table;
    // scripts/bench/node-store.ts). They are converted once, in one transaction that a second
    // process opening the same dir waits for.
    this.sql = sqliteDb(db);
    this.sql.transaction(() => {
      const row = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'kv'").get() as { sql: string } | undefined;
      if (row && /WITHOUT\s+ROWID/i.test(row.sql)) {
        db.exec(`${kvTable('kv_rowid')}; INSERT INTO kv_rowid (key, value) SELECT key, value FROM kv; DROP TABLE kv; ALTER TABLE kv_rowid RENAME TO kv`);
      } else {
        db.exec(kvTable('kv'));
      }
    });
    this.getSt = db.prepare('SELECT value FROM kv WHERE key = ?');
    this.putSt = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
    this.deleteSt = db.prepare('DELETE FROM kv WHERE key = ?');
    // Range scan instead of LIKE (prefixes may hold LIKE wildcards); U+10FFFF is the largest
    // code point, so under SQLite's bytewise order it bounds every key with this prefix.
    this.listSt = db.prepare('SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key');
    this.bytesSt = db.prepare('SELECT COALESCE(SUM(length(value)), 0) AS n FROM kv WHERE key >= ? AND key < ?');
  }

  async get(key: string): Promise<Uint8Array | null> {
    const row = this.getSt.get(key) as { value: Uint8Array } | undefined;
    return row ? row.value : null;
  }

  async put(key: string, value: Uint8Array | string): Promise<void> {
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    this.putSt.run(key, bytes);
  }

  async delete(key: string): Promise<void> {
    this.deleteSt.run(key);
  }

  async deleteIf(keys: string[], check: () => boolean): Promise<boolean> {
    // Synchronous throughout, so nothing else of this process runs inside the transaction.
    return this.sql.transaction(() => {
      if (!check()) return false;
      for (const key of keys) this.deleteSt.run(key);
      return true;
    });
  }

  async list(prefix: string): Promise<string[]> {
    const rows = this.listSt.all(prefix, prefix + '\u{10ffff}') as { key: string }[];
    return rows.map((r) => r.key);
  }

  async bytes(prefix: string): Promise<number> {
    return Number((this.bytesSt.get(prefix, prefix + '\u{10ffff}') as { n: number | bigint }).n);
  }
}
