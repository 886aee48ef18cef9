// Request and response schemas (zod, with OpenAPI metadata). Request objects are strict: an
// unknown field is a 400 naming it, never silently ignored. Checks that depend on the target
// collection (code length, descriptor dims) run in the handlers, which know its bits.
import { z } from '@hono/zod-openapi';
import { SCOPES } from '../auth/keys.ts';
import { CODE_BITS } from '../shards/codec.ts';
import type { MetadataField } from '../shards/metadata.ts';
import { DICOM_UID, MAX_UID_LENGTH } from '../encode/dicom.ts';
import { DEFAULT_CONTENT_WEIGHT } from '../search/rerank.ts';
import { DEFAULT_LIMITS } from '../encode/image.ts';
import { MAX_ERASE_ITEMS } from '../store/writer.ts';
import { MAX_AUDIT_PAGE_BYTES } from '../billing/ledger.ts';
import { ID_PREFIX } from '../control/store.ts';
import { ID_HEX_DIGITS, idPattern } from '../util/bytes.ts';
import { MAX_QUOTED_CHARS } from '../util/errors.ts';
import { MAX_PAGE } from '../util/pages.ts';

export const MAX_BATCH_ITEMS = 1000;
export const MAX_K = 1000;
export const MAX_DESCRIPTOR_DIMS = 1024;
export const MAX_ID_BYTES = 256;
/** The largest body a /v1 route takes: an image at its limit (a batch of items fits under it). */
export const MAX_BODY_BYTES = DEFAULT_LIMITS.maxBytes;
/**
 * The body limit of a route that states none (maxBody in api/body.ts): only an ingest batch and an
 * image need more; the largest valid search body, every filter value at its length in \uXXXX
 * escapes, is under 256 KiB.
 */
export const DEFAULT_BODY_BYTES = 1 << 20;
/**
 * What one JSON body may hold, checked before it is parsed: what the largest valid batch holds
 * (3 objects and arrays per item: the item, its descriptor, its metadata; 1049 values per item
 * with keys), with room, so a batch just past a limit (1001 items) gets the 4xx naming that
 * limit. Every other route's valid bodies hold far less.
 */
export const JSON_BUDGET = { containers: 2 * (3 * MAX_BATCH_ITEMS + 2), values: MAX_BATCH_ITEMS * (MAX_DESCRIPTOR_DIMS + 32) };

/**
 * `array`, its input cut after the first element that `valid` refuses, so that zod reports that
 * one alone. It gathers an issue for every bad element and spreads them into the parent's list in
 * one call: some 150,000 (a batch of descriptors of strings, 1 MiB of scopes) overflowed the stack
 * there, a 500 instead of the 400. `valid` is the element schema's own test unless a cheaper one
 * says the same (a full batch holds a million descriptor values).
 */
function firstBadElement<A extends z.ZodArray<z.ZodType>>(array: A, valid: (v: unknown) => boolean = (v) => array.element.safeParse(v).success) {
  return z.preprocess((v) => {
    if (!Array.isArray(v)) return v;
    const bad = v.findIndex((x) => !valid(x));
    return bad < 0 ? v : v.slice(0, bad + 1);
  }, array);
}

const INT8 = { min: -128, max: 127 };

/** A descriptor, in ingest and search alike. */
const Int8Vector = firstBadElement(
  z
    .array(z.int().min(INT8.min).max(INT8.max), { error: `descriptor must be an array of integers in ${INT8.min}..${INT8.max}` })
    .max(MAX_DESCRIPTOR_DIMS, `descriptor holds at most ${MAX_DESCRIPTOR_DIMS} values`),
  (v) => Number.isInteger(v) && (v as number) >= INT8.min && (v as number) <= INT8.max,
);

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'invalid_code' }),
      message: z.string().openapi({
        description: `For people. A value of the request it quotes (a field name, a path, a Content-Type) is cut after ${MAX_QUOTED_CHARS} characters, its length said.`,
        example: 'code must be 16 hex characters or 12 base64 characters for a 64-bit collection; got 15 characters',
      }),
      field: z.string().optional().openapi({ example: 'items.3.code' }),
      details: z.record(z.string(), z.unknown()).optional().openapi({
        description: 'The facts behind the error, e.g. on 402 {quota, used, requested, resets_at}, on 429 {retry_after_s, limit, window_s}, on 503 publish_failed {committed, generation}.',
      }),
    }),
  })
  .openapi('Error');

// --- admin -----------------------------------------------------------------------------------

const TenantName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'name must be 1-63 characters of a-z, 0-9, ".", "_" or "-", starting with a letter or digit');

export const CreateTenantBody = z.strictObject({ name: TenantName }).openapi('CreateTenant');

export const TenantSchema = z
  .object({ id: z.string().openapi({ example: 'tn_6f1c0e2a9b7d4c3e8f10a2b4' }), name: z.string(), created_at: z.string() })
  .openapi('Tenant');

// The operator's lists page by id, the collections by name (control/store.ts, Page): the cursor is
// the last key of the previous page, so a row created between two pages moves no other one across it.
export const NextAfter = z.string().nullable().openapi({ description: 'Pass as `after` for the next page; null: this page is the last.' });

export const TenantListSchema = z
  .object({ tenants: z.array(TenantSchema).openapi({ description: 'By id.' }), next_after: NextAfter })
  .openapi('TenantList');

/** Control characters: refused in ids and names, which logs, CSV and terminals print as they are. */
const CONTROL = /[\u0000-\u001f\u007f]/;
const noControl = (field: string) => [(s: string) => !CONTROL.test(s), `${field} must not contain control characters`] as const;

export const CollectionName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'collection name must be 1-63 characters of a-z, 0-9, "_" or "-", starting with a letter or digit')
  .openapi({ example: 'chest-xray' });

export const CreateKeyBody = z
  .strictObject({
    name: z.string().min(1).max(100).refine(...noControl('name')).optional(),
    scopes: firstBadElement(z.array(z.enum(SCOPES, { error: `scopes must be among ${SCOPES.join(', ')}` })).min(1, 'scopes must name at least one scope')),
    collections: firstBadElement(z.array(CollectionName).min(1).max(100)).optional().openapi({ description: 'Limit the key to these collection names of its tenant.' }),
  })
  .openapi('CreateKey');

export const ApiKeySchema = z
  .object({
    id: z.string().openapi({ example: 'key_0b1d2c3e4f5a6b7c8d9e0f1a' }),
    tenant_id: z.string(),
    name: z.string().nullable(),
    scopes: z.array(z.enum(SCOPES)),
    collections: z.array(z.string()).nullable(),
    created_at: z.string(),
    rotated_at: z.string().nullable(),
    revoked_at: z.string().nullable(),
  })
  .openapi('ApiKey');

export const ApiKeyWithSecretSchema = ApiKeySchema.extend({
  secret: z.string().openapi({ description: 'Shown once; only its SHA-256 is stored.', example: 'mh_...' }),
}).openapi('ApiKeyWithSecret');

export const ApiKeyListSchema = z
  .object({ keys: z.array(ApiKeySchema).openapi({ description: 'By id; revoked keys too (`revoked_at` set).' }), next_after: NextAfter })
  .openapi('ApiKeyList');

export const OrphanReportSchema = z
  .object({
    dry_run: z.boolean().openapi({ description: 'True: found and listed only (GET); false: deleted (DELETE).' }),
    orphans: z.array(
      z
        .object({
          collection: z.string().openapi({ description: 'The internal id of a collection no longer in the registry.', example: 'col_5c0f1e2d3c4b5a6978877665' }),
          prefix: z.string().openapi({ example: 'c/col_5c0f1e2d3c4b5a6978877665/' }),
          keys: z.number().int().openapi({ description: 'KV keys listed under the prefix.' }),
          bytes: z.number().int().optional().openapi({ description: 'Their total size (Node only).' }),
          writer_state: z.boolean().optional().openapi({ description: 'Writer state other than a finished tombstone found (Node only: a Worker cannot list Durable Objects).' }),
          deleted: z.boolean().optional(),
          error: z.string().optional().openapi({ description: 'Why its deletion failed: send the DELETE again.' }),
        })
        .openapi('Orphan'),
    ),
    keys: z.number().int(),
    bytes: z.number().int().optional(),
    strays: z.array(
      z
        .object({
          collection: z.string().openapi({ description: 'The internal id of a registered collection.', example: 'col_5c0f1e2d3c4b5a6978877665' }),
          shards: z.array(z.string()).openapi({ description: 'Its shard keys that its writer state names nowhere (not live, not being uploaded, not awaiting garbage collection).', example: ['c/col_5c0f1e2d3c4b5a6978877665/s/3a7b...'] }),
          deleted: z.boolean().optional(),
          error: z.string().optional().openapi({ description: 'Why its search or deletion failed: send the request again.' }),
        })
        .openapi('StrayShards'),
    ),
    damaged: z.array(
      z
        .object({
          collection: z.string().openapi({ description: 'The internal id of a collection whose writer state fails its check (a damaged byte), or, registered, is missing or older than its published manifest while KV holds its shards.', example: 'col_5c0f1e2d3c4b5a6978877665' }),
          registered: z.boolean().openapi({ description: 'Whether the registry holds it.' }),
          error: z.string().openapi({ description: 'Why its writer state was refused. Nothing of it is swept, and sending the request again does not change that.' }),
        })
        .openapi('DamagedWriterState'),
    ).openapi({ description: 'Collections whose writer state fails its check, registered or not (on Workers only a registered one holding shards, whose Durable Object reports it: a Worker cannot list Durable Objects), or, registered, is missing or older than its published manifest while KV holds its shards: left as they are, the others swept.' }),
    failed: z.number().int().openapi({ description: 'Orphans and strays whose deletion (or search) failed, and collections under damaged.' }),
  })
  .openapi('OrphanReport');

/** DELETE /v1/admin/orphans when a deletion failed: the sweep's record beside the error, so that a partial failure never reads as success. */
export const OrphansIncompleteSchema = ErrorSchema.extend(OrphanReportSchema.shape).openapi('OrphansIncomplete');

/** POST /v1/admin/tenants/{tenant}/collections/{collection}/adopt-manifest (store/writer.ts, adoptManifest). */
export const AdoptManifestSchema = z
  .object({
    collection: z.string().openapi({ description: 'The internal id of the collection.', example: 'col_5c0f1e2d3c4b5a6978877665' }),
    state: z.enum(['damaged', 'missing', 'behind']).openapi({ description: 'The writer state replaced: failing its check, absent, or older than the manifest in KV.' }),
    previous_generation: z.number().int().nullable().openapi({ description: "That state's generation where it could be read (behind), else null." }),
    generation: z.number().int().openapi({ description: 'The published manifest adopted: now the writer state, unchanged in KV.' }),
    count: z.number().int().openapi({ description: 'Items it holds: what searches answer from, as before.' }),
    shards: z.number().int(),
    note: z.string().openapi({ description: 'What was lost: items committed after the adopted generation and never published.' }),
  })
  .openapi('AdoptedManifest');

// --- collections -----------------------------------------------------------------------------

export const TenantParams = z.object({ tenant: z.string().min(1).openapi({ param: { name: 'tenant', in: 'path' }, example: 'tn_6f1c0e2a9b7d4c3e8f10a2b4' }) });

export const CollectionParams = z.object({
  collection: CollectionName.openapi({ param: { name: 'collection', in: 'path' } }),
});

export const CreateCollectionBody = z
  .strictObject({
    name: CollectionName,
    // the OpenAPI generator renders a literal of several values as its first alone (`enum: [16]`)
    bits: z.literal(CODE_BITS, { error: `bits must be one of ${CODE_BITS.join(', ')}` }).openapi({ type: 'integer', enum: [...CODE_BITS] }),
    descriptor_dims: z
      .int({ error: 'descriptor_dims must be an integer' })
      .min(0, 'descriptor_dims must be >= 0')
      .max(MAX_DESCRIPTOR_DIMS, `descriptor_dims must be <= ${MAX_DESCRIPTOR_DIMS}`)
      .default(0),
    model_id: z.string().min(1).max(128).refine(...noControl('model_id')).optional().openapi({ description: 'The model that produced the codes: a shipped model\'s id as /v1/models lists it (`NAME@sha12`, e.g. mednist-darf-b64@141b2f6f1afd) for the OOD gate and search by image, or any name of your own.' }),
  })
  .openapi('CreateCollection');

export const CollectionSchema = z
  .object({
    name: z.string(),
    bits: z.number().int(),
    descriptor_dims: z.number().int(),
    model_id: z.string().nullable(),
    created_at: z.string(),
    count: z.number().int().openapi({ description: 'Items in the live index.' }),
    shards: z.number().int(),
    generation: z.number().int().openapi({ description: 'Increases with every change to the index.' }),
  })
  .openapi('Collection');

// --- items -----------------------------------------------------------------------------------

const utf8Length = (s: string): number => new TextEncoder().encode(s).length;

export const ItemId = z
  .string()
  .min(1, 'id must not be empty')
  .refine((s) => utf8Length(s) <= MAX_ID_BYTES, `id must be at most ${MAX_ID_BYTES} bytes of UTF-8`)
  .refine(...noControl('id'))
  // A lone surrogate has no UTF-8 form: stored, it becomes U+FFFD and aliases another id (the
  // shard then holds two equal ids and fails verification on every read).
  .refine((s) => !/[\ud800-\udfff]/u.test(s), 'id must be valid Unicode (no lone surrogate \\ud800-\\udfff)')
  // URLs resolve these as path segments, so no item route could ever reach such an item.
  .refine((s) => s !== '.' && s !== '..', 'id must not be "." or ".." (a URL cannot address it)')
  .openapi({ example: 'mednist/CT/000123' });

export const ItemParams = CollectionParams.extend({
  id: ItemId.openapi({ param: { name: 'id', in: 'path' } }),
});

const DicomUid = z.string().regex(DICOM_UID, 'must be a DICOM UID (digits and dots)').max(MAX_UID_LENGTH);
const MetaText = (max: number) => z.string().min(1).max(max);

// `satisfies` ties the schema to the stored field list: a field missing or extra fails to compile.
const metadataShape = {
  label: MetaText(256).optional(),
  modality: MetaText(64).optional().openapi({ example: 'CT' }),
  body_part: MetaText(64).optional().openapi({ example: 'CHEST' }),
  source_uri: MetaText(2048).optional(),
  study_uid: DicomUid.optional(),
  series_uid: DicomUid.optional(),
  sop_uid: DicomUid.optional(),
  patient_ref: MetaText(128).optional().openapi({ description: 'Opaque reference; never a direct identifier.' }),
} satisfies Record<MetadataField, z.ZodType>;

export const MetadataSchema = z.strictObject(metadataShape).openapi('ItemMetadata');

const CodeString = z.string().min(1, 'code must not be empty').max(64).openapi({
  description: 'The packed hash code as hex (2 characters per byte) or padded standard base64; told apart by length.',
  example: '9f3a0c51e2d4b678',
});

export const ItemInput = z
  .strictObject({
    id: ItemId,
    code: CodeString,
    descriptor: Int8Vector.optional().openapi({ description: 'descriptor_dims int8 values; required when the collection has descriptor_dims > 0.' }),
    metadata: MetadataSchema.optional(),
  })
  .openapi('ItemInput');

export const IngestBody = z
  .strictObject({
    items: z
      .array(ItemInput)
      .min(1, 'items must hold at least one item')
      .max(MAX_BATCH_ITEMS, `a batch holds at most ${MAX_BATCH_ITEMS} items`),
  })
  .openapi('IngestBatch');

export const IngestResult = z
  .object({
    ingested: z.number().int().openapi({ description: 'Items in the batch, all now stored as sent.' }),
    generation: z.number().int().openapi({ description: 'Index generation that holds the batch.' }),
    visible: z.boolean().openapi({ description: 'False: the batch is stored (and metered) but the new index not yet published; the service publishes it within seconds, nothing to retry.' }),
  })
  .openapi('IngestResult');

export const EraseBody = z
  .strictObject({
    patient_ref: metadataShape.patient_ref,
    study_uid: metadataShape.study_uid,
  })
  // each names a field, as every 400 does: the missing one, or the second of two
  .refine((b) => b.patient_ref !== undefined || b.study_uid !== undefined, { message: 'patient_ref or study_uid is required (give exactly one)', path: ['patient_ref'] })
  .refine((b) => b.patient_ref === undefined || b.study_uid === undefined, { message: 'study_uid cannot be given with patient_ref (give exactly one)', path: ['study_uid'] })
  .openapi('EraseRequest');

export const EraseResultSchema = z
  .object({
    erased: z.number().int().openapi({ description: `Items deleted by this call (at most ${MAX_ERASE_ITEMS}; 0 when none matched).` }),
    remaining: z.number().int().openapi({ description: 'Matching items still stored: call again until 0.' }),
    generation: z.number().int().openapi({ description: 'Index generation without them.' }),
    visible: z.boolean().openapi({ description: 'False: the deletion is committed but the new index not yet published; the service publishes it within seconds, nothing to retry.' }),
  })
  .openapi('EraseResult');

export const ItemSchema = z
  .object({
    id: z.string(),
    code: z.string().openapi({ description: 'Hex.' }),
    descriptor: z.array(z.number().int()),
    metadata: MetadataSchema,
  })
  .openapi('Item');

// --- search ----------------------------------------------------------------------------------

const FilterValue = (field: string, max: number) =>
  z
    .union([MetaText(max), z.array(MetaText(max)).min(1, `${field} must name at least one value`).max(100, `${field} names at most 100 values`)], { error: `${field} must be a non-empty string or an array of them` })
    .optional();

export const SearchFilter = z
  .strictObject({
    label: FilterValue('label', 256),
    modality: FilterValue('modality', 64).openapi({ example: ['CT', 'MR'] }),
    body_part: FilterValue('body_part', 64),
  })
  .openapi('SearchFilter', { description: 'Keep only items whose metadata field equals the value (or one of the values); fields combine with AND.' });

/**
 * A number in a query string. Only decimal text (an exponent allowed) is a number:
 * z.coerce.number would take an empty value as 0 and '0x10' as 16, and a caller's typo would
 * silently change the search.
 */
export const QueryNumber = (n: z.ZodNumber) =>
  z.preprocess((v) => (typeof v === 'string' && /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(v) ? Number(v) : v), n);

/** content_weight, from a JSON number or a query string (QueryNumber). */
export const ContentWeight = (n: z.ZodNumber) =>
  n.min(0, 'content_weight must be between 0 and 1').max(1, 'content_weight must be between 0 and 1');

/** The clinician's exclusion of the query's own study or patient (search body and query string alike). */
export const Exclusions = {
  exclude_study_uid: DicomUid.optional().openapi({ description: "Leave out items of this study (the query's own)." }),
  exclude_patient_ref: MetaText(128).optional().openapi({ description: "Leave out items of this patient reference (the query's own patient)." }),
};

export const SearchBody = z
  .strictObject({
    code: CodeString,
    k: z.int({ error: 'k must be an integer' }).min(1, `k must be between 1 and ${MAX_K}`).max(MAX_K, `k must be between 1 and ${MAX_K}`).default(10),
    radius: z.int({ error: 'radius must be an integer' }).min(0, 'radius must be >= 0').optional().openapi({
      description: 'Only items within this Hamming distance (at most the code length).',
    }),
    descriptor: Int8Vector.optional().openapi({
      description: "The query's descriptor_dims int8 values (as ingest takes them): turns on content re-ranking of a widened candidate pool.",
    }),
    content_weight: ContentWeight(z.number({ error: 'content_weight must be a number' })).optional()
      .openapi({ description: `Weight of descriptor similarity in the final score (needs descriptor); 0 = Hamming order with content only breaking ties. Default ${DEFAULT_CONTENT_WEIGHT}.` }),
    filter: SearchFilter.optional(),
    ...Exclusions,
    allow_ood: z.boolean({ error: 'allow_ood must be true or false' }).default(false).openapi({
      description: 'Return results for an out-of-distribution query (marked so) instead of refusing it with 422.',
    }),
  })
  .openapi('SearchRequest');

export const OodAssessment = z
  .object({
    score: z.number().nullable().openapi({ description: 'The OOD score the verdict is based on (higher = further from the training data); null when not assessed, or when the model gave no number for the image (then out_of_distribution).' }),
    threshold: z.number().nullable().openapi({ description: 'Calibrated on the model\'s validation split at 95 % in-distribution recall.' }),
    verdict: z.enum(['in_distribution', 'out_of_distribution', 'not_assessed']),
    reasons: z.array(z.string()).openapi({ description: 'Plain-language reasons for the verdict.' }),
  })
  .openapi('OodAssessment');

/** Search's 422: an out-of-distribution refusal carries the assessment beside the error. */
export const OodRefusalSchema = ErrorSchema.extend({
  ood: OodAssessment.optional().openapi({ description: 'With error.code out_of_distribution: why the query was refused (absent for idempotency_key_reused).' }),
}).openapi('OodRefusal');

export const SearchResult = z
  .object({
    generation: z.number().int(),
    truncated: z.boolean().openapi({ description: 'With radius: more than k items lie within it.' }),
    ood: OodAssessment,
    results: z.array(
      z.object({
        id: z.string(),
        distance: z.number().int(),
        similarity: z.number().nullable().openapi({ description: 'Pearson correlation of descriptors in [-1, 1]; null without a query descriptor.' }),
        score: z.number().openapi({ description: '(1 - w) * (1 - distance / bits) + w * (similarity + 1) / 2, w = content_weight; without a descriptor 1 - distance / bits.' }),
        metadata: MetadataSchema,
      }),
    ).openapi({ description: 'Ordered by (score desc, similarity desc, distance, id bytewise): deterministic and independent of shard layout.' }),
  })
  .openapi('SearchResult');

// --- billing ---------------------------------------------------------------------------------

export const IdempotencyHeaders = z.object({
  'idempotency-key': z.string().optional().openapi({
    param: { name: 'idempotency-key', in: 'header' },
    description: 'Makes a retry free: the same key with the same request within 24 h gets the first answer again, billed once; with a different request, 422. 1-255 printable ASCII characters without spaces: a malformed key is a 400 invalid_idempotency_key on every /v1 route (after the 401/403, before the request is read), and a route that does not list this header ignores a well-formed one.',
    example: 'b7d1c7e0-2f4a-4c1e-9a57-3f1f0f6f3a21',
  }),
});

export const PlanBody = z
  .strictObject({
    // a slower refill would put years, or Infinity, into Retry-After
    rate_per_second: z.number({ error: 'rate_per_second must be a number' }).min(0.001, 'rate_per_second must be between 0.001 and 1000000').max(1e6, 'rate_per_second must be between 0.001 and 1000000')
      .openapi({ description: 'Token bucket refill: metered requests per second.' }),
    burst: z.int({ error: 'burst must be an integer' }).min(1, 'burst must be >= 1').max(1e6, 'burst must be <= 1000000')
      .openapi({ description: 'Bucket size: metered requests accepted at once after a quiet spell.' }),
    monthly_quota: z.int({ error: 'monthly_quota must be an integer or null' }).min(0, 'monthly_quota must be >= 0').nullable()
      .openapi({ description: 'Units per calendar month (UTC): searches + encodes + ingested items; null = unlimited.' }),
  })
  .openapi('PlanInput');

export const PlanSchema = z
  .object({
    tenant_id: z.string(),
    rate_per_second: z.number(),
    burst: z.number().int(),
    monthly_quota: z.number().int().nullable(),
    updated_at: z.string().nullable().openapi({ description: 'null: no plan set, the tenant runs on the default plan.' }),
    month: z.object({
      used: z.number().int().openapi({ description: 'Units used this calendar month (UTC).' }),
      resets_at: z.string(),
    }),
  })
  .openapi('Plan');

const Day = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date as YYYY-MM-DD (UTC)');

export const MAX_USAGE_DAYS = 366;

/** Today, UTC, as YYYY-MM-DD. */
export const today = (): string => new Date().toISOString().slice(0, 10);

/** The days a usage query asks for: `to` defaults to today (UTC), `from` to the first of `to`'s month. */
function usageWindow(q: { from?: string; to?: string }): { from: string; to: string } {
  const to = q.to ?? today();
  return { from: q.from ?? `${to.slice(0, 7)}-01`, to };
}

const isCalendarDay = (day: string): boolean => {
  const d = new Date(`${day}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === day;
};

// Strict, as every request object: a misspelt parameter is a 400, never a silently other answer.
// The window's own rules are the schema's too, so that a bad window is a 400 wherever a malformed
// parameter is one: after the key, before the tenant is looked up (docs/API.md, order of checks).
// Its defaults are resolved here, once, and the route answers for the window checked: "today"
// read twice could be two days around midnight (UTC).
export const UsageQuery = z
  .strictObject({
    from: Day.optional().openapi({ param: { name: 'from', in: 'query' }, description: 'First day (UTC), default: the first of this month.', example: '2026-11-01' }),
    to: Day.optional().openapi({ param: { name: 'to', in: 'query' }, description: 'Last day (UTC), inclusive; default: today.', example: '2026-11-30' }),
    format: z.enum(['json', 'csv'], { error: 'format must be json or csv' }).optional()
      .openapi({ param: { name: 'format', in: 'query' }, description: 'Overrides the Accept header (text/csv or application/json).' }),
  })
  .transform((q, ctx) => {
    for (const field of ['to', 'from'] as const) {
      const day = q[field];
      if (day !== undefined && !isCalendarDay(day)) {
        ctx.addIssue({ code: 'custom', path: [field], message: `${field} is not a calendar date: ${day}` });
        return z.NEVER;
      }
    }
    const { from, to } = usageWindow(q);
    const span = (Date.parse(to) - Date.parse(from)) / 86_400_000 + 1;
    if (span < 1) ctx.addIssue({ code: 'custom', path: ['from'], message: `from (${from}) must not be after to (${to})` });
    else if (span > MAX_USAGE_DAYS) ctx.addIssue({ code: 'custom', path: ['from'], message: `from must be at most ${MAX_USAGE_DAYS} days before to (inclusive); the window spans ${span}` });
    else return { ...q, from, to };
    return z.NEVER;
  });

const UsageCounts = {
  search: z.number().int(),
  encode: z.number().int(),
  ingest_item: z.number().int(),
  total: z.number().int(),
};

export const UsageSchema = z
  .object({
    version: z.literal(1),
    tenant_id: z.string(),
    from: z.string(),
    to: z.string(),
    days: z.array(z.object({ day: z.string(), ...UsageCounts })).openapi({ description: 'Days with any use, oldest first.' }),
    totals: z.object(UsageCounts),
  })
  .openapi('Usage');

const DEFAULT_PAGE = 100;
const pageSize = `1-${MAX_PAGE} (default ${DEFAULT_PAGE})`;

/** A page's `limit` in a query string, the same for every paged list; `description` says what it counts. */
const PageLimit = (description: string) =>
  QueryNumber(z.number({ error: 'limit must be an integer' }).int('limit must be an integer').min(1, `limit must be between 1 and ${MAX_PAGE}`).max(MAX_PAGE, `limit must be between 1 and ${MAX_PAGE}`))
    .default(DEFAULT_PAGE)
    .openapi({ param: { name: 'limit', in: 'query' }, description });

/** `limit` and `after` of a list paged by id (IdPage); `kind` names the ids, `prefix` their shape (randomId). */
const IdPageQuery = (kind: string, prefix: string, what: string) =>
  z.strictObject({
    limit: PageLimit(`${what} per page, ${pageSize}.`),
    after: z.string().regex(idPattern(prefix), `after must be a ${kind} id (${prefix}_ and ${ID_HEX_DIGITS} hex digits): the previous page's next_after`).optional()
      .openapi({ param: { name: 'after', in: 'query' }, description: `Continue after this ${kind} id (the previous page's \`next_after\`); without it, the first page.`, example: `${prefix}_6f1c0e2a9b7d4c3e8f10a2b4` }),
  });

export const TenantListQuery = IdPageQuery('tenant', ID_PREFIX.tenant, 'Tenants');
export const ApiKeyListQuery = IdPageQuery('key', ID_PREFIX.key, 'Keys');

export const CollectionListQuery = z.strictObject({
  limit: PageLimit(`Collections per page, ${pageSize}.`),
  after: CollectionName.optional()
    .openapi({ param: { name: 'after', in: 'query' }, description: 'Continue after this collection name (the previous page\'s `next_after`); without it, the first page.', example: 'chest-xray' }),
});

export const AuditQuery = z.strictObject({
  limit: PageLimit(`Events per page, ${pageSize}. A page also stops before its events' details pass ${MAX_AUDIT_PAGE_BYTES / 2 ** 20} MiB (it always holds one event), so it may hold fewer while next_before is set.`),
  before: QueryNumber(z.number({ error: 'before must be an integer' }).int('before must be an integer').min(1, 'before must be >= 1')).optional()
    .openapi({ param: { name: 'before', in: 'query' }, description: 'Continue below this seq (the previous page\'s next_before).' }),
});

export const AuditSchema = z
  .object({
    version: z.literal(1),
    events: z.array(
      z.object({
        seq: z.number().int(),
        at: z.string(),
        key_id: z.string().openapi({ description: 'The key that acted; "operator" for the admin API.' }),
        action: z.string().openapi({ example: 'search' }),
        collection: z.string().nullable(),
        detail: z.record(z.string(), z.unknown()).openapi({ description: 'Ids and counts only: never codes, image bytes or metadata.' }),
      }),
    ).openapi({ description: 'Newest first.' }),
    next_before: z.number().int().nullable().openapi({ description: 'Pass as `before` for the next page; null: no more. Set whenever the page ended at `limit` or at the byte bound, however many events it holds.' }),
  })
  .openapi('AuditLog');
