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

/** The most characters of a caller's value that an error message quotes back: every valid name and id (at most 256 bytes) fits whole. */
export const MAX_QUOTED_CHARS = 256;

/** `value` cut after MAX_QUOTED_CHARS characters (never inside a surrogate pair). */
export function clip(value: string): string {
  if (value.length <= MAX_QUOTED_CHARS) return value;
  return value.slice(0, /[\ud800-\udbff]/.test(value[MAX_QUOTED_CHARS - 1]) ? MAX_QUOTED_CHARS - 1 : MAX_QUOTED_CHARS);
}

/**
 * A caller's value as an error message quotes it: in JSON quotes (control characters escaped),
 * and cut, with its length said, past MAX_QUOTED_CHARS characters: an answer never echoes
 * megabytes of a request (a field name, a header, a path) back.
 */
export function quote(value: string): string {
  const cut = clip(value);
  return cut === value ? JSON.stringify(value) : `${JSON.stringify(cut)}... (${value.length} characters)`;
}

/**
 * `text` on one line with nothing that acts: control characters (C0, DEL, C1) and the Unicode line
 * separators written as \uXXXX. For text that quotes what others wrote (an error message with a
 * DICOM string, a file name, a driver's words) on its way to a log line or a terminal.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export const badRequest = (code: string, message: string, field?: string): MedhashError =>
  new MedhashError(400, code, message, field);

export const notFound = (what: string, name: string): MedhashError =>
  new MedhashError(404, `${what}_not_found`, `${what} ${quote(name)} not found`);

export const conflict = (code: string, message: string): MedhashError => new MedhashError(409, code, message);
