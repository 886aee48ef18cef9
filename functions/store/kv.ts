// The blob store interface every runtime provides (shards and manifests live here), and its
// Workers KV implementation. The Node implementation is store/sqlite.ts.

export interface KV {
  get(key: string): Promise<Uint8Array | null>;
  put(key: string, value: Uint8Array | string): Promise<void>;
  delete(key: string): Promise<void>;
  /** All keys starting with `prefix`, in key order. */
  list(prefix: string): Promise<string[]>;
  /** Total size of the values under `prefix`, where the store can tell without reading them (Node). */
  bytes?(prefix: string): Promise<number>;
  /**
   * Deletes `keys` if `check()` holds, as one step that no put to the store can land inside,
   * whatever process makes it (Node: one SQLite write transaction, which other connections'
   * writes wait for); resolves whether it deleted. Absent where one writer owns a collection's
   * keys (Workers: its Durable Object).
   */
  deleteIf?(keys: string[], check: () => boolean): Promise<boolean>;
}

export function workersKV(ns: KVNamespace): KV {
  return {
    async get(key) {
      const v = await ns.get(key, 'arrayBuffer');
      return v === null ? null : new Uint8Array(v);
    },
    async put(key, value) {
      await ns.put(key, value);
    },
    async delete(key) {
      await ns.delete(key);
    },
    async list(prefix) {
      const keys: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page: KVNamespaceListResult<unknown, string> = await ns.list({ prefix, cursor });
        keys.push(...page.keys.map((k) => k.name));
        if (page.list_complete) return keys;
        cursor = page.cursor;
      }
    },
  };
}
