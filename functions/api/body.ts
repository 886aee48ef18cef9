// What one request body may cost: the limit of every /v1 request, by its declared size before the
// key (declaredBodyLimit), then, for the route that reads it and before anything parses it, the
// route's body limit and the shape and encoding of a JSON body (util/json-budget.ts).
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { routeKey, type RouteCheck } from '../auth/guard.ts';
import { MedhashError } from '../util/errors.ts';
import { checkJsonBody, type JsonBudget } from '../util/json-budget.ts';

/**
 * 413 for a body whose Content-Length is over `maxSize`, unread, before the key is looked up. A
 * body sent without one is left for the route's own limit to cut off as it reads it, after the
 * key (routeBody; no route's is over `maxSize`, bodyLimits): read here, as hono's bodyLimit reads
 * it, a caller without a key had the server buffer up to `maxSize` bytes, and got a 413 for its 401.
 */
export function declaredBodyLimit(maxSize: number): MiddlewareHandler {
  return async (c, next) => {
    const length = c.req.header('content-length');
    // beside Transfer-Encoding, Content-Length says nothing of the body (RFC 9112, 6.3)
    if (length !== undefined && c.req.header('transfer-encoding') === undefined && Number(length) > maxSize) {
      throw new MedhashError(413, 'body_too_large', `request body exceeds ${maxSize} bytes`);
    }
    await next();
  };
}

/** The OpenAPI extension by which a route states a body limit other than DEFAULT_BODY_BYTES. */
export const MAX_BODY_EXTENSION = 'x-max-body-bytes';

/** Spread into a createRoute whose body may be larger than DEFAULT_BODY_BYTES (an ingest batch, an image). */
export const maxBody = (bytes: number) => ({ [MAX_BODY_EXTENSION]: bytes }) as const;

/**
 * `METHOD /path/:param` → the body limit of each route that takes a body: the bytes it states
 * (MAX_BODY_EXTENSION, at most `max`, the limit of every /v1 request), else `fallback`. Read from
 * the app's OpenAPI registry once all routes are registered; a route without a body reads none,
 * so it has no limit to check.
 */
export function bodyLimits(
  definitions: readonly { type: string; route?: { method: string; path: string; request?: { body?: unknown }; [MAX_BODY_EXTENSION]?: unknown } }[],
  fallback: number,
  max: number,
): Map<string, number> {
  const table = new Map<string, number>();
  for (const d of definitions) {
    if (d.type !== 'route' || !d.route) continue;
    const route = routeKey(d.route.method, d.route.path);
    const stated = d.route[MAX_BODY_EXTENSION];
    if (!d.route.request?.body) {
      if (stated !== undefined) throw new Error(`${route}: ${MAX_BODY_EXTENSION} on a route that takes no body`);
      continue;
    }
    const bytes = stated ?? fallback;
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 1 || bytes > max) throw new Error(`${route}: ${MAX_BODY_EXTENSION} must be an integer in 1..${max}, got ${JSON.stringify(bytes)}`);
    table.set(route, bytes);
  }
  return table;
}

/**
 * The body limit of the route that answers (`limitOf` it, bodyLimits; none for a route that
 * takes no body), then, for a JSON body, its shape against `budget`: run by the guard once the key
 * is checked, before the route's validators parse anything.
 */
export function routeBody(limitOf: (route: string) => number | undefined, budget: JsonBudget): RouteCheck {
  return async (c, route, next) => {
    const maxSize = limitOf(route);
    if (maxSize === undefined) return next();
    await bodyLimit({
      maxSize,
      onError: () => {
        throw new MedhashError(413, 'body_too_large', `request body exceeds ${maxSize} bytes, the most this route takes`);
      },
    })(c, async () => {
      // Bytes, as metering reads them (Hono caches them for the validator and meter()).
      await checkJsonBody(c.req, budget);
      await next();
    });
  };
}
