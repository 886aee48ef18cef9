// Node entry: the app on @hono/node-server with every store on node:sqlite under
// MEDHASH_DATA_DIR (default .medhash/): kv.sqlite plays Workers KV, control.sqlite the Durable
// Objects (control plane, writer heads, billing ledger). Writes to a collection are serialised
// by its in-process writer's mutex; the heads' compare-and-swap, and the GC's check and deletes
// in one kv.sqlite transaction, guard against a second process.
// Node only: the model catalog (/v1/models, from models/) and the browser SDK and /ui page.
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { loadHammingKernel } from '../../wasm/load-node.ts';
import { ACCESS_LOG_ENV, accessLogFromEnv, type AccessLogSink } from '../api/access-log.ts';
import { createApp } from '../api/app.ts';
import type { Backend } from '../api/backend.ts';
import { LedgerStore } from '../billing/ledger.ts';
import { ControlStore } from '../control/store.ts';
import { dirCatalog } from '../models/catalog.ts';
import { sdkRoutes } from '../sdk/serve-node.ts';
import { ManifestFormatError } from '../shards/manifest.ts';
import { shippedCalibrations, type CalibrationLookup } from '../safety/calibration.ts';
import type { ImageEncoderApi } from '../inference/remote.ts';
import { createNodeImageEncoder, type NodeImageSettings } from '../inference/node.ts';
import { checkDataDir, requireDataDir } from '../store/backup.ts';
import { decodeHead, migrateHeads, sqlHeadStore, type Head } from '../store/head.ts';
import { CollectionReader } from '../store/reader.ts';
import { orphanSpec, sqlWriterStates, sweepOrphans, type OrphanReport, type OrphanStores, type SweepOptions } from '../store/orphans.ts';
import type { SqlDb } from '../store/sql.ts';
import { openSqlite, sqliteDb, SqliteKV } from '../store/sqlite.ts';
import { CollectionWriter, RecentBudget, WRITER_STATE_BEHIND, writerLimitsFromEnv, type CollectionSpec, type WriterLimits } from '../store/writer.ts';
import { MedhashError } from '../util/errors.ts';
import { closeServer } from './signals.ts';

const SHIPPED_MODELS = join(import.meta.dirname, '..', '..', 'models');
/**
 * What the writers of the process keep of the shards they wrote last, together (RecentBudget):
 * the tail shards of 16 collections at the default shard size, so that sequential ingest into a
 * few collections at once re-reads nothing.
 */
export const RECENT_WRITES_BYTES = 64 << 20;
/** How long after a failed maintenance run (a busy disk, say) it is tried again. */
export const MAINTENANCE_FAILED_RETRY_MS = 30_000;

/**
 * The one log line of a collection whose writer state fails its check (at start, or at a
 * maintenance run): its maintenance is not tried again, as every run would read the same bytes.
 */
const damagedStateLine = (id: string, e: unknown): string =>
  `maintenance of ${id}: ${String(e)}; its writer state is damaged: its maintenance is stopped and its writes fail: make KV's manifest its writer state (medhash admin adopt-manifest) or restore the data dir from a backup made before the damage (docs/SHARD_FORMAT.md, "Damaged writer state")`;

/**
 * The one log line of a maintenance run that found its collection's writer state behind KV's
 * manifest (WRITER_STATE_BEHIND): not tried again either, as on Node both stores are read
 * consistently and only the operator's restore changes that.
 */
const behindStateLine = (id: string, e: MedhashError): string =>
  `maintenance of ${id}: ${e.code}: ${e.message}; its maintenance is stopped, as every run would find the same state`;

export interface NodeOptions {
  dataDir: string;
  operatorKey?: string;
  limits?: WriterLimits;
  cacheBytes?: number;
  /** Defaults to the shipped models' cards. */
  oodCalibration?: CalibrationLookup;
  /** Search by image; unset: that route answers 503. */
  images?: ImageEncoderApi;
  /** Folder of model cards and .onnx files served at /v1/models (default: the repository's models/). */
  modelsDir?: string;
  /** The access log (api/access-log.ts); unset: none. */
  accessLog?: AccessLogSink;
}

export interface NodeBackend {
  backend: Backend;
  close(): void;
}

interface DataDirStores {
  kv: SqliteKV;
  sql: SqlDb;
  control: ControlStore;
  close(): void;
}

/** The stores of a data dir, created where missing. */
function openDataDir(dataDir: string): DataDirStores {
  checkDataDir(dataDir);
  mkdirSync(dataDir, { recursive: true });
  const kvDb = openSqlite(join(dataDir, 'kv.sqlite'));
  const controlDb = openSqlite(join(dataDir, 'control.sqlite'));
  // It holds search answers stored for Idempotency-Key retries (results' metadata, patient
  // references included) until they expire: deleted, they are zeroed, not left in free pages.
  controlDb.exec('PRAGMA secure_delete = ON');
  const sql = sqliteDb(controlDb);
  migrateHeads(sql);
  return {
    kv: new SqliteKV(kvDb),
    sql,
    control: new ControlStore(sql),
    close() {
      kvDb.close();
      controlDb.close();
    },
  };
}

/** The orphan sweep over a data dir's stores, destroying through `writerFor`. */
const dataDirOrphans = ({ kv, sql, control }: DataDirStores, writerFor: (spec: CollectionSpec) => CollectionWriter): OrphanStores => ({
  kv,
  writerStates: async () => sqlWriterStates(sql),
  registered: () => control.collectionSpecs(),
  destroy: async (id) => writerFor(await orphanSpec(id, sqlHeadStore(sql, id), kv)).destroy(),
  strays: (spec, remove) => writerFor(spec).sweepStrays(remove),
});

/**
 * `medhash orphans`: the sweep on a data dir, the service running or not (the order of its reads
 * and the writer state's compare-and-swap make it safe beside a running service; see store/orphans.ts).
 */
export async function sweepDataDir(dataDir: string, opts: SweepOptions = {}): Promise<OrphanReport> {
  requireDataDir(dataDir);
  const stores = openDataDir(dataDir);
  try {
    return await sweepOrphans(dataDirOrphans(stores, (spec) => new CollectionWriter(stores.kv, sqlHeadStore(stores.sql, spec.id), spec)), opts);
  } finally {
    stores.close();
  }
}

export async function createNodeBackend(opts: NodeOptions): Promise<NodeBackend> {
  const stores = openDataDir(opts.dataDir);
  const { kv, sql } = stores;
  const limits = opts.limits ?? writerLimitsFromEnv(process.env);
  const writers = new Map<string, CollectionWriter>();
  const timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  const recent = new RecentBudget(RECENT_WRITES_BYTES);

  const writerFor = (spec: CollectionSpec): CollectionWriter => {
    const existing = writers.get(spec.id);
    if (existing) return existing;
    const writer = new CollectionWriter(kv, sqlHeadStore(sql, spec.id), { id: spec.id, bits: spec.bits, descriptor_dims: spec.descriptor_dims }, limits, {
      recent,
      // Maintenance (GC after the grace period, a retried manifest publish) on an unref'd timer;
      // a failed run is tried again later, as a Workers alarm that throws is retried.
      schedule: function schedule(at) {
        const cur = timers.get(spec.id);
        if (cur && cur.at <= at) return;
        if (cur) clearTimeout(cur.timer);
        const timer = setTimeout(() => {
          timers.delete(spec.id);
          writer.maintain().catch((e) => {
            if (e instanceof ManifestFormatError) {
              console.error(damagedStateLine(spec.id, e));
              return;
            }
            if (e instanceof MedhashError && e.code === WRITER_STATE_BEHIND) {
              console.error(behindStateLine(spec.id, e));
              return;
            }
            console.error(`maintenance of ${spec.id}: ${String(e)}; retrying in ${MAINTENANCE_FAILED_RETRY_MS / 1000} s`);
            schedule(Date.now() + MAINTENANCE_FAILED_RETRY_MS);
          });
        }, Math.max(0, at - Date.now()));
        timer.unref();
        timers.set(spec.id, { at, timer });
      },
    });
    writers.set(spec.id, writer);
    return writer;
  };

  // Timers do not survive a restart (Durable Object alarms do): pick up unfinished maintenance.
  for (const { collection, rev, head } of sql.all<{ collection: string; rev: number; head: string }>('SELECT collection, rev, head FROM writer_heads')) {
    let h: Head;
    try {
      h = decodeHead(head, rev);
    } catch (e) {
      // One collection's damaged writer state must not keep the others from being served; writes to it answer corrupt_index.
      console.error(damagedStateLine(collection, e));
      continue;
    }
    if (h.destroyed ? h.garbage.length === 0 : h.garbage.length === 0 && h.pending.length === 0 && h.published === h.manifest.generation) continue;
    const { collection: id, bits, descriptor_dims } = h.manifest;
    writerFor({ id, bits, descriptor_dims }).maintain().catch((e) => console.error(`maintenance of ${id}: ${String(e)}`));
  }

  const ledger = new LedgerStore(sql);
  const backend: Backend = {
    runtime: 'node',
    control: stores.control,
    ledger: () => ledger,
    writer: writerFor,
    reader: new CollectionReader(kv, opts.cacheBytes ?? 256 << 20),
    orphans: dataDirOrphans(stores, writerFor),
    kernel: await loadHammingKernel(),
    oodCalibration: opts.oodCalibration ?? shippedCalibrations,
    images: opts.images,
    models: dirCatalog(opts.modelsDir ?? SHIPPED_MODELS),
    operatorKey: opts.operatorKey,
    accessLog: opts.accessLog,
  };
  return {
    backend,
    close() {
      for (const { timer } of timers.values()) clearTimeout(timer);
      stores.close();
    },
  };
}

/** The Node entries' access log: JSON lines on stdout (status messages go to stderr), unless MEDHASH_ACCESS_LOG=off. */
export function accessLogToStdout(env: NodeJS.ProcessEnv): AccessLogSink | undefined {
  let open = true;
  const sink = accessLogFromEnv(env[ACCESS_LOG_ENV], (line) => {
    if (open) process.stdout.write(`${line}\n`);
  });
  // A log reader that goes away (EPIPE) must not take the service down with it.
  if (sink) {
    process.stdout.on('error', (e) => {
      if (!open) return;
      open = false;
      console.error(`access log: stdout failed (${e.message}); no more access log lines until restart`);
    });
  }
  return sink;
}

export interface RunningServer {
  server: ServerType;
  url: string;
  /** Stops taking connections, waits for the requests in flight, then closes the stores. */
  close(): Promise<void>;
}

export async function startNodeServer(
  opts: Omit<NodeOptions, 'images'> & { port: number; hostname: string; images?: NodeImageSettings | null },
): Promise<RunningServer> {
  let images: ImageEncoderApi | undefined;
  if (opts.images) {
    const enc = await createNodeImageEncoder(opts.images);
    // The fallback starts in the background: search by image through the backend need not wait.
    enc.preload().catch((e) => console.error(`in-process encoder: ${String(e)}`));
    images = enc;
    console.error(`search by image: ${opts.images.model}, backend ${opts.images.backendUrl ?? '(none: in-process only)'}`);
  }
  const node = await createNodeBackend({ ...opts, images });
  const app = createApp(node.backend);
  app.route('/', sdkRoutes());
  // A client that hangs up ends its connection, not its handler: server.close() stops waiting for
  // it, and a search by image still encoding would then reach the stores closed under it.
  const handling = new Set<Promise<Response>>();
  const fetch: typeof app.fetch = (req, env, ctx) => {
    const res = Promise.resolve(app.fetch(req, env, ctx));
    handling.add(res);
    res.then(() => handling.delete(res), () => handling.delete(res));
    return res;
  };
  const server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch, port: opts.port, hostname: opts.hostname }, () => ok(s));
  });
  const url = `http://${opts.hostname}:${(server.address() as AddressInfo).port}`;
  console.error(`medhash listening on ${url} (data in ${resolve(opts.dataDir)})`);
  return {
    server,
    url,
    async close() {
      await closeServer(server);
      await Promise.allSettled(handling);
      node.close();
    },
  };
}
