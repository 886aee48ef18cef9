// The control plane: tenants, API keys (hashes only) and the collection registry, in the
// strongly consistent store. Written once over SqlDb; Node runs it on node:sqlite in-process,
// Workers inside the control Durable Object. Methods are async so both are called the same way.
import type { Bits } from '../../wasm/hamming.ts';
import type { Scope } from '../auth/keys.ts';
import type { SqlDb } from '../store/sql.ts';
import { conflict, MedhashError, notFound, quote } from '../util/errors.ts';
import { randomId } from '../util/bytes.ts';

/**
 * Collections one tenant may hold. A page of the list reads the tenant's rows after its cursor (a
 * limited key's are picked from them), and every tenant's registry shares one store (on Workers one
 * Durable Object, which also checks every key): a tenant creating collections without end would
 * grow both for everyone.
 */
export const MAX_COLLECTIONS = 1000;

/** The prefix of each kind of id (randomId): a page cursor in a request is checked against it. */
export const ID_PREFIX = { tenant: 'tn', key: 'key', collection: 'col' } as const;

export interface Tenant {
  id: string;
  name: string;
  created_at: string;
}

export interface ApiKeyInfo {
  id: string;
  tenant_id: string;
  name: string | null;
  scopes: Scope[];
  /** Collection names the key is limited to; null: every collection of its tenant. */
  collections: string[] | null;
  created_at: string;
  rotated_at: string | null;
  revoked_at: string | null;
}

export interface KeySpec {
  name?: string;
  scopes: Scope[];
  collections?: string[];
}

export interface CollectionInfo {
  id: string;
  tenant_id: string;
  name: string;
  bits: Bits;
  descriptor_dims: number;
  model_id: string | null;
  created_at: string;
}

export interface CollectionSpecInput {
  name: string;
  bits: Bits;
  descriptor_dims: number;
  model_id?: string;
}

/**
 * One page of a list in key order (operator lists by id, collections by name): at most `limit`
 * rows after the cursor. `next_after`: the cursor of the next page (this page's last key), null
 * when no row follows it. A key never changes, so a row written between two pages never moves
 * another across the cursor.
 */
export interface Page<T> {
  items: T[];
  next_after: string | null;
}

/** An authenticated key, and the collection the request names when it exists in the key's tenant. */
export interface Principal {
  key: ApiKeyInfo;
  collection: CollectionInfo | null;
}

interface KeyRow {
  id: string;
  tenant_id: string;
  name: string | null;
  scopes: string;
  collections: string | null;
  created_at: string;
  rotated_at: string | null;
  revoked_at: string | null;
}

const KEY_COLUMNS = 'id, tenant_id, name, scopes, collections, created_at, rotated_at, revoked_at';
const COLLECTION_COLUMNS = 'id, tenant_id, name, bits, descriptor_dims, model_id, created_at';

const keyInfo = (r: KeyRow): ApiKeyInfo => ({
  id: r.id,
  tenant_id: r.tenant_id,
  name: r.name,
  scopes: JSON.parse(r.scopes),
  collections: r.collections === null ? null : JSON.parse(r.collections),
  created_at: r.created_at,
  rotated_at: r.rotated_at,
  revoked_at: r.revoked_at,
});

// node:sqlite rows have a null prototype: copy into plain objects before they leave the store.
const collectionInfo = (r: CollectionInfo): CollectionInfo => ({ ...r });

export function migrateControl(db: SqlDb): void {
  db.exec(`CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)`);
  db.exec(`CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants (id), name TEXT,
    hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, collections TEXT,
    created_at TEXT NOT NULL, rotated_at TEXT, revoked_at TEXT)`);
  // A tenant's keys are listed in pages by id (listKeys): this index serves the range and its
  // order. It replaces the one on tenant_id alone, which it covers.
  db.exec('DROP INDEX IF EXISTS api_keys_tenant');
  db.exec('CREATE INDEX IF NOT EXISTS api_keys_tenant_id ON api_keys (tenant_id, id)');
  db.exec(`CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants (id), name TEXT NOT NULL,
    bits INTEGER NOT NULL, descriptor_dims INTEGER NOT NULL, model_id TEXT, created_at TEXT NOT NULL,
    UNIQUE (tenant_id, name))`);
}

export class ControlStore {
  constructor(private readonly db: SqlDb) {
    migrateControl(db);
  }

  async createTenant(name: string): Promise<Tenant> {
    const t: Tenant = { id: randomId(ID_PREFIX.tenant), name, created_at: now() };
    const { changes } = this.db.run('INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING', t.id, t.name, t.created_at);
    if (changes === 0) throw conflict('tenant_exists', `a tenant named ${JSON.stringify(name)} already exists`);
    return t;
  }

  async listTenants(limit: number, after?: string): Promise<Page<Tenant>> {
    const rows = this.db.all<Tenant>('SELECT id, name, created_at FROM tenants WHERE id > ? ORDER BY id LIMIT ?', after ?? '', limit + 1);
    return page(rows.map((t) => ({ ...t })), limit, (t) => t.id);
  }

  async getTenant(tenantId: string): Promise<Tenant> {
    const rows = this.db.all<Tenant>('SELECT id, name, created_at FROM tenants WHERE id = ?', tenantId);
    if (rows.length === 0) throw notFound('tenant', tenantId);
    return { ...rows[0] };
  }

  async createKey(tenantId: string, spec: KeySpec, hash: string): Promise<ApiKeyInfo> {
    const row: KeyRow = {
      id: randomId(ID_PREFIX.key),
      tenant_id: tenantId,
      name: spec.name ?? null,
      scopes: JSON.stringify([...new Set(spec.scopes)].sort()),
      collections: spec.collections ? JSON.stringify([...new Set(spec.collections)].sort()) : null,
      created_at: now(),
      rotated_at: null,
      revoked_at: null,
    };
    // The tenant check and the insert form one transaction.
    return this.db.transaction(() => {
      this.requireTenant(tenantId);
      this.db.run(
        `INSERT INTO api_keys (${KEY_COLUMNS}, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        row.id, row.tenant_id, row.name, row.scopes, row.collections, row.created_at, null, null, hash,
      );
      return keyInfo(row);
    });
  }

  async listKeys(tenantId: string, limit: number, after?: string): Promise<Page<ApiKeyInfo>> {
    this.requireTenant(tenantId);
    const rows = this.db.all<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?`, tenantId, after ?? '', limit + 1);
    return page(rows.map(keyInfo), limit, (k) => k.id);
  }

  /** Idempotent: revoking a revoked key keeps its first revocation time. */
  async revokeKey(keyId: string): Promise<ApiKeyInfo> {
    this.db.run('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', now(), keyId);
    return this.requireKey(keyId);
  }

  /** Replaces the secret of a live key in place (same id, scopes, limits); the old secret stops working at once. */
  async rotateKey(keyId: string, newHash: string): Promise<ApiKeyInfo> {
    // One transaction, so a concurrent revoke cannot be undone by a rotation that read the key before it.
    return this.db.transaction(() => {
      const key = this.requireKey(keyId);
      if (key.revoked_at) throw conflict('key_revoked', `key ${keyId} is revoked and cannot be rotated`);
      this.db.run('UPDATE api_keys SET hash = ?, rotated_at = ? WHERE id = ?', newHash, now(), keyId);
      return this.requireKey(keyId);
    });
  }

  /** One round trip per request: the live key of `hash` and, if named, its tenant's collection. */
  async authenticate(hash: string, collection?: string): Promise<Principal | null> {
    const rows = this.db.all<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL`, hash);
    if (rows.length === 0) return null;
    const key = keyInfo(rows[0]);
    return { key, collection: collection === undefined ? null : await this.getCollection(key.tenant_id, collection) };
  }

  async createCollection(tenantId: string, spec: CollectionSpecInput): Promise<CollectionInfo> {
    const c: CollectionInfo = {
      id: randomId(ID_PREFIX.collection),
      tenant_id: tenantId,
      name: spec.name,
      bits: spec.bits,
      descriptor_dims: spec.descriptor_dims,
      model_id: spec.model_id ?? null,
      created_at: now(),
    };
    // One transaction: two creations at once cannot both take the last place.
    return this.db.transaction(() => {
      if (this.db.all('SELECT 1 FROM collections WHERE tenant_id = ? AND name = ?', tenantId, spec.name).length > 0) {
        throw conflict('collection_exists', `collection ${JSON.stringify(spec.name)} already exists`);
      }
      const [{ n }] = this.db.all<{ n: number }>('SELECT count(*) AS n FROM collections WHERE tenant_id = ?', tenantId);
      if (n >= MAX_COLLECTIONS) {
        throw conflict('too_many_collections', `a tenant holds at most ${MAX_COLLECTIONS} collections and this one holds ${n}: delete one first`);
      }
      this.db.run(
        `INSERT INTO collections (${COLLECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`,
        c.id, c.tenant_id, c.name, c.bits, c.descriptor_dims, c.model_id, c.created_at,
      );
      return c;
    });
  }

  /** One page of the tenant's collections by name, restricted to `names` when the key is limited. */
  async listCollections(tenantId: string, names: string[] | null, limit: number, after?: string): Promise<Page<CollectionInfo>> {
    // a limited key names at most 100 collections: filtering after the query reads at most the tenant's 1000 rows
    const rows = this.db.all<CollectionInfo>(`SELECT ${COLLECTION_COLUMNS} FROM collections WHERE tenant_id = ? AND name > ? ORDER BY name`, tenantId, after ?? '');
    const visible = names === null ? rows : rows.filter((c) => names.includes(c.name));
    return page(visible.slice(0, limit + 1).map(collectionInfo), limit, (c) => c.name);
  }

  /** The id and spec of every collection in the registry, of all tenants (the orphan sweep, store/orphans.ts). */
  async collectionSpecs(): Promise<Pick<CollectionInfo, 'id' | 'bits' | 'descriptor_dims'>[]> {
    return this.db.all<Pick<CollectionInfo, 'id' | 'bits' | 'descriptor_dims'>>('SELECT id, bits, descriptor_dims FROM collections ORDER BY id').map((r) => ({ ...r }));
  }

  async getCollection(tenantId: string, name: string): Promise<CollectionInfo | null> {
    const rows = this.db.all<CollectionInfo>(`SELECT ${COLLECTION_COLUMNS} FROM collections WHERE tenant_id = ? AND name = ?`, tenantId, name);
    return rows.length ? collectionInfo(rows[0]) : null;
  }

  /** Removes the registry row of that very collection (by id: the name may have been deleted and taken again meanwhile). */
  async deleteCollection(col: Pick<CollectionInfo, 'tenant_id' | 'id' | 'name'>): Promise<void> {
    this.db.transaction(() => {
      if (this.db.all('SELECT 1 FROM collections WHERE tenant_id = ? AND id = ?', col.tenant_id, col.id).length === 0) throw notFound('collection', col.name);
      this.db.run('DELETE FROM collections WHERE id = ?', col.id);
    });
  }

  private requireTenant(tenantId: string): void {
    if (this.db.all('SELECT 1 FROM tenants WHERE id = ?', tenantId).length === 0) throw notFound('tenant', tenantId);
  }

  private requireKey(keyId: string): ApiKeyInfo {
    const rows = this.db.all<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = ?`, keyId);
    if (rows.length === 0) throw new MedhashError(404, 'key_not_found', `key ${quote(keyId)} not found`);
    return keyInfo(rows[0]);
  }
}

/** What the API calls: the control store itself on Node, an RPC proxy to its Durable Object on Workers. */
export type ControlPlane = Pick<ControlStore, keyof ControlStore>;

const now = (): string => new Date().toISOString();

/** A page from up to `limit + 1` rows in key order: the one past `limit` only says that more follow. */
function page<T>(rows: T[], limit: number, key: (row: T) => string): Page<T> {
  const items = rows.slice(0, limit);
  return { items, next_after: rows.length > limit ? key(items[items.length - 1]) : null };
}
