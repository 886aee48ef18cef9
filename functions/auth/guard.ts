// Request authorisation. 401: no key, an unknown or a revoked key. 403: a valid key without
// the needed scope or collection, or the operator key used where a tenant key belongs (and
// vice versa). 404: the collection is not in the key's tenant, whether or not another tenant
// has one of that name, so tenants never learn about each other.
//
// One middleware on /v1/* (`guard`) does it for every route, before the route's validators
// read the path, query, headers or body: a caller without a valid key learns nothing of what a
// route takes, and a request's status never depends on which of the checks happened to run
// first (docs/API.md, "Order of checks"). What a route needs of the key is its OpenAPI
// `security` (`operatorKey`, `tenantKey(...)`, and `wholeTenant` beside it): the document
// states what is enforced. Once a request is authorised, the guard also refuses a malformed
// Idempotency-Key (billing/meter.ts): any /v1 request may carry one, so its 400 is the same on
// every route, after the 401/403 and before the route reads anything.
import type { Context, MiddlewareHandler, Next } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { Backend } from '../api/backend.ts';
import { idempotencyKey } from '../billing/meter.ts';
import type { ApiKeyInfo, CollectionInfo, Principal } from '../control/store.ts';
import { MedhashError, notFound, quote } from '../util/errors.ts';
import { timingSafeEqualStr } from '../util/bytes.ts';
import { bearerToken, hashSecret, SCOPES, type Scope } from './keys.ts';

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

/** The OpenAPI security schemes: a tenant key (its scopes as the requirement's list) and the operator key. */
export const TENANT_SCHEME = 'bearer';
export const OPERATOR_SCHEME = 'operator';

/** An OpenAPI security requirement list: any one of its requirements is enough. */
export type Security = Record<string, string[]>[];

/** A route of the admin API: the operator key. */
export const operatorKey: Security = [{ [OPERATOR_SCHEME]: [] }];

/** A tenant route: a tenant key holding any one of `anyOf` (no scope named: any tenant key). */
export function tenantKey(...anyOf: Scope[]): Security {
  return anyOf.length === 0 ? [{ [TENANT_SCHEME]: [] }] : anyOf.map((scope) => ({ [TENANT_SCHEME]: [scope] }));
}

/**
 * The OpenAPI extension of a tenant route whose answer is about the whole tenant (usage): a key
 * limited to some collections, whose limit it would cross, is refused (403 collection_limited).
 * Stated in the document and checked here, not by route middleware (which runs after the guard),
 * so that this 403 too comes before the Idempotency-Key's 400.
 */
export const WHOLE_TENANT = 'x-whole-tenant';

/** Spread into such a route's createRoute, beside its `security`. */
export const wholeTenant = { [WHOLE_TENANT]: true } as const;

/**
 * What a route needs of the key: the operator key, or a tenant key holding all the scopes of any
 * one list (with `wholeTenant`, one not limited to collections).
 */
type Access = { operator: true } | { operator: false; anyOf: Scope[][]; wholeTenant: boolean };

/** A route as the guard names it, `METHOD /path/:param` (Hono's form), from the OpenAPI method and `/path/{param}`. */
export function routeKey(method: string, path: string): string {
  return `${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`;
}

/** `METHOD /path/:param` → what the route needs of the key, from the routes' declared security. */
export type AccessTable = Map<string, Access>;

/**
 * Reads every route's security from the app's OpenAPI registry, once all routes are registered.
 * Throws for a /v1 route that declares none or one this guard cannot enforce, so that such a
 * route fails the app's start instead of answering without a check.
 */
export function accessTable(definitions: readonly { type: string; route?: { method: string; path: string; security?: Security; [WHOLE_TENANT]?: unknown } }[]): AccessTable {
  const table: AccessTable = new Map();
  for (const d of definitions) {
    if (d.type !== 'route' || !d.route) continue;
    const { method, path, security } = d.route;
    const route = routeKey(method, path);
    if (path.startsWith('/v1/')) table.set(route, access(route, security, d.route[WHOLE_TENANT]));
    // the guard runs on /v1/* alone: a requirement elsewhere would be stated and not enforced
    else if (security?.length || d.route[WHOLE_TENANT] !== undefined) throw new Error(`${route}: security is enforced on /v1 routes only`);
  }
  return table;
}

function access(route: string, security: Security | undefined, whole: unknown): Access {
  const schemes = new Set((security ?? []).flatMap((r) => Object.keys(r)));
  if (whole !== undefined && (whole !== true || !schemes.has(TENANT_SCHEME))) throw new Error(`${route}: ${WHOLE_TENANT} is for tenant routes, and true when set; got ${JSON.stringify(whole)}`);
  if (security?.length && schemes.size === 1) {
    if (schemes.has(OPERATOR_SCHEME) && security.every((r) => r[OPERATOR_SCHEME].length === 0)) return { operator: true };
    const anyOf = security.map((r) => r[TENANT_SCHEME]);
    if (schemes.has(TENANT_SCHEME) && anyOf.flat().every((s) => (SCOPES as readonly string[]).includes(s))) return { operator: false, anyOf: anyOf as Scope[][], wholeTenant: whole === true };
  }
  throw new Error(`${route}: security must be operatorKey or tenantKey(...scopes), got ${JSON.stringify(security)}`);
}

/**
 * Authenticates and authorises every /v1 request before the matched route reads anything of
 * it: the key (401), its kind (403 operator_only / tenant_only), its scope (403 missing_scope),
 * for a route with a {collection} in its path the key's collection limit (403
 * collection_forbidden), for a `wholeTenant` route that it has none (403 collection_limited);
 * then the form of an Idempotency-Key (400 invalid_idempotency_key), then `then` (the body's limits). The collection itself is
 * looked up here too (one round trip with the key) but only a route's handler answers 404 for it, after its validators: a malformed name is
 * a 400, not a missing collection. What needs the body (POST /v1/collections' limit on the
 * name it creates) is the route's to check, after its validators.
 */
export function guard(backend: Backend, accessOf: (route: string) => Access | undefined, then: RouteCheck = (_c, _route, next) => next()): MiddlewareHandler {
  return async (c, next) => {
    const after = routesAfter(c);
    // No route has this method and path: the 404 says so with or without a key (the routes are public in /openapi.json).
    if (after.length === 0) return next();
    // A /v1 route outside the OpenAPI registry (app.get, app.all, hide: true) has none: a 500, never an open route.
    const unlisted = after.find((r) => !accessOf(r));
    if (unlisted) throw new Error(`${unlisted} has no access rule: declare its security in createRoute`);
    // The first in registration order answers (Hono runs them in that order): its rule is the one that applies.
    const route = after[0];
    const rule = accessOf(route)!;
    if (rule.operator) await requireOperator(c, backend);
    else await requireTenant(c, backend, rule, pathParam(c, route.slice(route.indexOf(' ') + 1), 'collection'));
    idempotencyKey(c);
    await then(c, route, next);
  };
}

/**
 * What the guard runs once a request is authorised, before the route (`METHOD /path/:param`, the
 * one that answers) reads anything: it may refuse the request, or go on with `next`. Part of the
 * guard because whatever runs after the guard must be a route.
 */
export type RouteCheck = (c: Context, route: string, next: Next) => Promise<void>;

/**
 * The routes that match `c` after the running middleware (the guard), as `METHOD /path/:param`, in
 * the order Hono runs them (the first answers). What runs after the guard is registered after it:
 * the routes (with their validators and middleware), never the app's own /v1/* middleware. Each
 * is listed, a `*` pattern too (app.get('/v1/x/*'), app.all('/v1/*')): a filter on the pattern's
 * shape served those unchecked.
 */
function routesAfter(c: Context): string[] {
  return matchedRoutes(c).slice(c.req.routeIndex + 1).map((r) => `${r.method} ${r.path}`);
}

/**
 * The path segment in the place of `:name` in the route's pattern, decoded as Hono decodes a
 * parameter; undefined when the pattern has none. Read here because a /v1/* middleware does not
 * get the route's parameters, and before any validator: it is the name the key must be allowed,
 * well-formed or not.
 */
function pathParam(c: Context, pattern: string, name: string): string | undefined {
  const at = pattern.split('/').indexOf(`:${name}`);
  const segment = at < 0 ? undefined : c.req.path.split('/')[at];
  if (segment === undefined) return undefined;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

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

async function requireOperator(c: Context, backend: Backend): Promise<void> {
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
 * Authenticates a tenant key holding all the scopes of any one list of `anyOf` (and, for a
 * `wholeTenant` route, not limited to collections); with `collection`, also checks the key may
 * use that collection name and resolves it within the key's tenant (null when it does not exist).
 */
async function requireTenant(c: Context, backend: Backend, { anyOf, wholeTenant }: Extract<Access, { operator: false }>, collection?: string): Promise<Principal> {
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
  if (!anyOf.some((scopes) => scopes.every((scope) => key.scopes.includes(scope)))) {
    const needed = anyOf.map((scopes) => scopes.map((s) => JSON.stringify(s)).join(' and the ')).join(' or the ');
    throw new MedhashError(403, 'missing_scope', `this key lacks the ${needed} scope`);
  }
  // Usage is metered per tenant, not per collection: its totals would tell a key limited to
  // some collections how much the others are used.
  if (wholeTenant && key.collections) {
    throw new MedhashError(403, 'collection_limited', 'usage is counted for the whole tenant, not per collection: read it with a key that is not limited to collections');
  }
  if (collection !== undefined) allowCollection(key, collection);
  return principal;
}

/** 403 unless the key may use the collection of that name (a key limited to some collections). */
export function allowCollection(key: ApiKeyInfo, name: string): void {
  if (key.collections && !key.collections.includes(name)) {
    throw new MedhashError(403, 'collection_forbidden', `this key is not allowed to use collection ${quote(name)}`);
  }
}

/** The tenant key the guard authenticated for this request (any /v1 route outside /v1/admin). */
export function tenantOf(c: Context): Principal {
  const principal = c.get('principal');
  if (!principal) throw new Error('tenantOf() needs the /v1 guard to have authenticated a tenant key');
  return principal;
}

/** The collection the path names, as the guard resolved it in the key's tenant: 404 when there is none. */
export function pathCollection(c: Context): CollectionInfo {
  const { collection } = tenantOf(c);
  if (!collection) throw notFound('collection', c.req.param('collection') ?? '');
  return collection;
}
