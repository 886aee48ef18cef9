// Node entry specifics: state persists on disk across restarts, and maintenance that a timer
// would have done before a restart is picked up at start.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, expect, it, vi } from 'vitest';
import { createNodeBackend } from '../functions/entries/node.ts';
import { openSqlite, SqliteKV } from '../functions/store/sqlite.ts';
import { DEFAULT_WRITER_LIMITS } from '../functions/store/writer.ts';

const dir = mkdtempSync(join(tmpdir(), 'medhash-entry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('persists across restarts and collects garbage left by a stopped process', async () => {
  const limits = { ...DEFAULT_WRITER_LIMITS, graceMs: 50 };
  const first = await createNodeBackend({ dataDir: dir, limits });
  const col = await first.backend.control.createCollection((await first.backend.control.createTenant('t')).id, { name: 'c', bits: 16, descriptor_dims: 0 });
  const record = (v: number) => ({ id: 'a', code: new Uint8Array([v, v]), descriptor: new Int8Array(0), metadata: '{}' });
  await first.backend.writer(col).apply([{ op: 'put', record: record(1) }]);
  const old = (await first.backend.reader.manifest(col.id))!.shards[0].key;
  await first.backend.writer(col).apply([{ op: 'put', record: record(2) }]);
  first.close(); // its GC timer dies with it
  await sleep(60);

  const kvDb = openSqlite(join(dir, 'kv.sqlite'));
  expect(await new SqliteKV(kvDb).get(old)).not.toBeNull();
  const second = await createNodeBackend({ dataDir: dir, limits });
  await vi.waitFor(async () => expect(await new SqliteKV(kvDb).get(old)).toBeNull(), { timeout: 5000 });
  const m = (await second.backend.reader.manifest(col.id))!;
  expect(m).toMatchObject({ generation: 2, count: 1 });
  expect(await second.backend.control.getCollection(col.tenant_id, 'c')).toEqual(col);
  kvDb.close();
  second.close();
});
