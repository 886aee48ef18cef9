// Durable Object RPC with typed errors. Errors thrown across workerd RPC keep only their
// message, so a DO method wraps its result in a reply that carries a MedhashError as data, and
// the caller's proxy re-throws it: the API then answers exactly as it would on Node. So do the
// other errors the API answers by their class (api/errors.ts): a corrupt shard or manifest that
// the collection's writer read is a 500 `corrupt_index` on Node, and must not become `internal`.
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

/** Caller side: a proxy whose every method is one `call` over the stub. */
export function rpcClient<T extends object>(call: (method: string, args: unknown[]) => Promise<RpcReply>): T {
  return new Proxy({} as T, {
    get(_, method) {
      if (typeof method !== 'string' || method === 'then') return undefined;
      return async (...args: unknown[]) => {
        const reply = await call(method, args);
        if (reply.ok) return reply.value;
        if ('thrown' in reply) throw new CARRIED[reply.thrown.name](reply.thrown.message);
        const { status, code, message, field, details, headers } = reply.error;
        throw new MedhashError(status, code, message, field, details, headers);
      };
    },
  });
}
