// Operator API: tenants and their keys. Secrets are generated here, returned once, and only
// their hashes go to the control plane. Key changes are recorded in the tenant's audit log, as is
// the recovery of a collection's writer state from its published manifest (adopt-manifest).
// The orphan sweep (store/orphans.ts) belongs to no tenant: its answer is its record.
// `security: operatorKey` is what the /v1 guard (auth/guard.ts) checks before a route's validators.
import { createRoute, z } from '@hono/zod-openapi';
import { generateSecret, hashSecret } from '../../auth/keys.ts';
import { operatorKey } from '../../auth/guard.ts';
import type { AuditInput } from '../../billing/ledger.ts';
import type { ApiKeyInfo } from '../../control/store.ts';
import { orphanProblems, sweepOrphans } from '../../store/orphans.ts';
import { MedhashError, notFound } from '../../util/errors.ts';
import type { Backend } from '../backend.ts';
import { errors, json, jsonBody, type App } from '../openapi.ts';
import { AdoptManifestSchema, ApiKeyListQuery, ApiKeyListSchema, ApiKeySchema, ApiKeyWithSecretSchema, CreateKeyBody, CreateTenantBody, CollectionParams, ErrorSchema, OrphanReportSchema, OrphansIncompleteSchema, TenantListQuery, TenantListSchema, TenantParams, TenantSchema } from '../schemas.ts';

const tags = ['admin'];
const OrphanDeleteQuery = z.strictObject({
  force: z.enum(['true', 'false'], { error: 'force must be true or false' }).default('false').transform((v) => v === 'true')
    .openapi({ param: { name: 'force', in: 'query' }, description: 'Delete even when every collection holding data is missing from the registry (an empty or replaced registry looks exactly like that).' }),
});
const KeyParams = z.object({ key: z.string().min(1).openapi({ param: { name: 'key', in: 'path' }, example: 'key_0b1d2c3e4f5a6b7c8d9e0f1a' }) });

export function adminRoutes(app: App, backend: Backend): void {
  /** Records an operator action in the tenant's audit log. */
  const operatorEvent = (tenantId: string, event: Omit<AuditInput, 'key_id'>) => backend.ledger(tenantId).append(tenantId, { key_id: 'operator', ...event });
  const audited = async (key: ApiKeyInfo, action: string): Promise<ApiKeyInfo> => {
    await operatorEvent(key.tenant_id, { action, detail: { key: key.id } });
    return key;
  };

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/admin/tenants', tags, security: operatorKey, summary: 'Create a tenant',
      request: { body: jsonBody(CreateTenantBody) },
      responses: { 201: json(TenantSchema, 'The tenant.'), ...errors(400, 401, 403, 409, 413, 415, 503) },
    }),
    async (c) => {
      return c.json(await backend.control.createTenant(c.req.valid('json').name), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/admin/tenants', tags, security: operatorKey, summary: 'List tenants, a page at a time',
      description: 'In id order: follow `next_after` until it is null. A tenant created meanwhile shows up on a later page or not at all, and never hides another.',
      request: { query: TenantListQuery },
      responses: { 200: json(TenantListSchema, 'One page of tenants.'), ...errors(400, 401, 403, 503) },
    }),
    async (c) => {
      const { limit, after } = c.req.valid('query');
      const { items, next_after } = await backend.control.listTenants(limit, after);
      return c.json({ tenants: items, next_after }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/admin/tenants/{tenant}/keys', tags, security: operatorKey, summary: 'Create an API key (the secret is shown once)',
      request: { params: TenantParams, body: jsonBody(CreateKeyBody) },
      responses: { 201: json(ApiKeyWithSecretSchema, 'The key, with its secret.'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => {
      const secret = generateSecret();
      const key = await audited(await backend.control.createKey(c.req.valid('param').tenant, c.req.valid('json'), await hashSecret(secret)), 'key.create');
      return c.json({ ...key, secret }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/admin/tenants/{tenant}/keys', tags, security: operatorKey, summary: "List a tenant's keys (no secrets), a page at a time",
      description: 'In id order: follow `next_after` until it is null. A key created meanwhile shows up on a later page or not at all, and never hides another.',
      request: { params: TenantParams, query: ApiKeyListQuery },
      responses: { 200: json(ApiKeyListSchema, 'One page of keys.'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      const { limit, after } = c.req.valid('query');
      const { items, next_after } = await backend.control.listKeys(c.req.valid('param').tenant, limit, after);
      return c.json({ keys: items, next_after }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/admin/keys/{key}/rotate', tags, security: operatorKey, summary: 'Replace a key secret (same id, scopes and limits)',
      request: { params: KeyParams },
      responses: { 200: json(ApiKeyWithSecretSchema, 'The key, with its new secret.'), ...errors(400, 401, 403, 404, 409, 503) },
    }),
    async (c) => {
      const secret = generateSecret();
      const key = await audited(await backend.control.rotateKey(c.req.valid('param').key, await hashSecret(secret)), 'key.rotate');
      return c.json({ ...key, secret }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/admin/keys/{key}', tags, security: operatorKey, summary: 'Revoke a key',
      request: { params: KeyParams },
      responses: { 200: json(ApiKeySchema, 'The revoked key.'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      return c.json(await audited(await backend.control.revokeKey(c.req.valid('param').key), 'key.revoke'), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest', tags, security: operatorKey,
      summary: "Make a collection's published manifest its writer state, when that state is damaged, missing or behind it",
      description:
        'The recovery of one collection whose writes are refused for its writer state (500 `corrupt_index`, 409 `writer_state_behind`; docs/SHARD_FORMAT.md), on Node and Workers, without restoring a backup. ' +
        'The manifest in KV, which searches already answer from, must verify and every shard it names must be in KV at its recorded length; it then becomes the writer state, with nothing pending and no garbage. ' +
        'Items committed after its generation and never published are lost. Reads every live shard once. Recorded in the tenant\'s audit log (`collection.adopt_manifest`).',
      request: { params: TenantParams.merge(CollectionParams) },
      responses: {
        200: json(AdoptManifestSchema, 'The manifest adopted; writes work again.'),
        ...errors(400, 401, 403, 404, 503),
        409: json(
          ErrorSchema,
          "Nothing changed: `adopt_not_needed`, the writer state is intact and not behind KV's manifest (adopting could only roll it back); `no_verified_manifest`, KV holds no manifest of it that verifies; `shards_missing`, a shard the manifest names is missing from KV or not its recorded length (`details.missing` lists each: `key`, `bytes` recorded, `found` or null); `write_conflict`, another process changed the state meanwhile (send it again).",
        ),
      },
    }),
    async (c) => {
      const { tenant, collection } = c.req.valid('param');
      await backend.control.getTenant(tenant);
      const col = await backend.control.getCollection(tenant, collection);
      if (!col) throw notFound('collection', collection);
      const adopted = await backend.writer(col).adoptManifest();
      await operatorEvent(tenant, {
        action: 'collection.adopt_manifest', collection: col.name,
        detail: { state: adopted.state, previous_generation: adopted.previous_generation, generation: adopted.generation, count: adopted.count },
      });
      const note = `items committed after generation ${adopted.generation} and never published are lost; shards only the replaced state named are strays for the orphan sweep (DELETE /v1/admin/orphans)`;
      return c.json({ collection: col.id, ...adopted, note }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/admin/orphans', tags, security: operatorKey, summary: 'List the KV keys and writer state of collections no longer in the registry, and the shards of registered ones that their writer state names nowhere (deletes nothing)',
      responses: { 200: json(OrphanReportSchema, 'What was found.'), ...errors(400, 401, 403, 503) },
    }),
    async (c) => {
      return c.json(await sweepOrphans(backend.orphans), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/admin/orphans', tags, security: operatorKey, summary: 'Delete the KV keys and writer state of collections no longer in the registry, and the shards of registered ones that their writer state names nowhere',
      request: { query: OrphanDeleteQuery },
      responses: {
        200: json(OrphanReportSchema, 'What was found, all of it deleted (`failed` is 0).'),
        ...errors(400, 401, 403, 503),
        409: json(ErrorSchema, '`orphans_are_everything`: every collection holding data is missing from the registry; nothing deleted (see `force`).'),
        500: json(OrphansIncompleteSchema, "`orphans_delete_incomplete`: deleting some orphans or strays failed, or a collection's writer state is damaged, missing or older than its published manifest (`failed` > 0, each one's `error` says why), and the others were deleted; the body is the sweep's record with `error` beside it. Send the same DELETE again for a failed deletion: it is idempotent (a collection under `damaged` stays as it is, and the message says so)."),
      },
    }),
    async (c) => {
      const report = await sweepOrphans(backend.orphans, { delete: true, force: c.req.valid('query').force });
      if (report.failed === 0) return c.json(report, 200);
      // A partial failure must not read as success. A 500, not the 503 a client such as the CLI
      // retries unseen: the caller gets this record of what was deleted and why the rest was not.
      const { error } = new MedhashError(
        500, 'orphans_delete_incomplete',
        `${report.failed} of ${report.orphans.length + report.strays.length + report.damaged.length} found (orphaned collections, stray shards of registered ones, collections whose writer state is damaged, missing or out of date) not swept, the others deleted (see each one's error): ${orphanProblems(report, 'send the same DELETE again (it is idempotent)').join('; ')}`,
      ).toBody();
      return c.json({ error, ...report }, 500);
    },
  );
}
