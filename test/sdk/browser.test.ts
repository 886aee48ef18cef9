// The browser SDK and the /ui search page in real Chromium (playwright-core): the Node service on
// a temporary data dir, ~200 MedNIST db images indexed through the API with onnxruntime-node
// codes and descriptors, then a MedNIST query JPEG uploaded on the page. The page must compute
// in the browser exactly the code onnxruntime-node computes, and its results must be of the
// query's class. A Fashion-MNIST photo searched in a brain MRI collection (its code near indexed
// codes, so a search by code alone lets it through) is refused by the model's own OOD score, as
// search by image refuses it: the page shows the refusal plainly, and the results once the
// clinician allows them. Also the model routes the SDK
// downloads from (/v1/models...), and the SDK taking its model from a static folder instead, and
// fetching the DICOM codecs (CharLS, OpenJPEG) only for a frame that needs them.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Browser, Route } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { encodingOf } from '../../functions/backend/encoding.ts';
import { loadCard, type LoadedCard, type ModelCard } from '../../functions/encode/card.ts';
import { sha256Hex } from '../../functions/util/bytes.ts';
import { decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { descriptor, loadNodeEncoder, packCode, row, type Encoder } from '../../functions/encode/model.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { startNodeServer, type RunningServer } from '../../functions/entries/node.ts';
import { toHex } from '../../functions/util/bytes.ts';
import { encodeMembers } from '../../scripts/data/encode-set.ts';
import { readManifest, TarReader, type ManifestRow } from '../../scripts/data/shared-data.ts';
import { dataDir, DICOM_FIXTURES, DICOM_SOURCES, DICOM_STUDY_UID, MODELS } from '../encode/fixtures.ts';
import { png, scanlines } from '../encode/png-fixtures.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';
import { launchChromium } from '../../scripts/browser/chromium.ts';
import { assetFiles } from '../../functions/sdk/build.ts';
import { ASSETS } from '../../functions/sdk/index.ts';

const PER_CLASS = 34;
const BRAIN = 'brain_tumor_mri-darf-b64';

let dir: string;
let server: RunningServer;
let base: string;
let key: string;
let card: ModelCard;
let onnx: Uint8Array;
let encoder: Encoder;
let tar: TarReader;
let browser: Browser;
let query: ManifestRow;
let brain: LoadedCard;

async function call(method: string, path: string, body?: unknown, auth = key) {
  const res = await fetch(`${base}${path}`, {
    method, headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-sdk-'));
  brain = await loadCard(join(MODELS, `${BRAIN}.card.json`));
  server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir, operatorKey: TEST_OPERATOR_KEY });
  base = server.url;
  const tenant = await call('POST', '/v1/admin/tenants', { name: 'sdk' }, TEST_OPERATOR_KEY);
  key = (await call('POST', `/v1/admin/tenants/${tenant.body.id}/keys`, { scopes: ['search', 'ingest', 'admin'] }, TEST_OPERATOR_KEY)).body.secret;

  ({ card, onnx } = await loadCard(join(MODELS, 'mednist-darf-b64.card.json')));
  expect((await call('POST', '/v1/collections', { name: 'mednist', bits: card.bits, descriptor_dims: card.descriptor.dims, model_id: card.model_id })).status).toBe(201);

  await initNodeImageCodecs();
  encoder = await loadNodeEncoder(onnx, card);
  const set = dataDir('mednist');
  const rows = await readManifest(set);
  const db = card.classes.flatMap((label) => rows.filter((r) => r.split === 'db' && r.label === label).slice(0, PER_CLASS));
  const labels = new Map(db.map((r) => [r.path, r.label]));
  query = rows.find((r) => r.split === 'query' && r.label === 'Hand')!;
  tar = await TarReader.open(join(set, 'images.tar'));
  const items: unknown[] = [];
  await encodeMembers(tar, db.map((r) => r.path), encoder, 64, (paths, out) => {
    paths.forEach((p, i) => {
      const u = row(out.u, card.bits, i);
      items.push({ id: p, code: toHex(packCode(u)), descriptor: Array.from(descriptor(u)), metadata: { label: labels.get(p) } });
    });
  });
  expect((await call('POST', '/v1/collections/mednist/items', { items })).status).toBe(200);

  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await tar?.close();
  await encoder?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('serves the models for client-side encoding: list, card as shipped, sha256-true .onnx; 401 without a key, 404 for another id', async () => {
  const list = await call('GET', '/v1/models');
  expect(list.status).toBe(200);
  expect(list.body.models.map((m: { model_id: string }) => m.model_id)).toContain(card.model_id);
  const id = encodeURIComponent(card.model_id);
  const c = await call('GET', `/v1/models/${id}/card`);
  expect(c.body.sha256).toBe(card.sha256);
  const res = await fetch(`${base}/v1/models/${id}/onnx`, { headers: { authorization: `Bearer ${key}` } });
  expect(res.headers.get('content-type')).toBe('application/octet-stream');
  expect(await sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(card.sha256);
  expect((await fetch(`${base}/v1/models/${id}/onnx`)).status).toBe(401);
  const missing = await call('GET', '/v1/models/no-such-model/card');
  expect(missing.status).toBe(404);
  expect(missing.body.error.code).toBe('model_not_found');
});

it('serves only the SDK files it names under /sdk/: any other name is a 404', async () => {
  for (const name of ['toString', 'constructor', '__proto__', 'nothing.wasm', 'nothing.js']) {
    const res = await fetch(`${base}/sdk/${name}`);
    expect([name, res.status, ((await res.json()) as { error: { code: string } }).error.code]).toEqual([name, 404, 'file_not_found']);
  }
});

it('the /ui page encodes a MedNIST query in Chromium to onnxruntime-node\'s code and lists results of its class', async () => {
  const bytes = await tar.read(query.path);
  const expected = toHex(packCode((await encoder.run(preprocess(await decodeImage(bytes), card.input), 1)).u));

  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  const uploads: string[] = [];
  page.on('request', (r) => {
    if (r.method() === 'POST') uploads.push(r.postData() ?? '');
  });
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.locator('#model-status', { hasText: 'ready' }).waitFor({ timeout: 90_000 });
  await page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here').setInputFiles({ name: 'query.jpeg', mimeType: 'image/jpeg', buffer: Buffer.from(bytes) });
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#results li[data-id]').first().waitFor({ timeout: 60_000 });

  expect(await page.locator('#model-status').textContent()).toContain('onnxruntime-web/wasm');
  expect(await page.locator('#encoded').getAttribute('data-code')).toBe(expected);
  const labels = await page.locator('#results li[data-id]').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.label));
  expect(labels).toHaveLength(10);
  expect(new Set(labels)).toEqual(new Set([query.label]));
  expect(await page.locator('#ood').getAttribute('data-verdict')).toMatch(/^(in_distribution|not_assessed)$/);
  await expect(page.locator('#results li').first().textContent()).resolves.toMatch(/Hamming distance \d+; content similarity -?\d\.\d{3}; score \d\.\d{3}/);
  // Only the code and descriptor left the page: one search request, no image bytes (allow_ood:
  // the page gates on the image itself).
  expect(uploads).toHaveLength(1);
  expect(Object.keys(JSON.parse(uploads[0])).sort()).toEqual(['allow_ood', 'code', 'content_weight', 'descriptor', 'k']);
  expect(problems).toEqual([]);
  await page.close();
});

it('an answer that arrives after another image was chosen is dropped, not shown under the new image', async () => {
  const head = (await readManifest(dataDir('mednist'))).find((r) => r.split === 'query' && r.label === 'HeadCT')!;
  const [hand, headBytes] = [await tar.read(query.path), await tar.read(head.path)];
  const headCode = toHex(packCode((await encoder.run(preprocess(await decodeImage(headBytes), card.input), 1)).u));
  const page = await browser.newPage();
  // The first search's answer is held until the second image has been searched.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let searches = 0;
  await page.route(`${base}/v1/collections/mednist/search`, async (route) => {
    if (searches++ === 0) await held;
    await route.continue();
  });
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByLabel('Collection').selectOption('mednist');
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  const input = page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here');
  await input.setInputFiles({ name: 'hand.jpeg', mimeType: 'image/jpeg', buffer: Buffer.from(hand) });
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction(() => document.querySelector('#go:disabled') !== null);
  await expect.poll(() => searches, { timeout: 60_000 }).toBe(1);
  await input.setInputFiles({ name: 'head.jpeg', mimeType: 'image/jpeg', buffer: Buffer.from(headBytes) });
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#results li[data-id]').first().waitFor({ timeout: 60_000 });
  const late = page.waitForResponse((r) => r.url().endsWith('/v1/collections/mednist/search'));
  release();
  await late;
  // time for the page to handle the late answer
  await page.waitForTimeout(1000);
  expect(await page.locator('#encoded').getAttribute('data-code')).toBe(headCode);
  const labels = await page.locator('#results li[data-id]').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.label));
  expect(new Set(labels)).toEqual(new Set(['HeadCT']));
  await page.close();
});

it('a model load that ends after another collection was chosen leaves the chosen one\'s status alone', async () => {
  expect((await call('POST', '/v1/collections', { name: 'brain-slow', bits: brain.card.bits, model_id: brain.card.model_id })).status).toBe(201);
  const page = await browser.newPage();
  // The brain model's download is held, then fails, after MedNIST's model is ready.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route(`${base}/v1/models/${encodeURIComponent(brain.card.model_id)}/onnx`, async (route) => {
    await held;
    await route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'unavailable', message: 'model store unavailable' } }) });
  });
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByLabel('Collection').selectOption('brain-slow');
  await page.locator('#model-status', { hasText: `loading ${brain.card.model_id}` }).waitFor();
  await page.getByLabel('Collection').selectOption('mednist');
  await page.locator('#model-status', { hasText: `${card.model_id} ready` }).waitFor({ timeout: 90_000 });
  const failed = page.waitForEvent('requestfinished', (r) => r.url().includes('/onnx'));
  release();
  await failed;
  // time for the page to handle the failure
  await page.waitForTimeout(1000);
  expect(await page.locator('#model-status').textContent()).toContain(`${card.model_id} ready`);
  expect(await page.locator('#error').textContent()).toBe('');
  await page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here').setInputFiles({ name: 'query.jpeg', mimeType: 'image/jpeg', buffer: Buffer.from(await tar.read(query.path)) });
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.getByRole('button', { name: 'Search' }).isEnabled()).toBe(true);
  await page.close();
  const removed = await fetch(`${base}/v1/collections/brain-slow`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
  expect(removed.status).toBe(204);
});

it('a DICOM dropped on the page is previewed and encoded in the browser to the code of the JPEG it was made from, uncompressed, deflated, JPEG Baseline, JPEG-LS or JPEG 2000; a big-endian one is refused at once', async () => {
  const mednist = await TarReader.open(join(dataDir(DICOM_SOURCES.grey.set), 'images.tar'));
  const jpeg = await mednist.read(DICOM_SOURCES.grey.member);
  await mednist.close();
  const enc = encodingOf(card, await encoder.run(preprocess(await decodeImage(jpeg), card.input), 1), 0);
  const expected = enc.code;
  // an item of the DICOM's own study, with its very code: found, unless the page excludes the study
  const own = { id: 'own-study/hand', code: enc.code, descriptor: enc.descriptor, metadata: { label: 'Hand', study_uid: DICOM_STUDY_UID } };
  expect((await call('POST', '/v1/collections/mednist/items', { items: [own] })).status).toBe(200);
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.locator('#model-status', { hasText: 'ready' }).waitFor({ timeout: 90_000 });
  const input = page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here');
  const dicom = (name: string) => ({ name: `${name}.dcm`, mimeType: 'application/dicom', buffer: readFileSync(join(DICOM_FIXTURES, `${name}.dcm`)) });

  await input.setInputFiles(dicom('grey8-bigendian'));
  await page.locator('#error', { hasText: 'Explicit VR Big Endian' }).waitFor();
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);

  await input.setInputFiles(dicom('grey8-explicit'));
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.locator('#preview').evaluate((img) => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight])).toEqual([64, 64]);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#results li[data-id]').first().waitFor({ timeout: 60_000 });
  expect(await page.locator('#encoded').getAttribute('data-code')).toBe(expected);
  expect(await page.locator('#error').textContent()).toBe('');
  const ids = () => page.locator('#results li[data-id]').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.id));
  expect(await ids()).toContain(own.id);
  await page.getByLabel("Leave out this image's own study (DICOM)").check();
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction((id) => document.querySelectorAll('#results li[data-id]').length > 0
    && !Array.from(document.querySelectorAll<HTMLElement>('#results li[data-id]')).some((li) => li.dataset.id === id), own.id);
  expect(await ids()).not.toContain(own.id);
  expect(await page.locator('#error').textContent()).toBe('');

  // the JPEG itself, encapsulated (JPEG Baseline): decoded in the browser by the page's JPEG codec
  await input.setInputFiles(dicom('grey8-jpeg-baseline'));
  await page.waitForFunction(() => !document.querySelector('#encoded')?.hasAttribute('data-code') && !(document.querySelector('#go') as HTMLButtonElement | null)?.disabled);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#encoded[data-code]').waitFor({ timeout: 60_000 });
  expect(await page.locator('#encoded').getAttribute('data-code')).toBe(expected);
  expect(await page.locator('#error').textContent()).toBe('');

  // the same pixels deflated (dcmconv +td: the browser's DecompressionStream), in JPEG-LS (dcmcjpls) and JPEG 2000
  // (opj_compress), lossless: decoded in the browser by CharLS and OpenJPEG
  for (const compressed of ['grey8-deflated', 'grey8-jpeg-ls', 'grey8-jpeg2000-lossless']) {
    await input.setInputFiles(dicom(compressed));
    await page.waitForFunction(() => !document.querySelector('#encoded')?.hasAttribute('data-code') && !(document.querySelector('#go') as HTMLButtonElement | null)?.disabled);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.locator('#encoded[data-code]').waitFor({ timeout: 60_000 });
    expect(await page.locator('#encoded').getAttribute('data-code'), compressed).toBe(expected);
    expect(await page.locator('#error').textContent(), compressed).toBe('');
  }
  expect(problems).toEqual([]);
  await page.close();
  const removed = await fetch(`${base}/v1/collections/mednist/items/${encodeURIComponent(own.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
  expect(removed.status).toBe(204);
});

it("a multi-frame DICOM: the SDK and the page encode the frame named (the page's Frame field), and a frame past the last is refused naming it", async () => {
  const name = 'grey8-frames3-jpeg-lossless-sv1-fs1-nobot.dcm';
  const bytes = new Uint8Array(readFileSync(join(DICOM_FIXTURES, name)));
  // what onnxruntime-node makes of each frame, decoded here as the service decodes it
  const want = await Promise.all([0, 1, 2].map(async (frame) =>
    encodingOf(card, await encoder.run(preprocess(await decodeImage(bytes, 'application/dicom', DEFAULT_LIMITS, { frame }), card.input), 1), 0)));
  // three distinct images (the hand, its negative, its mirror image): their descriptors tell them apart
  expect(new Set(want.map((w) => JSON.stringify(w.descriptor))).size).toBe(3);
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${base}/ui`);
  const args = JSON.stringify({ key, image: Array.from(bytes), id: card.model_id });
  const fromSdk = (await page.evaluate(`(async () => {
    const { key, image, id } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const enc = await new MedhashClient({ apiKey: key }).encoder(id);
    const out = [];
    for (const frame of [0, 1, 2]) {
      const { code, descriptor } = await enc.encode(new Uint8Array(image), 'application/dicom', { frame });
      out.push({ code, descriptor });
    }
    const none = await enc.encode(new Uint8Array(image), 'application/dicom').then(() => 'encoded', (e) => e.message);
    return { out, none };
  })()`)) as { out: { code: string; descriptor: number[] }[]; none: string };
  expect(fromSdk.out).toEqual(want.map(({ code, descriptor }) => ({ code, descriptor })));
  expect(fromSdk.none).toBe('DICOM has 3 frames: choose one with `frame` (0 to 2)');

  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.locator('#model-status', { hasText: 'ready' }).waitFor({ timeout: 90_000 });
  await page.getByLabel('Frame of a multi-frame DICOM (from 0)').fill('2');
  // a negative or mirrored hand may look out of distribution: the code is what is checked here
  await page.getByLabel('Show results even when the image looks out of distribution').check();
  await page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here').setInputFiles({ name, mimeType: 'application/dicom', buffer: Buffer.from(bytes) });
  await page.locator('#preview:not([hidden])').waitFor();
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#encoded[data-code]').waitFor({ timeout: 60_000 });
  expect(await page.locator('#encoded').getAttribute('data-code')).toBe(want[2].code);
  expect(await page.locator('#error').textContent()).toBe('');
  // a new frame number checks the file again: past the last frame, refused before any search
  const frameField = page.getByLabel('Frame of a multi-frame DICOM (from 0)');
  await frameField.fill('3');
  await frameField.dispatchEvent('change');
  await page.locator('#error', { hasText: 'frame' }).waitFor();
  expect(await page.locator('#error').textContent()).toMatch(/frame 3 .*3 frames|3 frames.*frame 3/);
  expect(await page.getByRole('button', { name: 'Search' }).isDisabled()).toBe(true);
  expect(problems).toEqual([]);
  await page.close();
}, 180_000); // two model loads: the SDK's and the page's

it('a JPEG Baseline DICOM chosen before any key is entered is previewed: the page starts the JPEG codec itself', async () => {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${base}/ui`);
  await page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here')
    .setInputFiles({ name: 'scan.dcm', mimeType: 'application/dicom', buffer: readFileSync(join(DICOM_FIXTURES, 'grey8-jpeg-baseline.dcm')) });
  await page.locator('#preview:not([hidden])').waitFor();
  expect(await page.locator('#preview').evaluate((img) => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight])).toEqual([64, 64]);
  expect(await page.locator('#error').textContent()).toBe('');
  expect(problems).toEqual([]);
  await page.close();
});

it('with modelsUrl the SDK takes the model from a static folder (a Worker has no /v1/models) and reports what search by image would; close() releases it', async () => {
  const bytes = await tar.read(query.path);
  const expected = encodingOf(card, await encoder.run(preprocess(await decodeImage(bytes), card.input), 1), 0);
  const page = await browser.newPage();
  const fromApi: string[] = [];
  page.on('request', (r) => {
    if (r.url().includes('/v1/models')) fromApi.push(r.url());
  });
  // A static copy of models/ on the page's origin; it must be asked without the API key.
  const served: Array<{ file: string; auth: string | undefined }> = [];
  await page.route(`${base}/static-models/*`, async (route) => {
    const file = decodeURIComponent(new URL(route.request().url()).pathname.split('/').pop()!);
    served.push({ file, auth: route.request().headers().authorization });
    await route.fulfill({ body: readFileSync(join(MODELS, file)) });
  });
  await page.goto(`${base}/ui`);
  // A script string, not a function: the test runner rewrites dynamic imports in this file.
  const args = JSON.stringify({ key, image: Array.from(bytes), id: card.model_id });
  const out = (await page.evaluate(`(async () => {
    const { key, image, id } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const client = new MedhashClient({ apiKey: key, modelsUrl: '/static-models' });
    const enc = await client.encoder(id);
    const { code, descriptor, classes, ood } = await enc.encode(new Uint8Array(image), 'image/jpeg');
    // close() releases the model: its encoder runs no more, and the next encoder() loads it anew
    await client.close();
    const closed = await enc.encode(new Uint8Array(image), 'image/jpeg').then(() => 'encoded', () => 'refused');
    await client.encoder(id);
    return { code, descriptor, classes, ood, closed };
  })()`)) as typeof expected & { closed: string };
  await page.close();
  expect(out.closed).toBe('refused');
  const files = [{ file: 'mednist-darf-b64.card.json', auth: undefined }, { file: 'mednist-darf-b64.onnx', auth: undefined }];
  expect(served).toEqual([...files, ...files]);
  expect(fromApi).toEqual([]);
  expect(out.code).toBe(expected.code);
  expect(out.descriptor).toEqual(expected.descriptor);
  expect(out.classes.map((c) => c.name)).toEqual(card.classes);
  for (const [i, c] of out.classes.entries()) expect(c.p).toBeCloseTo(expected.classes[i].p, 4);
  expect(out.ood.threshold).toBe(card.ood.threshold);
  expect(out.ood.score).toBeCloseTo(expected.ood.score, 3);
});

it("refuses a model whose sha256 is not the one its model_id names, before downloading it: a card edited to fit another .onnx", async () => {
  // A static copy of models/ where mednist's .onnx was swapped for the brain model's and its card's
  // sha256 edited to match, its model_id left as it was: the collection's codes are mednist's.
  const swapped = JSON.stringify({ ...JSON.parse(readFileSync(join(MODELS, 'mednist-darf-b64.card.json'), 'utf8')), sha256: brain.card.sha256 });
  const page = await browser.newPage();
  const served: string[] = [];
  await page.route(`${base}/swapped-models/*`, async (route) => {
    const file = decodeURIComponent(new URL(route.request().url()).pathname.split('/').pop()!);
    served.push(file);
    await route.fulfill({ body: file.endsWith('.card.json') ? swapped : readFileSync(join(MODELS, brain.card.onnx)) });
  });
  await page.goto(`${base}/ui`);
  const args = JSON.stringify({ key, id: card.model_id });
  const out = await page.evaluate(`(async () => {
    const { key, id } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    return new MedhashClient({ apiKey: key, modelsUrl: '/swapped-models' }).encoder(id).then(() => 'loaded', (e) => e.message);
  })()`);
  await page.close();
  expect(out).toBe(`${card.model_id}: the card's sha256 ${brain.card.sha256} is not that of the model this id names (it starts ${card.sha256.slice(0, 12)}); a model_id is NAME@ the first 12 hex digits of the .onnx's sha256`);
  expect(served).toEqual(['mednist-darf-b64.card.json']);
});

it('a failed image-codec download is tried again by the next model load, not kept until the page is reloaded', async () => {
  const page = await browser.newPage();
  let failures = 1;
  await page.route(`${base}/sdk/squoosh_png_bg.wasm`, async (route) => (failures-- > 0 ? route.fulfill({ status: 503, body: 'busy' }) : route.continue()));
  await page.goto(`${base}/ui`);
  const args = JSON.stringify({ key, id: card.model_id });
  const out = (await page.evaluate(`(async () => {
    const { key, id } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const client = new MedhashClient({ apiKey: key });
    const first = await client.encoder(id).then(() => 'loaded', (e) => 'failed: ' + e.message);
    const second = await client.encoder(id).then((e) => e.card.model_id, (e) => 'failed again: ' + e.message);
    return { first, second };
  })()`)) as { first: string; second: string };
  await page.close();
  expect(out.first).toMatch(/^failed/);
  expect(out.second).toBe(card.model_id);
});

/** The code onnxruntime-node computes for `bytes`, decoded here as the service decodes them. */
async function nodeCode(bytes: Uint8Array, contentType?: string): Promise<string> {
  return encodingOf(card, await encoder.run(preprocess(await decodeImage(bytes, contentType), card.input), 1), 0).code;
}

/**
 * The SDK in a page of the service's origin, its model loaded, with `encode` for one image at a
 * time; each `.wasm` the page fetches is counted. `routes`: URLs answered by a handler of the test's.
 */
async function sdkPage(routes: Array<[string, (route: Route) => Promise<void>]> = []) {
  const page = await browser.newPage();
  for (const [url, handler] of routes) await page.route(url, handler);
  const fetched: string[] = [];
  page.on('request', (r) => {
    const name = new URL(r.url()).pathname.split('/').pop()!;
    if (name.endsWith('.wasm')) fetched.push(name);
  });
  await page.goto(`${base}/ui`);
  // A script string, not a function: the test runner rewrites dynamic imports in this file.
  const loaded = await page.evaluate(`(async () => {
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    window.enc = await new MedhashClient({ apiKey: ${JSON.stringify(key)} }).encoder(${JSON.stringify(card.model_id)});
    return 'loaded';
  })()`).catch((e: Error) => `failed: ${e.message}`);
  const encode = (bytes: Uint8Array, type: string) => page.evaluate(
    `window.enc.encode(new Uint8Array(${JSON.stringify(Array.from(bytes))}), ${JSON.stringify(type)}).then((e) => e.code, (e) => 'failed: ' + e.message)`,
  ) as Promise<string>;
  const count = (name: string) => fetched.filter((f) => f === name).length;
  return { page, loaded, encode, count };
}

const dicomFixture = (name: string) => new Uint8Array(readFileSync(join(DICOM_FIXTURES, `${name}.dcm`)));

it('the SDK downloads the DICOM codecs only for a frame that needs them: a PNG fetches neither, two JPEG-LS and two JPEG 2000 files one each', async () => {
  const photo = fashionPng(0);
  const [jls, j2k] = [dicomFixture('grey8-jpeg-ls'), dicomFixture('grey8-jpeg2000-lossless')];
  const { page, loaded, encode, count } = await sdkPage();
  expect(loaded).toBe('loaded');
  expect(await encode(photo, 'image/png')).toBe(await nodeCode(photo));
  expect([count(ASSETS.png), count(ASSETS.jpeg), count(ASSETS.charls), count(ASSETS.openjpeg)]).toEqual([1, 1, 0, 0]);
  const want = await nodeCode(jls, 'application/dicom');
  expect([await encode(jls, 'application/dicom'), await encode(jls, 'application/dicom')]).toEqual([want, want]);
  expect([count(ASSETS.charls), count(ASSETS.openjpeg)]).toEqual([1, 0]);
  expect([await encode(j2k, 'application/dicom'), await encode(j2k, 'application/dicom')]).toEqual([want, want]);
  expect([count(ASSETS.charls), count(ASSETS.openjpeg)]).toEqual([1, 1]);
  await page.close();
});

it('a failed DICOM codec download (a 404, a cut-off file) fails that frame naming the file, and the next such frame downloads it again', async () => {
  const [jls, j2k] = [dicomFixture('grey8-jpeg-ls'), dicomFixture('grey8-jpeg2000-lossless')];
  const want = await nodeCode(jls, 'application/dicom');
  const openjpeg = readFileSync(assetFiles()[ASSETS.openjpeg]);
  const cut = openjpeg.subarray(0, openjpeg.length >> 1);
  const failOnce = (answer: Parameters<Route['fulfill']>[0]) => {
    let failures = 1;
    return (route: Route) => (failures-- > 0 ? route.fulfill(answer) : route.continue());
  };
  const s = await sdkPage([
    [`${base}/sdk/${ASSETS.charls}`, failOnce({ status: 404, contentType: 'application/json', body: '{"error":{"code":"file_not_found","message":"gone"}}' })],
    [`${base}/sdk/${ASSETS.openjpeg}`, failOnce({ status: 200, contentType: 'application/wasm', body: cut })],
  ]);
  expect(s.loaded).toBe('loaded');
  expect(await s.encode(jls, 'application/dicom')).toBe(`failed: the DICOM JPEG-LS (CharLS) decoder could not be loaded: ${base}/sdk/${ASSETS.charls}: HTTP 404`);
  expect(await s.encode(jls, 'application/dicom')).toBe(want);
  expect(await s.encode(j2k, 'application/dicom')).toBe(
    `failed: the DICOM JPEG 2000 (OpenJPEG) decoder could not be loaded: ${base}/sdk/${ASSETS.openjpeg} is not a valid WebAssembly module (${cut.length} bytes: cut off or damaged); loading again fetches it again`,
  );
  expect(await s.encode(j2k, 'application/dicom')).toBe(want);
  expect([s.count(ASSETS.charls), s.count(ASSETS.openjpeg)]).toEqual([2, 2]);
  await s.page.close();
});

/** Fashion-MNIST test photo i as a 28x28 grey PNG. */
function fashionPng(i: number): Uint8Array {
  const idx = gunzipSync(readFileSync(join(dataDir('fashion_mnist_test'), 't10k-images-idx3-ubyte.gz')));
  const side = 28;
  const px = idx.subarray(16 + i * side * side, 16 + (i + 1) * side * side);
  return png({ width: side, height: side, colorType: 0, bitDepth: 8, raw: scanlines(side, side, 1, 8, px) });
}

it('refuses a photo in a brain MRI collection by the model\'s own OOD score, as search by image does, plainly; the marked results once allowed', async () => {
  expect((await call('POST', '/v1/collections', { name: 'brain', bits: brain.card.bits, model_id: brain.card.model_id })).status).toBe(201);
  const items = readFileSync(join(MODELS, 'codes', `${BRAIN}.db.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  for (let i = 0; i < items.length; i += 1000) expect((await call('POST', '/v1/collections/brain/items', { items: items.slice(i, i + 1000) })).status).toBe(200);
  const photo = fashionPng(0);

  const page = await browser.newPage();
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByLabel('Collection').selectOption('brain');
  await page.locator('#model-status', { hasText: `${brain.card.model_id} ready` }).waitFor({ timeout: 90_000 });
  await page.getByLabel('Image (PNG, JPEG or DICOM), or drop it here').setInputFiles({ name: 'photo.png', mimeType: 'image/png', buffer: Buffer.from(photo) });
  await page.getByLabel('Results (k)').fill('5');
  let searches = 0;
  page.on('request', (r) => void (r.url().endsWith('/v1/collections/brain/search') && searches++));
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#ood[data-verdict]').waitFor({ timeout: 60_000 });
  expect(await page.locator('#ood').getAttribute('data-verdict')).toBe('out_of_distribution');
  expect(await page.locator('#ood').textContent()).toMatch(/^OUT OF DISTRIBUTION.*the model's OOD score is [\d.]+, above its threshold/);
  // the way to see them on this page is its checkbox, not the API's allow_ood
  expect(await page.getByRole('alert').textContent()).toMatch(/^Results withheld: this image looks out of distribution for this collection's model \(the model's OOD score is [\d.]+, above its threshold [^)]*\), so they would not be reliable\. To see them anyway, marked as such, tick "Show results even when the image looks out of distribution"\.$/);
  expect(await page.locator('#results li').count()).toBe(0);
  // refused on the model's score alone: no search was sent, so none was billed
  expect(searches).toBe(0);

  await page.getByLabel('Show results even when the image looks out of distribution').check();
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#results li[data-id]').first().waitFor({ timeout: 60_000 });
  expect(await page.locator('#results li[data-id]').count()).toBe(5);
  expect(await page.locator('#ood').getAttribute('data-verdict')).toBe('out_of_distribution');
  expect(await page.getByRole('alert').textContent()).toBe('');
  expect(searches).toBe(1);
  await page.close();
});
