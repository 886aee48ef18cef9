// Metering, idempotency and audit for one request, on top of the ledger. A route calls
// `meter(c, kind, units)` once its input is validated and before it does the billable work,
// and `audit(c, action, ...)` for what it changed; the `metering` middleware then settles after
// the handler: a success keeps the charge (and its response, under an Idempotency-Key), a
// failure takes the charge back, and the audit event is appended only for a success. A ledger
// that fails to settle turns a success into a 503 whose charge is taken back (unsettled()); one
// that fails to record an uncharged change's event is tried again, then a 500 (unaudited()).
import type { Context, MiddlewareHandler } from 'hono';
import type { Backend } from '../api/backend.ts';
import { logFailure } from '../api/errors.ts';
import { concatBytes, sha256Hex } from '../util/bytes.ts';
import { badRequest, MedhashError } from '../util/errors.ts';
import { mediaType } from '../util/media-type.ts';
import type { AuditInput, Charge, Idempotency, Ledger, MeterKind, RateState, StoredResponse } from './ledger.ts';

export const IDEMPOTENCY_HEADER = 'Idempotency-Key';
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
/** Larger successful responses are billed once but not kept: a retry runs again, free of charge. */
const MAX_STORED_RESPONSE = 1 << 20;

interface RequestMeter {
  charge?: Charge;
  rate?: RateState;
  audit?: AuditInput;
  /** The response is a replay: nothing to settle. */
  replayed?: boolean;
}

declare module 'hono' {
  interface ContextVariableMap {
    meter: RequestMeter;
    backend: Backend;
  }
}

/**
 * Thrown by meter() to answer with a stored response; api/errors.ts turns it into that response,
 * with the RateLimit-* headers of the bucket as it stands now (the replay took no token).
 */
export class IdempotentReplay extends Error {
  constructor(
    readonly stored: StoredResponse,
    readonly rate: RateState,
  ) {
    super('idempotent replay');
  }

  response(): Response {
    return new Response(this.stored.body, {
      status: this.stored.status,
      headers: { 'content-type': this.stored.content_type, 'idempotent-replayed': 'true', ...rateHeaders(this.rate) },
    });
  }
}

/**
 * Charges `units` of `kind` to the caller's tenant, after the plan's quota and rate limit
 * (402, 429). With an Idempotency-Key, a retry of the same request answers from its first
 * success without a charge; the same key on a different request is a 422.
 */
export async function meter(c: Context, kind: MeterKind, units: number): Promise<void> {
  const m = c.get('meter');
  const tenantId = c.get('principal')?.key.tenant_id;
  if (!m || !tenantId) throw new Error('meter() needs the metering middleware and an authenticated tenant');
  if (m.charge) throw new Error('meter() called twice for one request');
  const backend = c.get('backend');
  const key = idempotencyKey(c);
  let idempotency: Idempotency | undefined;
  if (key !== undefined) {
    // Bytes, not text: an image body is not UTF-8, and lossy decoding could make two images look alike.
    // The body was read by the validator or the handler; Hono hands the cached copy back.
    // The query string too: search by image takes its k, filters and exclusions there. And the
    // media type: the same bytes as image/png and as application/dicom are two requests. Its
    // essence only, as the routes read it: none reads a parameter, so "Image/PNG; x=1" is the
    // same request as "image/png".
    const url = new URL(c.req.url);
    const head = new TextEncoder().encode(`${c.req.method} ${url.pathname}${url.search}\n${mediaType(c.req.header('content-type'))}\n`);
    const body = new Uint8Array(await c.req.arrayBuffer());
    idempotency = { key, fingerprint: await sha256Hex(concatBytes([head, body])) };
  }
  const a = await backend.ledger(tenantId).admit(tenantId, { kind, units, idempotency });
  switch (a.outcome) {
    case 'admitted':
      m.charge = a.charge;
      m.rate = a.rate;
      return;
    case 'replay':
      m.replayed = true;
      throw new IdempotentReplay(a.response, a.rate);
    case 'in_progress':
      throw new MedhashError(409, 'idempotency_in_progress', `a request with this ${IDEMPOTENCY_HEADER} is still running; retry shortly`, IDEMPOTENCY_HEADER, undefined, { 'Retry-After': '1' });
    case 'key_reused':
      throw new MedhashError(422, 'idempotency_key_reused', `this ${IDEMPOTENCY_HEADER} was used for a different request (method, path, query string, media type or body); use a new key`, IDEMPOTENCY_HEADER);
    case 'rate_limited':
      throw new MedhashError(
        429, 'rate_limited', `rate limit exceeded: ${a.rate.limit} requests at once, refilled over ${a.rate.window_s} s; retry after ${a.retry_after_s} s`,
        undefined, { retry_after_s: a.retry_after_s, limit: a.rate.limit, window_s: a.rate.window_s },
        { 'Retry-After': String(a.retry_after_s), ...rateHeaders(a.rate) },
      );
    case 'quota_exhausted':
      throw new MedhashError(
        402, 'quota_exhausted', `the monthly quota of ${a.quota} units is used up (${a.used} used, this request needs ${a.requested}); it renews at ${a.resets_at}`,
        undefined, { quota: a.quota, used: a.used, requested: a.requested, resets_at: a.resets_at },
      );
  }
}

/**
 * The request's Idempotency-Key (undefined without one); a 400 when it is malformed. The /v1
 * guard calls it on every route once the key is authorised, before the route reads the request:
 * a malformed key is refused wherever it is sent, and a well-formed one is ignored by a route
 * that is not metered.
 */
export function idempotencyKey(c: Context): string | undefined {
  const key = c.req.header(IDEMPOTENCY_HEADER);
  if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
    throw badRequest('invalid_idempotency_key', `${IDEMPOTENCY_HEADER} must be 1-255 printable ASCII characters without spaces`, IDEMPOTENCY_HEADER);
  }
  return key;
}

/** Records what this request does in the tenant's audit log, once it has succeeded. */
export function audit(c: Context, action: string, collection: string | null, detail: Record<string, unknown> = {}): void {
  const m = c.get('meter');
  const key = c.get('principal')?.key;
  if (!m || !key) throw new Error('audit() needs the metering middleware and an authenticated tenant');
  m.audit = { key_id: key.id, action, collection, detail };
}

/** Settles each /v1 request's charge and audit event after its handler. */
export function metering(backend: Backend): MiddlewareHandler {
  return async (c, next) => {
    const m: RequestMeter = {};
    c.set('meter', m);
    c.set('backend', backend);
    await next();
    const tenantId = c.get('principal')?.key.tenant_id;
    const ok = c.res.status < 400;
    // Uncharged, a failure has nothing to settle: only a success records its event.
    if (!tenantId || m.replayed || (!m.charge && !(ok && m.audit))) return;
    let response: StoredResponse | undefined;
    if (ok && m.charge?.idempotency_key) {
      const body = await c.res.clone().text();
      if (body.length <= MAX_STORED_RESPONSE) response = { status: c.res.status, content_type: c.res.headers.get('content-type') ?? 'application/json', body };
    }
    const ledger = backend.ledger(tenantId);
    try {
      await ledger.finish(tenantId, { charge: m.charge, ok, response, audit: m.audit });
    } catch (err) {
      if (m.charge) await unsettled(c, ledger, tenantId, m.charge, m.rate, m.audit, ok, err);
      else await unaudited(c, ledger, tenantId, m.audit!, err);
    }
    if (m.rate) for (const [name, value] of Object.entries(rateHeaders(m.rate))) c.header(name, value);
  };
}

/**
 * The ledger failed to settle a charged request after its work (`err`). The charge is taken back
 * as for any failure, and a success is then withheld (503): an answer leaves billed and audited or
 * not at all, and sending the request again (with its Idempotency-Key or without) runs it and
 * bills it once. If the ledger refuses that too, the charge taken at admission stands: a success
 * is answered, billed once (its stored response lost, its audit event left in the log to restore),
 * and a failure stays billed. Each case leaves a line in the log saying which.
 */
async function unsettled(c: Context, ledger: Ledger, tenantId: string, charge: Charge, rate: RateState | undefined, event: AuditInput | undefined, ok: boolean, err: unknown): Promise<void> {
  const takenBack = await ledger.finish(tenantId, { charge, ok: false }).then(() => true, () => false);
  const outcome = takenBack
    ? `its charge was taken back${ok ? ' and its answer withheld (503)' : ''}`
    : ok
      ? `nor could it take the charge back, which stands; answered without an audit event${event ? `; ${toRestore(tenantId, event)}` : ''}`
      : 'nor could it take the charge back, which stands on a failure';
  logFailure(c, `the billing ledger failed to settle it (${String(err)}); ${outcome}`);
  if (takenBack && ok) {
    throw new MedhashError(
      503, 'billing_unavailable', 'the billing ledger could not record this request, so its answer is withheld and nothing is billed for it; send it again',
      undefined, undefined, rate && rateHeaders(rate),
    );
  }
}

/**
 * The ledger failed to record the audit event of an uncharged change (a collection created or
 * deleted, items deleted or erased) after the change was made (`err`). finish() is one
 * transaction, so it is tried once more: on Node the failed one recorded nothing; on Workers a
 * call whose connection was lost may have been recorded, and the event is then recorded twice (a
 * duplicate shows, a lost event does not). If the second try fails too, the caller is told that
 * the change was made but not audited (500 `audit_unrecorded`), not that it failed (its retry
 * would be a 404 or a 409), and the event goes to the log for the operator to restore.
 */
async function unaudited(c: Context, ledger: Ledger, tenantId: string, event: AuditInput, err: unknown): Promise<void> {
  try {
    await ledger.finish(tenantId, { ok: true, audit: event });
  } catch (again) {
    logFailure(c, `the billing ledger failed to record its audit event twice (${String(err)}; ${String(again)}); the change was made; ${toRestore(tenantId, event)}`);
    throw new MedhashError(
      500, 'audit_unrecorded', 'the change was made, but its audit event could not be recorded; the operator has been told and can restore it from the log',
    );
  }
  logFailure(c, `the billing ledger failed to record its audit event (${String(err)}); recorded by a second try`);
}

/**
 * A log line's account of an audit event the ledger could not record, for the operator to
 * restore: the event whole, with its tenant and time (the only log text with item ids: without
 * them it could not be restored). printable() keeps it on one line and, its escapes being JSON's,
 * the same event when parsed.
 */
function toRestore(tenantId: string, event: AuditInput): string {
  return `its event, to restore: ${JSON.stringify({ tenant_id: tenantId, at: new Date().toISOString(), ...event })}`;
}

/** IETF draft RateLimit header fields: the bucket size, what is left, seconds until full. */
function rateHeaders(r: RateState): Record<string, string> {
  return {
    'RateLimit-Limit': String(r.limit),
    'RateLimit-Remaining': String(r.remaining),
    'RateLimit-Reset': String(r.reset_s),
    'RateLimit-Policy': `${r.limit};w=${r.window_s}`,
  };
}
