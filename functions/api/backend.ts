// What the app needs from its runtime. The entries (entries/node.ts, entries/worker.ts) build
// one of these; everything behind the routes is the same code on both runtimes.
import type { HammingKernel } from '../../wasm/hamming.ts';
import type { AccessLogSink } from './access-log.ts';
import type { Ledger } from '../billing/ledger.ts';
import type { ControlPlane } from '../control/store.ts';
import type { ModelCatalog } from '../models/catalog.ts';
import type { CalibrationLookup } from '../safety/calibration.ts';
import type { ImageEncoderApi } from '../inference/remote.ts';
import type { CollectionReader } from '../store/reader.ts';
import type { OrphanStores } from '../store/orphans.ts';
import type { AdoptResult, ApplyResult, CollectionSpec, ErasableField, EraseResult, WriteOp } from '../store/writer.ts';

/** The single writer of one collection: in-process on Node, its Durable Object on Workers. */
export interface CollectionWriterApi {
  apply(ops: WriteOp[]): Promise<ApplyResult>;
  /** Deletes every item whose metadata `field` is `value` (store/writer.ts). */
  erase(field: ErasableField, value: string): Promise<EraseResult>;
  /** Marks it destroyed and deletes its data; false: a KV delete failed, the maintenance retries it. */
  destroy(): Promise<boolean>;
  /** The operator's recovery: KV's verified manifest becomes its writer state (store/writer.ts, adoptManifest). */
  adoptManifest(): Promise<AdoptResult>;
}

export interface Backend {
  runtime: 'node' | 'workers';
  control: ControlPlane;
  /** The billing ledger holding `tenantId`: one store on Node, the tenant's Durable Object on Workers. */
  ledger(tenantId: string): Ledger;
  writer(spec: CollectionSpec): CollectionWriterApi;
  reader: CollectionReader;
  /** What the orphan sweep (store/orphans.ts, GET/DELETE /v1/admin/orphans) reads and deletes through. */
  orphans: OrphanStores;
  kernel: HammingKernel;
  /** OOD calibration of the model a collection names (its model_id), or null. */
  oodCalibration: CalibrationLookup;
  /** Search by image; unset: that route answers 503. */
  images?: ImageEncoderApi;
  /** Models served for client-side encoding (/v1/models); absent where the runtime ships none (Workers). */
  models?: ModelCatalog;
  /** MEDHASH_OPERATOR_KEY; unset disables the admin API. */
  operatorKey: string | undefined;
  /** One JSON line per request (api/access-log.ts); unset: no access log. */
  accessLog?: AccessLogSink;
}
