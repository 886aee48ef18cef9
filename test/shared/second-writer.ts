// A second process on a Node data dir, for the tests of two processes sharing one
// (test/store.test.ts). It opens the dir's stores as `medhash serve` does, prints "ready", waits
// for the file `go` to appear, applies its puts through its own writer, and writes the outcome
// to `done` as JSON ({"ok": result} or {"error": message}). Files, not pipes: the test signals
// it and waits for it synchronously, from inside a step of its own writer.
// Run: node --import tsx test/shared/second-writer.ts '{"dir","spec","graceMs","now","puts","go","done"}'
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { migrateHeads, sqlHeadStore } from '../../functions/store/head.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../../functions/store/sqlite.ts';
import { CollectionWriter, DEFAULT_WRITER_LIMITS, type CollectionSpec } from '../../functions/store/writer.ts';

export interface SecondWriterJob {
  dir: string;
  spec: CollectionSpec;
  graceMs: number;
  /** The writer's clock (the test's). */
  now: number;
  puts: { id: string; code: number[]; descriptor: number[]; metadata: string }[];
  go: string;
  done: string;
}

const job = JSON.parse(process.argv[2]) as SecondWriterJob;
const kvDb = openSqlite(join(job.dir, 'kv.sqlite'));
// The test holds its lock while it waits for this process: waiting out the default 5 s would
// only slow it down.
kvDb.exec('PRAGMA busy_timeout = 200');
const sql = sqliteDb(openSqlite(join(job.dir, 'control.sqlite')));
migrateHeads(sql);
const writer = new CollectionWriter(new SqliteKV(kvDb), sqlHeadStore(sql, job.spec.id), job.spec, { ...DEFAULT_WRITER_LIMITS, graceMs: job.graceMs }, { now: () => job.now });
console.log('ready');
while (!existsSync(job.go)) await sleep(5);
const ops = job.puts.map((p) => ({ op: 'put' as const, record: { id: p.id, code: Uint8Array.from(p.code), descriptor: Int8Array.from(p.descriptor), metadata: p.metadata } }));
const outcome = await writer.apply(ops).then(
  (ok) => ({ ok }),
  (e: unknown) => ({ error: String(e) }),
);
writeFileSync(`${job.done}.tmp`, JSON.stringify(outcome));
renameSync(`${job.done}.tmp`, job.done);
