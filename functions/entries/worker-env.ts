// Bindings the Worker and its Durable Objects receive (declared in wrangler.toml).
import type { CollectionDO, ControlDO, LedgerDO } from './durable.ts';

export interface WorkerEnv {
  MEDHASH_KV: KVNamespace;
  CONTROL: DurableObjectNamespace<ControlDO>;
  COLLECTIONS: DurableObjectNamespace<CollectionDO>;
  LEDGERS: DurableObjectNamespace<LedgerDO>;
  /** A secret (`wrangler secret put`, or .dev.vars locally); unset disables the admin API. */
  MEDHASH_OPERATOR_KEY?: string;
  MEDHASH_SHARD_MAX_BYTES?: string;
  MEDHASH_SHARD_MAX_ITEMS?: string;
  MEDHASH_GC_GRACE_MS?: string;
  /** The inference backend for search by image (functions/backend); unset: that route answers 503. */
  MEDHASH_BACKEND_URL?: string;
  /** `on` (default) or `off`: one JSON line per request in the Worker's logs (api/access-log.ts). */
  MEDHASH_ACCESS_LOG?: string;
}

// Types `env` and `exports` from "cloudflare:workers" (what `wrangler types` would generate).
declare global {
  namespace Cloudflare {
    interface Env extends WorkerEnv {}
    interface GlobalProps {
      mainModule: typeof import('./worker.ts');
      durableNamespaces: 'ControlDO' | 'CollectionDO' | 'LedgerDO';
    }
  }
}
