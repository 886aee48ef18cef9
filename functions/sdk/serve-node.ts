// Node entry's static part of the SDK: the search page at /ui, and under /sdk/ the SDK bundle,
// the page's script and stylesheet and the WebAssembly files they fetch. Bundles are built in memory by esbuild
// on first request (no committed build output); the .wasm files are read from node_modules.
import { readFile } from 'node:fs/promises';
import { Hono } from 'hono';
import { MedhashError, notFound } from '../util/errors.ts';
import { assetFiles, buildBundles, PAGE, STYLESHEET } from './build.ts';

// The page takes an API key: no framing (clickjacking), no script but our own bundle (whose
// onnxruntime and codecs compile WebAssembly), no requests but to this origin, and no URL of it
// in a Referer. Its styles are a stylesheet of its own (no inline style to allow); the preview is a
// blob: URL.
const PAGE_HEADERS = {
  'content-security-policy': [
    "default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'", "style-src 'self'", "img-src 'self' blob:",
    "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};
const NOSNIFF = { 'x-content-type-options': 'nosniff' };

export function sdkRoutes(): Hono {
  const app = new Hono();
  let bundles: Promise<Map<string, Uint8Array>> | null = null;
  const assets = assetFiles();
  const wasm = new Map<string, Promise<Uint8Array>>();

  app.get('/ui', async (c) => c.html(await readFile(PAGE, 'utf8'), 200, PAGE_HEADERS));
  app.get('/sdk/:file', async (c) => {
    const file = c.req.param('file');
    if (file === STYLESHEET.name) {
      return c.body(await readFile(STYLESHEET.path, 'utf8'), 200, { ...NOSNIFF, 'content-type': 'text/css; charset=utf-8', 'cache-control': 'no-cache' });
    }
    if (file.endsWith('.js')) {
      bundles ??= buildBundles().catch((e: Error) => {
        bundles = null;
        throw new MedhashError(503, 'sdk_build_failed', `building the SDK failed: ${e.message}`);
      });
      const js = (await bundles).get(file);
      if (!js) throw notFound('file', file);
      return c.body(js as Uint8Array<ArrayBuffer>, 200, { ...NOSNIFF, 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-cache' });
    }
    // Own keys only: `toString` or `constructor` must be a 404, not an inherited function.
    const path = Object.hasOwn(assets, file) ? assets[file] : undefined;
    if (!path) throw notFound('file', file);
    let bytes = wasm.get(file);
    if (!bytes) wasm.set(file, (bytes = readFile(path)));
    return c.body((await bytes) as Uint8Array<ArrayBuffer>, 200, { ...NOSNIFF, 'content-type': 'application/wasm', 'cache-control': 'public, max-age=86400' });
  });
  return app;
}
