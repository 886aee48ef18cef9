// Workers entry: the same app as Node, over Workers KV (shards, manifests) and Durable
// Objects (control plane; one billing ledger per tenant; one single writer per collection).
// The wasm kernel must be imported at build time: workerd refuses to compile wasm from bytes
// at run time.
import type { Ledger } from '../billing/ledger.ts';
import type { ControlPlane } from '../control/store.ts';
import { accessLogFromEnv } from '../api/access-log.ts';
import { createApp } from '../api/app.ts';
import { shippedCalibrations } from '../safety/calibration.ts';
import type { Backend } from '../api/backend.ts';
import { DEFAULT_EDGE } from '../inference/remote.ts';
import { workerEdgeEncoder } from '../inference/worker.ts';
import { workersKV } from '../store/kv.ts';
import { CollectionReader } from '../store/reader.ts';
import type { CollectionSpec } from '../store/writer.ts';
import { rpcClient, type RpcReply } from '../util/rpc.ts';
import { HammingKernel } from '../../wasm/hamming.ts';
import hammingModule from '../../wasm/hamming.wasm';
import type { CollectionEndpoint } from './durable.ts';
import type { WorkerEnv } from './worker-env.ts';

export { CollectionDO, ControlDO, LedgerDO } from './durable.ts';

// An isolate has 128 MB; decoded shards and their wasm tables get a quarter of it.
const CACHE_BYTES = 32 << 20;

async function buildApp(env: WorkerEnv) {
  // Stubs are made per call: a DO stub is an I/O object tied to the request that created it.
  const control = rpcClient<ControlPlane>((m, a) => env.CONTROL.get(env.CONTROL.idFromName('control')).call(m, a) as Promise<RpcReply>);
  const endpoint = (id: string) => {
    const stub = env.COLLECTIONS.get(env.COLLECTIONS.idFromName(id));
    return rpcClient<CollectionEndpoint>((m, a) => stub.call(m, a) as Promise<RpcReply>);
  };
  const kv = workersKV(env.MEDHASH_KV);
  const backend: Backend = {
    runtime: 'workers',
    control,
    ledger: (tenantId) => rpcClient<Ledger>((m, a) => env.LEDGERS.get(env.LEDGERS.idFromName(tenantId)).call(m, a) as Promise<RpcReply>),
    writer(spec: CollectionSpec) {
      const e = endpoint(spec.id);
      const s: CollectionSpec = { id: spec.id, bits: spec.bits, descriptor_dims: spec.descriptor_dims };
      return { apply: (ops) => e.apply(s, ops), erase: (field, value) => e.erase(s, field, value), destroy: () => e.destroy(s), adoptManifest: () => e.adoptManifest(s) };
    },
    reader: new CollectionReader(kv, CACHE_BYTES),
    // Finds orphans by their KV keys only: a Worker cannot list Durable Objects, so writer state
    // left without keys stays where it is (store/orphans.ts, docs/SHARD_FORMAT.md). Stray shards
    // are sought by each collection's Durable Object, its single writer.
    orphans: {
      kv,
      writerStates: async () => null,
      registered: () => control.collectionSpecs(),
      destroy: (id) => endpoint(id).destroyOrphan(id),
      strays: (spec, remove) => endpoint(spec.id).sweepStrays({ id: spec.id, bits: spec.bits, descriptor_dims: spec.descriptor_dims }, remove),
    },
    kernel: await HammingKernel.fromModule(hammingModule),
    oodCalibration: shippedCalibrations,
    images: workerEdgeEncoder({ ...DEFAULT_EDGE, backendUrl: env.MEDHASH_BACKEND_URL || undefined }),
    operatorKey: env.MEDHASH_OPERATOR_KEY,
    // Workers Logs (`wrangler tail`, or the dashboard where observability is on) keep these.
    accessLog: accessLogFromEnv(env.MEDHASH_ACCESS_LOG, (line) => console.log(line)),
  };
  return createApp(backend);
}

let app: ReturnType<typeof buildApp> | null = null;

export default {
  async fetch(request, env, ctx) {
    // Bindings are fixed for an isolate's life, so the app is built once, on the first request.
    app ??= buildApp(env).catch((e) => {
      app = null; // let the next request retry rather than caching the failure
      throw e;
    });
    return (await app).fetch(request, env, ctx);
  },
} satisfies ExportedHandler<WorkerEnv>;
