// The browser SDK's WebGPU path in real Chromium, on the /ui page under the page's own
// Content-Security-Policy (functions/sdk/serve-node.ts: no 'unsafe-eval'). onnxruntime-web's
// bundle holds a `new Function` (Emscripten's embind method caller): were the WebGPU path to reach
// it, the CSP would refuse it. Chromium here has no GPU; `--enable-unsafe-webgpu` makes it offer
// Dawn's CPU adapter (SwiftShader: vendor google, architecture swiftshader, isFallbackAdapter),
// so the path really runs: correctness, not speed (docs/RUNTIMES.md). Asserts, per shipped model:
// the SDK took onnxruntime-web/webgpu and its runs went to the GPU queue; PyTorch's sign bits and
// u within 1e-3 for every golden input; a MedNIST JPEG through the SDK's whole encode gives
// onnxruntime-node's code; when the GPU device is then destroyed, encodes go on, on wasm, with
// PyTorch's sign bits; and no CSP violation or page error, while the page does refuse eval.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCard } from '../../functions/encode/card.ts';
import { decodeImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder, packCode } from '../../functions/encode/model.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { startNodeServer, type RunningServer } from '../../functions/entries/node.ts';
import { sdkRoutes } from '../../functions/sdk/serve-node.ts';
import { toHex } from '../../functions/util/bytes.ts';
import { launchChromium } from '../../scripts/browser/chromium.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { dataDir, MODELS } from '../encode/fixtures.ts';
import { png, scanlines } from '../encode/png-fixtures.ts';
import { TEST_OPERATOR_KEY } from '../shared/constants.ts';

const DU_TOL = 1e-3;
// A CPU emulating a GPU: the first model's first run compiles most shaders (43 s on the quiet
// 2-core dev machine, 334 s at load average 20; the next models 9-12 s, 65-80 s). Hang guards,
// not timing checks.
const MODEL_TIMEOUT = 600_000;

interface GoldenItem { id: string; input: string; u: number[]; bits_hex: string }

const names = readdirSync(MODELS).filter((f) => f.endsWith('.card.json')).map((f) => f.replace(/\.card\.json$/, '')).sort();
// MedNIST first: its JPEG is also encoded through the SDK's whole path
names.sort((a, b) => Number(b.startsWith('mednist')) - Number(a.startsWith('mednist')));

let dir: string;
let server: RunningServer;
let key: string;
let browser: Browser;
let page: Page;
let csp: string | undefined;
const violations: unknown[] = [];
const problems: string[] = [];
/** The encoder's warnings that a WebGPU run failed and it loads wasm (functions/encode/model.ts). */
const switches: string[] = [];

/** A POST to the service, by default with the operator key. */
const operator = async (path: string, body: unknown, auth = TEST_OPERATOR_KEY) =>
  (await (await fetch(`${server.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json()) as { id: string; secret: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-sdk-webgpu-'));
  server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir, operatorKey: TEST_OPERATOR_KEY });
  const tenant = await operator('/v1/admin/tenants', { name: 'sdk-webgpu' });
  key = (await operator(`/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search'] })).secret;

  browser = await launchChromium({ webgpu: true });
  page = await browser.newPage();
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => {
    if (/Content Security Policy|unsafe-eval|Refused to/i.test(m.text())) problems.push(m.text());
    if (/loading the fallback/.test(m.text())) switches.push(m.text());
  });
  await page.exposeFunction('__medhashViolation', (v: unknown) => void violations.push(v));
  await page.addInitScript(() => {
    const g = globalThis as unknown as { __medhashViolation(v: unknown): void; __medhashSubmits: number; __medhashDevices: unknown[] };
    document.addEventListener('securitypolicyviolation', (e) => g.__medhashViolation({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber }));
    // every command buffer sent to the GPU: proof that a run used the WebGPU device
    g.__medhashSubmits = 0;
    const queue = (globalThis as unknown as { GPUQueue?: { prototype: { submit(...a: unknown[]): void } } }).GPUQueue;
    if (queue) {
      const submit = queue.prototype.submit;
      queue.prototype.submit = function (this: unknown, ...a: unknown[]) {
        g.__medhashSubmits++;
        return submit.apply(this, a);
      };
    }
    // every GPU device made in the page (onnxruntime-web's own): the device-loss case destroys them
    g.__medhashDevices = [];
    const adapter = (globalThis as unknown as { GPUAdapter?: { prototype: { requestDevice(...a: unknown[]): Promise<unknown> } } }).GPUAdapter;
    if (adapter) {
      const requestDevice = adapter.prototype.requestDevice;
      adapter.prototype.requestDevice = async function (this: unknown, ...a: unknown[]) {
        const device = await requestDevice.apply(this, a);
        g.__medhashDevices.push(device);
        return device;
      };
    }
  });
  const res = await page.goto(`${server.url}/ui`);
  csp = res?.headers()['content-security-policy'];
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('the page is served with its production CSP, without unsafe-eval, and Chromium offers a WebGPU adapter', async () => {
  expect(csp).toBe((await sdkRoutes().request('/ui')).headers.get('content-security-policy'));
  const scriptSrc = csp!.split(';').map((d) => d.trim().split(/\s+/)).find(([name]) => name === 'script-src')!;
  expect(scriptSrc).not.toContain("'unsafe-eval'");
  const adapter = await page.evaluate(async () => {
    const a = await (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info: Record<string, unknown> } | null> } }).gpu?.requestAdapter();
    return a ? { vendor: a.info.vendor, architecture: a.info.architecture } : null;
  });
  expect(adapter, 'no WebGPU adapter: Chromium needs --enable-unsafe-webgpu for its CPU adapter').not.toBeNull();
});

it('by default the SDK passes a software adapter over for wasm, which is tens of times faster on a CPU', async () => {
  const { card } = await loadCard(join(MODELS, `${names[0]}.card.json`));
  const args = JSON.stringify({ key, id: card.model_id });
  const out = (await page.evaluate(`(async () => {
    const { key, id } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const info = (await navigator.gpu.requestAdapter()).info;
    const enc = await new MedhashClient({ apiKey: key }).encoder(id);
    await enc.close();
    return { fallback: info.isFallbackAdapter, runtime: enc.runtime };
  })()`)) as { fallback: boolean; runtime: string };
  expect(out).toEqual({ fallback: true, runtime: 'onnxruntime-web/wasm' });
}, MODEL_TIMEOUT);

describe.each(names)('%s', (name) => {
  it('the SDK takes onnxruntime-web/webgpu under the CSP and gives PyTorch\'s sign bits for every golden input', async () => {
    const { card, onnx } = await loadCard(join(MODELS, `${name}.card.json`));
    const golden = JSON.parse(readFileSync(join(MODELS, 'golden', `${name}.json`), 'utf8')) as { model_id: string; items: GoldenItem[] };
    let jpeg: { bytes: number[]; code: string } | null = null;
    if (name.startsWith('mednist')) {
      // the SDK's whole encode (decode, preprocess, model) on a golden image's JPEG
      const tar = await TarReader.open(join(dataDir('mednist'), 'images.tar'));
      const bytes = await tar.read(golden.items[0].id);
      await tar.close();
      await initNodeImageCodecs();
      const node = await loadNodeEncoder(onnx, card);
      jpeg = { bytes: Array.from(bytes), code: toHex(packCode((await node.run(preprocess(await decodeImage(bytes), card.input), 1)).u)) };
      await node.close();
    }
    // A script string, not a function: the test runner rewrites dynamic imports in this file.
    const args = JSON.stringify({ key, id: card.model_id, inputs: golden.items.map((i) => i.input), jpeg: jpeg?.bytes ?? null });
    const out = (await page.evaluate(`(async () => {
      const { key, id, inputs, jpeg } = ${args};
      // From a task of the page's own: code run synchronously inside a DevTools evaluation is
      // exempt from the page's CSP for eval, so a \`new Function\` there would not be refused.
      await new Promise((r) => setTimeout(r));
      const { MedhashClient } = await import('/sdk/medhash-sdk.js');
      const enc = await new MedhashClient({ apiKey: key, softwareGpu: true }).encoder(id);
      const before = globalThis.__medhashSubmits;
      const u = [];
      // The golden files hold preprocessed inputs: run them through the model the SDK loaded
      // (BrowserEncoder's own encoder; esbuild keeps property names), one at a time as encode does.
      for (const b64 of inputs) {
        const x = new Float32Array(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
        u.push(Array.from((await enc.encoder.run(x, 1)).u));
      }
      const submits = globalThis.__medhashSubmits - before;
      const image = jpeg === null ? null : await enc.encode(new Uint8Array(jpeg), 'image/jpeg');
      await enc.close();
      return { runtime: enc.runtime, u, submits, image: image && { code: image.code, runtime: image.runtime } };
    })()`)) as { runtime: string; u: number[][]; submits: number; image: { code: string; runtime: string } | null };

    expect(out.runtime).toBe('onnxruntime-web/webgpu');
    expect(out.submits).toBeGreaterThan(0);
    golden.items.forEach((item, i) => {
      const u = Float32Array.from(out.u[i]);
      expect(toHex(packCode(u)), `${item.id} bits`).toBe(item.bits_hex);
      const du = Math.max(...item.u.map((v, j) => Math.abs(v - u[j])));
      expect(du, `${item.id} max |u - u_PyTorch|`).toBeLessThan(DU_TOL);
    });
    if (jpeg) expect(out.image).toEqual({ code: jpeg.code, runtime: 'onnxruntime-web/webgpu' });
    expect(violations).toEqual([]);
    expect(problems).toEqual([]);
  }, MODEL_TIMEOUT);
});

it('/ui: after a search whose GPU run failed, the "ready" line names wasm, the runtime that encoded it', async () => {
  const { card } = await loadCard(join(MODELS, `${names[0]}.card.json`));
  const tenant = await operator('/v1/admin/tenants', { name: 'ui-webgpu' });
  const admin = (await operator(`/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search', 'admin'] })).secret;
  await operator('/v1/collections', { name: 'ui-webgpu', bits: card.bits, descriptor_dims: card.descriptor.dims, model_id: card.model_id }, admin);
  // A page of its own, so its onnxruntime-web has a device of its own to lose.
  const ui = await browser.newPage();
  const errors: string[] = [];
  ui.on('pageerror', (e) => errors.push(e.message));
  await ui.addInitScript(() => {
    // SwiftShader passes for a hardware adapter: the page, which asks for no software GPU, takes
    // WebGPU as it would on a real one
    const info = (globalThis as unknown as { GPUAdapterInfo: { prototype: object } }).GPUAdapterInfo;
    Object.defineProperty(info.prototype, 'isFallbackAdapter', { get: () => false, configurable: true });
    const g = globalThis as unknown as { __medhashDevices: { destroy(): void }[] };
    g.__medhashDevices = [];
    const adapter = (globalThis as unknown as { GPUAdapter: { prototype: { requestDevice(...a: unknown[]): Promise<{ destroy(): void }> } } }).GPUAdapter;
    const requestDevice = adapter.prototype.requestDevice;
    adapter.prototype.requestDevice = async function (this: unknown, ...a: unknown[]) {
      const device = await requestDevice.apply(this, a);
      g.__medhashDevices.push(device);
      return device;
    };
  });
  try {
    await ui.goto(`${server.url}/ui`);
    await ui.getByLabel('API key').fill(admin);
    await ui.getByRole('button', { name: 'Connect' }).click();
    const status = ui.locator('#model-status');
    await status.filter({ hasText: `${card.model_id} ready (onnxruntime-web/webgpu, sha256 checked)` }).waitFor({ timeout: MODEL_TIMEOUT });
    expect(await ui.evaluate('globalThis.__medhashDevices.length')).toBe(1);
    await ui.evaluate('for (const d of globalThis.__medhashDevices) d.destroy()');
    const side = 64;
    const pixels = Array.from({ length: side * side }, (_, i) => (i * 7) & 0xff);
    await ui.getByLabel('Image (PNG, JPEG or DICOM), or drop it here').setInputFiles({ name: 'q.png', mimeType: 'image/png', buffer: Buffer.from(png({ width: side, height: side, colorType: 0, bitDepth: 8, raw: scanlines(side, side, 1, 8, pixels) })) });
    await ui.getByLabel('Show results even when the image looks out of distribution').check();
    await ui.getByRole('button', { name: 'Search' }).click();
    await ui.locator('#encoded', { hasText: '(onnxruntime-web/wasm)' }).waitFor({ timeout: 120_000 });
    expect(await status.textContent()).toBe(`${card.model_id} ready (onnxruntime-web/wasm, sha256 checked)`);
    // onnxruntime-web leaves its read-back's rejection on the lost device unhandled
    expect(errors.filter((p) => !p.startsWith("Failed to execute 'mapAsync' on 'GPUBuffer'"))).toEqual([]);
  } finally {
    await ui.close();
  }
}, MODEL_TIMEOUT);

// Last of the WebGPU cases: a destroyed device stays lost for the page's onnxruntime-web.
it('runs on the GPU one at a time, and when the device is lost the encoder reruns on wasm: PyTorch\'s sign bits, runtime wasm, one switch for concurrent encodes', async () => {
  const { card } = await loadCard(join(MODELS, `${names[0]}.card.json`));
  const golden = JSON.parse(readFileSync(join(MODELS, 'golden', `${names[0]}.json`), 'utf8')) as { items: GoldenItem[] };
  const args = JSON.stringify({ key, id: card.model_id, inputs: golden.items.map((i) => i.input) });
  const before = await page.evaluate(`(async () => {
    const { key, id, inputs } = ${args};
    const { MedhashClient } = await import('/sdk/medhash-sdk.js');
    const enc = await new MedhashClient({ apiKey: key, softwareGpu: true }).encoder(id);
    const xs = inputs.map((b64) => new Float32Array(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer));
    // two at once on the GPU: onnxruntime-web's WebGPU build deadlocked the page on that
    const u = (await Promise.all(xs.slice(0, 2).map((x) => enc.encoder.run(x, 1)))).map((o) => Array.from(o.u));
    // the caller's mistake is no GPU failure
    const refused = await enc.encoder.run(new Float32Array(3), 1).then(() => null, (e) => e.message);
    globalThis.__medhashLoss = { enc, xs };
    return { runtime: enc.runtime, u, refused };
  })()`) as { runtime: string; u: number[][]; refused: string | null };
  expect(before.runtime).toBe('onnxruntime-web/webgpu');
  before.u.forEach((u, i) => expect(toHex(packCode(Float32Array.from(u))), `${golden.items[i].id} bits before the loss`).toBe(golden.items[i].bits_hex));
  expect(before.refused).toMatch(/^encoder input must hold 1 x /);
  expect(switches).toEqual([]);
  // All at once, after the loss. A run on the lost device never settles in onnxruntime-web, and
  // concurrent ones deadlocked the page: a deadline from outside the page.
  const after = page.evaluate(`(async () => {
    const { enc, xs } = globalThis.__medhashLoss;
    const devices = globalThis.__medhashDevices.length;
    for (const d of globalThis.__medhashDevices) d.destroy();
    const u = (await Promise.all(xs.map((x) => enc.encoder.run(x, 1)))).map((o) => Array.from(o.u));
    const runtime = enc.runtime;
    await enc.close();
    return { devices, runtime, u };
  })()`) as Promise<{ devices: number; runtime: string; u: number[][] }>;
  after.catch(() => undefined); // the browser's closing ends a stuck one
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, no) => (timer = setTimeout(() => no(new Error('the encodes after the device loss did not settle in 120 s')), 120_000)));
  const out = await Promise.race([after, stuck]).finally(() => clearTimeout(timer));

  expect(out).toMatchObject({ devices: 1, runtime: 'onnxruntime-web/wasm' });
  golden.items.forEach((item, i) => expect(toHex(packCode(Float32Array.from(out.u[i]))), `${item.id} bits`).toBe(item.bits_hex));
  expect(switches).toHaveLength(1);
  // onnxruntime-web leaves its read-back's rejection on the lost device unhandled
  expect(problems.filter((p) => !p.startsWith("Failed to execute 'mapAsync' on 'GPUBuffer'"))).toEqual([]);
  expect(violations).toEqual([]);
}, MODEL_TIMEOUT);

it('the CSP is enforced on this page: eval from a task of its own is refused and reported, so the checks above could see a refusal', async () => {
  const r = await page.evaluate(`new Promise((res) => setTimeout(() => {
    try {
      res(String(new Function('return 1')()));
    } catch (e) {
      res(e.name);
    }
  }))`);
  expect(r).toBe('EvalError');
  await expect.poll(() => violations.length).toBe(1);
  expect(violations[0]).toMatchObject({ directive: 'script-src', blocked: 'eval' });
});
