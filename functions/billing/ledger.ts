// The billing ledger of tenants: plan, rate-limit token bucket, daily usage counters,
// idempotency records and the append-only audit log. Written once over SqlDb: Node keeps every
// tenant in one node:sqlite file, Workers one Durable Object per tenant (entries/durable.ts).
// Each method is one transaction, so counting is exact however many requests run at once: a
// Durable Object runs one call at a time, and node:sqlite calls are synchronous.
import type { SqlDb } from '../store/sql.ts';
import { badRequest } from '../util/errors.ts';

/** What a tenant pays for; one unit each. */
export const METER_KINDS = ['search', 'encode', 'ingest_item'] as const;
export type MeterKind = (typeof METER_KINDS)[number];

export interface Plan {
  /** Token bucket refill, in metered requests per second. */
  rate_per_second: number;
  /** Bucket size: the most metered requests accepted at once after a quiet spell. */
  burst: number;
  /** Units (searches + encodes + ingested items) per calendar month (UTC); null: unlimited. */
  monthly_quota: number | null;
  /** null until the operator sets a plan: the tenant runs on DEFAULT_PLAN. */
  updated_at: string | null;
}

export const DEFAULT_PLAN: Plan = { rate_per_second: 50, burst: 100, monthly_quota: null, updated_at: null };

export type PlanInput = Omit<Plan, 'updated_at'>;

/** The bucket after a decision, for the RateLimit-* headers. */
export interface RateState {
  limit: number;
  remaining: number;
  /** Seconds until the bucket is full again. */
  reset_s: number;
  /** Seconds the bucket takes to refill from empty. */
  window_s: number;
}

export interface StoredResponse {
  status: number;
  content_type: string;
  body: string;
}

export interface ChargeRequest {
  kind: MeterKind;
  units: number;
  idempotency?: Idempotency;
}

export interface Idempotency {
  key: string;
  /** Of the request as meter() sees it; a record under the key with another is a different request. */
  fingerprint: string;
}

/** A recorded charge; finish() keeps it (success) or takes it back (failure). */
export interface Charge {
  day: string;
  kind: MeterKind;
  units: number;
  idempotency_key: string | null;
  /** When this call claimed the key's pending record (its created_ms); null: it holds none. */
  claim_ms: number | null;
}

export type Admission =
  | { outcome: 'admitted'; charge: Charge; rate: RateState }
  /** `rate`: the bucket as it stands, untouched (a replay takes no token). */
  | { outcome: 'replay'; response: StoredResponse; rate: RateState }
  | { outcome: 'in_progress' }
  | { outcome: 'key_reused' }
  | { outcome: 'rate_limited'; retry_after_s: number; rate: RateState }
  | { outcome: 'quota_exhausted'; quota: number; used: number; requested: number; resets_at: string };

export interface AuditInput {
  key_id: string;
  action: string;
  collection?: string | null;
  /** Action-specific facts: ids and counts only, never codes, image bytes or metadata. */
  detail?: Record<string, unknown>;
}

export interface AuditEvent {
  seq: number;
  at: string;
  key_id: string;
  action: string;
  collection: string | null;
  detail: Record<string, unknown>;
}

/** One page of the audit log, newest first; `next_before`: the `before` of the next page, null when this one is the last. */
export interface AuditPage {
  events: AuditEvent[];
  next_before: number | null;
}

/**
 * The most bytes of event details one audit page holds (one event always fits: an ingest of
 * 1000 long ids records ~260 KB). Without it a page of 1000 such events was ~250 MB, read into
 * memory at once (a Durable Object has 128 MB).
 */
export const MAX_AUDIT_PAGE_BYTES = 1 << 20;

export interface Finish {
  charge?: Charge;
  ok: boolean;
  /** Kept for replays when the charge carried an idempotency key and the call succeeded; absent: too large to keep. */
  response?: StoredResponse;
  audit?: AuditInput;
}

export interface UsageDay {
  day: string;
  search: number;
  encode: number;
  ingest_item: number;
  total: number;
}

/** Idempotency records live a day; a pending one older than this is taken to be abandoned. */
export const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
export const PENDING_TTL_MS = 60_000;

interface IdemRow {
  fingerprint: string;
  state: 'pending' | 'done';
  created_ms: number;
  day: string;
  kind: MeterKind;
  units: number;
  status: number | null;
  content_type: string | null;
  body: string | null;
}

export function migrateLedger(db: SqlDb): void {
  db.exec(`CREATE TABLE IF NOT EXISTS plans (
    tenant_id TEXT PRIMARY KEY, rate_per_second REAL NOT NULL, burst INTEGER NOT NULL,
    monthly_quota INTEGER, updated_at TEXT NOT NULL)`);
  db.exec(`CREATE TABLE IF NOT EXISTS buckets (
    tenant_id TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_ms INTEGER NOT NULL)`);
  db.exec(`CREATE TABLE IF NOT EXISTS usage (
    tenant_id TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, units INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, kind))`);
  db.exec(`CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
    created_ms INTEGER NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, units INTEGER NOT NULL,
    status INTEGER, content_type TEXT, body TEXT, PRIMARY KEY (tenant_id, key))`);
  db.exec('CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_ms)');
  // seq is the rowid: rows are never deleted, so it only grows.
  db.exec(`CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, at TEXT NOT NULL, key_id TEXT NOT NULL,
    action TEXT NOT NULL, collection TEXT, detail TEXT NOT NULL)`);
  db.exec('CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant_id, seq)');
  // A key limited to some collections pages through their events alone (LedgerStore.audit).
  db.exec('CREATE INDEX IF NOT EXISTS audit_collection ON audit (tenant_id, collection, seq)');
  // Append-only is enforced by the database, not only by the absence of an API for it.
  db.exec(`CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`);
  db.exec(`CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`);
}

export class LedgerStore {
  constructor(
    private readonly db: SqlDb,
    private readonly clock: () => number = Date.now,
  ) {
    migrateLedger(db);
  }

  async plan(tenantId: string): Promise<Plan> {
    return this.loadPlan(tenantId);
  }

  async setPlan(tenantId: string, input: PlanInput, audit: AuditInput): Promise<Plan> {
    const at = new Date(this.clock()).toISOString();
    return this.db.transaction(() => {
      this.db.run(
        `INSERT INTO plans (tenant_id, rate_per_second, burst, monthly_quota, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant_id) DO UPDATE SET rate_per_second = excluded.rate_per_second, burst = excluded.burst,
           monthly_quota = excluded.monthly_quota, updated_at = excluded.updated_at`,
        tenantId, input.rate_per_second, input.burst, input.monthly_quota, at,
      );
      // A new plan starts with a full bucket of its own size.
      this.db.run('DELETE FROM buckets WHERE tenant_id = ?', tenantId);
      this.appendAudit(tenantId, at, audit);
      return this.loadPlan(tenantId);
    });
  }

  /**
   * Decides a metered call and, when admitted, records its charge at once, so that concurrent
   * calls cannot overrun the quota. An idempotency key seen before answers from its record.
   */
  async admit(tenantId: string, req: ChargeRequest): Promise<Admission> {
    if (!Number.isInteger(req.units) || req.units < 1) throw badRequest('invalid_units', `a metered call is at least one unit; got ${req.units}`);
    const nowMs = this.clock();
    return this.db.transaction(() => {
      const idem = req.idempotency;
      if (idem) {
        this.db.run('DELETE FROM idempotency WHERE created_ms < ?', nowMs - IDEMPOTENCY_TTL_MS);
        const rows = this.db.all<IdemRow>(
          'SELECT fingerprint, state, created_ms, day, kind, units, status, content_type, body FROM idempotency WHERE tenant_id = ? AND key = ?',
          tenantId, idem.key,
        );
        const prior = rows[0];
        if (prior) {
          if (prior.fingerprint !== idem.fingerprint) return { outcome: 'key_reused' };
          if (prior.state === 'done') {
            if (prior.body !== null) {
              const response = { status: Number(prior.status), content_type: String(prior.content_type), body: prior.body };
              return { outcome: 'replay', response, rate: this.bucket(tenantId, this.loadPlan(tenantId), nowMs).state };
            }
            // Answered and billed, but too large to keep: the retry runs again, free of charge.
            return { outcome: 'admitted', charge: { day: prior.day, kind: prior.kind, units: 0, idempotency_key: idem.key, claim_ms: null }, rate: this.bucket(tenantId, this.loadPlan(tenantId), nowMs).state };
          }
          if (prior.created_ms > nowMs - PENDING_TTL_MS) return { outcome: 'in_progress' };
          // The first attempt died mid-way: this retry takes over its charge rather than adding one.
          this.db.run('UPDATE idempotency SET created_ms = ? WHERE tenant_id = ? AND key = ?', nowMs, tenantId, idem.key);
          const plan = this.loadPlan(tenantId);
          return { outcome: 'admitted', charge: { day: prior.day, kind: prior.kind, units: prior.units, idempotency_key: idem.key, claim_ms: nowMs }, rate: this.bucket(tenantId, plan, nowMs).state };
        }
      }

      const plan = this.loadPlan(tenantId);
      const day = new Date(nowMs).toISOString().slice(0, 10);
      if (plan.monthly_quota !== null) {
        const used = this.monthUnits(tenantId, day);
        if (used + req.units > plan.monthly_quota) {
          return { outcome: 'quota_exhausted', quota: plan.monthly_quota, used, requested: req.units, resets_at: nextMonth(day) };
        }
      }
      const bucket = this.bucket(tenantId, plan, nowMs);
      if (bucket.tokens < 1) {
        return { outcome: 'rate_limited', retry_after_s: Math.max(1, Math.ceil((1 - bucket.tokens) / plan.rate_per_second)), rate: bucket.state };
      }
      const tokens = bucket.tokens - 1;
      this.db.run(
        'INSERT INTO buckets (tenant_id, tokens, updated_ms) VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET tokens = excluded.tokens, updated_ms = excluded.updated_ms',
        tenantId, tokens, bucket.at,
      );
      this.addUnits(tenantId, day, req.kind, req.units);
      if (idem) {
        this.db.run(
          'INSERT INTO idempotency (tenant_id, key, fingerprint, state, created_ms, day, kind, units) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
          tenantId, idem.key, idem.fingerprint, 'pending', nowMs, day, req.kind, req.units,
        );
      }
      return { outcome: 'admitted', charge: { day, kind: req.kind, units: req.units, idempotency_key: idem?.key ?? null, claim_ms: idem ? nowMs : null }, rate: rateState(plan, tokens) };
    });
  }

  /** Ends a call: keeps or takes back its charge, keeps its response for replays, appends its audit event. */
  async finish(tenantId: string, f: Finish): Promise<void> {
    const at = new Date(this.clock()).toISOString();
    this.db.transaction(() => {
      const { charge } = f;
      const key = charge?.idempotency_key;
      if (charge && !f.ok) {
        // A failed first attempt frees its key and takes its charge back; a failed re-run of an
        // answered request does not, nor does a slow attempt whose pending record a retry took
        // over (created_ms moved on): the charge is that retry's to settle now.
        const released = !key || this.db.run(
          "DELETE FROM idempotency WHERE tenant_id = ? AND key = ? AND state = 'pending' AND created_ms = ?",
          tenantId, key, charge.claim_ms,
        ).changes > 0;
        if (released) this.addUnits(tenantId, charge.day, charge.kind, -charge.units);
      }
      if (charge && key && f.ok) {
        // The first success settles the key (a later one, by a taken-over attempt, keeps it).
        const settled = this.db.run(
          "UPDATE idempotency SET state = 'done', status = ?, content_type = ?, body = ? WHERE tenant_id = ? AND key = ? AND (state = 'pending' OR body IS NULL)",
          f.response?.status ?? null, f.response?.content_type ?? null, f.response?.body ?? null, tenantId, key,
        ).changes > 0;
        // A taken-over attempt that succeeds after its taker failed (and took the charge back) is billed again.
        if (!settled && charge.units > 0 && this.db.all('SELECT 1 FROM idempotency WHERE tenant_id = ? AND key = ?', tenantId, key).length === 0) {
          this.addUnits(tenantId, charge.day, charge.kind, charge.units);
        }
      }
      if (f.ok && f.audit) this.appendAudit(tenantId, at, f.audit);
    });
  }

  /** Appends an event that carries no charge (the operator's changes to a tenant's keys). */
  async append(tenantId: string, audit: AuditInput): Promise<void> {
    this.appendAudit(tenantId, new Date(this.clock()).toISOString(), audit);
  }

  /** Days in [from, to] (YYYY-MM-DD, UTC) with any usage, oldest first. */
  async usage(tenantId: string, from: string, to: string): Promise<UsageDay[]> {
    const rows = this.db.all<{ day: string; kind: MeterKind; units: number }>(
      'SELECT day, kind, units FROM usage WHERE tenant_id = ? AND day >= ? AND day <= ? AND units != 0 ORDER BY day',
      tenantId, from, to,
    );
    const days = new Map<string, UsageDay>();
    for (const r of rows) {
      let d = days.get(r.day);
      if (!d) days.set(r.day, (d = { day: r.day, search: 0, encode: 0, ingest_item: 0, total: 0 }));
      d[r.kind] += Number(r.units);
      d.total += Number(r.units);
    }
    return [...days.values()];
  }

  /**
   * Newest first: at most `limit` events below seq `before` (exclusive), and no more than
   * MAX_AUDIT_PAGE_BYTES of details; with `collections` (a key limited to them), only the events
   * of those collections. Sizes are read first (octet_length reads a row's header, not its
   * detail) and the details of the page alone after; a limited key's events come from the
   * collection index, one ordered range per collection, never a scan of the others' events.
   */
  async audit(tenantId: string, limit: number, before?: number, collections: string[] | null = null): Promise<AuditPage> {
    const below = before ?? Number.MAX_SAFE_INTEGER;
    type Size = { seq: number; bytes: number };
    const sizes = (filter: string, ...params: (string | number)[]) => this.db.all<Size>(
      `SELECT seq, octet_length(detail) AS bytes FROM audit WHERE tenant_id = ? ${filter} AND seq < ? ORDER BY seq DESC LIMIT ?`,
      tenantId, ...params, below, limit,
    );
    const newest = collections === null
      ? sizes('')
      : [...new Set(collections)].flatMap((name) => sizes('AND collection = ?', name)).sort((a, b) => b.seq - a.seq).slice(0, limit);
    let n = 0;
    for (let bytes = 0; n < newest.length && (n === 0 || bytes + newest[n].bytes <= MAX_AUDIT_PAGE_BYTES); n++) bytes += newest[n].bytes;
    const page = newest.slice(0, n);
    const rows = page.length === 0 ? [] : this.db.all<{ seq: number; at: string; key_id: string; action: string; collection: string | null; detail: string }>(
      'SELECT seq, at, key_id, action, collection, detail FROM audit WHERE tenant_id = ? AND seq IN (SELECT value FROM json_each(?)) ORDER BY seq DESC',
      tenantId, JSON.stringify(page.map((r) => r.seq)),
    );
    const events = rows.map((r) => ({ seq: Number(r.seq), at: r.at, key_id: r.key_id, action: r.action, collection: r.collection, detail: JSON.parse(r.detail) }));
    // A page cut short by the bytes, or as long as asked for, may have more after it.
    const more = n < newest.length || newest.length === limit;
    return { events, next_before: more ? events[events.length - 1].seq : null };
  }

  private loadPlan(tenantId: string): Plan {
    const rows = this.db.all<Plan>('SELECT rate_per_second, burst, monthly_quota, updated_at FROM plans WHERE tenant_id = ?', tenantId);
    return rows.length ? { ...rows[0] } : { ...DEFAULT_PLAN };
  }

  /**
   * The bucket refilled up to now (not yet written back), and the time to write back with it:
   * never earlier than the stored one, so a clock that steps back and then forward again does not
   * refill the same interval twice.
   */
  private bucket(tenantId: string, plan: Plan, nowMs: number): { tokens: number; at: number; state: RateState } {
    const rows = this.db.all<{ tokens: number; updated_ms: number }>('SELECT tokens, updated_ms FROM buckets WHERE tenant_id = ?', tenantId);
    if (!rows.length) return { tokens: plan.burst, at: nowMs, state: rateState(plan, plan.burst) };
    const last = Number(rows[0].updated_ms);
    const tokens = Math.min(plan.burst, rows[0].tokens + (Math.max(0, nowMs - last) / 1000) * plan.rate_per_second);
    return { tokens, at: Math.max(nowMs, last), state: rateState(plan, tokens) };
  }

  private monthUnits(tenantId: string, day: string): number {
    const rows = this.db.all<{ n: number | null }>('SELECT SUM(units) AS n FROM usage WHERE tenant_id = ? AND day >= ? AND day <= ?', tenantId, `${day.slice(0, 7)}-01`, day);
    return Number(rows[0]?.n ?? 0);
  }

  private addUnits(tenantId: string, day: string, kind: MeterKind, units: number): void {
    this.db.run(
      'INSERT INTO usage (tenant_id, day, kind, units) VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, day, kind) DO UPDATE SET units = units + excluded.units',
      tenantId, day, kind, units,
    );
  }

  private appendAudit(tenantId: string, at: string, e: AuditInput): void {
    this.db.run(
      'INSERT INTO audit (tenant_id, at, key_id, action, collection, detail) VALUES (?, ?, ?, ?, ?, ?)',
      tenantId, at, e.key_id, e.action, e.collection ?? null, JSON.stringify(e.detail ?? {}),
    );
  }
}

/** What the API calls: the store itself on Node, an RPC proxy to the tenant's Durable Object on Workers. */
export type Ledger = Pick<LedgerStore, keyof LedgerStore>;

function rateState(plan: Plan, tokens: number): RateState {
  return {
    limit: plan.burst,
    remaining: Math.max(0, Math.floor(tokens)),
    reset_s: Math.ceil((plan.burst - tokens) / plan.rate_per_second),
    window_s: Math.ceil(plan.burst / plan.rate_per_second),
  };
}

function nextMonth(day: string): string {
  const d = new Date(`${day.slice(0, 7)}-01T00:00:00Z`);
  d.setUTCMonth(d.getUTCMonth() + 1);
  return d.toISOString();
}
