// What the Worker answers when a Durable Object call fails in workerd's infrastructure (the
// object overloaded, reset by a deploy, its connection lost): 503 `unavailable` with Retry-After,
// while an error of the object's own code stays a logged 500; and the OpenAPI document declares
// that 503 on every route it can reach, and Retry-After on every other answer that sends it. The control plane's binding is wrapped so that its calls
// fail as workerd fails them, or reach the real object.
import { createExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, expect, it } from 'vitest';
import worker from '../../functions/entries/worker.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';

/** What the control plane's next calls fail with; null: they reach the Durable Object. */
let failure: Error | null = null;
afterEach(() => {
  failure = null;
});

const CONTROL = {
  idFromName: (name: string) => env.CONTROL.idFromName(name),
  get: (id: DurableObjectId) => ({
    call: (method: string, args: unknown[]) => (failure ? Promise.reject(failure) : env.CONTROL.get(id).call(method, args)),
  }),
};
const failing = { ...env, CONTROL } as unknown as typeof env;

/** A request to the Worker whose control plane fails as `failure` says: status, Retry-After and the error's code. */
async function send(method: string, path: string, key: string) {
  const r = await worker.fetch(
    new Request(`http://medhash.test${path}`, { method, headers: { authorization: `Bearer ${key}` } }) as Request<unknown, IncomingRequestCfProperties>,
    failing,
    createExecutionContext(),
  );
  const body = (await r.json()) as { error?: { code: string } };
  return [r.status, r.headers.get('retry-after'), body.error?.code ?? 'ok'];
}

/** GET /v1/admin/tenants, which reads the control plane. */
const listTenants = () => send('GET', '/v1/admin/tenants', TEST_OPERATOR_KEY);

const flagged = (message: string, flags: Record<string, boolean>) => Object.assign(new Error(message), flags);

it('answers 503 unavailable with Retry-After when workerd marks the call overloaded or retryable', async () => {
  failure = flagged('Durable Object is overloaded. Too many requests queued.', { overloaded: true });
  expect(await listTenants()).toEqual([503, '5', 'unavailable']);
  failure = flagged('Internal error in Durable Object storage caused object to be reset.', { retryable: true });
  expect(await listTenants()).toEqual([503, '1', 'unavailable']);
});

it('answers 503 unavailable for workerd\'s infrastructure messages that come without its flags', async () => {
  for (const message of ['Network connection lost.', 'Durable Object reset because its code was updated.']) {
    failure = new Error(message);
    expect(await listTenants(), message).toEqual([503, '1', 'unavailable']);
  }
});

it('leaves an error of the object\'s own code a 500, and a call that succeeds as it was', async () => {
  failure = flagged('Cannot read properties of undefined', { remote: true });
  expect(await listTenants()).toEqual([500, null, 'internal']);
  failure = null;
  expect(await listTenants()).toEqual([200, null, 'ok']);
});

it('declares that 503 and its Retry-After on every route with a key, each of which can answer it, and Retry-After on a metered route\'s 409 and 429', async () => {
  const r = await worker.fetch(new Request('http://medhash.test/openapi.json') as Request<unknown, IncomingRequestCfProperties>, env, createExecutionContext());
  type Declared = { headers?: Record<string, unknown> };
  type Operation = { security?: unknown[]; parameters?: { name: string; in: string }[]; responses: Record<string, Declared> };
  const doc = (await r.json()) as { paths: Record<string, Record<string, Operation>>; components: { headers: Record<string, { schema: unknown }> } };
  failure = flagged('Durable Object is overloaded. Too many requests queued.', { overloaded: true });
  const keyed: string[] = [];
  const metered: string[] = [];
  for (const [template, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      if (!op.security) continue;
      const route = `${method.toUpperCase()} ${template}`;
      keyed.push(route);
      // a key that is not the operator's is looked up on the control plane, on a tenant route and an admin route alike
      expect(await send(method.toUpperCase(), template.replace(/\{\w+\}/g, 'x'), 'mh_not-a-key'), route).toEqual([503, '5', 'unavailable']);
      expect(op.responses['503']?.headers?.['Retry-After'], route).toEqual({ $ref: '#/components/headers/RetryAfter' });
      // a metered route (one that takes an Idempotency-Key) sends it with its 429 rate_limited and 409 idempotency_in_progress too (billing/meter.ts)
      if (!op.parameters?.some((p) => p.in === 'header' && p.name === 'idempotency-key')) continue;
      metered.push(route);
      for (const status of ['409', '429']) expect(op.responses[status]?.headers?.['Retry-After'], `${route} ${status}`).toEqual({ $ref: '#/components/headers/RetryAfter' });
    }
  }
  expect(keyed.length).toBeGreaterThan(20);
  expect(metered.sort()).toEqual(['POST /v1/collections/{collection}/items', 'POST /v1/collections/{collection}/search', 'POST /v1/collections/{collection}/search/image', 'POST /v1/encode']);
  expect(doc.components.headers.RetryAfter.schema).toEqual({ type: 'integer', minimum: 0 });
});
