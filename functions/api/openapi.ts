// Shared OpenAPI pieces for the route modules: the app type and the documented error answers,
// and the Retry-After their retryable answers declare (declareRetryAfter).
import { OpenAPIHono } from '@hono/zod-openapi';
import { DEFAULT_BODY_BYTES, ErrorSchema, IdempotencyHeaders, MAX_BATCH_ITEMS, MAX_BODY_BYTES, OodRefusalSchema } from './schemas.ts';

const MIB = (bytes: number) => `${bytes / 2 ** 20} MiB`;

export type App = OpenAPIHono;

const ERROR_TEXT: Record<number, string> = {
  400: 'Malformed request (on every /v1 route: a malformed Idempotency-Key header); the message names the problem and `field` the offending field. Checked after the key: without a valid key the answer is 401, with one that may not use the route 403.',
  401: 'No API key, or an unknown or revoked one. Checked before anything else but the body size.',
  402: "The tenant's monthly quota is used up; `error.details` holds the quota, the use and when it renews.",
  403: 'The key lacks the scope or the collection, or is the wrong kind of key. Checked before the request\'s shape (except a collection named in the body).',
  404: 'What the path names does not exist (for a tenant key: in its tenant): a collection, item, tenant, key or model; `error.code` says which.',
  409: 'Conflicts with existing state (or a request with the same Idempotency-Key is still running).',
  413: `Body or batch too large: \`body_too_large\` over ${MIB(MAX_BODY_BYTES)} (a declared Content-Length: before the key is checked) or over the route's own limit (${MIB(DEFAULT_BODY_BYTES)}, or the operation's \`x-max-body-bytes\`); \`json_too_complex\` for a JSON body with more objects and arrays or values than the largest valid batch holds; \`batch_too_large\` over ${MAX_BATCH_ITEMS} items (docs/API.md, Limits).`,
  415: 'Content-Type is not application/json (or, for an image, not an image type the route reads).',
  422: 'The Idempotency-Key was already used for a different request; or (search) the query is out of distribution for the collection\'s model: the body then carries `ood` with the reasons, and `allow_ood: true` gets results anyway; or (an image) it is corrupt (`corrupt_image`), its `frame` is past the last (`frame_out_of_range`), or a DICOM JPEG-LS or JPEG 2000 frame took longer than its deadline to decode (`decode_timeout`: a malformed stream; docs/ENCODING.md, "Decode deadline").',
  429: "Over the tenant's rate limit; Retry-After says when to retry, RateLimit-* describe the limit.",
  503: 'Temporarily unable; retrying is safe. On Workers, any route with a key answers `unavailable` when a Durable Object call fails in the platform (the object overloaded, reset by a deploy, or its connection lost), its Retry-After saying when to retry.',
};

export const json = <T>(schema: T, description: string) => ({ description, content: { 'application/json': { schema } } });

export function errors(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, json(ErrorSchema, ERROR_TEXT[s])]));
}

/** A search route's 422, whose out-of-distribution refusal has `ood` beside `error`: spread beside errors(...). */
export const oodRefusal = { 422: json(OodRefusalSchema, ERROR_TEXT[422]) };

export const jsonBody = <T>(schema: T) => ({ required: true, content: { 'application/json': { schema } } });

/** The response header component that every Retry-After refers to. */
const RETRY_AFTER = 'RetryAfter';

/**
 * Registers the Retry-After header component in `app`'s document and returns the declaration
 * that refers to it, for the `headers` of each response that sends it. Call it once per app: the
 * edge's (declareRetryAfter) and the inference backend's (backend/app.ts).
 */
export function retryAfterHeader(app: App) {
  app.openAPIRegistry.registerComponent('headers', RETRY_AFTER, {
    description: 'Seconds to wait before retrying.',
    schema: { type: 'integer', minimum: 0 },
  });
  return { 'Retry-After': { $ref: `#/components/headers/${RETRY_AFTER}` } };
}

/**
 * Declares Retry-After on every answer that sends it, adding the answer where a route does not
 * list it: the 503 `unavailable` (util/rpc.ts) of every route with a key, which on Workers calls
 * a Durable Object the platform may fail (a tenant key is looked up in one; the admin routes'
 * work is done in them); and the 409 `idempotency_in_progress` and 429 `rate_limited` of every
 * metered route (billing/meter.ts), the routes that take an Idempotency-Key. Done once all routes
 * are registered, so that no route can leave it out.
 */
export function declareRetryAfter(app: App): void {
  const header = retryAfterHeader(app);
  for (const d of app.openAPIRegistry.definitions) {
    if (d.type !== 'route') continue;
    const statuses = [...(d.route.security?.length ? [503] : []), ...(d.route.request?.headers === IdempotencyHeaders ? [409, 429] : [])];
    for (const status of statuses) {
      const response = (d.route.responses[status] ??= errors(status)[status]);
      if ('$ref' in response) throw new Error(`${d.route.method} ${d.route.path}: its ${status} must be declared inline, to carry Retry-After`);
      response.headers = { ...response.headers, ...header };
    }
  }
}

/** The rate-limit state on a metered route's answer (docs/BILLING.md). */
export const rateLimitHeaders = {
  'RateLimit-Limit': { description: "The tenant's burst: metered requests accepted at once.", schema: { type: 'integer' as const } },
  'RateLimit-Remaining': { description: 'Whole tokens left in the bucket.', schema: { type: 'integer' as const } },
  'RateLimit-Reset': { description: 'Seconds until the bucket is full again.', schema: { type: 'integer' as const } },
  'RateLimit-Policy': { description: '`<burst>;w=<seconds to refill from empty>`.', schema: { type: 'string' as const } },
};
