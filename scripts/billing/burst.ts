// Checks metering against a running server (Node `npm run serve` or `wrangler dev --local`):
// a fresh tenant fires a scripted burst of concurrent searches, batch ingests, idempotent
// retries and refused calls, then GET /v1/usage must match the billable part exactly. Prints
// one JSON line; exits 1 on a mismatch.
//   MEDHASH_OPERATOR_KEY=... npm run check:billing -- --url http://127.0.0.1:8787 --searches 1000
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.MEDHASH_URL ?? 'http://127.0.0.1:8787' },
    searches: { type: 'string', default: '1000' },
    batches: { type: 'string', default: '10' },
    'batch-size': { type: 'string', default: '50' },
    retries: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '100' },
  },
});
const operatorKey = process.env.MEDHASH_OPERATOR_KEY;
if (!operatorKey) throw new Error('set MEDHASH_OPERATOR_KEY');
const [searches, batches, batchSize, retries, concurrency] = ['searches', 'batches', 'batch-size', 'retries', 'concurrency'].map((k) => {
  const n = Number(values[k as keyof typeof values]);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${k} must be a non-negative integer`);
  return n;
});

async function call(method: string, path: string, key: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(new URL(path, values.url), {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text.startsWith('{') ? JSON.parse(text) : text };
}

async function must(method: string, path: string, key: string, body?: unknown): Promise<any> {
  const r = await call(method, path, key, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Runs the tasks with at most `limit` in flight. */
async function pool<T>(tasks: Array<() => Promise<T>>, limit: number): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]();
    }
  }));
  return out;
}

const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const tenant = await must('POST', '/v1/admin/tenants', operatorKey, { name: `burst-${suffix}` });
const { secret } = await must('POST', `/v1/admin/tenants/${tenant.id}/keys`, operatorKey, { scopes: ['search', 'ingest', 'admin'] });
await must('PUT', `/v1/admin/tenants/${tenant.id}/plan`, operatorKey, { rate_per_second: 10_000, burst: 100_000, monthly_quota: null });
await must('POST', '/v1/collections', secret, { name: 'burst', bits: 64 });

const hex = (i: number): string => (BigInt(i) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn).toString(16).padStart(16, '0');
const tasks: Array<() => Promise<{ status: number; body: any }>> = [];
for (let b = 0; b < batches; b++) {
  const items = Array.from({ length: batchSize }, (_, i) => ({ id: `b${b}-${i}`, code: hex(b * batchSize + i) }));
  tasks.push(() => call('POST', '/v1/collections/burst/items', secret, { items }));
}
for (let i = 0; i < searches; i++) tasks.push(() => call('POST', '/v1/collections/burst/search', secret, { code: hex(i), k: 10 }));
// Refused, so never billed: a malformed code and an unknown collection.
for (let i = 0; i < 10; i++) {
  tasks.push(() => call('POST', '/v1/collections/burst/search', secret, { code: 'zz' }));
  tasks.push(() => call('POST', '/v1/collections/missing/search', secret, { code: hex(i) }));
}
const t0 = performance.now();
const replies = await pool(tasks, concurrency);
// Idempotent retries, after the burst: each key's first call is billed, its repeats are not.
for (let r = 0; r < retries; r++) {
  for (let i = 0; i < 3; i++) replies.push(await call('POST', '/v1/collections/burst/search', secret, { code: hex(r) }, { 'idempotency-key': `retry-${r}` }));
}
const seconds = (performance.now() - t0) / 1000;

const ok = replies.filter((r) => r.status === 200).length;
const expected = { search: searches + retries, encode: 0, ingest_item: batches * batchSize };
const usage = await must('GET', '/v1/usage', secret);
const billed = { search: usage.totals.search, encode: usage.totals.encode, ingest_item: usage.totals.ingest_item };
const match = JSON.stringify(billed) === JSON.stringify(expected) && ok === batches + searches + 3 * retries;
console.log(JSON.stringify({ check: 'billing-burst', url: values.url, tenant: tenant.id, concurrency, calls: replies.length, ok, expected, billed, match, seconds: Number(seconds.toFixed(2)) }));
if (!match) process.exit(1);
