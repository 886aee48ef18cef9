// The browser SDK in a real browser (Chromium through playwright-core): the page loads the built
// module, encodes a real MedNIST query image with onnxruntime-web and searches by code. Its code
// must equal onnxruntime-node's for the same image, and the results must be of the query's class.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import { Client } from '../scripts/cli/client.ts';
import { encodedSource, openBatchEncoder, type BatchEncoder } from '../scripts/cli/encode.ts';
import { dataSetImages, type DataSetImages } from '../scripts/cli/images.ts';
import { indexRecords } from '../scripts/cli/indexer.ts';
import { buildSdk } from '../scripts/build-sdk.ts';
import { sharedDataRoot } from '../scripts/data/shared-data.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';

const ROOT = join(import.meta.dirname, '..');
const SET = existsSync(join(ROOT, 'models', 'mednist-darf-b64.onnx')) ? 'mednist' : 'brain_tumor_mri';
const MODEL = join(ROOT, 'models', `${SET}-darf-b64.onnx`);
const TYPES: Record<string, string> = { '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream', '.html': 'text/html' };

let dir: string;
let node: NodeBackend;
let server: ServerType;
let browser: Browser;
let encoder: BatchEncoder;
let data: DataSetImages;
let url: string;
let key: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-sdk-'));
  const sdkDir = await buildSdk(join(dir, 'sdk'));
  node = await createNodeBackend({ dataDir: join(dir, 'data'), operatorKey: TEST_OPERATOR_KEY });
  const app = createApp(node.backend);
  // One origin for the page, the SDK's files and the API (the API sends no CORS headers).
  const files: Record<string, string> = { '/static/sdk/': sdkDir, '/static/models/': join(ROOT, 'models') };
  server = await new Promise<ServerType>((ok) => {
    const s = serve({
      fetch: (req) => {
        const path = new URL(req.url).pathname;
        if (path === '/static/index.html') return new Response('<!doctype html><title>sdk</title>', { headers: { 'content-type': 'text/html' } });
        const prefix = Object.keys(files).find((p) => path.startsWith(p));
        if (!prefix) return app.fetch(req);
        const file = normalize(join(files[prefix], path.slice(prefix.length)));
        if (!file.startsWith(files[prefix]) || !existsSync(file)) return new Response('not found', { status: 404 });
        return new Response(readFileSync(file), { headers: { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' } });
      },
      port: 0,
      hostname: '127.0.0.1',
    }, () => ok(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const op = new Client(url, TEST_OPERATOR_KEY);
  const tenant = await op.request<{ id: string }>('POST', '/v1/admin/tenants', { name: 'sdk-test' });
  key = (await op.request<{ secret: string }>('POST', `/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search', 'ingest', 'admin'] })).secret;
  encoder = await openBatchEncoder({ model: MODEL });
  const api = new Client(url, key);
  await api.request('POST', '/v1/collections', { name: 'imgs', bits: 64, model_id: encoder.model_id });
  data = await dataSetImages(join(sharedDataRoot(), SET), 'db');
  await indexRecords(api, 'imgs', encodedSource(data.images.slice(0, 300), encoder, { descriptors: false, chunk: 64 }), { batchSize: 300 });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await encoder?.close();
  await data?.close();
  await new Promise((ok) => server?.close(ok));
  node?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('encodes in the browser with onnxruntime-web, as onnxruntime-node does, and finds the query\'s class', async () => {
  const query = await dataSetImages(join(sharedDataRoot(), SET), 'query');
  const q = query.images[0];
  const bytes = await q.read();
  await query.close();
  const [expected] = await encoder.encode([{ ...q, read: async () => bytes }]);
  const page = await browser.newPage();
  await page.goto(`${url}/static/index.html`);
  // A script string, not a function: the test runner rewrites dynamic imports in this file.
  const args = JSON.stringify({ key, image: Array.from(bytes), type: q.contentType, card: `/static/models/${SET}-darf-b64.card.json` });
  const out = (await page.evaluate(`(async () => {
    const { key, image, type, card } = ${args};
    const sdk = await import('/static/sdk/medhash-sdk.mjs');
    const client = await sdk.createMedhashClient({ baseUrl: location.origin, apiKey: key, cardUrl: card, assetsUrl: '/static/sdk/' });
    const r = await client.searchByImage('imgs', new Uint8Array(image), type, 10);
    return { runtime: client.runtime, code: r.encoding.code, labels: r.results.map((x) => x.metadata.label) };
  })()`)) as { runtime: string; code: string; labels: string[] };
  await page.close();
  expect(out.runtime).toMatch(/^onnxruntime-web\//);
  expect(out.code).toBe(expected.code);
  expect(out.labels).toHaveLength(10);
  expect(out.labels.filter((l) => l === q.label).length).toBeGreaterThanOrEqual(7);
});
