// Client of the inference backend (functions/backend) as the edge uses it: one input per call
// (the backend batches concurrent calls itself), a hard timeout, a circuit breaker, and a clear
// split between the backend's verdict on the input (a 4xx: passed on to the caller) and the
// backend being unavailable (anything else: the caller's cue to fall back). Free of model code,
// so the Worker imports it too.
import { EncodeResponse, PROTOCOL_VERSION, tensorToBase64, type EncodeResponseBody, type ImageEncoding } from '../backend/protocol.ts';
import { toBase64 } from '../util/bytes.ts';
import { MedhashError, type ErrorStatus } from '../util/errors.ts';
import { retryAfterSeconds } from '../util/retry-after.ts';
import { CircuitBreaker, type BreakerOptions } from './breaker.ts';

export type RemoteInput = { tensor: Float32Array } | { image: Uint8Array; contentType: string; frame?: number };

/** The backend could not answer (down, slow, overloaded, broken): not the caller's fault. */
export class BackendUnavailable extends Error {
  override name = 'BackendUnavailable';
  /** retryAfterS: the wait a 503 asked for (the backend's queue was full), if it named one. */
  constructor(message: string, readonly retryAfterS?: number) {
    super(message);
  }
}

export class RemoteEncoder {
  constructor(
    readonly url: string,
    private readonly timeoutMs: number,
    private readonly fetchFn: typeof fetch = fetch,
  ) {}

  /** One input; the backend's verdict on it names the caller's field, as the in-process path does. */
  async encode(input: RemoteInput): Promise<EncodeResponseBody> {
    try {
      return await this.encodeBatch([input]);
    } catch (e) {
      // "inputs.0.image" is the backend protocol's name for it, not the caller's.
      if (e instanceof MedhashError && e.field?.startsWith('inputs.0.')) throw new MedhashError(e.status, e.code, e.message, e.field.slice('inputs.0.'.length), e.details);
      throw e;
    }
  }

  /** Up to MAX_INPUTS inputs in one request; one result per input, in order. */
  async encodeBatch(inputs: RemoteInput[]): Promise<EncodeResponseBody> {
    const wire = inputs.map((input) => ('tensor' in input ? { tensor: tensorToBase64(input.tensor) } : { image: toBase64(input.image), content_type: input.contentType, ...(input.frame === undefined ? {} : { frame: input.frame }) }));
    let res: Response;
    let text: string;
    try {
      res = await this.fetchFn(new URL('/v1/encode', this.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ version: PROTOCOL_VERSION, inputs: wire }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      // fetch's own message is only "fetch failed"; the cause says what happened (refused, reset, ...)
      const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : '';
      const why = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError') ? `no answer within ${this.timeoutMs} ms` : `${String(e)}${cause}`;
      throw new BackendUnavailable(`inference backend ${this.url}: ${why}`);
    }
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      // The backend judged the input (e.g. an undecodable image): the same answer on every path.
      const err = safeJson(text) as { error?: { code?: string; message?: string; field?: string } } | null;
      throw new MedhashError(res.status as ErrorStatus, err?.error?.code ?? 'invalid_image', err?.error?.message ?? text, err?.error?.field);
    }
    if (!res.ok) {
      const wait = res.status === 503 ? retryAfterSeconds(res.headers.get('retry-after')) : undefined;
      throw new BackendUnavailable(`inference backend ${this.url}: HTTP ${res.status}`, wait);
    }
    const parsed = EncodeResponse.safeParse(safeJson(text));
    if (!parsed.success || parsed.data.results.length !== inputs.length) throw new BackendUnavailable(`inference backend ${this.url}: malformed answer`);
    return parsed.data;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export interface EdgeEncoding {
  /** Which path answered: "backend" or "ort-web-<provider>". */
  path: string;
  model_id: string;
  encoding: ImageEncoding;
}

export interface ImageEncoderApi {
  /** `frame`: which frame (0-based) of a multi-frame DICOM (decodeImage's option). */
  encodeImage(bytes: Uint8Array, contentType: string, frame?: number): Promise<EdgeEncoding>;
}

export interface EdgeEncoderOptions {
  /** The inference backend; unset: in-process only. */
  backendUrl?: string;
  timeoutMs: number;
  breaker: BreakerOptions;
  fetchFn?: typeof fetch;
}

export const DEFAULT_EDGE: Omit<EdgeEncoderOptions, 'backendUrl'> = { timeoutMs: 1000, breaker: { failures: 3, cooldownMs: 5000 } };

/**
 * Whether a backend's 4xx is its verdict on the caller's image, to pass on. A tensor is the
 * edge's own preprocessing, and a refusal naming no input (the version, the body) is about the
 * edge's request: either says that the backend and this edge disagree (another model's input size,
 * another protocol), which is the backend being unusable, not the caller's error.
 */
function judgesCallersImage(input: RemoteInput, e: MedhashError): boolean {
  return 'image' in input && (e.field === 'image' || e.field === 'frame');
}

/** The backend behind its circuit breaker; null answers tell the caller to fall back. */
export class GuardedRemote {
  readonly remote: RemoteEncoder | null;
  readonly breaker: CircuitBreaker;

  constructor(opts: EdgeEncoderOptions) {
    this.remote = opts.backendUrl ? new RemoteEncoder(opts.backendUrl, opts.timeoutMs, opts.fetchFn) : null;
    this.breaker = new CircuitBreaker(opts.breaker);
  }

  /** The backend's answer, or null when it is unavailable (or the circuit is open). */
  async tryEncode(input: RemoteInput, expectModel?: string): Promise<EdgeEncoding | null> {
    if (!this.remote || !this.breaker.allow()) return null;
    try {
      const r = await this.remote.encode(input);
      if (expectModel !== undefined && r.model_id !== expectModel) {
        throw new BackendUnavailable(`inference backend ${this.remote.url} serves ${r.model_id}, not ${expectModel}`);
      }
      this.breaker.success();
      return { path: 'backend', model_id: r.model_id, encoding: r.results[0] };
    } catch (err) {
      const e = err instanceof MedhashError && !judgesCallersImage(input, err) ? new BackendUnavailable(`inference backend ${this.remote.url} refused this edge's request (${err.status} ${err.code}${err.field ? ` at inputs.0.${err.field}` : ''}: ${err.message}); does it serve ${expectModel ?? 'the model'} and protocol version ${PROTOCOL_VERSION}?`) : err;
      if (!(e instanceof BackendUnavailable)) {
        this.breaker.success(); // it answered, about the input
        throw e;
      }
      this.breaker.failure();
      console.error(`${e.message}; falling back`);
      return null;
    }
  }
}
