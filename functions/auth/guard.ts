// Request authorisation. 401: no key, an unknown or a revoked key. 403: a valid key without
// the needed scope or collection, or the operator key used where a tenant key belongs (and
// vice versa). 404: the collection is not in the key's tenant, whether or not another tenant
// has one of that name, so tenants never learn about each other.
import type { Context } from 'hono';
import type { Backend } from '../api/backend.ts';
import type { CollectionInfo, Principal } from '../control/store.ts';
import { MedhashError, notFound } from '../util/errors.ts';
import { timingSafeEqualStr } from '../util/bytes.ts';
import { bearerToken, hashSecret, type Scope } from './keys.ts';

declare module 'hono' {
  interface ContextVariableMap {
    /** The authenticated tenant key of this request (billing/meter.ts bills its tenant). */
    principal: Principal;
  }
}

/**
 * The operator key rules every tenant's keys and any request may guess at it, unthrottled: a
 * shorter one (a typed password) leaves the admin API disabled rather than guessable.
 */
export const MIN_OPERATOR_KEY_LENGTH = 32;

const operatorHashes = new Map<string, Promise<string>>();

async function isOperator(backend: Backend, hash: string): Promise<boolean> {
  const key = backend.operatorKey;
  if (!key || key.length < MIN_OPERATOR_KEY_LENGTH) return false;
  let h = operatorHashes.get(key);
  if (!h) operatorHashes.set(key, (h = hashSecret(key)));
  return timingSafeEqualStr(hash, await h);
}

async function presentedHash(c: Context): Promise<string> {
  const token = bearerToken(c.req.header('authorization'));
  if (!token) throw new MedhashError(401, 'missing_key', 'an API key is required: Authorization: Bearer <key>');
  return hashSecret(token);
}

export async function requireOperator(c: Context, backend: Backend): Promise<void> {
  if (!backend.operatorKey) throw new MedhashError(503, 'admin_disabled', 'the admin API is disabled: MEDHASH_OPERATOR_KEY is not set');
  if (backend.operatorKey.length < MIN_OPERATOR_KEY_LENGTH) {
    throw new MedhashError(503, 'admin_disabled', `the admin API is disabled: MEDHASH_OPERATOR_KEY is shorter than ${MIN_OPERATOR_KEY_LENGTH} characters (e.g. openssl rand -hex 32)`);
  }
  const hash = await presentedHash(c);
  if (await isOperator(backend, hash)) return;
  const tenantKey = await backend.control.authenticate(hash);
  if (tenantKey) {
    // Only for the access log: a tenant key trying the admin API is what an audit looks for.
    c.set('principal', tenantKey);
    throw new MedhashError(403, 'operator_only', 'the admin API takes the operator key, not a tenant key');
  }
  throw new MedhashError(401, 'invalid_key', 'unknown or revoked API key');
}

/**
 * Authenticates a tenant key holding `scope`; with `collection`, also checks the key may use
 * that collection name and resolves it within the key's tenant (null when it does not exist).
 */
export async function requireTenant(c: Context, backend: Backend, scope: Scope | null, collection?: string): Promise<Principal> {
  const hash = await presentedHash(c);
  const principal = await backend.control.authenticate(hash, collection);
  if (!principal) {
    if (await isOperator(backend, hash)) {
      throw new MedhashError(403, 'tenant_only', 'the operator key manages tenants and keys; use a tenant key for collections');
    }
    throw new MedhashError(401, 'invalid_key', 'unknown or revoked API key');
  }
  // Set before the scope and collection checks, so that the access log names the key of a 403
  // too (routes meter and audit only after these checks pass).
  c.set('principal', principal);
  const { key } = principal;
  if (scope && !key.scopes.includes(scope)) throw new MedhashError(403, 'missing_scope', `this key lacks the "${scope}" scope`);
  if (collection !== undefined && key.collections && !key.collections.includes(collection)) {
    throw new MedhashError(403, 'collection_forbidden', `this key is not allowed to use collection ${JSON.stringify(collection)}`);
  }
  return principal;
}

/** requireTenant for a collection that must exist. */
export async function requireCollection(c: Context, backend: Backend, scope: Scope | null, name: string): Promise<CollectionInfo> {
  const { collection } = await requireTenant(c, backend, scope, name);
  if (!collection) throw notFound('collection', name);
  return collection;
}
