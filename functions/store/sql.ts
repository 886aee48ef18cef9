// Minimal synchronous SQL surface shared by node:sqlite (Node) and Durable Object SQLite
// storage (Workers), so the control plane and writer heads are written once for both.

export type SqlValue = string | number | null;

export interface SqlDb {
  exec(sql: string): void;
  all<T>(sql: string, ...params: SqlValue[]): T[];
  run(sql: string, ...params: SqlValue[]): { changes: number };
  /** Runs `fn` atomically: all of its writes commit or none do. */
  transaction<T>(fn: () => T): T;
}

export function durableSql(storage: DurableObjectStorage): SqlDb {
  const sql = storage.sql;
  return {
    exec(text) {
      sql.exec(text);
    },
    all<T>(text: string, ...params: SqlValue[]) {
      return sql.exec(text, ...params).toArray() as T[];
    },
    run(text, ...params) {
      const cursor = sql.exec(text, ...params);
      cursor.toArray();
      return { changes: cursor.rowsWritten };
    },
    transaction(fn) {
      return storage.transactionSync(fn);
    },
  };
}
