// Requests to the Worker under test (its default export), with a Bearer key and a JSON body,
// for the workerd-only tests.
import { exports } from 'cloudflare:workers';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';

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

/** The secret of a key with every scope, of a new tenant named `name`. */
export async function newTenantKey(name: string): Promise<string> {
  const tenant = await call('POST', '/v1/admin/tenants', TEST_OPERATOR_KEY, { name });
  return (await call('POST', `/v1/admin/tenants/${tenant.id}/keys`, TEST_OPERATOR_KEY, { scopes: ['ingest', 'admin', 'search'] })).secret;
}
