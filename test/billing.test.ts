// The billing ledger on node:sqlite with a controlled clock: what the HTTP suite cannot reach
// deterministically (refunds, bucket refill, abandoned idempotent attempts, expiry) and the
// database-enforced append-only audit log.
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { IDEMPOTENCY_TTL_MS, LedgerStore, MAX_AUDIT_PAGE_BYTES, PENDING_TTL_MS } from '../functions/billing/ledger.ts';
import { sqliteDb } from '../functions/store/sqlite.ts';

const T = 'tn_test';
const START = Date.parse('2026-11-26T10:00:00Z');

function ledger() {
  const clock = { now: START };
  const db = new DatabaseSync(':memory:');
  return { store: new LedgerStore(sqliteDb(db), () => clock.now), clock, db };
}

const actor = { key_id: 'key_1', action: 'search', collection: 'c' };

describe('billing ledger', () => {
  it('a failed call takes its charge back; a successful one keeps it', async () => {
    const { store } = ledger();
    const a = await store.admit(T, { kind: 'search', units: 1 });
    const b = await store.admit(T, { kind: 'ingest_item', units: 7 });
    if (a.outcome !== 'admitted' || b.outcome !== 'admitted') throw new Error('not admitted');
    await store.finish(T, { charge: a.charge, ok: true, audit: actor });
    await store.finish(T, { charge: b.charge, ok: false, audit: { ...actor, action: 'items.ingest' } });
    expect(await store.usage(T, '2026-11-01', '2026-11-30')).toEqual([{ day: '2026-11-26', search: 1, encode: 0, ingest_item: 0, total: 1 }]);
    expect((await store.audit(T, 10)).events.map((e) => e.action)).toEqual(['search']);
  });

  it('the bucket refills at the plan rate, up to the burst', async () => {
    const { store, clock } = ledger();
    await store.setPlan(T, { rate_per_second: 2, burst: 4, monthly_quota: null }, { key_id: 'operator', action: 'plan.update' });
    for (let i = 0; i < 4; i++) expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    const limited = await store.admit(T, { kind: 'search', units: 1 });
    expect(limited).toMatchObject({ outcome: 'rate_limited', retry_after_s: 1, rate: { limit: 4, remaining: 0 } });
    clock.now += 1000; // two tokens
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('rate_limited');
    clock.now += 3600_000; // never more than the burst
    for (let i = 0; i < 4; i++) expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('rate_limited');
  });

  it('a clock that steps back and then forward again refills the bucket once, not twice', async () => {
    const { store, clock } = ledger();
    await store.setPlan(T, { rate_per_second: 1, burst: 10, monthly_quota: null }, { key_id: 'operator', action: 'plan.update' });
    for (let i = 0; i < 10; i++) expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    clock.now = START + 3000; // three tokens; one spent, two left
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    clock.now = START + 1000; // an NTP step back: no refill; one more spent, one left
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    clock.now = START + 4000; // one second after the last real refill: two tokens, not four
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('admitted');
    expect((await store.admit(T, { kind: 'search', units: 1 })).outcome).toBe('rate_limited');
  });

  it('the quota counts the calendar month (UTC) and renews with the next one', async () => {
    const { store, clock } = ledger();
    await store.setPlan(T, { rate_per_second: 100, burst: 100, monthly_quota: 3 }, { key_id: 'operator', action: 'plan.update' });
    expect((await store.admit(T, { kind: 'ingest_item', units: 3 })).outcome).toBe('admitted');
    expect(await store.admit(T, { kind: 'encode', units: 1 })).toEqual({ outcome: 'quota_exhausted', quota: 3, used: 3, requested: 1, resets_at: '2026-12-01T00:00:00.000Z' });
    clock.now = Date.parse('2026-12-01T00:00:01Z');
    expect((await store.admit(T, { kind: 'encode', units: 1 })).outcome).toBe('admitted');
  });

  it('an abandoned idempotent attempt is taken over by its retry without a second charge', async () => {
    const { store, clock } = ledger();
    const idempotency = { key: 'k', fingerprint: 'f' };
    const first = await store.admit(T, { kind: 'search', units: 1, idempotency });
    expect(first.outcome).toBe('admitted');
    expect(await store.admit(T, { kind: 'search', units: 1, idempotency })).toEqual({ outcome: 'in_progress' });
    clock.now += PENDING_TTL_MS + 1; // the first attempt died without finishing
    const retry = await store.admit(T, { kind: 'search', units: 1, idempotency });
    if (retry.outcome !== 'admitted') throw new Error(retry.outcome);
    await store.finish(T, { charge: retry.charge, ok: true, response: { status: 200, content_type: 'application/json', body: '{"a":1}' } });
    // The replay takes no token: it reports the default plan's bucket, refilled since the first attempt.
    const replay = { outcome: 'replay', response: { status: 200, content_type: 'application/json', body: '{"a":1}' }, rate: { limit: 100, remaining: 100, reset_s: 0, window_s: 2 } };
    expect(await store.admit(T, { kind: 'search', units: 1, idempotency })).toEqual(replay);
    expect(await store.admit(T, { kind: 'search', units: 1, idempotency })).toEqual(replay);
    expect((await store.usage(T, '2026-11-26', '2026-11-26'))[0].search).toBe(1);
    clock.now += IDEMPOTENCY_TTL_MS + 1; // the record has expired: the key is fresh again
    expect((await store.admit(T, { kind: 'search', units: 1, idempotency: { key: 'k', fingerprint: 'other' } })).outcome).toBe('admitted');
  });

  it('a slow first attempt and the retry that took it over settle one charge, whichever finishes first and however', async () => {
    const answer = { status: 200, content_type: 'application/json', body: '{}' };
    for (const order of [['first', 'retry'], ['retry', 'first']] as const) {
      for (const [firstOk, retryOk] of [[true, false], [false, true]]) {
        const { store, clock } = ledger();
        const idempotency = { key: 'k', fingerprint: 'f' };
        const first = await store.admit(T, { kind: 'ingest_item', units: 5, idempotency });
        clock.now += PENDING_TTL_MS + 1; // the first attempt is only slow, not dead
        const retry = await store.admit(T, { kind: 'ingest_item', units: 5, idempotency });
        if (first.outcome !== 'admitted' || retry.outcome !== 'admitted') throw new Error('not admitted');
        for (const who of order) {
          const ok = who === 'first' ? firstOk : retryOk;
          await store.finish(T, { charge: (who === 'first' ? first : retry).charge, ok, response: ok ? answer : undefined });
        }
        // One of the two succeeded: billed exactly once.
        expect([order, firstOk, (await store.usage(T, '2026-11-26', '2026-11-26'))[0]?.ingest_item]).toEqual([order, firstOk, 5]);
      }
    }
  });

  it('an answer too large to keep is billed once: its retries run again for free', async () => {
    const { store } = ledger();
    const idempotency = { key: 'big', fingerprint: 'f' };
    const first = await store.admit(T, { kind: 'search', units: 1, idempotency });
    if (first.outcome !== 'admitted') throw new Error(first.outcome);
    await store.finish(T, { charge: first.charge, ok: true });
    for (const ok of [false, true]) {
      const again = await store.admit(T, { kind: 'search', units: 1, idempotency });
      if (again.outcome !== 'admitted') throw new Error(again.outcome);
      expect(again.charge.units).toBe(0);
      await store.finish(T, { charge: again.charge, ok });
    }
    expect((await store.usage(T, '2026-11-26', '2026-11-26'))[0].search).toBe(1);
  });

  it('the audit log is append-only in the database itself', async () => {
    const { store, db } = ledger();
    await store.finish(T, { ok: true, audit: actor });
    expect(() => db.exec("UPDATE audit SET action = 'nothing'")).toThrow(/append-only/);
    expect(() => db.exec('DELETE FROM audit')).toThrow(/append-only/);
    expect((await store.audit(T, 10)).events).toHaveLength(1);
  });

  it('an audit page stops before its details pass MAX_AUDIT_PAGE_BYTES, and always holds one event', async () => {
    const { store } = ledger();
    // as an ingest of long ids records them: 0.3 MiB each, so three fit a page and a fourth does not
    const ids = (e: number) => Array.from({ length: 1200 }, (_, i) => `${e}-${i}-`.padEnd(256, 'x'));
    for (let e = 0; e < 5; e++) await store.append(T, { ...actor, action: 'items.ingest', detail: { ids: ids(e) } });
    const first = await store.audit(T, 1000);
    expect(first.events.map((e) => e.detail.ids)).toEqual([ids(4), ids(3), ids(2)]);
    expect(JSON.stringify(first.events.map((e) => e.detail)).length).toBeLessThanOrEqual(MAX_AUDIT_PAGE_BYTES);
    expect(first.next_before).toBe(first.events[2].seq);
    const second = await store.audit(T, 1000, first.next_before!);
    expect([second.events.map((e) => e.detail.ids), second.next_before]).toEqual([[ids(1), ids(0)], null]);
    // an event over the budget on its own still makes a page (the API's batches bound its size)
    await store.append(T, { ...actor, detail: { pad: 'x'.repeat(MAX_AUDIT_PAGE_BYTES + 1) } });
    const alone = await store.audit(T, 1000);
    expect(alone.events).toHaveLength(1);
    expect(alone.next_before).toBe(alone.events[0].seq);
  });

  it('a key limited to collections pages through their events by the collection index, never a scan of the others', async () => {
    const { store, db } = ledger();
    for (let i = 0; i < 30; i++) await store.append(T, { ...actor, collection: ['a', 'b', 'c'][i % 3], detail: { i } });
    const page = await store.audit(T, 5, undefined, ['c', 'a', 'c']);
    expect(page.events.map((e) => [e.collection, e.detail.i])).toEqual([['c', 29], ['a', 27], ['c', 26], ['a', 24], ['c', 23]]);
    const next = await store.audit(T, 100, page.next_before!, ['a', 'c']);
    expect(next.events).toHaveLength(15);
    expect(next.next_before).toBeNull();
    const plan = db.prepare('EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE tenant_id = ? AND collection = ? AND seq < ? ORDER BY seq DESC LIMIT ?').all(T, 'a', 10, 5);
    expect(JSON.stringify(plan)).toMatch(/USING (COVERING )?INDEX audit_collection/);
  });

  it('rejects a charge of no units', async () => {
    const { store } = ledger();
    await expect(store.admit(T, { kind: 'encode', units: 0 })).rejects.toThrow(/at least one unit/);
  });
});
