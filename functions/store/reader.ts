// Read side of the collection store: the published manifest from KV and a byte-bounded LRU
// of decoded shards. Shard keys are content addresses, so a cached shard can never be stale;
// only the manifest is read fresh on every request.
import { Shard, ShardFormatError } from '../shards/codec.ts';
import { checkShardBytes, decodeManifest, manifestKey, routeId, type Manifest, type ManifestShard } from '../shards/manifest.ts';
import { MedhashError } from '../util/errors.ts';
import type { KV } from './kv.ts';

export interface CachedShard {
  readonly key: string;
  readonly shard: Shard;
  /** False once evicted: whoever attached a resource must then release it right after use. */
  cached: boolean;
  /** Releases what a consumer attached to this entry (the search's wasm table); run on eviction. */
  release: (() => void) | null;
}

/** A shard the manifest names is gone: a reader outlived the grace period. Retrying with a fresh manifest fixes it. */
export class ShardGoneError extends Error {
  override name = 'ShardGoneError';
}

export class CollectionReader {
  private readonly lru = new Map<string, CachedShard>();
  private readonly loading = new Map<string, Promise<CachedShard>>();
  private bytes = 0;

  constructor(
    private readonly kv: KV,
    private readonly maxCacheBytes: number,
  ) {}

  async manifest(collection: string): Promise<Manifest | null> {
    const raw = await this.kv.get(manifestKey(collection));
    if (!raw) return null;
    const m = decodeManifest(raw);
    if (m.collection !== collection) throw new Error(`the manifest under ${manifestKey(collection)} is collection ${m.collection}'s`);
    return m;
  }

  /** A shard that `m` names; its code length and descriptor size must be the manifest's. */
  async shard(entry: ManifestShard, m: Pick<Manifest, 'bits' | 'descriptor_dims'>): Promise<CachedShard> {
    const hit = this.lru.get(entry.key);
    if (hit) {
      this.lru.delete(entry.key); // re-insert: Map order is the LRU order
      this.lru.set(entry.key, hit);
      return hit;
    }
    let p = this.loading.get(entry.key);
    if (!p) {
      p = this.load(entry, m).finally(() => this.loading.delete(entry.key));
      this.loading.set(entry.key, p);
    }
    return p;
  }

  /**
   * Runs `fn` against a consistent snapshot: the manifest read once, every shard it names. If
   * a shard vanished (the reader was slower than the GC grace period) it retries once.
   */
  async withManifest<T>(collection: string, fn: (m: Manifest | null) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(await this.manifest(collection));
      } catch (e) {
        if (!(e instanceof ShardGoneError)) throw e;
        if (attempt > 0) throw new MedhashError(503, 'index_changed', 'the index changed during the request; retry');
      }
    }
  }

  /** The stored record of `id`, or null. */
  async item(m: Manifest | null, id: string): Promise<{ shard: Shard; row: number } | null> {
    if (!m || m.shards.length === 0) return null;
    const { shard } = await this.shard(m.shards[routeId(m.shards, id)], m);
    const row = shard.indexOf(id);
    return row < 0 ? null : { shard, row };
  }

  private async load(entry: ManifestShard, m: Pick<Manifest, 'bits' | 'descriptor_dims'>): Promise<CachedShard> {
    const blob = await this.kv.get(entry.key);
    if (!blob) throw new ShardGoneError(`shard ${entry.key} is gone`);
    const shard = Shard.decode(checkShardBytes(entry, blob));
    if (shard.count !== entry.count) throw new ShardFormatError(`invalid shard: ${entry.key} holds ${shard.count} items, manifest says ${entry.count}`);
    // Otherwise the kernel would read rows of the wrong width, or every similarity would be 0.
    if (shard.bits !== m.bits || shard.dims !== m.descriptor_dims) {
      throw new ShardFormatError(`invalid shard: ${entry.key} holds ${shard.bits}-bit codes and ${shard.dims}-value descriptors, manifest says ${m.bits} and ${m.descriptor_dims}`);
    }
    const cached: CachedShard = { key: entry.key, shard, cached: true, release: null };
    this.lru.set(entry.key, cached);
    // A table attached by the search holds a copy of the codes in wasm memory: count it too.
    this.bytes += blob.length + shard.codes.length;
    this.evict();
    return cached;
  }

  private evict(): void {
    for (const [key, e] of this.lru) {
      if (this.bytes <= this.maxCacheBytes || this.lru.size <= 1) return;
      this.lru.delete(key);
      this.bytes -= e.shard.byteLength + e.shard.codes.length;
      e.cached = false;
      e.release?.();
      e.release = null;
    }
  }
}
