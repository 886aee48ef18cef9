// What one request body may cost the route that reads it, before anything parses it: the route's
// body limit (the limit of every /v1 request, checked before the key, is limitBody in errors.ts)
// and the shape of a JSON body.
// JSON.parse builds every object, array and value a body holds: 8 MiB of `{},{},...` is 2.8 million
// objects, well over 100 MB of heap (a Worker has 128 MB) for a request that then fails validation.
import { bodyLimit } from 'hono/body-limit';
import { routeKey, type RouteCheck } from '../auth/guard.ts';
import { MedhashError } from '../util/errors.ts';
import { mediaType } from '../util/media-type.ts';

/** The OpenAPI extension by which a route states a body limit other than DEFAULT_BODY_BYTES. */
export const MAX_BODY_EXTENSION = 'x-max-body-bytes';

/** Spread into a createRoute whose body may be larger than DEFAULT_BODY_BYTES (an ingest batch, an image). */
export const maxBody = (bytes: number) => ({ [MAX_BODY_EXTENSION]: bytes }) as const;

export interface JsonBudget {
  /** Objects and arrays. */
  containers: number;
  /** Strings, numbers, literals, objects and arrays, object keys included. */
  values: number;
}

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
      if (c.req.raw.body && mediaType(c.req.header('content-type')) === 'application/json') {
        // Bytes, as metering reads them (Hono caches them for the validator and meter()).
        const over = overBudget(new Uint8Array(await c.req.arrayBuffer()), budget);
        if (over) {
          throw new MedhashError(413, 'json_too_complex', `a JSON body holds at most ${budget.containers} objects and arrays and ${budget.values} values (object keys included); this one holds more ${over}`);
        }
      }
      await next();
    });
  };
}

const QUOTE = 0x22, BACKSLASH = 0x5c, OPEN_OBJECT = 0x7b, OPEN_ARRAY = 0x5b, CLOSE_OBJECT = 0x7d, CLOSE_ARRAY = 0x5d, COMMA = 0x2c, COLON = 0x3a;

/**
 * Which part of `budget` the JSON text `bytes` exceeds ('objects and arrays' or 'values'), or
 * null. A value starts at the first byte after `[`, `{`, `,`, `:` or the start that is not
 * white space or a closing bracket; string contents are skipped (no structural byte occurs
 * inside a UTF-8 sequence). The text need not be valid: JSON.parse judges that afterwards.
 */
export function overBudget(bytes: Uint8Array, budget: JsonBudget): string | null {
  let containers = 0, values = 0;
  let expectValue = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
    if (b === COMMA || b === COLON || b === OPEN_OBJECT || b === OPEN_ARRAY) {
      if (b === OPEN_OBJECT || b === OPEN_ARRAY) {
        if (expectValue && ++values > budget.values) return 'values';
        if (++containers > budget.containers) return 'objects and arrays';
      }
      expectValue = true;
      continue;
    }
    if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
      expectValue = false;
      continue;
    }
    if (expectValue && ++values > budget.values) return 'values';
    expectValue = false;
    if (b === QUOTE) {
      for (i++; i < bytes.length && bytes[i] !== QUOTE; i++) if (bytes[i] === BACKSLASH) i++;
    }
  }
  return null;
}
