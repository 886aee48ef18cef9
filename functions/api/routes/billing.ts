// Billing and audit routes: a tenant's usage per day (JSON or CSV) and its audit log, read
// with a tenant admin key; plans and usage of any tenant for the operator. The formats are
// contracts (version 1), described in docs/BILLING.md.
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { operatorKey, tenantKey, tenantOf, wholeTenant } from '../../auth/guard.ts';
import type { UsageDay } from '../../billing/ledger.ts';
import { acceptWeight } from '../../util/media-type.ts';
import type { Backend } from '../backend.ts';
import { errors, json, jsonBody, type App } from '../openapi.ts';
import { AuditQuery, AuditSchema, PlanBody, PlanSchema, TenantParams, today, UsageQuery, UsageSchema } from '../schemas.ts';

const CSV_COLUMNS = ['day', 'search', 'encode', 'ingest_item', 'total'] as const;

const usageContent = {
  description: 'Units per day (UTC). JSON, or CSV with the header `day,search,encode,ingest_item,total`.',
  content: { 'application/json': { schema: UsageSchema }, 'text/csv': { schema: z.string() } },
};

async function usageAnswer(c: Context, backend: Backend, tenantId: string, q: z.infer<typeof UsageQuery>): Promise<Response> {
  // UsageQuery has checked the window (a calendar date each, from not after to, at most a year)
  // and filled in its defaults: this is the window it checked.
  const { from, to } = q;
  const days = await backend.ledger(tenantId).usage(tenantId, from, to);
  // CSV only when the caller names it (a wildcard keeps JSON), at a weight JSON does not beat
  const accept = c.req.header('accept');
  const csvWeight = acceptWeight(accept, 'text/csv', false);
  const csv = q.format ? q.format === 'csv' : csvWeight > 0 && csvWeight >= acceptWeight(accept, 'application/json');
  if (csv) {
    const lines = [CSV_COLUMNS.join(','), ...days.map((d) => CSV_COLUMNS.map((k) => d[k]).join(','))];
    return c.body(`${lines.join('\r\n')}\r\n`, 200, {
      'content-type': 'text/csv; charset=utf-8',
      'content-disposition': `attachment; filename="medhash-usage-${tenantId}-${from}-${to}.csv"`,
    });
  }
  return c.json({ version: 1 as const, tenant_id: tenantId, from, to, days, totals: totals(days) }, 200);
}

function totals(days: UsageDay[]): Omit<UsageDay, 'day'> {
  const t = { search: 0, encode: 0, ingest_item: 0, total: 0 };
  for (const d of days) for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] += d[k];
  return t;
}

async function planAnswer(backend: Backend, tenantId: string) {
  const ledger = backend.ledger(tenantId);
  const plan = await ledger.plan(tenantId);
  const day = today();
  const used = totals(await ledger.usage(tenantId, `${day.slice(0, 7)}-01`, day)).total;
  const resets = new Date(`${day.slice(0, 7)}-01T00:00:00Z`);
  resets.setUTCMonth(resets.getUTCMonth() + 1);
  return { tenant_id: tenantId, ...plan, month: { used, resets_at: resets.toISOString() } };
}

export function billingRoutes(app: App, backend: Backend): void {
  app.openapi(
    createRoute({
      method: 'get', path: '/v1/usage', tags: ['billing'], security: tenantKey('admin'), summary: "The tenant's metered units per day (scope: admin; not for a key limited to collections)",
      // 403 collection_limited from the guard, before the query is read
      ...wholeTenant,
      request: { query: UsageQuery },
      responses: { 200: usageContent, ...errors(400, 401, 403) },
    }),
    async (c) => {
      const { key } = tenantOf(c);
      return await usageAnswer(c, backend, key.tenant_id, c.req.valid('query'));
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/audit', tags: ['billing'], security: tenantKey('admin'), summary: "The tenant's audit log, newest first (scope: admin)",
      request: { query: AuditQuery },
      responses: { 200: json(AuditSchema, 'Who did what, and when.'), ...errors(400, 401, 403) },
    }),
    async (c) => {
      const { key } = tenantOf(c);
      const { limit, before } = c.req.valid('query');
      // A key limited to some collections sees their events alone, never another collection's ids.
      const page = await backend.ledger(key.tenant_id).audit(key.tenant_id, limit, before, key.collections);
      return c.json({ version: 1 as const, ...page }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/admin/tenants/{tenant}/plan', tags: ['admin'], security: operatorKey, summary: "A tenant's plan and this month's use",
      request: { params: TenantParams },
      responses: { 200: json(PlanSchema, 'The plan.'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      const tenant = await backend.control.getTenant(c.req.valid('param').tenant);
      return c.json(await planAnswer(backend, tenant.id), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put', path: '/v1/admin/tenants/{tenant}/plan', tags: ['admin'], security: operatorKey, summary: "Set a tenant's plan (rate limit and monthly quota)",
      description: 'Creates or replaces the plan; it applies from the next request, with a full bucket. Recorded in the tenant\'s audit log.',
      request: { params: TenantParams, body: jsonBody(PlanBody) },
      responses: { 200: json(PlanSchema, 'The plan now in force.'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => {
      const tenant = await backend.control.getTenant(c.req.valid('param').tenant);
      const input = c.req.valid('json');
      await backend.ledger(tenant.id).setPlan(tenant.id, input, { key_id: 'operator', action: 'plan.update', detail: { ...input } });
      return c.json(await planAnswer(backend, tenant.id), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/admin/tenants/{tenant}/usage', tags: ['admin'], security: operatorKey, summary: "A tenant's metered units per day",
      request: { params: TenantParams, query: UsageQuery },
      responses: { 200: usageContent, ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      const tenant = await backend.control.getTenant(c.req.valid('param').tenant);
      return await usageAnswer(c, backend, tenant.id, c.req.valid('query'));
    },
  );
}
