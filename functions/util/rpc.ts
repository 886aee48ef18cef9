// Durable Object RPC with typed errors. Errors thrown across workerd RPC keep only their
// message, so a DO method wraps its result in a reply that carries a MedhashError as data, and
// the caller's proxy re-throws it: the API then answers exactly as it would on Node. So do the
// other errors the API answers by their class (api/errors.ts): a corrupt shard or manifest that
// the collection's writer read is a 500 `corrupt_index` on Node, and must not become `internal`.
// A call that the Durable Objects' infrastructure fails (the object overloaded, reset by a
// deploy, its connection lost) is a 503 `unavailable` with Retry-After, not the 500 of a bug:
// retrying it later is the caller's remedy.
import { ManifestFormatError } from '../shards/manifest.ts';
import { ShardFormatError } from '../shards/codec.ts';
import { MedhashError, type ErrorStatus } from './errors.ts';

const CARRIED = { ShardFormatError, ManifestFormatError };
type CarriedName = keyof typeof CARRIED;

export type RpcReply =
  | { ok: true; value: unknown }
  | { ok: false; error: { status: ErrorStatus; code: string; message: string; field?: string; details?: Record<string, unknown>; headers?: Record<string, string> } }
  | { ok: false; thrown: { name: CarriedName; message: string } };

const carriedName = (e: unknown): CarriedName | undefined =>
  (Object.keys(CARRIED) as CarriedName[]).find((name) => e instanceof CARRIED[name]);

/** DO side: invokes `target[method](...args)`, a method of the target's own class only, and packs the outcome. */
export async function serveRpc(target: object, method: string, args: unknown[]): Promise<RpcReply> {
  const proto = Object.getPrototypeOf(target) as object;
  const fn = Object.hasOwn(proto, method) ? (proto as Record<string, unknown>)[method] : undefined;
  if (typeof fn !== 'function' || method === 'constructor') throw new Error(`no RPC method ${method}`);
  try {
    return { ok: true, value: await fn.apply(target, args) };
  } catch (e) {
    if (e instanceof MedhashError) {
      return { ok: false, error: { status: e.status, code: e.code, message: e.message, field: e.field, details: e.details, headers: e.headers } };
    }
    const name = carriedName(e);
    if (name) return { ok: false, thrown: { name, message: (e as Error).message } };
    throw e;
  }
}

/**
 * How workerd words its infrastructure errors, for those that come without its flags (a call on
 * a stub whose object has already been reset).
 */
const OVERLOADED_MESSAGE = 'Durable Object is overloaded';
const TRANSIENT_MESSAGES = /Network connection lost|Durable Object reset because/;
/** An overloaded object is not to be retried at once, which would add to its load. */
const OVERLOADED_RETRY_AFTER_S = 5;
const TRANSIENT_RETRY_AFTER_S = 1;

/**
 * A failed Durable Object call as the answer it deserves: a 503 `unavailable` with Retry-After
 * where workerd marks the error `overloaded` or `retryable` or words it as one of its
 * infrastructure failures; undefined for anything else, the object's own code failing (a 500).
 */
export function unavailable(e: unknown): MedhashError | undefined {
  const flags = (e ?? {}) as { overloaded?: unknown; retryable?: unknown; message?: unknown };
  const message = typeof flags.message === 'string' ? flags.message : '';
  const overloaded = flags.overloaded === true || message.includes(OVERLOADED_MESSAGE);
  if (!overloaded && flags.retryable !== true && !TRANSIENT_MESSAGES.test(message)) return undefined;
  const [wait, why] = overloaded ? [OVERLOADED_RETRY_AFTER_S, 'overloaded'] : [TRANSIENT_RETRY_AFTER_S, 'briefly unavailable (a Durable Object is restarting or unreachable)'];
  return new MedhashError(503, 'unavailable', `the service is ${why}; retry after ${wait} s`, undefined, undefined, { 'Retry-After': String(wait) });
}

/** Caller side: a proxy whose every method is one `call` over the stub. */
export function rpcClient<T extends object>(call: (method: string, args: unknown[]) => Promise<RpcReply>): T {
  return new Proxy({} as T, {
    get(_, method) {
      if (typeof method !== 'string' || method === 'then') return undefined;
      return async (...args: unknown[]) => {
        let reply: RpcReply;
        try {
          reply = await call(method, args);
        } catch (e) {
          throw unavailable(e) ?? e;
        }
        if (reply.ok) return reply.value;
        if ('thrown' in reply) throw new CARRIED[reply.thrown.name](reply.thrown.message);
        const { status, code, message, field, details, headers } = reply.error;
        throw new MedhashError(status, code, message, field, details, headers);
      };
    },
  });
}
