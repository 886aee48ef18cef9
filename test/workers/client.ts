// Requests to the Worker under test (its default export), with a Bearer key and a JSON body,
// for the workerd-only tests.
import { exports } from 'cloudflare:workers';

export const send = (method: string, path: string, key: string, body?: unknown) =>
  exports.default.fetch(
    new Request(`http://medhash.test${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    }),
  );

/** The parsed JSON answer of `send`. */
export const call = async (method: string, path: string, key: string, body?: unknown) => (await send(method, path, key, body)).json() as Promise<any>;
