// Request ids and the access log. Every response carries X-Request-Id, a fresh UUID that a
// partner quotes when reporting a failure. It is always the service's own: a caller's id could
// be a study UID or an accession number, which must not reach the log. Where the runtime asks
// for it, each request also leaves one JSON line: who (tenant, key) did what (method, route,
// collection), how it ended (status) and how long it took. That is the trail an IT team audits
// and alerts on. Only the route's pattern is logged, never the path itself (item ids may be
// accession numbers), nor the query string, a header or the body: those carry codes, metadata
// and secrets.
import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { CollectionName } from './schemas.ts';

export const REQUEST_ID_HEADER = 'X-Request-Id';
export const ACCESS_LOG_ENV = 'MEDHASH_ACCESS_LOG';

/** Receives each access-log line (one JSON object, no newline). */
export type AccessLogSink = (line: string) => void;

export interface AccessLogLine {
  time: string;
  request_id: string;
  method: string;
  /** The route as registered, e.g. `/v1/collections/:collection/search`; `/*` or `/v1/*` when none matched. */
  route: string;
  collection: string | null;
  status: number;
  ms: number;
  tenant_id: string | null;
  key_id: string | null;
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}

/** `MEDHASH_ACCESS_LOG`: `on` (the default) writes each line to `write`; `off` keeps none. */
export function accessLogFromEnv(value: string | undefined, write: AccessLogSink): AccessLogSink | undefined {
  if (value === undefined || value === '' || value === 'on') return write;
  if (value === 'off') return undefined;
  throw new Error(`${ACCESS_LOG_ENV} must be "on" or "off", got ${JSON.stringify(value)}`);
}

export function requestLog(sink: AccessLogSink | undefined): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const id = crypto.randomUUID();
    c.set('requestId', id);
    await next();
    c.header(REQUEST_ID_HEADER, id);
    if (sink) sink(JSON.stringify(accessLine(c, id, started)));
  };
}

function accessLine(c: Context, id: string, started: number): AccessLogLine {
  // The last route the path matched is its handler, even when a middleware answered first (a
  // 413 from the body limit); with none, it is a middleware's pattern such as `/v1/*`.
  const route = routePath(c, -1);
  const key = c.get('principal')?.key;
  return {
    time: new Date().toISOString(),
    request_id: id,
    method: c.req.method,
    route,
    collection: collectionOf(route, c.req.path),
    status: c.res.status,
    ms: Math.round((performance.now() - started) * 100) / 100,
    tenant_id: key?.tenant_id ?? null,
    key_id: key?.id ?? null,
  };
}

/**
 * The path segment where the route has `:collection`, if it is a valid collection name (names
 * are plain by rule; anything else in that place, such as a caller's mistake, is not logged).
 */
function collectionOf(route: string, path: string): string | null {
  const at = route.split('/').indexOf(':collection');
  const seg = at < 0 ? undefined : path.split('/')[at];
  return seg !== undefined && CollectionName.safeParse(seg).success ? seg : null;
}
