// Online backup of a Node data dir (functions/store/backup.ts): the copy is the state of one
// moment, complete and checked, even when writes commit between the copies of its two files,
// and it works as a data dir of its own.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it, vi } from 'vitest';
import { createNodeBackend, sweepDataDir, type NodeBackend } from '../functions/entries/node.ts';
import { backupDataDir } from '../functions/store/backup.ts';
import { decodeManifest, encodeManifest, manifestKey } from '../functions/shards/manifest.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import type { CollectionSpec, WriteOp } from '../functions/store/writer.ts';
import { damageHead } from './shared/damaged-manifest.ts';

const root = mkdtempSync(join(tmpdir(), 'medhash-backup-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const put = (i: number, v: number): WriteOp => ({
  op: 'put',
  record: { id: `id-${String(i).padStart(4, '0')}`, code: new Uint8Array([v, i & 0xff]), descriptor: new Int8Array(0), metadata: '{}' },
});
const range = (from: number, to: number, v: number) => Array.from({ length: to - from }, (_, k) => put(from + k, v));

/** Every stored item of a collection as id -> first code byte, read through the published manifest. */
async function items(node: NodeBackend, col: CollectionSpec): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const m = await node.backend.reader.manifest(col.id);
  for (const entry of m?.shards ?? []) {
    const { shard } = await node.backend.reader.shard(entry, m!);
    for (let row = 0; row < shard.count; row++) out[shard.ids[row]] = shard.code(row)[0];
  }
  return out;
}

// Small shards, so that writes make and retire several of them.
const LIMITS = { maxShardBytes: 1 << 20, maxShardItems: 16, graceMs: 60_000 };

/** A live data dir under the test folder, with one tenant and a maker of 16-bit collections in it. */
async function source(name: string, graceMs = LIMITS.graceMs) {
  const src = join(root, name);
  const node = await createNodeBackend({ dataDir: src, limits: { ...LIMITS, graceMs } });
  const tenant = await node.backend.control.createTenant('t');
  const collection = (n: string) => node.backend.control.createCollection(tenant.id, { name: n, bits: 16, descriptor_dims: 0 });
  return { src, node, tenant, collection };
}

it('copies a live data dir as it was when its control store was copied, shards checked', async () => {
  const { src, node, tenant, collection } = await source('src');
  const a = await collection('a');
  const b = await collection('b');
  const empty = await collection('empty');
  await node.backend.writer(a).apply(range(0, 50, 1));
  await node.backend.writer(b).apply(range(0, 10, 5));
  await node.backend.writer(a).apply([{ op: 'delete', id: 'id-0000' }, put(1, 7)]);
  const before = { a: await items(node, a), b: await items(node, b) };

  const summary = await backupDataDir(src, join(root, 'bak'), {
    // Commits after the control copy, before the KV copy: must not be in the backup, neither in
    // a collection written before nor in one written for the first time.
    betweenCopies: async () => {
      await node.backend.writer(a).apply([...range(100, 140, 2), put(2, 9)]);
      await node.backend.writer(empty).apply(range(0, 3, 6));
    },
  });
  expect(summary).toMatchObject({ collections: 2 });
  expect(summary.dropped).toBeGreaterThan(0);
  expect((await items(node, a))['id-0100']).toBe(2); // the source has the later write
  node.close();

  const restored = await createNodeBackend({ dataDir: join(root, 'bak'), limits: LIMITS });
  expect(await items(restored, a)).toEqual(before.a);
  expect(await items(restored, b)).toEqual(before.b);
  expect(await items(restored, empty)).toEqual({});
  expect(await restored.backend.reader.manifest(empty.id)).toBeNull();
  // Nothing of the dropped writes is left in the file, not even in its free pages.
  expect(readFileSync(join(root, 'bak', 'kv.sqlite')).includes(Buffer.from(`c/${empty.id}/`))).toBe(false);
  await restored.backend.writer(empty).apply([put(1, 4)]);
  expect(await items(restored, empty)).toEqual({ 'id-0001': 4 });
  expect(await restored.backend.control.getCollection(tenant.id, 'a')).toEqual(a);
  // A working data dir: it takes writes.
  await restored.backend.writer(a).apply([put(500, 3)]);
  expect(await items(restored, a)).toEqual({ ...before.a, 'id-0500': 3 });
  restored.close();
  expect(JSON.parse(readFileSync(join(root, 'bak', 'BACKUP.json'), 'utf8'))).toMatchObject({ format: 'medhash-backup', version: 1, collections: 2 });
});

it('copies a data dir an older version wrote (version 1 manifests, in KV and in writer state) as version 2, every item kept', async () => {
  const { src, node, collection } = await source('v1');
  const a = await collection('a');
  await node.backend.writer(a).apply(range(0, 40, 3));
  const before = await items(node, a);
  node.close();
  // What the version before 2026-11-29 stored: the manifest without its checksum, as text in KV
  // and as an object in the writer state.
  const ctlDb = openSqlite(join(src, 'control.sqlite'));
  const ctl = sqliteDb(ctlDb);
  const head = JSON.parse(ctl.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', a.id)[0].head);
  const v1 = { ...decodeManifest(head.manifest), version: 1 };
  ctl.run('UPDATE writer_heads SET head = ? WHERE collection = ?', JSON.stringify({ ...head, manifest: v1 }), a.id);
  const kvDb = openSqlite(join(src, 'kv.sqlite'));
  await new SqliteKV(kvDb).put(manifestKey(a.id), JSON.stringify(v1));
  kvDb.close();
  ctlDb.close();

  await backupDataDir(src, join(root, 'bak-v1'));
  const copyDb = openSqlite(join(root, 'bak-v1', 'kv.sqlite'));
  expect(new TextDecoder().decode((await new SqliteKV(copyDb).get(manifestKey(a.id)))!)).toBe(encodeManifest({ ...v1, version: 2 }));
  copyDb.close();
  const restored = await createNodeBackend({ dataDir: join(root, 'bak-v1'), limits: LIMITS });
  expect(await items(restored, a)).toEqual(before);
  restored.close();
});

it('keeps nothing of an erasure made before it, nor of a collection being deleted', async () => {
  const { src, node, collection } = await source('src5');
  const a = await collection('a');
  const gone = await collection('gone');
  const patient = (i: number, ref: string): WriteOp => ({
    op: 'put', record: { id: `id-${i}`, code: new Uint8Array([i, 0]), descriptor: new Int8Array(0), metadata: JSON.stringify({ patient_ref: ref }) },
  });
  await node.backend.writer(a).apply([patient(1, 'MRN-SECRET-77'), patient(2, 'p-2'), patient(3, 'MRN-SECRET-77')]);
  await node.backend.writer(gone).apply([patient(1, 'GONE-COLLECTION-9')]);
  expect((await node.backend.writer(a).erase('patient_ref', 'MRN-SECRET-77')).ids).toEqual(['id-1', 'id-3']);
  // Its registry row is gone, its writer not told (as an older version's delete, registry first, could leave it).
  await node.backend.control.deleteCollection(gone);

  const summary = await backupDataDir(src, join(root, 'bak5'));
  expect(summary).toMatchObject({ collections: 1, shards: 1 });
  node.close();
  // The replaced shard, still in the source for its grace period, is not in the backup.
  const bytes = readFileSync(join(root, 'bak5', 'kv.sqlite'));
  expect(bytes.includes(Buffer.from('p-2'))).toBe(true);
  expect(bytes.includes(Buffer.from('MRN-SECRET-77'))).toBe(false);
  expect(bytes.includes(Buffer.from('GONE-COLLECTION-9'))).toBe(false);
  const restored = await createNodeBackend({ dataDir: join(root, 'bak5') });
  expect(Object.keys(await items(restored, a))).toEqual(['id-2']);
  expect(await restored.backend.reader.manifest(gone.id)).toBeNull();
  await expect(restored.backend.writer(gone).apply([patient(4, 'x')])).rejects.toMatchObject({ status: 404 });
  restored.close();
});

it("leaves a deleted collection's writer state a finished tombstone: no item id in the copy, no orphan after a restore", async () => {
  const { src, node, collection } = await source('src10');
  const gone = await collection('gone');
  await node.backend.writer(gone).apply([{ op: 'put', record: { id: 'ID-OF-GONE-77', code: new Uint8Array([1, 0]), descriptor: new Int8Array(0), metadata: '{}' } }]);
  // Registry row removed, writer never told (an older version's delete, registry first).
  await node.backend.control.deleteCollection(gone);
  await backupDataDir(src, join(root, 'bak10'));
  node.close();
  const control = readFileSync(join(root, 'bak10', 'control.sqlite'));
  expect(control.includes(Buffer.from('ID-OF-GONE-77'))).toBe(false);
  expect((await sweepDataDir(join(root, 'bak10'))).orphans).toEqual([]);
  const restored = await createNodeBackend({ dataDir: join(root, 'bak10') });
  await expect(restored.backend.writer(gone).apply([])).rejects.toMatchObject({ status: 404 });
  restored.close();
});

it('refuses a target that is not empty and a source that is not a data dir', async () => {
  const src = join(root, 'src2');
  (await createNodeBackend({ dataDir: src })).close();
  const full = join(root, 'full');
  mkdirSync(full);
  writeFileSync(join(full, 'x'), '');
  await expect(backupDataDir(src, full)).rejects.toThrow(/is not empty/);
  await expect(backupDataDir(join(root, 'nothing'), join(root, 'out'))).rejects.toThrow(/not a medhash data dir/);
});

it('will not serve half a data dir, nor a backup of a format it does not know', async () => {
  const src = join(root, 'src8');
  const node = await createNodeBackend({ dataDir: src });
  const tenant = await node.backend.control.createTenant('t');
  const a = await node.backend.control.createCollection(tenant.id, { name: 'a', bits: 16, descriptor_dims: 0 });
  await node.backend.writer(a).apply(range(0, 5, 1));
  await backupDataDir(src, join(root, 'bak8'));
  node.close();
  // Without its KV file, the collection's shards are nowhere: it must not be served as empty.
  rmSync(join(root, 'bak8', 'kv.sqlite'));
  await expect(createNodeBackend({ dataDir: join(root, 'bak8') })).rejects.toThrow(/holds control\.sqlite but no kv\.sqlite/);
  expect(readdirSync(join(root, 'bak8')).sort()).toEqual(['BACKUP.json', 'control.sqlite']);

  await backupDataDir(src, join(root, 'bak9'));
  const manifest = join(root, 'bak9', 'BACKUP.json');
  const good = readFileSync(manifest, 'utf8');
  writeFileSync(manifest, good.replace('"version": 1', '"version": 2'));
  await expect(createNodeBackend({ dataDir: join(root, 'bak9') })).rejects.toThrow(/version 2; this version serves medhash-backup version 1 only/);
  writeFileSync(manifest, good);
  const restored = await createNodeBackend({ dataDir: join(root, 'bak9') });
  expect(Object.keys(await items(restored, a))).toHaveLength(5);
  restored.close();
});

it('fails, rather than keep a broken copy, when a shard the heads name was collected before KV was copied', async () => {
  const { src, node, collection } = await source('src3', 0);
  const a = await collection('a');
  await node.backend.writer(a).apply(range(0, 20, 1));
  const kvDb = openSqlite(join(src, 'kv.sqlite'));
  const kv = new SqliteKV(kvDb);
  const betweenCopies = async () => {
    // Every shard replaced and, with no grace period, collected by the next maintenance.
    const old = (await node.backend.reader.manifest(a.id))!.shards.map((s) => s.key);
    await node.backend.writer(a).apply(range(0, 20, 2));
    await vi.waitFor(async () => expect(await Promise.all(old.map((k) => kv.get(k)))).toEqual(old.map(() => null)));
  };
  await expect(backupDataDir(src, join(root, 'bak3'), { betweenCopies })).rejects.toThrow(/was gone from KV by the time it was copied .*run the backup again/);
  expect(readdirSync(join(root, 'bak3'))).toEqual([]); // no half-made copy left to be mistaken for a backup
  kvDb.close();
  node.close();
});

it("fails naming the collection whose writer state is damaged, why, and what to do; no copy left", async () => {
  const { src, node, collection } = await source('src11');
  const intact = await collection('intact');
  const damaged = await collection('damaged');
  for (const col of [intact, damaged]) await node.backend.writer(col).apply(range(0, 5, 1));
  node.close();
  const db = openSqlite(join(src, 'control.sqlite'));
  const { head } = db.prepare('SELECT head FROM writer_heads WHERE collection = ?').get(damaged.id) as { head: string };
  db.prepare('UPDATE writer_heads SET head = ? WHERE collection = ?').run(damageHead(head), damaged.id);
  // A backup that left the collection out would pass for a whole one.
  const refused = new RegExp(`writer state of collection ${damaged.id} fails its check \\(invalid manifest: checksum mismatch.*no backup was made.*docs/SHARD_FORMAT\\.md, "Damaged writer state"`);
  await expect(backupDataDir(src, join(root, 'bak11'))).rejects.toThrow(refused);
  expect(readdirSync(join(root, 'bak11'))).toEqual([]);
  // Unregistered too: the backup keeps nothing of it, but makes its tombstone from a state it cannot read.
  db.prepare('DELETE FROM collections WHERE id = ?').run(damaged.id);
  db.close();
  await expect(backupDataDir(src, join(root, 'bak11'))).rejects.toThrow(refused);
});

it('`medhash backup` prints what it copied; a second run to the same folder is refused', async () => {
  const { src, node, collection } = await source('src4');
  const a = await collection('a');
  await node.backend.writer(a).apply(range(0, 5, 1));
  const cli = (out: string) => promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'backup', '--data-dir', src, '--out', out]);
  const { stdout } = await cli(join(root, 'bak4'));
  expect(JSON.parse(stdout)).toMatchObject({ collections: 1, shards: 1, dropped: 0 });
  await expect(cli(join(root, 'bak4'))).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/is not empty/) });
  node.close();
});

it('keeps no search answer stored for an Idempotency-Key retry past its day (it may name an erased patient)', async () => {
  const { src, node, tenant, collection } = await source('src6');
  const a = await collection('a');
  await node.backend.writer(a).apply([
    { op: 'put', record: { id: 'id-1', code: new Uint8Array([1, 0]), descriptor: new Int8Array(0), metadata: JSON.stringify({ patient_ref: 'MRN-ERASED-42' }) } },
  ]);
  // A search answer kept for retries (what the ledger stores after a search sent with Idempotency-Key), more than a day old.
  const ledger = node.backend.ledger(tenant.id);
  const day = 24 * 3600_000;
  const old = await ledger.admit(tenant.id, { kind: 'search', units: 1, idempotency: { key: 'k-old', fingerprint: 'f' } });
  if (old.outcome !== 'admitted') throw new Error(old.outcome);
  await ledger.finish(tenant.id, { charge: old.charge, ok: true, response: { status: 200, content_type: 'application/json', body: '{"results":[{"id":"id-1","metadata":{"patient_ref":"MRN-ERASED-42"}}]}' } });
  const db = openSqlite(join(src, 'control.sqlite'));
  db.prepare('UPDATE idempotency SET created_ms = created_ms - ?').run(day + 60_000);
  db.close();
  expect((await node.backend.writer(a).erase('patient_ref', 'MRN-ERASED-42')).ids).toEqual(['id-1']);

  await backupDataDir(src, join(root, 'bak6'));
  node.close();
  expect(readFileSync(join(root, 'bak6', 'control.sqlite')).includes(Buffer.from('MRN-ERASED-42'))).toBe(false);
  expect(readFileSync(join(root, 'bak6', 'kv.sqlite')).includes(Buffer.from('MRN-ERASED-42'))).toBe(false);
});
