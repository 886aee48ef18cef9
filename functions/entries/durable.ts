// Workers' strongly consistent side: one control Durable Object (tenants, keys, collection
// registry), one Durable Object per tenant (its billing ledger: plan, usage counters,
// idempotency records, audit log) and one Durable Object per collection, the single writer of
// its index. All keep their state in DO SQLite through the same SqlDb code that Node runs on
// node:sqlite, and answer one `call` RPC that carries MedhashErrors as data (util/rpc.ts).
import { DurableObject } from 'cloudflare:workers';
import { LedgerStore } from '../billing/ledger.ts';
import { ControlStore } from '../control/store.ts';
import { migrateHeads, sqlHeadStore } from '../store/head.ts';
import { workersKV } from '../store/kv.ts';
import { Mutex } from '../store/mutex.ts';
import { orphanSpec } from '../store/orphans.ts';
import { durableSql, type SqlDb } from '../store/sql.ts';
import { CollectionWriter, writerLimitsFromEnv, type CollectionSpec, type ErasableField, type WriteOp } from '../store/writer.ts';
import { serveRpc, type RpcReply } from '../util/rpc.ts';
import type { WorkerEnv } from './worker-env.ts';

export class ControlDO extends DurableObject<WorkerEnv> {
  private readonly store: ControlStore;

  constructor(ctx: DurableObjectState, env: WorkerEnv) {
    super(ctx, env);
    this.store = new ControlStore(durableSql(ctx.storage));
  }

  call(method: string, args: unknown[]): Promise<RpcReply> {
    return serveRpc(this.store, method, args);
  }
}

/** One per tenant (named by its id), so a busy tenant's counting never queues behind another's. */
export class LedgerDO extends DurableObject<WorkerEnv> {
  private readonly store: LedgerStore;

  constructor(ctx: DurableObjectState, env: WorkerEnv) {
    super(ctx, env);
    this.store = new LedgerStore(durableSql(ctx.storage));
  }

  call(method: string, args: unknown[]): Promise<RpcReply> {
    return serveRpc(this.store, method, args);
  }
}

/** The RPC surface of a collection DO; the spec rides along since a DO knows only its id. */
export class CollectionEndpoint {
  constructor(
    private readonly writerFor: (spec: CollectionSpec) => CollectionWriter,
    private readonly orphanSpec: (id: string) => Promise<CollectionSpec>,
  ) {}

  apply(spec: CollectionSpec, ops: WriteOp[]) {
    return this.writerFor(spec).apply(ops);
  }

  erase(spec: CollectionSpec, field: ErasableField, value: string) {
    return this.writerFor(spec).erase(field, value);
  }

  destroy(spec: CollectionSpec) {
    return this.writerFor(spec).destroy();
  }

  adoptManifest(spec: CollectionSpec) {
    return this.writerFor(spec).adoptManifest();
  }

  /** The orphan sweep's destroy (store/orphans.ts): the registry row is gone, the spec comes from the DO's own state. */
  async destroyOrphan(id: string) {
    return this.writerFor(await this.orphanSpec(id)).destroy();
  }

  /** The orphan sweep's search for stray shards of a registered collection (store/orphans.ts). */
  sweepStrays(spec: CollectionSpec, remove: boolean) {
    return this.writerFor(spec).sweepStrays(remove);
  }
}

export class CollectionDO extends DurableObject<WorkerEnv> {
  private readonly db: SqlDb;
  private writer: CollectionWriter | null = null;
  private readonly endpoint = new CollectionEndpoint(
    (spec) => this.writerFor(spec),
    (id) => orphanSpec(id, sqlHeadStore(this.db, id), workersKV(this.env.MEDHASH_KV)),
  );
  // Reading the alarm and setting it are two storage calls: one request at a time, or two could
  // read the same alarm and the later of their times be the one left set.
  private readonly alarmLock = new Mutex();

  constructor(ctx: DurableObjectState, env: WorkerEnv) {
    super(ctx, env);
    this.db = durableSql(ctx.storage);
    migrateHeads(this.db);
  }

  call(method: string, args: unknown[]): Promise<RpcReply> {
    return serveRpc(this.endpoint, method, args);
  }

  /** Scheduled maintenance: a retried manifest publish or deletion, GC of shards past their grace period. */
  override async alarm(): Promise<void> {
    const rows = this.db.all<{ collection: string }>('SELECT collection FROM writer_heads');
    if (rows.length === 0) return;
    const head = sqlHeadStore(this.db, rows[0].collection).load();
    if (!head) return;
    const m = head.manifest;
    await this.writerFor({ id: m.collection, bits: m.bits, descriptor_dims: m.descriptor_dims }).maintain();
  }

  private writerFor(spec: CollectionSpec): CollectionWriter {
    if (!this.writer) {
      const storage = this.ctx.storage;
      this.writer = new CollectionWriter(
        workersKV(this.env.MEDHASH_KV),
        sqlHeadStore(this.db, spec.id),
        { id: spec.id, bits: spec.bits, descriptor_dims: spec.descriptor_dims },
        writerLimitsFromEnv(this.env as unknown as Record<string, unknown>),
        {
          // Keep the earliest pending alarm: each alarm run reschedules what is still due.
          schedule: (at) =>
            this.alarmLock.run(async () => {
              const cur = await storage.getAlarm();
              if (cur === null || cur > at) await storage.setAlarm(at);
            }),
        },
      );
    }
    return this.writer;
  }
}
