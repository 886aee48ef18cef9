// Durable Object RPC with typed errors. Errors thrown across workerd RPC keep only their
// message, so a DO method wraps its result in a reply that carries a MedhashError as data, and
// the caller's proxy re-throws it: the API then answers exactly as it would on Node.
import { MedhashError, type ErrorStatus } from './errors.ts';

export type RpcReply =
  | { ok: true; value: unknown }
  | { ok: false; error: { status: ErrorStatus; code: string; message: string; field?: string; details?: Record<string, unknown>; headers?: Record<string, string> } };

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
        const { status, code, message, field, details, headers } = reply.error;
        throw new MedhashError(status, code, message, field, details, headers);
      };
    },
  });
}
