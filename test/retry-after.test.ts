// Retry-After as its readers take it (functions/util/retry-after.ts): seconds or an HTTP-date in
// any of its three forms, a past date as no wait, anything else as no header; and the edge's
// inference client reading a 503's through it (the SDK's: test/sdk/client.test.ts).
import { expect, it } from 'vitest';
import { BackendUnavailable, RemoteEncoder } from '../functions/inference/remote.ts';
import { retryAfterSeconds } from '../functions/util/retry-after.ts';

const NOW = Date.parse('2026-11-26T10:00:00.500Z');
const read = (value: string | null | undefined) => retryAfterSeconds(value, NOW);

it('reads delay-seconds, whitespace around them allowed', () => {
  expect(['120', '0', '007', ' 7 '].map(read)).toEqual([120, 0, 7, 7]);
});

it('reads an HTTP-date as the whole seconds until it, rounded up, in all three forms', () => {
  expect(read('Thu, 26 Nov 2026 10:01:30 GMT')).toBe(90); // IMF-fixdate: 89.5 s away
  expect(read('Thursday, 26-Nov-26 10:00:02 GMT')).toBe(2); // RFC 850
  expect(read('Thu Nov 26 10:00:10 2026')).toBe(10); // asctime
  expect(read('Sun Dec  6 10:00:00 2026')).toBe(10 * 86_400);
  expect(read('Fri, 26 Dec 2025 23:59:60 GMT')).toBe(0); // a leap second is a second
  // RFC 850's two-digit year: more than 50 years ahead is the century before
  expect(read('Thursday, 26-Nov-76 10:00:00 GMT')).toBe(Math.ceil((Date.parse('2076-11-26T10:00:00Z') - NOW) / 1000));
  expect(read('Friday, 26-Nov-77 10:00:00 GMT')).toBe(0);
});

it('a date already past is no wait, not a negative one', () => {
  expect(read('Thu, 26 Nov 2026 09:59:00 GMT')).toBe(0);
  expect(read('Thu, 26 Nov 2026 10:00:00 GMT')).toBe(0);
  expect(read('Sun Nov  6 08:49:37 1994')).toBe(0);
});

it('anything else is as if there were no header', () => {
  const garbage = [
    null, undefined, '', ' ', 'soon', '-5', '+5', '1.5', '1e3', '0x10', '5 s', '99999999999999999999',
    'thu, 26 nov 2026 10:00:00 gmt', 'Thu, 26 Nov 2026 10:00:00 UTC', 'Thu, 26 Nov 2026 10:00:00 +0000',
    'Thu, 26 Nov 26 10:00:00 GMT', '2026-11-26T10:01:00Z', 'Thu, 31 Feb 2026 10:00:00 GMT',
    'Thu, 00 Nov 2026 10:00:00 GMT', 'Thu, 26 Nov 2026 24:00:00 GMT', 'Thu, 26 Nov 2026 10:60:00 GMT',
    'Thu Nov 6 10:00:00 2026', 'Thuday, 26-Nov-26 10:00:00 GMT',
  ];
  expect(garbage.map((g) => [g, read(g)])).toEqual(garbage.map((g) => [g, undefined]));
});

it("the inference client passes on the wait of a 503's Retry-After, in either form, and nothing for another status", async () => {
  const failWith = async (status: number, retryAfter: string) => {
    const fetchFn = async () => new Response('', { status, headers: { 'retry-after': retryAfter } });
    const err = await new RemoteEncoder('http://backend.test', 1000, fetchFn).encode({ tensor: new Float32Array(1) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    return (err as BackendUnavailable).retryAfterS;
  };
  expect(await failWith(503, '3')).toBe(3);
  const wait = await failWith(503, new Date(Date.now() + 60_000).toUTCString());
  expect(wait).toBeGreaterThanOrEqual(58);
  expect(wait).toBeLessThanOrEqual(60);
  expect(await failWith(503, new Date(Date.now() - 60_000).toUTCString())).toBe(0);
  expect(await failWith(503, 'soon')).toBeUndefined();
  expect(await failWith(503, '')).toBeUndefined();
  expect(await failWith(500, '3')).toBeUndefined();
});
