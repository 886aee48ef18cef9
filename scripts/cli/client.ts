// HTTP client for the medhash API as the CLI uses it: JSON in and out, the API's error shape
// turned into readable failures, and retries where the API says retrying is safe.
import { setTimeout as sleep } from 'node:timers/promises';
import { allPages } from '../../functions/util/pages.ts';
import { retryAfterSeconds } from '../../functions/util/retry-after.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** The whole answer, parsed: what an error carries beside `error` (an orphan sweep's record). */
    readonly body?: unknown,
    /** The answer's Retry-After, in seconds. */
    readonly retryAfterS?: number,
  ) {
    super(`${status} ${code}: ${message}${field ? ` (field ${field})` : ''}`);
  }
}

/** A request body sent as it is rather than as JSON (search by image). */
export class RawBody {
  constructor(
    readonly bytes: Uint8Array<ArrayBuffer>,
    readonly contentType: string,
  ) {}
}

/** Why a fetch failed: its own message is only "fetch failed", its cause says what happened (refused, not found, reset). */
export function fetchFailure(e: unknown): string {
  return e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e);
}

/** The service could not be reached, or did not answer in time: what happened, with the URL. */
export class Unreachable extends Error {
  constructor(
    message: string,
    /** Worth trying again: a refused or dropped connection (a restart), not a request that timed out. */
    readonly transient: boolean,
  ) {
    super(message);
  }
}

// 409 write_conflict, 409 idempotency_in_progress, 429 and 503 are transient by contract;
// a refused or dropped connection may be.
const retryable = (e: unknown): boolean =>
  e instanceof ApiError ? e.status === 503 || e.status === 429 || e.code === 'write_conflict' || e.code === 'idempotency_in_progress' : e instanceof Unreachable && e.transient;

/**
 * How long one request may wait for its answer. Without one, a service that accepts the
 * connection and never answers would hold the command for undici's 300 s per attempt, four
 * attempts, and then say only "fetch failed". The slowest calls (a batch of 1000 items, an
 * erasure of MAX_ERASE_ITEMS, a search by image encoded in-process) take seconds.
 */
export const REQUEST_TIMEOUT_MS = 120_000;
/** The longest Retry-After the client waits before a retry; a longer one ends the command, saying it. */
const MAX_RETRY_AFTER_S = 60;

export class Client {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly key: string | undefined,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS,
  ) {
    // new URL(path, "localhost:8787") fails later as a bare "Invalid URL" (the host read as a scheme)
    let url: URL | undefined;
    try {
      url = new URL(baseUrl);
    } catch {
      // said below
    }
    if (url?.protocol !== 'http:' && url?.protocol !== 'https:') throw new Error(`the service URL ${JSON.stringify(baseUrl)} (--url or MEDHASH_URL) is not an http:// or https:// URL`);
    this.baseUrl = baseUrl;
  }

  async request<T>(method: string, path: string, body?: unknown, attempts = 4): Promise<T> {
    // One key for all attempts: a retry of a metered call that did succeed is not billed twice.
    const idempotencyKey = method === 'POST' ? crypto.randomUUID() : undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(method, path, body, idempotencyKey);
      } catch (e) {
        if (attempt >= attempts || !retryable(e)) throw e;
        // a 429 or 503 says when to come back (a rate limit's refill may be many seconds away)
        const asked = e instanceof ApiError ? e.retryAfterS : undefined;
        if (asked !== undefined && asked > MAX_RETRY_AFTER_S) throw e;
        await sleep(Math.max(250 * 2 ** attempt, (asked ?? 0) * 1000));
      }
    }
  }

  /** Every item of a paged list, all pages (util/pages.ts). */
  all<T>(path: string, field: string): Promise<T[]> {
    return allPages<T>(path, field, (q) => this.request('GET', q));
  }

  private async once<T>(method: string, path: string, body?: unknown, idempotencyKey?: string): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.key) headers.authorization = `Bearer ${this.key}`;
    if (idempotencyKey) headers['idempotency-key'] = idempotencyKey;
    let payload: BodyInit | undefined;
    if (body instanceof RawBody) {
      headers['content-type'] = body.contentType;
      payload = body.bytes;
    } else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const url = new URL(path, this.baseUrl);
    const call = `${method} ${url.origin}${url.pathname}`;
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, { method, headers, body: payload, signal: AbortSignal.timeout(this.timeoutMs) });
      text = await res.text();
    } catch (e) {
      if (e instanceof Error && e.name === 'TimeoutError') throw new Unreachable(`${call}: no answer within ${this.timeoutMs / 1000} s`, false);
      throw new Unreachable(`cannot reach the service at ${url.origin} (--url or MEDHASH_URL): ${fetchFailure(e)}`, true);
    }
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not the API's JSON: a proxy's error page, a login portal, another service on that port
      const what = `${res.headers.get('content-type') ?? 'no content type'}, ${text.length} bytes: ${JSON.stringify(text.slice(0, 80))}`;
      if (res.ok) throw new Error(`${call}: the answer is not JSON (${what}); is ${url.origin} the medhash service?`);
      throw new ApiError(res.status, 'http_error', `${res.statusText || 'error'}, not from the medhash API (${what})`, undefined, null, retryAfterSeconds(res.headers.get('retry-after')));
    }
    if (!res.ok) {
      const err = (parsed as { error?: { code: string; message: string; field?: string } } | null)?.error;
      const message = err?.message ?? (text || `${res.statusText || 'error'} with an empty body`);
      throw new ApiError(res.status, err?.code ?? 'http_error', message, err?.field, parsed, retryAfterSeconds(res.headers.get('retry-after')));
    }
    return parsed as T;
  }
}
