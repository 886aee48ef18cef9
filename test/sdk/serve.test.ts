// The Node entry's static SDK routes (functions/sdk/serve-node.ts) on their own, without a
// server or a browser: what the /ui page, which handles an API key, is served as.
import { expect, it } from 'vitest';
import { sdkRoutes } from '../../functions/sdk/serve-node.ts';

const app = sdkRoutes();

it("/ui's forms never submit themselves: sent before ui.js runs (or when it failed), the key or the file name would land in the URL", async () => {
  const html = await (await app.request('/ui')).text();
  const forms = html.match(/<form\b[^>]*>/g) ?? [];
  expect(forms.map((f) => /\bid="(\w+)"/.exec(f)?.[1])).toEqual(['connect', 'search']);
  // method="dialog" outside a <dialog>: a submit only fires the event the page script handles.
  for (const form of forms) expect(form).toMatch(/\bmethod="dialog"/);
});

it('/ui, which takes an API key, cannot be framed, runs only its own scripts, and sends no Referer; /sdk files are not sniffed', async () => {
  const page = await app.request('/ui');
  const csp = Object.fromEntries((page.headers.get('content-security-policy') ?? '').split(';').map((d) => d.trim().split(/\s+/)).map(([name, ...v]) => [name, v]));
  expect(csp['frame-ancestors']).toEqual(["'none'"]);
  expect(csp['default-src']).toEqual(["'none'"]);
  // its bundle, and the WebAssembly it compiles; no inline script, no other origin, no eval
  expect(csp['script-src']).toEqual(["'self'", "'wasm-unsafe-eval'"]);
  expect(csp['connect-src']).toEqual(["'self'"]);
  // the preview is an object URL of the chosen file (or of a DICOM's pixels drawn as a PNG)
  expect(csp['img-src']).toEqual(["'self'", 'blob:']);
  expect(page.headers.get('x-frame-options')).toBe('DENY');
  expect(page.headers.get('x-content-type-options')).toBe('nosniff');
  expect(page.headers.get('referrer-policy')).toBe('no-referrer');
  // the page itself keeps to it: its one script is the bundle, loaded from this origin
  const html = await page.text();
  expect(html.match(/<script\b[^>]*>/g)).toEqual(['<script type="module" src="/sdk/ui.js">']);
  const wasm = await app.request('/sdk/squoosh_png_bg.wasm');
  expect(wasm.status).toBe(200);
  expect(wasm.headers.get('x-content-type-options')).toBe('nosniff');
});

it("/ui's styles are a stylesheet of its own origin: no inline style, so the CSP allows none", async () => {
  const page = await app.request('/ui');
  const csp = page.headers.get('content-security-policy') ?? '';
  expect(csp).not.toContain('unsafe-inline');
  expect(csp.split(';').map((d) => d.trim()).filter((d) => d.startsWith('style-src'))).toEqual(["style-src 'self'"]);
  const html = await page.text();
  expect(html).not.toMatch(/<style\b|\sstyle\s*=/i);
  expect(html.match(/<link\b[^>]*>/g)).toEqual(['<link rel="stylesheet" href="/sdk/ui.css">']);
  const css = await app.request('/sdk/ui.css');
  expect(css.status).toBe(200);
  expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
  expect(css.headers.get('x-content-type-options')).toBe('nosniff');
  expect(await css.text()).toContain('#drop {');
});
