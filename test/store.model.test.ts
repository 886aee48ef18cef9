// Model-based, seeded, randomized test of the collection store under concurrency and partial
// failure: random interleaved applies/erases/maintenance on two collections sharing one KV, KV
// puts/deletes failing (before or after taking effect) at random indices, restarts (new writers
// over the same stores); after every step the writer state, the KV blobs and the published
// manifest are compared with a plain in-memory model.
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { Shard, type ShardRecord } from '../functions/shards/codec.ts';
import { decodeManifest, encodeManifest, manifestKey } from '../functions/shards/manifest.ts';
import { migrateHeads, sqlHeadStore } from '../functions/store/head.ts';
import type { KV } from '../functions/store/kv.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../functions/store/sqlite.ts';
import type { SqlDb } from '../functions/store/sql.ts';
import { CollectionWriter, isCommittedNotVisible, MAX_ERASE_ITEMS, type CollectionSpec, type WriteOp, type WriterLimits } from '../functions/store/writer.ts';
import { compareIdBytes } from '../wasm/hamming.ts';
import { seededRandom, type Random } from './shared/random.ts';

/** KV whose n-th mutation (put or delete) fails, before or after it takes effect; random yields interleave callers. */
class FaultKV implements KV {
  mutations = 0;
  failAt = -1;
  failAfter = false;
  constructor(
    readonly inner: KV,
    private readonly r: Random,
  ) {}
  private async jitter() {
    const n = this.r.int(3);
    for (let i = 0; i < n; i++) await tick();
  }
  private async mutate(what: string, fn: () => Promise<void>) {
    await this.jitter();
    const n = this.mutations++;
    if (n === this.failAt && !this.failAfter) throw new Error(`injected failure before ${what}`);
    await fn();
    if (n === this.failAt && this.failAfter) throw new Error(`injected failure after ${what}`);
  }
  async get(key: string) {
    await this.jitter();
    return this.inner.get(key);
  }
  put(key: string, value: Uint8Array | string) {
    return this.mutate(`put ${key}`, () => this.inner.put(key, value));
  }
  delete(key: string) {
    return this.mutate(`delete ${key}`, () => this.inner.delete(key));
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
}

const LIMITS: WriterLimits = { maxShardBytes: 64 << 10, maxShardItems: 6, graceMs: 1000 };
// Prefix siblings: c/col_a/ and c/col_a1/ must never meet.
const SPECS: CollectionSpec[] = [
  { id: 'col_a', bits: 16, descriptor_dims: 2 },
  { id: 'col_a1', bits: 16, descriptor_dims: 2 },
];
const ID_POOL = [
  ...Array.from({ length: 40 }, (_, i) => `id-${String(i).padStart(3, '0')}`),
  'é', 'z', '\uE000', '\uFFFD', '😀', '😀a', 'A', 'id-', 'id-0', '~',
];
const PATIENTS = ['p0', 'p1', 'p2'];

type Model = Map<string, ShardRecord>;

function record(id: string, v: number, patient: string | null): ShardRecord {
  return {
    id,
    code: new Uint8Array([v & 0xff, (v >> 8) & 0xff]),
    descriptor: new Int8Array([v % 100, -(v % 100)]),
    metadata: patient ? JSON.stringify({ patient_ref: patient }) : '{}',
  };
}

const sameRecord = (a: ShardRecord, b: ShardRecord) =>
  a.id === b.id && a.metadata === b.metadata && Array.from(a.code).join() === Array.from(b.code).join() && Array.from(a.descriptor).join() === Array.from(b.descriptor).join();

async function runSeed(seed: number, steps: number): Promise<void> {
  const r = seededRandom(seed);
  const kvDb = openSqlite(':memory:');
  const ctlDb = openSqlite(':memory:');
  const sql: SqlDb = sqliteDb(ctlDb);
  migrateHeads(sql);
  const kv = new FaultKV(new SqliteKV(kvDb), r);
  let clock = 1_000_000;
  const make = (spec: CollectionSpec) => new CollectionWriter(kv, sqlHeadStore(sql, spec.id), spec, LIMITS, { now: () => clock });
  let writers = SPECS.map(make);
  const models: Model[] = SPECS.map(() => new Map());
  const gens = SPECS.map(() => 0);
  let version = 0;
  const log: string[] = [];
  const ctx = () => `seed ${seed}\n${log.slice(-12).join('\n')}`;

  /** Applies ops to model c; returns what the writer should answer. */
  const modelApply = (c: number, ops: WriteOp[]) => {
    const m = models[c];
    let changed = 0;
    const missing: string[] = [];
    for (const op of [...ops].sort((a, b) => compareIdBytes(a.op === 'put' ? a.record.id : a.id, b.op === 'put' ? b.record.id : b.id))) {
      if (op.op === 'put') {
        const cur = m.get(op.record.id);
        if (!cur || !sameRecord(cur, op.record)) changed++;
        m.set(op.record.id, op.record);
      } else if (m.delete(op.id)) changed++;
      else missing.push(op.id);
    }
    if (changed > 0) gens[c]++;
    return { generation: gens[c], count: m.size, changed, missing };
  };

  async function check(c: number, where: string): Promise<void> {
    const spec = SPECS[c];
    const head = sqlHeadStore(sql, spec.id).load();
    const model = models[c];
    if (!head) {
      expect(model.size, `${where}: no head but model holds items\n${ctx()}`).toBe(0);
      return;
    }
    const m = decodeManifest(encodeManifest(head.manifest));
    expect(m.generation, `${where}: generation\n${ctx()}`).toBe(gens[c]);
    const seen: string[] = [];
    for (const s of m.shards) {
      const blob = await kv.inner.get(s.key);
      expect(blob, `${where}: live shard ${s.key} missing\n${ctx()}`).not.toBeNull();
      const shard = Shard.decode(blob!);
      expect(shard.count).toBe(s.count);
      expect(shard.ids[0]).toBe(s.first_id);
      expect(shard.ids[shard.count - 1]).toBe(s.last_id);
      shard.ids.forEach((id, row) => {
        const want = model.get(id);
        expect(want, `${where}: ${spec.id} holds ${id} the model does not\n${ctx()}`).toBeTruthy();
        expect(sameRecord(shard.record(row), want!), `${where}: ${id} differs\n${ctx()}`).toBe(true);
        seen.push(id);
      });
    }
    for (let i = 1; i < seen.length; i++) expect(compareIdBytes(seen[i - 1], seen[i]), `${where}: ids sorted, unique`).toBeLessThan(0);
    expect(seen.length, `${where}: ${spec.id} count\n${ctx()}`).toBe(model.size);
    expect(m.count).toBe(model.size);
    const pub = await kv.inner.get(manifestKey(spec.id));
    if (head.manifest.generation === 0) {
      expect(pub).toBeNull();
    } else if (head.published === head.manifest.generation) {
      expect(pub && new TextDecoder().decode(pub), `${where}: published manifest is the head's\n${ctx()}`).toBe(encodeManifest(head.manifest));
    } else if (pub) {
      const pm = decodeManifest(new TextDecoder().decode(pub));
      // A put that landed but then failed leaves the head's manifest published, unrecorded.
      expect(pm.generation).toBeLessThanOrEqual(head.manifest.generation);
      if (pm.generation === head.manifest.generation) expect(encodeManifest(pm)).toBe(encodeManifest(head.manifest));
    }
  }

  for (let step = 0; step < steps; step++) {
    const fault = r.chance(0.35);
    if (fault) {
      kv.failAt = kv.mutations + r.int(8);
      kv.failAfter = r.chance(0.5);
    } else kv.failAt = -1;
    if (r.chance(0.08)) {
      writers = SPECS.map(make);
      log.push(`${step}: restart`);
    }
    if (r.chance(0.2)) clock += r.int(1500);
    const tasks: { c: number; kind: string; run: () => Promise<unknown>; settle: (o: PromiseSettledResult<unknown>) => void }[] = [];
    const n = 1 + r.int(4);
    for (let t = 0; t < n; t++) {
      const c = r.int(SPECS.length);
      const w = writers[c];
      const kind = r.chance(0.7) ? 'apply' : r.chance(0.5) ? 'erase' : 'maintain';
      if (kind === 'apply') {
        const size = 1 + r.int(r.chance(0.2) ? 30 : 6);
        const chosen = new Set<string>();
        const ops: WriteOp[] = [];
        for (let i = 0; i < size; i++) {
          const id = ID_POOL[r.int(ID_POOL.length)];
          if (chosen.has(id)) continue;
          chosen.add(id);
          const existing = models[c].get(id);
          // Mostly fresh versions; sometimes an identical re-send of what is stored.
          if (r.chance(0.3)) ops.push({ op: 'delete', id });
          else if (existing && r.chance(0.3)) ops.push({ op: 'put', record: { ...existing } });
          else ops.push({ op: 'put', record: record(id, ++version, r.chance(0.6) ? PATIENTS[r.int(PATIENTS.length)] : null) });
        }
        const desc = `${step}: ${SPECS[c].id} apply ${ops.map((o) => (o.op === 'put' ? `+${o.record.id}` : `-${o.id}`)).join(' ')}`;
        tasks.push({
          c, kind, run: () => w.apply(ops),
          settle: (o) => {
            if (o.status === 'fulfilled') {
              const want = modelApply(c, ops);
              log.push(`${desc} -> ok ${JSON.stringify(o.value)}`);
              expect(o.value, `${desc}\n${ctx()}`).toEqual(want);
            } else if (isCommittedNotVisible(o.reason)) {
              const want = modelApply(c, ops);
              log.push(`${desc} -> committed, not visible`);
              expect((o.reason as { details: { generation: number } }).details.generation).toBe(want.generation);
            } else log.push(`${desc} -> failed ${String(o.reason)}`);
          },
        });
      } else if (kind === 'erase') {
        const p = PATIENTS[r.int(PATIENTS.length)];
        const desc = `${step}: ${SPECS[c].id} erase ${p}`;
        tasks.push({
          c, kind, run: () => w.erase('patient_ref', p),
          settle: (o) => {
            if (o.status === 'rejected' && !isCommittedNotVisible(o.reason)) {
              log.push(`${desc} -> failed ${String(o.reason)}`);
              return;
            }
            const all = [...models[c].values()].filter((x) => JSON.parse(x.metadata).patient_ref === p).map((x) => x.id).sort(compareIdBytes);
            const ids = all.slice(0, MAX_ERASE_ITEMS);
            const want = modelApply(c, ids.map((id) => ({ op: 'delete', id })));
            if (o.status === 'rejected') throw new Error(`erase threw committed-not-visible instead of answering\n${ctx()}`);
            const v = o.value as { ids: string[]; remaining: number; generation: number; count: number; visible: boolean };
            log.push(`${desc} -> ${JSON.stringify(v)}`);
            expect(v.ids, `${desc}\n${ctx()}`).toEqual(ids);
            expect(v.remaining).toBe(all.length - ids.length);
            expect(v.generation).toBe(want.generation);
            expect(v.count).toBe(want.count);
          },
        });
      } else {
        tasks.push({ c, kind, run: () => w.maintain(), settle: (o) => log.push(`${step}: ${SPECS[c].id} maintain -> ${o.status}`) });
      }
    }
    // Launch all, in order (each writer's mutex keeps per-collection launch order), then settle in order.
    const outcomes = await Promise.allSettled(tasks.map((t) => t.run()));
    tasks.forEach((t, i) => t.settle(outcomes[i]));
    kv.failAt = -1;
    for (let c = 0; c < SPECS.length; c++) await check(c, `after step ${step}`);
  }

  // Quiesce: restart, finish maintenance past the grace period; then exactly the live blobs remain.
  kv.failAt = -1;
  writers = SPECS.map(make);
  for (let c = 0; c < SPECS.length; c++) {
    await writers[c].apply([]).catch(() => undefined);
    clock += LIMITS.graceMs + 1;
    await writers[c].maintain();
    clock += LIMITS.graceMs + 1;
    await writers[c].maintain();
    await check(c, 'after quiesce');
    const head = sqlHeadStore(sql, SPECS[c].id).load();
    if (!head) continue;
    const live = [...head.manifest.shards.map((s) => s.key), manifestKey(SPECS[c].id)].sort();
    expect((await kv.inner.list(`c/${SPECS[c].id}/`)).sort(), `leaked blobs for ${SPECS[c].id}\n${ctx()}`).toEqual(live);
  }
  kvDb.close();
  ctlDb.close();
}

describe('collection store, model-based with injected faults', () => {
  // 100 seeds (about 18 s) is the size at which an upload left in flight by a failed change (fixed in
  // writer.ts's settleAll) shows up as a leaked blob; 30 seeds missed it.
  const seeds = Number(process.env.MODEL_SEEDS ?? 100);
  const steps = Number(process.env.MODEL_STEPS ?? 60);
  const base = Number(process.env.MODEL_SEED_BASE ?? 1);
  it(`${seeds} seeds x ${steps} steps`, async () => {
    // the injected faults make the writer log each failed GC; the checks, not the log, are the test
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      for (let s = base; s < base + seeds; s++) await runSeed(s, steps);
    } finally {
      logged.mockRestore();
    }
  }, 600_000);
});
