// The shape of a JSON body, counted before it is parsed (functions/util/json-budget.ts), and the body
// limits routes state in the OpenAPI registry. The HTTP behaviour is in the shared API suite.
import { describe, expect, it } from 'vitest';
import { bodyLimits } from '../functions/api/body.ts';
import { overBudget } from '../functions/util/json-budget.ts';

const text = (s: string) => new TextEncoder().encode(s);
const count = (s: string) => {
  // the smallest budget the text fits, found by the answers at each bound
  const fits = (containers: number, values: number) => overBudget(text(s), { containers, values }) === null;
  let containers = 0, values = 0;
  while (!fits(containers, 1e9)) containers++;
  while (!fits(1e9, values)) values++;
  return { containers, values };
};

describe('JSON budget', () => {
  it('counts objects and arrays, and every value with the keys', () => {
    expect(count('{}')).toEqual({ containers: 1, values: 1 });
    expect(count('[1, 2.5e3, -3, true, false, null, "x"]')).toEqual({ containers: 1, values: 8 });
    expect(count('{"a": {"b": [[], {}]}, "c": "d"}')).toEqual({ containers: 5, values: 9 });
    expect(count(' \n\t[ ] ')).toEqual({ containers: 1, values: 1 });
  });

  it('skips string contents, escaped quotes and multi-byte characters included', () => {
    expect(count('["[{,:}]", "a\\"[{", "\\\\", "é{€[😀"]')).toEqual({ containers: 1, values: 5 });
    expect(count('{"k\\"[": "v"}')).toEqual({ containers: 1, values: 3 });
  });

  it('needs no valid JSON, and names the bound passed first', () => {
    expect(overBudget(text('[[[[[[['), { containers: 3, values: 100 })).toBe('objects and arrays');
    expect(overBudget(text('[1,2,3,4'), { containers: 3, values: 3 })).toBe('values');
    expect(overBudget(text('"never closed [[[['), { containers: 0, values: 1 })).toBeNull();
  });
});

describe('body limits', () => {
  const route = (method: string, path: string, extra: Record<string, unknown> = {}) => ({ type: 'route', route: { method, path, ...extra } });
  it('gives each route with a body its stated limit or the fallback, and none to a route without a body', () => {
    const table = bodyLimits([
      route('post', '/v1/a/{x}', { request: { body: {} }, 'x-max-body-bytes': 500 }),
      route('post', '/v1/b', { request: { body: {} } }),
      route('get', '/v1/c'),
      { type: 'component' },
    ], 100, 1000);
    expect([...table]).toEqual([['POST /v1/a/:x', 500], ['POST /v1/b', 100]]);
  });

  it('refuses at start a limit over the limit of every request, or on a route without a body', () => {
    expect(() => bodyLimits([route('post', '/v1/a', { request: { body: {} }, 'x-max-body-bytes': 1001 })], 100, 1000)).toThrow(/POST \/v1\/a: x-max-body-bytes must be an integer in 1..1000/);
    expect(() => bodyLimits([route('get', '/v1/a', { 'x-max-body-bytes': 10 })], 100, 1000)).toThrow(/takes no body/);
  });
});
