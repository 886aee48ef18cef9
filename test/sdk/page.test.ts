// The /ui page's handling of a key, of its downloads and of the chosen file, in real Chromium
// against the Node service (no index needed): a wrong key after a good one leaves nothing of the
// good one's to choose; the model's and onnxruntime-web's downloads are shown byte by byte; a .wasm
// that arrives as a 200 but is not the module, or is cut off short of its Content-Length, fails one load
// naming the file, not the page's every later one; a failed
// model load is tried again by Retry; the page
// loads and searches under its CSP (no inline style) with no violation; a file over the service's
// image limit is refused by its size, unread, and a preview's object URL is revoked when another
// image replaces it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { loadCard, type ModelCard } from '../../functions/encode/card.ts';
import { DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { startNodeServer, type RunningServer } from '../../functions/entries/node.ts';
import { assetFiles } from '../../functions/sdk/build.ts';
import { ASSETS } from '../../functions/sdk/index.ts';
import { MODELS } from '../encode/fixtures.ts';
import { png, scanlines } from '../encode/png-fixtures.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';
import { watchProblems } from '../shared/page-problems.ts';
import { launchChromium } from '../../scripts/browser/chromium.ts';

const IMAGE_LABEL = 'Image (PNG, JPEG or DICOM), or drop it here';
/** Hang guard for a test that loads the model (download, wasm compile) on a loaded 2-core machine. */
const MODEL_LOAD_MS = 150_000;

let dir: string;
let server: RunningServer;
let key: string;
let card: ModelCard;
let browser: Browser;

async function operator(method: string, path: string, body: unknown, auth = TEST_OPERATOR_KEY) {
  const res = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.ok).toBe(true);
  return (await res.json()) as any;
}

/** A 64x64 grey PNG of noise (some kB, so reading its first bytes is not reading it all); `seed` makes two differ. */
function greyPng(seed: number): Buffer {
  let x = seed;
  const px = Array.from({ length: 64 * 64 }, () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24);
  return Buffer.from(png({ width: 64, height: 64, colorType: 0, bitDepth: 8, raw: scanlines(64, 64, 1, 8, px) }));
}

async function connect(page: Page, apiKey: string): Promise<void> {
  await page.getByLabel('API key').fill(apiKey);
  await page.getByRole('button', { name: 'Connect' }).click();
}

/** A fresh /ui page, connected with the test key, its first collection's model loaded. */
async function readyPage(): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${server.url}/ui`);
  await connect(page, key);
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  return page;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-ui-'));
  server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir, operatorKey: TEST_OPERATOR_KEY });
  const tenant = await operator('POST', '/v1/admin/tenants', { name: 'ui' });
  key = (await operator('POST', `/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search', 'admin'] })).secret;
  ({ card } = await loadCard(join(MODELS, 'mednist-darf-b64.card.json')));
  for (const name of ['mednist', 'mednist2']) await operator('POST', '/v1/collections', { name, bits: card.bits, descriptor_dims: card.descriptor.dims, model_id: card.model_id }, key);
  browser = await launchChromium();
}, 120_000);

// a failed test's page, still loading, would slow the next test down
afterEach(() => Promise.all(browser.contexts().map((c) => c.close())));

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('a wrong key after a good one clears the collection list, the choice and the model, and says the key was refused', async () => {
  const page = await readyPage();
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: greyPng(100) });
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.getByRole('button', { name: 'Search' }).isEnabled()).toBe(true);

  await connect(page, 'mh_not-a-key');
  await page.locator('#error', { hasText: 'unknown or revoked API key' }).waitFor();
  expect(await page.locator('#collection option').count()).toBe(0);
  expect(await page.getByLabel('Collection').isDisabled()).toBe(true);
  expect(await page.locator('#model-status').textContent()).not.toContain('ready');
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
}, MODEL_LOAD_MS);

it('a service that does not answer, or answers with a web page, is named as such in the error line', async () => {
  const page = await browser.newPage();
  const list = (u: URL) => u.pathname === '/v1/collections';
  await page.route(list, (route) => route.abort('connectionrefused'));
  await page.goto(`${server.url}/ui`);
  await connect(page, key);
  await page.locator('#error', { hasText: /./ }).waitFor();
  expect(await page.getByRole('alert').textContent()).toBe(`${server.url}/v1/collections?limit=1000: no answer from the service (Failed to fetch); is it down, or unreachable from here?`);
  await page.unrouteAll();
  await page.route(list, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>Sign in</title>' }));
  await connect(page, key);
  await page.locator('#error', { hasText: /./ }).waitFor();
  expect(await page.getByRole('alert').textContent()).toBe(`/v1/collections?limit=1000: the answer is not the service's JSON (HTTP 200, text/html); is ${server.url} the medhash service?`);
  expect(await page.getByLabel('Collection').isDisabled()).toBe(true);
});

it("the model's and onnxruntime-web's downloads are shown byte by byte: increasing received bytes up to each file's size", async () => {
  // the sizes the service announces (Content-Length), which the bar must end at
  const sizes = {
    runtime: Number((await fetch(`${server.url}/sdk/${ASSETS.ort}`)).headers.get('content-length')),
    model: readFileSync(join(MODELS, card.onnx)).length,
  };
  expect(sizes.runtime).toBeGreaterThan(1e6);
  const page = await browser.newPage();
  await page.goto(`${server.url}/ui`);
  // every change of the bar, with its status and byte count
  await page.evaluate(() => {
    const bar = document.getElementById('model-progress') as HTMLProgressElement;
    const seen: Array<{ value: number; max: number; status: string; bytes: string }> = [];
    (window as unknown as { seen: typeof seen }).seen = seen;
    new MutationObserver(() => seen.push({
      value: bar.value, max: bar.max, status: document.getElementById('model-status')!.textContent!, bytes: document.getElementById('model-bytes')?.textContent ?? '',
    })).observe(bar, { attributes: true });
  });
  await connect(page, key);
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  const seen = (await page.evaluate('window.seen')) as Array<{ value: number; max: number; status: string; bytes: string }>;

  for (const [what, size] of Object.entries(sizes)) {
    const of = seen.filter((s) => s.max === size);
    const values = of.map((s) => s.value);
    expect(values.length, `${what}: progress seen`).toBeGreaterThan(1);
    expect(values.every((v, i) => i === 0 || v > values[i - 1]), `${what}: increasing`).toBe(true);
    expect(values.at(-1), `${what}: ends at its size`).toBe(size);
    expect(of.at(-1)!.bytes).toBe(`${(size / 1e6).toFixed(1)} of ${(size / 1e6).toFixed(1)} MB`);
    expect(of.at(-1)!.status).toBe(what === 'model' ? `downloading ${card.model_id}...` : 'downloading the onnxruntime-web runtime...');
  }
}, MODEL_LOAD_MS);

it("onnxruntime-web's .wasm answered as a 200 that is not the module fails that load, naming it, and the next load fetches it again", async () => {
  const url = `${server.url}/sdk/${ASSETS.ort}`;
  const whole = readFileSync(assetFiles()[ASSETS.ort]);
  // a proxy's error page, then the file cut off (its magic right, its end missing), then the file
  const bad = [Buffer.from('<!doctype html><title>502 Bad Gateway</title>'), whole.subarray(0, 1 << 20)];
  const page = await browser.newPage();
  await page.route(url, (route) => {
    const body = bad.shift();
    return body ? route.fulfill({ status: 200, contentType: 'application/wasm', body }) : route.continue();
  });
  await page.goto(`${server.url}/ui`);
  const out = await loadTries(page, 3);
  expect(out).toEqual([
    `failed: ${url} is not WebAssembly (45 bytes starting 3c 21 64 6f 63 74 79 70; application/wasm); loading again fetches it again`,
    `failed: ${url} is not a valid WebAssembly module (${1 << 20} bytes: cut off or damaged); loading again fetches it again`,
    card.model_id,
  ]);
}, MODEL_LOAD_MS);

it("onnxruntime-web's .wasm cut off short of its Content-Length fails that load naming the file and how far it got, and the next load fetches it again", async () => {
  const url = `${server.url}/sdk/${ASSETS.ort}`;
  const whole = readFileSync(assetFiles()[ASSETS.ort]);
  // the whole file announced, half of it sent, then the connection closed
  const cut = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/wasm', 'content-length': String(whole.length) });
    res.write(whole.subarray(0, whole.length >> 1), () => res.destroy());
  });
  await new Promise<void>((resolve) => cut.listen(0, '127.0.0.1', resolve));
  try {
    let fetches = 0;
    const page = await browser.newPage();
    await page.route(url, (route) => (fetches++ === 0 ? route.continue({ url: `http://127.0.0.1:${(cut.address() as AddressInfo).port}/` }) : route.continue()));
    await page.goto(`${server.url}/ui`);
    const out = await loadTries(page, 2);
    expect(out).toEqual([
      expect.stringMatching(new RegExp(`^failed: ${url.replace(/[.?]/g, '\\$&')} is incomplete: \\d+ of the ${whole.length} bytes announced \\(.+\\); loading again fetches it again$`)),
      card.model_id,
    ]);
    expect(fetches).toBe(2);
  } finally {
    cut.close();
  }
}, MODEL_LOAD_MS);

it('after a model load fails, Retry loads it again: no reconnecting, and Search is enabled once it is ready', async () => {
  const page = await browser.newPage();
  let failures = 1;
  await page.route(`${server.url}/v1/models/${encodeURIComponent(card.model_id)}/onnx`, (route) =>
    failures-- > 0 ? route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'unavailable', message: 'model store unavailable' } }) }) : route.continue());
  await page.goto(`${server.url}/ui`);
  const retry = page.getByRole('button', { name: 'Retry' });
  expect(await retry.isVisible()).toBe(false);
  await connect(page, key);
  await page.locator('#model-status', { hasText: 'model failed to load' }).waitFor({ timeout: 60_000 });
  expect(await page.getByRole('alert').textContent()).toBe('model store unavailable');
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: greyPng(200) });
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
  // a new image is no answer to why the model failed: its reason stays beside "model failed to load"
  expect(await page.getByRole('alert').textContent()).toBe('model store unavailable');
  // the one collection, chosen again, is no change: Retry is the way
  await retry.click();
  expect(await retry.isVisible()).toBe(false);
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  expect(await page.getByRole('alert').textContent()).toBe('');
  expect(await retry.isVisible()).toBe(false);
  expect(await page.getByRole('button', { name: 'Search' }).isEnabled()).toBe(true);
}, MODEL_LOAD_MS);

it('loads, connects and searches under its CSP with no violation: its styles come from its own stylesheet', async () => {
  const page = await browser.newPage();
  const problems = await watchProblems(page);
  const res = await page.goto(`${server.url}/ui`);
  expect(res?.headers()['content-security-policy']).not.toContain('unsafe-inline');
  // the stylesheet applies
  expect(await page.evaluate(() => getComputedStyle(document.getElementById('drop')!).borderTopStyle)).toBe('dashed');
  await connect(page, key);
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: greyPng(300) });
  await page.getByLabel('Show results even when the image looks out of distribution').check();
  await page.getByRole('button', { name: 'Search' }).click();
  // the collection is empty: an answer with no results, its verdict shown with its class
  await page.locator('#results li', { hasText: 'No results.' }).waitFor({ timeout: 60_000 });
  expect(await page.locator('#ood').isVisible()).toBe(true);
  expect(await page.getByRole('alert').textContent()).toBe('');
  expect(problems).toEqual([]);
}, MODEL_LOAD_MS);

it("a search's error goes with its answer when another collection is chosen; an image's error stays until another image", async () => {
  const page = await readyPage();
  // noise is out of distribution for the MedNIST model: refused, with the reason in the error line
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: greyPng(400) });
  await page.locator('#preview:not([hidden])').waitFor();
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#error', { hasText: 'Results withheld' }).waitFor({ timeout: 60_000 });
  await page.getByLabel('Collection').selectOption('mednist2');
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor();
  expect(await page.locator('#ood').isHidden()).toBe(true);
  expect(await page.getByRole('alert').textContent()).toBe('');

  // a file the page refuses: its reason stays while another collection is chosen, Search stays disabled
  const huge = DEFAULT_LIMITS.maxBytes + 1;
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'big.png', mimeType: 'image/png', buffer: Buffer.alloc(huge) });
  await page.locator('#error', { hasText: 'image is' }).waitFor();
  await page.getByLabel('Collection').selectOption('mednist');
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor();
  expect(await page.getByRole('alert').textContent()).toBe(`image is ${huge} bytes; at most ${DEFAULT_LIMITS.maxBytes} (8 MiB)`);
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
}, MODEL_LOAD_MS);

it('a running search says so, and Search gets the keyboard focus back with the answer', async () => {
  const page = await readyPage();
  await page.getByLabel(IMAGE_LABEL).setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: greyPng(500) });
  await page.locator('#preview:not([hidden])').waitFor();
  // the search request is held until the page has been looked at
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route(`${server.url}/v1/collections/*/search`, async (route) => {
    await held;
    await route.continue();
  });
  // noise is out of distribution: allowed, so that the SDK's own gate sends the search instead of refusing it here
  await page.getByLabel('Show results even when the image looks out of distribution').check();
  // click() waits for the file check to enable the button, and focuses it (Chromium), as a key press would
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#encoded', { hasText: 'Encoding the image here, then searching...' }).waitFor({ timeout: 60_000 });
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
  release();
  await page.locator('#ood:not([hidden])').waitFor({ timeout: 60_000 });
  await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('go');
  expect(await page.locator('#encoded').textContent()).not.toContain('searching');
}, MODEL_LOAD_MS);

it("a file over the service's image limit is refused by its size, unread; a preview's object URL is revoked when another image replaces it", async () => {
  const page = await browser.newPage();
  await page.goto(`${server.url}/ui`);
  // every read of a file's bytes (its size), and every object URL revoked
  await page.evaluate(() => {
    const w = window as unknown as { reads: number[]; revoked: string[] };
    w.reads = [];
    w.revoked = [];
    for (const name of ['arrayBuffer', 'text', 'stream', 'bytes'] as const) {
      const read = (Blob.prototype as any)[name];
      if (read) (Blob.prototype as any)[name] = function (this: Blob) { w.reads.push(this.size); return read.call(this); };
    }
    for (const name of ['readAsArrayBuffer', 'readAsBinaryString', 'readAsDataURL', 'readAsText'] as const) {
      const read = FileReader.prototype[name] as (b: Blob) => void;
      (FileReader.prototype as any)[name] = function (this: FileReader, b: Blob, ...rest: unknown[]) { w.reads.push(b.size); return (read as any).call(this, b, ...rest); };
    }
    const revoke = URL.revokeObjectURL;
    URL.revokeObjectURL = (url: string) => { w.revoked.push(url); revoke(url); };
  });
  const input = page.getByLabel(IMAGE_LABEL);
  const shownOrRefused = () => page.waitForFunction(() => document.getElementById('error')!.textContent !== '' || !(document.getElementById('preview') as HTMLImageElement).hidden);

  // Dropped on the page, one byte over the limit: made in the page from one 1 MiB part repeated,
  // which costs no memory until it is read.
  const huge = DEFAULT_LIMITS.maxBytes + 1;
  await page.evaluate((size) => {
    const mib = new Blob([new Uint8Array(1 << 20)]);
    const parts = [...Array<Blob>(Math.floor(size / (1 << 20))).fill(mib), new Uint8Array(size % (1 << 20))];
    const files = new DataTransfer();
    files.items.add(new File(parts, 'huge.png', { type: 'image/png' }));
    document.getElementById('drop')!.dispatchEvent(new DragEvent('drop', { dataTransfer: files, bubbles: true, cancelable: true }));
  }, huge);
  await shownOrRefused();
  expect(await page.getByRole('alert').textContent()).toBe(`image is ${huge} bytes; at most ${DEFAULT_LIMITS.maxBytes} (8 MiB)`);
  expect(await page.locator('#preview').isHidden()).toBe(true);
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
  expect(await page.evaluate('window.reads')).toEqual([]);

  const [a, b] = [greyPng(100), greyPng(200)];
  await input.setInputFiles({ name: 'a.png', mimeType: 'image/png', buffer: a });
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.getByRole('alert').textContent()).toBe('');
  const first = (await page.locator('#preview').getAttribute('src'))!;
  expect(first).toMatch(/^blob:/);
  await input.setInputFiles({ name: 'b.png', mimeType: 'image/png', buffer: b });
  await page.waitForFunction((src) => (document.getElementById('preview') as HTMLImageElement).getAttribute('src') !== src, first);
  expect(await page.evaluate('window.revoked')).toEqual([first]);
  // the previews showed the files themselves: no more of either was read than its first bytes
  const reads = (await page.evaluate('window.reads')) as number[];
  expect(reads.filter((n) => n === a.length || n === b.length || n === huge)).toEqual([]);
});

/** The SDK in `page` asked `n` times for the model: each time its model id, or `failed: ` and the error. */
async function loadTries(page: Page, n: number): Promise<string[]> {
  // a script string, not a function: the test runner rewrites dynamic imports in this file
  const args = JSON.stringify({ key, id: card.model_id, n });
  return (await page.evaluate(`(async () => {
    const { key, id, n } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const client = new MedhashClient({ apiKey: key });
    const tries = [];
    for (let i = 0; i < n; i++) tries.push(await client.encoder(id).then((e) => e.card.model_id, (e) => 'failed: ' + e.message));
    return tries;
  })()`)) as string[];
}
