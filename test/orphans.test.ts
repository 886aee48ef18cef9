// The orphan sweep (functions/store/orphans.ts) on Node: data that older versions left when
// they removed a collection's registry row first and its data after (a failed writer call, a KV
// list that missed keys), or that another process's upload left after today's delete, found and
// deleted; registered collections, and one created during the sweep, never touched but for stray
// shards (no writer state names them); a collection whose writer state fails its check, or a
// registered one whose state is missing or older than its published manifest, reported and left as
// it is, the others swept. Real node:sqlite stores in a temporary data dir, the
// service open on it.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, expect, it } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import type { CollectionInfo } from '../functions/control/store.ts';
import { encodeShard } from '../functions/shards/codec.ts';
import { shardKey } from '../functions/shards/manifest.ts';
import { createNodeBackend, sweepDataDir } from '../functions/entries/node.ts';
import { sqlHeadStore } from '../functions/store/head.ts';
import { isFinishedTombstone, orphanProblems, sweepOrphans, type Orphan, type Stray } from '../functions/store/orphans.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import { CollectionWriter, type WriteOp } from '../functions/store/writer.ts';
import { sha256Hex } from '../functions/util/bytes.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';
import { damageHead } from './shared/damaged-manifest.ts';
import { operatorCli } from './shared/operator-cli.ts';

const root = mkdtempSync(join(tmpdir(), 'medhash-orphans-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const put = (i: number, patient: string): WriteOp => ({
  op: 'put',
  record: { id: `id-${String(i).padStart(4, '0')}`, code: new Uint8Array([i & 0xff, 1]), descriptor: new Int8Array(0), metadata: JSON.stringify({ patient_ref: patient }) },
});
const items = (n: number, patient: string) => Array.from({ length: n }, (_, i) => put(i, patient));

/** A data dir with the service's stores open on it, and a second connection to its control store (another process's view). */
async function dataDir(name: string) {
  const dir = join(root, name);
  const node = await createNodeBackend({ dataDir: dir, operatorKey: TEST_OPERATOR_KEY, limits: { maxShardBytes: 1 << 20, maxShardItems: 4, graceMs: 60_000 } });
  const sql = sqliteDb(openSqlite(join(dir, 'control.sqlite')));
  const tenant = await node.backend.control.createTenant('t');
  const kv = node.backend.orphans.kv;
  const keysOf = (col: { id: string }) => kv.list(`c/${col.id}/`);
  const bytesOf = async (col: { id: string }) => {
    let n = 0;
    for (const k of await keysOf(col)) n += (await kv.get(k))!.length;
    return n;
  };
  /** A collection with `n` items written through its writer. */
  const written = async (name: string, n: number): Promise<CollectionInfo> => {
    const col = await node.backend.control.createCollection(tenant.id, { name, bits: 16, descriptor_dims: 0 });
    if (n > 0) await node.backend.writer(col).apply(items(n, `MRN-${name}`));
    return col;
  };
  /** A valid shard blob of one item `id`, and its key under `col`'s prefix. */
  const shardBlob = async (col: { id: string }, id: string) => {
    const bytes = encodeShard([{ id, code: new Uint8Array([9, 9]), descriptor: new Int8Array(0), metadata: '{}' }], 16, 0);
    return { key: shardKey(col.id, await sha256Hex(bytes)), bytes };
  };
  /** Puts a shard blob under `col`'s prefix that its writer state does not name (what two processes can leave). */
  const plantStray = async (col: { id: string }): Promise<string> => {
    const { key, bytes } = await shardBlob(col, 'stray');
    await kv.put(key, bytes);
    return key;
  };
  return { dir, node, sql, kv, keysOf, bytesOf, written, shardBlob, plantStray, head: (col: { id: string }) => sqlHeadStore(sql, col.id).load() };
}

/**
 * The orphans the older delete order left: the registry row removed first, then what happened
 * to the data. `writer call failed`: nothing (writer state live, every key left); `list missed
 * keys`: the writer state marked destroyed, no key deleted; `old tombstone`: every key deleted,
 * the destroyed writer state still naming its shards (item id ranges); `keys only`: KV keys
 * without writer state (all that a Worker can see of any orphan).
 */
async function oldOrderOrphans(d: Awaited<ReturnType<typeof dataDir>>) {
  // beside a collection still in use, as any real data dir has (see the last test)
  await d.written('in-use', 2);
  const failed = await d.written('writer-call-failed', 10);
  const missed = await d.written('list-missed-keys', 6);
  const tomb = await d.written('old-tombstone', 5);
  const keysOnly = await d.written('keys-only', 3);
  for (const col of [failed, missed, tomb, keysOnly]) await d.node.backend.control.deleteCollection(col);
  for (const col of [missed, tomb]) {
    const heads = sqlHeadStore(d.sql, col.id);
    heads.save({ ...heads.load()!, destroyed: true });
  }
  for (const k of await d.keysOf(tomb)) await d.kv.delete(k);
  d.sql.run('DELETE FROM writer_heads WHERE collection = ?', keysOnly.id);
  return { failed, missed, tomb, keysOnly };
}

const byId = (a: { collection: string }, b: { collection: string }) => (a.collection < b.collection ? -1 : 1);

it('finds the data of collections deleted registry-first and deletes exactly that, beside the running service; a re-run finds nothing', async () => {
  const d = await dataDir('sweep');
  try {
    // Registered, hence never touched: a live collection, one just created (row, no data yet), one
    // whose delete was cut off after its data went (its row left, deleted again by the API).
    const live = await d.written('live', 9);
    const created = await d.written('just-created', 0);
    const cutOff = await d.written('delete-cut-off', 4);
    await d.node.backend.writer(cutOff).destroy();
    // Deleted in today's order: a finished tombstone, no orphan.
    const deleted = await d.written('deleted', 4);
    await d.node.backend.writer(deleted).destroy();
    await d.node.backend.control.deleteCollection(deleted);
    const o = await oldOrderOrphans(d);

    // The manifest and the shards (at most 4 items each) of 10, 6, 0 (all deleted) and 3 items.
    const expected: Orphan[] = [];
    for (const [col, keys, writerState] of [[o.failed, 4, true], [o.missed, 3, true], [o.tomb, 0, true], [o.keysOnly, 2, false]] as const) {
      expect(await d.keysOf(col)).toHaveLength(keys);
      expected.push({ collection: col.id, prefix: `c/${col.id}/`, keys, bytes: await d.bytesOf(col), writer_state: writerState });
    }
    expected.sort(byId);
    const kvBefore = await d.kv.list('c/');
    const liveHead = d.head(live);

    const dry = await sweepDataDir(d.dir);
    expect(dry).toEqual({
      dry_run: true,
      orphans: expected,
      keys: expected.reduce((n, x) => n + x.keys, 0),
      bytes: expected.reduce((n, x) => n + x.bytes!, 0),
      strays: [],
      damaged: [],
      failed: 0,
    });
    expect(await d.kv.list('c/')).toEqual(kvBefore); // a dry run changes nothing
    expect(d.head(o.failed)!.destroyed).toBe(false);

    const swept = await sweepDataDir(d.dir, { delete: true });
    expect(swept).toMatchObject({ dry_run: false, failed: 0, orphans: expected.map((x) => ({ ...x, deleted: true })) });
    for (const col of Object.values(o)) {
      expect(await d.keysOf(col)).toEqual([]);
      const h = d.head(col)!;
      expect(isFinishedTombstone(h)).toBe(true);
      expect(JSON.stringify(h)).not.toContain('id-0000'); // no item id left in writer state
      // A late write (a request that resolved the name before the row went) cannot bring it back.
      await expect(d.node.backend.writer(col).apply(items(1, 'late'))).rejects.toMatchObject({ status: 404 });
    }
    expect(await d.kv.list('c/')).toEqual(kvBefore.filter((k) => ![o.failed, o.missed, o.keysOnly].some((c) => k.startsWith(`c/${c.id}/`))));
    expect(d.head(live)).toEqual(liveHead);
    expect((await d.node.backend.reader.manifest(live.id))!.count).toBe(9);
    const registered = (await d.node.backend.control.collectionSpecs()).map((c) => c.id);
    expect(registered).toHaveLength(4); // and oldOrderOrphans' collection in use
    expect(registered).toEqual(expect.arrayContaining([live.id, created.id, cutOff.id]));

    expect(await sweepDataDir(d.dir, { delete: true })).toEqual({ dry_run: false, orphans: [], keys: 0, bytes: 0, strays: [], damaged: [], failed: 0 });
  } finally {
    d.node.close();
  }
});

it("finds the shards of a registered collection that its writer state names nowhere, deletes them only with delete, never a live, pending or garbage one", async () => {
  const d = await dataDir('strays');
  try {
    const live = await d.written('live', 9); // 3 shards of at most 4 items
    await d.node.backend.writer(live).apply([put(0, 'changed')]); // one shard replaced: garbage for the grace period
    // A change of another process in flight: its key recorded as pending, then its blob put.
    const inFlight = await d.shardBlob(live, 'in-flight');
    const heads = sqlHeadStore(d.sql, live.id);
    heads.save({ ...heads.load()!, pending: [inFlight.key] });
    await d.kv.put(inFlight.key, inFlight.bytes);
    const head = d.head(live)!;
    expect([head.manifest.shards.length, head.pending.length, head.garbage.length]).toEqual([3, 1, 1]);
    const named = await d.keysOf(live); // those and the manifest
    const stray = await d.plantStray(live);
    const other = await d.written('other', 2);
    const otherKeys = await d.keysOf(other);

    // Through the service (GET /v1/admin/orphans), then on the data dir (`medhash orphans`).
    const found = { dry_run: true, orphans: [], keys: 0, bytes: 0, strays: [{ collection: live.id, shards: [stray] }], damaged: [], failed: 0 };
    expect(await sweepOrphans(d.node.backend.orphans)).toEqual(found);
    expect(await sweepDataDir(d.dir)).toEqual(found);
    expect(await d.kv.get(stray)).not.toBeNull();

    expect(await sweepDataDir(d.dir, { delete: true })).toEqual({ ...found, dry_run: false, strays: [{ collection: live.id, shards: [stray], deleted: true }] });
    expect(await d.kv.get(stray)).toBeNull();
    expect(await d.keysOf(live)).toEqual(named);
    expect(d.head(live)).toEqual(head);
    expect(await d.keysOf(other)).toEqual(otherKeys);
    expect((await d.node.backend.reader.manifest(live.id))!.count).toBe(9);
    expect((await sweepOrphans(d.node.backend.orphans, { delete: true })).strays).toEqual([]);
  } finally {
    d.node.close();
  }
});

it("deletes the shard that another process's upload left after the collection was deleted, once the registry row is gone", async () => {
  const d = await dataDir('deleted-in-flight');
  // Process A's writer on its own connections to the data dir, its first shard upload held at a gate.
  let atGate!: () => void;
  const reached = new Promise<void>((ok) => (atGate = ok));
  let release!: () => void;
  const gate = new Promise<void>((ok) => (release = ok));
  class HeldUpload extends SqliteKV {
    override async put(key: string, value: Uint8Array | string) {
      if (key.includes('/s/')) {
        atGate();
        await gate;
      }
      return super.put(key, value);
    }
  }
  const kvDb = openSqlite(join(d.dir, 'kv.sqlite'));
  try {
    await d.written('in-use', 2);
    const col = await d.written('deleted', 3);
    const a = new CollectionWriter(new HeldUpload(kvDb), sqlHeadStore(d.sql, col.id), { id: col.id, bits: col.bits, descriptor_dims: col.descriptor_dims });
    const change = a.apply([put(7, 'MRN-late')]).catch((e: unknown) => e);
    await reached; // A has recorded its new shard's key
    // Process B deletes the collection as DELETE /v1/collections/{name} does: its data first, then its row.
    expect(await d.node.backend.writer(col).destroy()).toBe(true);
    release();
    expect(await change).toMatchObject({ status: 409, code: 'write_conflict' });
    const [late] = await d.keysOf(col);
    expect(late).toMatch(new RegExp(`^c/${col.id}/s/`));
    expect(isFinishedTombstone(d.head(col)!)).toBe(true);

    // Its row still there (B between its two steps, or cut off there): the sweep leaves the collection to its delete.
    expect(await sweepDataDir(d.dir, { delete: true })).toEqual({ dry_run: false, orphans: [], keys: 0, bytes: 0, strays: [], damaged: [], failed: 0 });
    expect(await d.keysOf(col)).toEqual([late]);

    await d.node.backend.control.deleteCollection(col);
    const found: Orphan = { collection: col.id, prefix: `c/${col.id}/`, keys: 1, bytes: await d.bytesOf(col), writer_state: false };
    expect((await sweepDataDir(d.dir)).orphans).toEqual([found]);
    expect((await sweepDataDir(d.dir, { delete: true })).orphans).toEqual([{ ...found, deleted: true }]);
    expect(await d.keysOf(col)).toEqual([]);
    expect(isFinishedTombstone(d.head(col)!)).toBe(true);
    await expect(a.apply([put(7, 'MRN-late')])).rejects.toMatchObject({ status: 404 });
  } finally {
    kvDb.close();
    d.node.close();
  }
});

it('never touches a collection created and written while the sweep runs', async () => {
  const d = await dataDir('race');
  try {
    const { failed } = await oldOrderOrphans(d);
    let late: CollectionInfo | null = null;
    // Between the listing of the data and the read of the registry: a sweep that read the
    // registry first would find this collection's keys without its row, and delete them.
    const report = await sweepOrphans(d.node.backend.orphans, {
      delete: true,
      betweenReads: async () => {
        late = await d.written('created-meanwhile', 7);
      },
    });
    expect(report.orphans.map((x) => x.collection)).not.toContain(late!.id);
    expect(report.orphans.find((x) => x.collection === failed.id)).toMatchObject({ deleted: true });
    expect(d.head(late!)!.destroyed).toBe(false);
    expect((await d.node.backend.reader.manifest(late!.id))!.count).toBe(7);
    await d.node.backend.writer(late!).apply(items(8, 'more'));
    expect((await d.node.backend.reader.manifest(late!.id))!.count).toBe(8);
  } finally {
    d.node.close();
  }
});

it('reports a deletion that failed and still deletes the others; the same sweep again finishes it', async () => {
  const d = await dataDir('fails');
  try {
    const o = await oldOrderOrphans(d);
    const stores = d.node.backend.orphans;
    // Once each: the writer unreachable (on Workers: its Durable Object), a KV delete failing in it.
    const failing = new Set([o.failed.id, o.missed.id]);
    const flaky: typeof stores = {
      ...stores,
      destroy: async (id) => {
        if (!failing.delete(id)) return stores.destroy(id);
        if (id === o.failed.id) throw new Error('writer unreachable');
        return false;
      },
    };
    const first = await sweepOrphans(flaky, { delete: true });
    expect(first.failed).toBe(2);
    expect(first.orphans.find((x) => x.collection === o.failed.id)).toMatchObject({ error: 'writer unreachable' });
    expect(first.orphans.find((x) => x.collection === o.missed.id)).toMatchObject({ error: 'a KV delete failed' });
    expect(first.orphans.find((x) => x.collection === o.keysOnly.id)).toMatchObject({ deleted: true });
    expect((await d.keysOf(o.failed)).length).toBeGreaterThan(0);

    const again = await sweepOrphans(flaky, { delete: true });
    expect(again.orphans.sort(byId)).toMatchObject([o.failed, o.missed].sort((a, b) => (a.id < b.id ? -1 : 1)).map((c) => ({ collection: c.id, deleted: true })));
    expect(again.failed).toBe(0);
    expect(await d.keysOf(o.failed)).toEqual([]);
    expect((await sweepOrphans(stores)).orphans).toEqual([]);
  } finally {
    d.node.close();
  }
});

it("reports a collection whose writer state fails its check, registered or not, deletes nothing of it, and sweeps the others; the CLI exits 1 naming it", async () => {
  const d = await dataDir('damaged');
  const { url, medhash, close } = await cliOn(d);
  try {
    const live = await d.written('live', 5);
    const stray = await d.plantStray(live);
    const registered = await d.written('damaged-registered', 6);
    const unregistered = await d.written('damaged-unregistered', 3);
    await d.node.backend.control.deleteCollection(unregistered); // an orphan of the older delete order
    const o = await oldOrderOrphans(d);
    const storedHead = (col: { id: string }) => d.sql.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', col.id)[0].head;
    const damagedCols = [registered, unregistered];
    for (const col of damagedCols) d.sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damageHead(storedHead(col)), col.id);
    const left = async () => Promise.all(damagedCols.map(async (col) => [storedHead(col), await d.keysOf(col)]));
    const before = await left();

    const error = expect.stringMatching(/^its writer state fails its check \(invalid manifest: checksum mismatch .*\): nothing of it swept$/);
    const damaged = [{ collection: registered.id, registered: true, error }, { collection: unregistered.id, registered: false, error }].sort(byId);
    const orphanIds = Object.values(o).map((c) => c.id).sort();
    const dry = await sweepDataDir(d.dir);
    expect(dry).toMatchObject({ dry_run: true, strays: [{ collection: live.id, shards: [stray] }], damaged, failed: 2 });
    expect(dry.orphans.map((x) => x.collection)).toEqual(orphanIds);

    // Through the operator API: the dry run (a 200) and the deletion (a 500 with the record).
    const listed = await medhash('admin', 'orphans');
    const swept = await medhash('admin', 'orphans', '--delete');
    const named = `writer state damaged, missing or out of date for ${damaged.map((x) => x.collection).join(', ')}: nothing of it swept, and running the sweep again does not change that (\`medhash admin adopt-manifest --tenant ID --collection NAME\` recovers ${registered.id} from its published manifest: docs/SHARD_FORMAT.md)`;
    for (const run of [listed, swept]) {
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(named);
      expect(run.stderr).not.toContain('run the same command again');
    }
    // Only the damaged states left: the API's 500 names them, and does not ask for the DELETE again.
    const again = await fetch(`${url}/v1/admin/orphans`, { method: 'DELETE', headers: { authorization: `Bearer ${TEST_OPERATOR_KEY}` } });
    expect(again.status).toBe(500);
    const { message } = ((await again.json()) as { error: { message: string } }).error;
    expect(message).toMatch(/^2 of 2 found /);
    expect(message).toContain(`: ${named}`);
    expect(message).not.toContain('send the same DELETE again');
    const report = JSON.parse(swept.stdout) as { orphans: Orphan[]; strays: Stray[] };
    expect(report).toMatchObject({ dry_run: false, strays: [{ collection: live.id, shards: [stray], deleted: true }], damaged, failed: 2 });
    expect(report.orphans.map((x) => [x.collection, x.deleted])).toEqual(orphanIds.map((id) => [id, true]));
    expect(await d.kv.get(stray)).toBeNull();
    for (const col of Object.values(o)) expect(await d.keysOf(col)).toEqual([]);
    expect(await left()).toEqual(before);
    expect((await d.node.backend.reader.manifest(live.id))!.count).toBe(5);
  } finally {
    await close();
    d.node.close();
  }
});

it("reports a registered collection whose writer finds its state damaged under damaged where the runtime cannot list writer state (Workers), not as a sweep to run again", async () => {
  const d = await dataDir('damaged-unlisted');
  try {
    const col = await d.written('damaged', 5);
    const stored = d.sql.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', col.id)[0].head;
    d.sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damageHead(stored), col.id);
    const kept = await d.keysOf(col);
    // As on Workers: no listing of writer state, so only the collection's writer (there its Durable Object) finds it damaged.
    const report = await sweepOrphans({ ...d.node.backend.orphans, writerStates: async () => null }, { delete: true });
    const error = expect.stringMatching(/^its writer state fails its check \(invalid manifest: checksum mismatch .*\): nothing of it swept$/);
    expect(report).toMatchObject({ strays: [], damaged: [{ collection: col.id, registered: true, error }], failed: 1 });
    expect(orphanProblems(report, 'run it again')).toEqual([`writer state damaged, missing or out of date for ${col.id}: nothing of it swept, and running the sweep again does not change that (\`medhash admin adopt-manifest --tenant ID --collection NAME\` recovers ${col.id} from its published manifest: docs/SHARD_FORMAT.md)`]);
    // A deleted collection's state: adopt-manifest cannot reach it (no registry row), so the line does not offer it.
    const unregistered = { ...report, damaged: report.damaged.map((x) => ({ ...x, registered: false })) };
    expect(orphanProblems(unregistered, 'run it again')).toEqual([`writer state damaged, missing or out of date for ${col.id}: nothing of it swept, and running the sweep again does not change that`]);
    expect(await d.keysOf(col)).toEqual(kept);
  } finally {
    d.node.close();
  }
});

it("refuses to sweep a registered collection whose writer state is missing or older than its published manifest, deleting none of its live shards, and sweeps the others", async () => {
  const d = await dataDir('state-behind');
  const { medhash, close } = await cliOn(d);
  try {
    const lost = await d.written('lost', 9); // 3 shards of at most 4 items
    const restored = await d.written('restored', 5);
    const older = d.sql.all<{ rev: number; head: string }>('SELECT rev, head FROM writer_heads WHERE collection = ?', restored.id)[0];
    await d.node.backend.writer(restored).apply(items(9, 'MRN-more'));
    const live = await d.written('live', 5);
    const stray = await d.plantStray(live);
    // A control store restored from an older copy: one state gone, one rolled back.
    d.sql.run('DELETE FROM writer_heads WHERE collection = ?', lost.id);
    d.sql.run('UPDATE writer_heads SET rev = ?, head = ? WHERE collection = ?', older.rev, older.head, restored.id);
    const kept = [await d.keysOf(lost), await d.keysOf(restored)];

    const damaged = [
      { collection: lost.id, registered: true, error: 'its writer state is missing while KV holds 3 shard(s) of it: nothing of it swept' },
      { collection: restored.id, registered: true, error: 'its writer state (generation 1) is older than its published manifest (generation 2): nothing of it swept' },
    ].sort(byId);
    const found = { dry_run: true, orphans: [], keys: 0, bytes: 0, strays: [{ collection: live.id, shards: [stray] }], failed: 2 };
    expect(await sweepDataDir(d.dir)).toEqual({ ...found, damaged });
    expect(await sweepDataDir(d.dir, { delete: true })).toEqual({ ...found, dry_run: false, strays: [{ collection: live.id, shards: [stray], deleted: true }], damaged });
    expect(await d.kv.get(stray)).toBeNull();
    expect([await d.keysOf(lost), await d.keysOf(restored)]).toEqual(kept);
    const m = (await d.node.backend.reader.manifest(lost.id))!;
    for (const op of items(9, '')) if (op.op === 'put') expect(await d.node.backend.reader.item(m, op.record.id)).not.toBeNull();

    // Through the operator API: the 500 names them as left as they are, not to be sent again.
    const swept = await medhash('admin', 'orphans', '--delete');
    expect(swept.code).toBe(1);
    expect(swept.stderr).toContain(`writer state damaged, missing or out of date for ${damaged.map((x) => x.collection).join(', ')}: nothing of it swept`);
    expect(swept.stderr).not.toContain('run the same command again');
    expect(JSON.parse(swept.stdout)).toMatchObject({ strays: [], damaged, failed: 2 });
    expect([await d.keysOf(lost), await d.keysOf(restored)]).toEqual(kept);
  } finally {
    await close();
    d.node.close();
  }
});

it('refuses to delete when every collection holding data is missing from the registry (a wrong or empty registry looks so), unless forced', async () => {
  const d = await dataDir('all-orphans');
  try {
    const col = await d.written('only', 3);
    // An unregistered collection whose writer state fails its check counts among them, though the sweep leaves it.
    const damaged = await d.written('damaged', 2);
    const head = d.sql.all<{ head: string }>('SELECT head FROM writer_heads WHERE collection = ?', damaged.id)[0].head;
    d.sql.run('UPDATE writer_heads SET head = ? WHERE collection = ?', damageHead(head), damaged.id);
    // another environment's or an emptied control store: this data dir's collections unregistered
    d.sql.run('DELETE FROM collections WHERE id IN (?, ?)', col.id, damaged.id);
    const refused = sweepDataDir(d.dir, { delete: true });
    await expect(refused).rejects.toMatchObject({ status: 409, code: 'orphans_are_everything', field: 'force' });
    expect(await d.keysOf(col)).toHaveLength(2);
    expect((await sweepDataDir(d.dir)).orphans.map((o) => o.collection)).toEqual([col.id]);
    const forced = await sweepDataDir(d.dir, { delete: true, force: true });
    expect(forced.orphans).toMatchObject([{ collection: col.id, deleted: true }]);
    expect(forced.damaged).toMatchObject([{ collection: damaged.id, registered: false }]);
    expect(await d.keysOf(col)).toEqual([]);
  } finally {
    d.node.close();
  }
});

it('refuses a folder that is not a data dir, and creates nothing there', async () => {
  const nowhere = join(root, 'no-such-dir');
  await expect(sweepDataDir(nowhere)).rejects.toThrow(/holds no control\.sqlite: not a medhash data dir/);
  expect(existsSync(nowhere)).toBe(false);
});

/** The service on `d` over HTTP, and the `medhash` CLI pointed at it with the operator key. */
async function cliOn(d: Awaited<ReturnType<typeof dataDir>>) {
  const server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: createApp(d.node.backend).fetch, port: 0, hostname: '127.0.0.1' }, () => ok(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const medhash = operatorCli(url, join(root, 'elsewhere'));
  return { url, medhash, close: () => new Promise((ok) => server.close(ok)) };
}

it('medhash orphans (data dir) and medhash admin orphans (operator API): dry run by default, --delete, exit 1 naming what failed (orphans, strays)', async () => {
  const d = await dataDir('cli');
  const { url, medhash, close } = await cliOn(d);
  try {
    const live = await d.written('live', 5);
    const stray = await d.plantStray(live);
    const o = await oldOrderOrphans(d);
    const ids = Object.values(o).map((c) => c.id).sort();

    const dry = await medhash('orphans', '--data-dir', d.dir);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ dry_run: true, failed: 0, orphans: ids.map((collection) => ({ collection })), strays: [{ collection: live.id, shards: [stray] }] });
    expect(dry.stderr).toMatch(/4 orphaned collection\(s\), stray shards in 1 registered collection\(s\), nothing deleted: run again with --delete/);
    expect((await d.keysOf(o.failed)).length).toBeGreaterThan(0);

    // Through the service: one orphan's writer fails.
    const stores = d.node.backend.orphans;
    const failing: typeof stores = { ...stores, destroy: (id) => (id === o.failed.id ? Promise.reject(new Error('writer unreachable')) : stores.destroy(id)) };
    d.node.backend.orphans = failing;
    const partial = await medhash('admin', 'orphans', '--delete');
    // The service answered it with a 500 beside the record, never a 200: the one left fails again.
    const again = await fetch(`${url}/v1/admin/orphans`, { method: 'DELETE', headers: { authorization: `Bearer ${TEST_OPERATOR_KEY}` } });
    expect(again.status).toBe(500);
    expect(await again.json()).toEqual({
      error: { code: 'orphans_delete_incomplete', message: expect.stringMatching(new RegExp(`^1 of 1 found .* not swept, the others deleted \\(see each one's error\\): deleting orphans failed for ${o.failed.id}: send the same DELETE again \\(it is idempotent\\)$`)) },
      dry_run: false, orphans: [expect.objectContaining({ collection: o.failed.id, error: 'writer unreachable' })], keys: expect.any(Number), bytes: expect.any(Number), strays: [], damaged: [], failed: 1,
    });
    d.node.backend.orphans = stores;
    expect(partial.code).toBe(1);
    const report = JSON.parse(partial.stdout) as { orphans: Orphan[]; strays: Stray[]; failed: number };
    expect(report.failed).toBe(1);
    expect(report.strays).toEqual([{ collection: live.id, shards: [stray], deleted: true }]);
    expect(await d.kv.get(stray)).toBeNull();
    expect(report.orphans.find((x) => x.collection === o.failed.id)).toMatchObject({ error: 'writer unreachable' });
    expect(report.orphans.filter((x) => x.deleted).map((x) => x.collection)).toEqual(ids.filter((id) => id !== o.failed.id));
    expect(partial.stderr).toContain(`deleting orphans failed for ${o.failed.id}: run the same command again`);

    // The writer's search for strays fails too: the line names them, as not found (a dry run) or not deleted.
    await d.plantStray(live);
    d.node.backend.orphans = { ...failing, strays: (spec, remove) => (spec.id === live.id ? Promise.reject(new Error('writer unreachable')) : stores.strays(spec, remove)) };
    const unsearched = await medhash('admin', 'orphans');
    const both = await medhash('admin', 'orphans', '--delete');
    d.node.backend.orphans = stores;
    expect([unsearched.code, both.code]).toEqual([1, 1]);
    expect(unsearched.stderr).toContain(`finding stray shards failed for ${live.id}: run the same command again`);
    expect(both.stderr).toContain(`deleting orphans failed for ${o.failed.id}; deleting stray shards failed for ${live.id}: run the same command again`);

    const rest = await medhash('orphans', '--data-dir', d.dir, '--delete');
    expect(rest.code).toBe(0);
    expect(JSON.parse(rest.stdout)).toMatchObject({ dry_run: false, failed: 0, orphans: [{ collection: o.failed.id, deleted: true }], strays: [{ collection: live.id, shards: [stray], deleted: true }] });
    expect(await d.kv.get(stray)).toBeNull();
    expect((await sweepOrphans(stores)).orphans).toEqual([]);
    expect(await d.keysOf(o.failed)).toEqual([]);
    expect((await d.node.backend.reader.manifest(live.id))!.count).toBe(5);
  } finally {
    await close();
    d.node.close();
  }
});

it('three sweeps at once beside writes to a live collection, its delete in today\'s order and a collection created and written: only the orphan goes', async () => {
  const d = await dataDir('concurrent');
  try {
    const live = await d.written('live', 10);
    const deleting = await d.written('deleting', 10);
    const { failed } = await oldOrderOrphans(d);
    let fresh: CollectionInfo | null = null;
    for (let round = 0; round < 4; round++) {
      const [a, b, c] = await Promise.all([
        sweepOrphans(d.node.backend.orphans, { delete: true }),
        sweepDataDir(d.dir, { delete: true }), // another process's view of the same data dir
        sweepOrphans(d.node.backend.orphans, { delete: true }),
        (async () => {
          for (let i = 0; i < 5; i++) await d.node.backend.writer(live).apply(Array.from({ length: 4 }, (_, j) => put(10 + round * 20 + i * 4 + j, 'MRN-live')));
        })(),
        (async () => {
          if (round === 1) {
            await d.node.backend.writer(deleting).destroy();
            await d.node.backend.control.deleteCollection(deleting);
          }
          if (round === 2) fresh = await d.written('fresh', 9);
        })(),
      ]);
      for (const r of [a, b, c]) {
        expect(r.failed).toBe(0);
        expect(r.orphans.map((o) => o.collection).filter((id) => [live.id, deleting.id, fresh?.id].includes(id))).toEqual([]);
      }
    }
    expect((await d.node.backend.reader.manifest(live.id))!.count).toBe(90);
    expect((await d.node.backend.reader.manifest(fresh!.id))!.count).toBe(9);
    expect(await d.keysOf(failed)).toEqual([]);
    expect(await d.keysOf(deleting)).toEqual([]);
  } finally {
    d.node.close();
  }
});
