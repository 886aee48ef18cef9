// Every failure leaves as `{"error":{"code","message","field"}}`: MedhashErrors as thrown,
// zod validation failures reduced to their first issue with the offending field named,
// framework errors (bad JSON, wrong content type) translated, anything else a logged 500.
// An idempotent replay also ends the handler early, and leaves as the stored response.
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { UnofficialStatusCode } from 'hono/utils/http-status';
import { routePath } from 'hono/route';
import type { ZodError, ZodIssue } from 'zod';
import { IdempotentReplay } from '../billing/meter.ts';
import { ShardFormatError } from '../shards/codec.ts';
import { ManifestFormatError } from '../shards/manifest.ts';
import { MedhashError, badRequest, clip, printable, quote } from '../util/errors.ts';
import { mediaType } from '../util/media-type.ts';

export function errorResponse(c: Context, e: MedhashError): Response {
  if (e.status === 401) c.header('WWW-Authenticate', 'Bearer realm="medhash"');
  for (const [name, value] of Object.entries(e.headers ?? {})) c.header(name, value);
  return c.json(e.toBody(), e.status);
}

/**
 * A path segment or query parameter that is not valid percent-encoded UTF-8 is a 400: hono would
 * pass it on undecoded, so `/items/%E0%A4%A` would read the item whose id is literally `%E0%A4%A`,
 * and `?exclude_patient_ref=%E9` (Latin-1) exclude the patient `%E9`, i.e. no one. The field is
 * the parameter of `route` (`METHOD /path/:param`, the one that answers) at that place, or the
 * query parameter's name.
 */
export function checkUrlEncoding(c: Context, route: string): void {
  // nearly every request has no escape at all: no URL parsed for it
  if (!c.req.url.includes('%')) return;
  const url = new URL(c.req.url);
  const segments = url.pathname.split('/');
  const bad = segments.findIndex((s) => decoded(s) === undefined);
  if (bad >= 0) {
    const param = route.slice(route.indexOf(' ') + 1).split('/')[bad];
    throw badRequest('invalid_path', `path segment ${quote(segments[bad])} is not valid percent-encoded UTF-8`, param?.startsWith(':') ? param.slice(1) : undefined);
  }
  for (const pair of url.search.slice(1).split('&')) {
    // as hono reads a query string: "+" is a space, the name ends at the first "="
    const [name, value = ''] = pair.replace(/\+/g, ' ').split(/=(.*)/s);
    if (decoded(name) !== undefined && decoded(value) !== undefined) continue;
    const field = decoded(name) ?? name;
    throw badRequest('invalid_field', `query parameter ${quote(field)} is not valid percent-encoded UTF-8: ${quote(pair)}`, clip(field));
  }
}

function decoded(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** What the access log records for a request whose client went away before its answer. */
export const CLIENT_CLOSED_REQUEST = 499;

/**
 * One line in the service's log about what went wrong with a request. Logged as the access log
 * logs (the route's pattern: no ids from the path, no headers, no body), with the request id that
 * ties the line to it and to what the caller saw. One line whatever `what` holds: a line break in
 * it (from a DICOM string, a driver) would start what reads as another log line.
 */
export function logFailure(c: Context, what: string): void {
  console.error(`[${c.get('requestId')}] ${c.req.method} ${routePath(c, -1)}: ${printable(what)}`);
}

export function onError(err: Error, c: Context): Response {
  if (err instanceof MedhashError) return errorResponse(c, err);
  if (err instanceof IdempotentReplay) return err.response();
  if (err instanceof HTTPException) {
    if (err.status === 415) {
      return errorResponse(c, new MedhashError(415, 'unsupported_media_type', `Content-Type must be application/json, got ${quote(c.req.header('content-type') ?? '')}`));
    }
    if (err.status === 400) return errorResponse(c, badRequest('invalid_json', 'request body is not valid JSON'));
    return errorResponse(c, new MedhashError(err.status as 500, 'http_error', err.message));
  }
  // The client hung up mid-body: reading the body failed with Node's "aborted" (ECONNRESET),
  // nobody reads the answer, and it is no fault of ours to log. The access log's line says 499,
  // nginx's "client closed request", not a 500 an operator chases. Any other error of a request
  // whose client is gone is still a fault, logged as below.
  if (c.req.raw.signal.aborted && (err as { code?: unknown }).code === 'ECONNRESET') return c.body(null, CLIENT_CLOSED_REQUEST as UnofficialStatusCode);
  logFailure(c, `${err.name}: ${err.message}`);
  if (err instanceof ShardFormatError || err instanceof ManifestFormatError) {
    return errorResponse(c, new MedhashError(500, 'corrupt_index', 'the stored index failed verification; the operator has been told'));
  }
  return errorResponse(c, new MedhashError(500, 'internal', 'internal error'));
}

export function notFoundRoute(c: Context): Response {
  return errorResponse(c, new MedhashError(404, 'route_not_found', `no route ${c.req.method} ${quote(new URL(c.req.url).pathname)}`));
}

/** The most unknown fields a 400 names (it says how many more there are). */
const MAX_NAMED_FIELDS = 10;

/** zod-openapi's validation hook: the first issue becomes the error, with its field path. */
export function validationError(error: ZodError, target: string, input: unknown): MedhashError {
  const issue = unionBranch(error.issues[0]);
  const path = issue.path.map(String).join('.');
  // Messages written as "<field> must ..." get the full path ("items.3.id must ..."); zod's own
  // messages get it as a prefix.
  const last = issue.path.length ? String(issue.path[issue.path.length - 1]) : '';
  const message = last && issue.message.startsWith(`${last} `) ? path + issue.message.slice(last.length) : `${path || 'body'}: ${issue.message}`;
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys;
    const field = [path, clip(keys[0])].filter(Boolean).join('.');
    // the names are the caller's: a few, each cut short, however many and long they are
    const named = keys.slice(0, MAX_NAMED_FIELDS).map(quote).join(', ') + (keys.length > MAX_NAMED_FIELDS ? ` and ${keys.length - MAX_NAMED_FIELDS} more` : '');
    return badRequest('unknown_field', `unknown field${keys.length > 1 ? 's' : ''} ${named}${path ? ` in ${path}` : ''}`, field);
  }
  const value = valueAt(input, issue.path);
  // A schema's own message ("bits must be one of ...") replaces zod's "received undefined": the input tells.
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_value') && value === undefined) {
    return badRequest('missing_field', `${path || 'body'} is required`, path || undefined);
  }
  // A repeated query parameter arrives as the list of its values, which a one-value schema
  // refuses as of the wrong type; a filter takes the list, and its issues are its values'.
  if (target === 'query' && Array.isArray(value) && (issue.code === 'invalid_type' || issue.code === 'invalid_value')) {
    return badRequest('repeated_parameter', `${path} is given ${value.length === 2 ? 'twice' : `${value.length} times`}; give it once`, path);
  }
  if (issue.code === 'too_big' && path === 'items') return new MedhashError(413, 'batch_too_large', issue.message, path);
  if (target === 'param') return badRequest('invalid_path', message, path);
  return badRequest('invalid_field', message, path || undefined);
}

/**
 * Of a union's issue, the issue of the one option whose type the input has, where there is one:
 * a filter of 101 strings is told that it names too many values, not that it must be a string or
 * an array of strings.
 */
function unionBranch(issue: ZodIssue): ZodIssue {
  if (issue.code !== 'invalid_union') return issue;
  const typed = issue.errors.filter((issues) => !issues.some((i) => i.code === 'invalid_type' && i.path.length === 0));
  if (typed.length !== 1 || typed[0].length === 0) return issue;
  const inner = typed[0][0];
  return unionBranch({ ...inner, path: [...issue.path, ...inner.path] } as ZodIssue);
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  return path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' && Object.hasOwn(v, k) ? (v as Record<PropertyKey, unknown>)[k] : undefined), input);
}

/**
 * Marks every answer `nosniff`: each declares its type (JSON, CSV, HTML, JavaScript, WebAssembly,
 * bytes), and a browser must not guess another, such as HTML from a JSON error that quotes a
 * caller's input. For the edge API and the inference backend alike.
 */
export function nosniff(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    c.header('X-Content-Type-Options', 'nosniff');
  };
}

/** Refuses a body over `maxSize` bytes with 413 before any handler reads it. */
export function limitBody(maxSize: number): MiddlewareHandler {
  return bodyLimit({
    maxSize,
    onError: () => {
      throw new MedhashError(413, 'body_too_large', `request body exceeds ${maxSize} bytes`);
    },
  });
}

/**
 * zod-openapi's JSON check refuses Content-Types RFC 9110 allows ("application/json;",
 * "application/json ; charset=utf-8"): a JSON body's header is reduced to its media type first.
 */
export function jsonMediaType(): MiddlewareHandler {
  return async (c, next) => {
    const header = c.req.header('content-type');
    if (header !== undefined && header !== 'application/json' && mediaType(header) === 'application/json') {
      const headers = new Headers(c.req.raw.headers);
      headers.set('content-type', 'application/json');
      // as hono's bodyLimit replaces the request: the body goes along unread
      c.req.raw = new Request(c.req.raw, { headers });
    }
    await next();
  };
}
