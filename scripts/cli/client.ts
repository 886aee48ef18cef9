// HTTP client for the medhash API as the CLI uses it: JSON in and out, the API's error shape
// turned into readable failures, and retries where the API says retrying is safe.
import { setTimeout as sleep } from 'node:timers/promises';
import { allPages } from '../../functions/util/pages.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** The whole answer, parsed: what an error carries beside `error` (an orphan sweep's record). */
    readonly body?: unknown,
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

// 409 write_conflict, 409 idempotency_in_progress, 429 and 503 are transient by contract;
// network errors may be.
const retryable = (e: unknown): boolean =>
  !(e instanceof ApiError) || e.status === 503 || e.status === 429 || e.code === 'write_conflict' || e.code === 'idempotency_in_progress';

export class Client {
  constructor(
    readonly baseUrl: string,
    private readonly key: string | undefined,
  ) {}

  async request<T>(method: string, path: string, body?: unknown, attempts = 4): Promise<T> {
    // One key for all attempts: a retry of a metered call that did succeed is not billed twice.
    const idempotencyKey = method === 'POST' ? crypto.randomUUID() : undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(method, path, body, idempotencyKey);
      } catch (e) {
        if (attempt >= attempts || !retryable(e)) throw e;
        await sleep(250 * 2 ** attempt);
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
    const res = await fetch(new URL(path, this.baseUrl), { method, headers, body: payload });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : null;
    if (!res.ok) {
      const err = (parsed as { error?: { code: string; message: string; field?: string } } | null)?.error;
      throw new ApiError(res.status, err?.code ?? 'http_error', err?.message ?? text, err?.field, parsed);
    }
    return parsed as T;
  }
}
