// The one error type every layer throws for an expected failure. It carries the HTTP status
// and the JSON body `{"error":{"code","message","field"}}`, and survives a Durable Object RPC
// hop as plain data (see util/rpc.ts), so the store, control plane and API agree on errors.

export type ErrorStatus = 400 | 401 | 402 | 403 | 404 | 409 | 413 | 415 | 422 | 429 | 500 | 503;

export interface ErrorBody {
  error: { code: string; message: string; field?: string; details?: Record<string, unknown> };
}

export class MedhashError extends Error {
  override name = 'MedhashError';
  constructor(
    readonly status: ErrorStatus,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** Machine-readable facts behind the message (a quota and its use, a limit). */
    readonly details?: Record<string, unknown>,
    /** Response headers the answer needs (Retry-After, RateLimit-*). */
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }

  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.field !== undefined ? { field: this.field } : {}),
        ...(this.details !== undefined ? { details: this.details } : {}),
      },
    };
  }
}

export const badRequest = (code: string, message: string, field?: string): MedhashError =>
  new MedhashError(400, code, message, field);

export const notFound = (what: string, name: string): MedhashError =>
  new MedhashError(404, `${what}_not_found`, `${what} ${JSON.stringify(name)} not found`);

export const conflict = (code: string, message: string): MedhashError => new MedhashError(409, code, message);
