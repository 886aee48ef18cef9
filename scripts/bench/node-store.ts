// Micro-benchmarks behind three choices of the Node stores (docs/BENCHMARKS.md, "The Node KV
// fix"): the KV as a rowid table rather than WITHOUT ROWID, SQL statements compiled once, and
// SHA-256 by Node's own hash rather than WebCrypto. Each prints microseconds per call.
//
//   npx tsx scripts/bench/node-store.ts [--n 1000000]
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createNodeBackend } from '../../functions/entries/node.ts';
import { manifestKey } from '../../functions/shards/manifest.ts';
import { openSqlite, sqliteDb } from '../../functions/store/sqlite.ts';
import type { WriteOp } from '../../functions/store/writer.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '1000000' } } });
const n = Number(values.n);

/** Microseconds per call of `f`, best of 3 rounds of `rounds` calls. */
async function usPerCall(rounds: number, f: (i: number) => unknown): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) await f(i);
    best = Math.min(best, ((performance.now() - t0) * 1000) / rounds);
  }
  return Math.round(best * 10) / 10;
}

const dir = mkdtempSync(join(tmpdir(), 'medhash-bench-store-'));
try {
  // An index of n random 64-bit codes, written as the service writes it.
  const node = await createNodeBackend({ dataDir: dir });
  const tenant = await node.backend.control.createTenant('bench');
  const col = await node.backend.control.createCollection(tenant.id, { name: 'bulk', bits: 64, descriptor_dims: 0 });
  const spec = { id: col.id, bits: 64 as const, descriptor_dims: 0 };
  for (let start = 0; start < n; start += 16384) {
    const ops: WriteOp[] = [];
    for (let i = start; i < Math.min(n, start + 16384); i++) {
      ops.push({ op: 'put', record: { id: `s${String(i).padStart(8, '0')}`, code: Uint8Array.from({ length: 8 }, () => Math.random() * 256), descriptor: new Int8Array(0), metadata: '{}' } });
    }
    await node.backend.writer(spec).apply(ops);
  }
  node.close();

  // The same rows in the layout data dirs had before 2026-11-27, beside the current table.
  const db = openSqlite(join(dir, 'kv.sqlite'));
  db.exec('CREATE TABLE kv_without_rowid (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID; INSERT INTO kv_without_rowid SELECT key, value FROM kv');
  const shards = (db.prepare("SELECT count(*) AS c FROM kv WHERE key LIKE 'c/%/s/%'").get() as { c: number }).c;
  const key = manifestKey(col.id);
  for (const table of ['kv', 'kv_without_rowid']) {
    const get = db.prepare(`SELECT value FROM ${table} WHERE key = ?`);
    console.log(`${table}: manifest get ${await usPerCall(1000, () => get.get(key))} us, missing key ${await usPerCall(1000, () => get.get('nope'))} us (${n} codes in ${shards} shards)`);
  }

  const sql = sqliteDb(db);
  const lookup = "SELECT key FROM kv WHERE key = ? AND length(value) > 0";
  console.log(`SQL statement compiled once: ${await usPerCall(20000, () => sql.all(lookup, key))} us; compiled per call: ${await usPerCall(20000, () => db.prepare(lookup).all(key))} us`);
  db.close();

  const secret = `mh_${'x'.repeat(40)}`;
  const bytes = new TextEncoder();
  console.log(`SHA-256 of a 43-byte key: node:crypto ${await usPerCall(20000, (i) => createHash('sha256').update(secret + (i % 10)).digest('hex'))} us; WebCrypto ${await usPerCall(20000, (i) => crypto.subtle.digest('SHA-256', bytes.encode(secret + (i % 10))))} us`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
