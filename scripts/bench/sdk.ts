// Client-side encoding benchmark (docs/RUNTIMES.md, "Browser and Deno"), one JSON line per path:
// - Chromium (headless, --disable-gpu, so onnxruntime-web/wasm): the SDK on the /ui origin of a
//   real Node service loads the model (download, sha256, session) and encodes --n MedNIST query
//   JPEGs one at a time, decode + preprocess + model, as a partner's page would;
// - with --chromium-webgpu, the same again with --enable-unsafe-webgpu, so the SDK takes
//   onnxruntime-web/webgpu on Chromium's CPU adapter (SwiftShader here: correctness only, not
//   speed; its first encode compiles the shaders, so it is reported apart);
// - Deno, WebGPU (Mesa's software llvmpipe adapter here: correctness only, not speed) and wasm:
//   the model alone on the golden inputs, one image at a time (scripts/deno/golden-encode.ts).
//
//   npm run bench:sdk -- [--n 50] [--model mednist-darf-b64] [--chromium-webgpu]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { launchChromium } from '../browser/chromium.ts';
import { loadCard } from '../../functions/encode/card.ts';
import { startNodeServer } from '../../functions/entries/node.ts';
import { randomBytes, toHex } from '../../functions/util/bytes.ts';
import { readManifest, sharedDataRoot, TarReader } from '../data/shared-data.ts';
import { denoRunner } from '../deno/run.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '50' }, model: { type: 'string', default: 'mednist-darf-b64' }, 'chromium-webgpu': { type: 'boolean', default: false } } });
const n = Number(values.n);
const name = values.model!;
const { card } = await loadCard(join(import.meta.dirname, '..', '..', 'models', `${name}.card.json`));

const DENO_PASSES = 5;
const round = (x: number) => Math.round(x * 10) / 10;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

/** `webgpu`: also --enable-unsafe-webgpu, which exposes Chromium's CPU adapter where there is no GPU. */
async function chromiumLine(webgpu: boolean): Promise<object> {
  const set = join(sharedDataRoot(), card.name.replace(/-darf-b\d+$/, ''));
  const rows = (await readManifest(set)).filter((r) => r.split === 'query').slice(0, n);
  const tar = await TarReader.open(join(set, 'images.tar'));
  const images = await Promise.all(rows.map(async (r) => Buffer.from(await tar.read(r.path)).toString('base64')));
  await tar.close();

  const dir = mkdtempSync(join(tmpdir(), 'medhash-bench-sdk-'));
  const operatorKey = toHex(randomBytes(32));
  const server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir, operatorKey });
  const base = server.url;
  const post = async (path: string, body: unknown) =>
    (await (await fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${operatorKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json()) as { id: string; secret: string };
  const tenant = await post('/v1/admin/tenants', { name: 'bench' });
  const { secret } = await post(`/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search'] });

  const browser = await launchChromium({ webgpu });
  try {
    const page = await browser.newPage();
    await page.goto(`${base}/ui`);
    return await page.evaluate(
      async ({ apiKey, modelId, images }) => {
        const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info: { vendor: string; architecture: string; isFallbackAdapter?: boolean } } | null> } }).gpu;
        const info = (await gpu?.requestAdapter())?.info;
        const adapter = info ? `${info.vendor} ${info.architecture}${info.isFallbackAdapter ? ' (fallback adapter)' : ''}` : null;
        const sdk = await import('/sdk/medhash-sdk.js' as string);
        const client = new sdk.MedhashClient({ apiKey, softwareGpu: true });
        const t0 = performance.now();
        const enc = await client.encoder(modelId);
        const loadMs = performance.now() - t0;
        const ms: number[] = [];
        // the first run sets up onnxruntime's kernels (WebGPU: compiles its shaders): timed apart
        const firstMs = (await enc.encode(Uint8Array.from(atob(images[0]), (c) => c.charCodeAt(0)), 'image/jpeg')).encodeMs as number;
        for (const b64 of images) {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          ms.push((await enc.encode(bytes, 'image/jpeg')).encodeMs);
        }
        return { runtime: enc.runtime as string, adapter, loadMs, firstMs, ms };
      },
      { apiKey: secret, modelId: card.model_id, images },
    ).then((r) => {
      const path = webgpu ? 'onnxruntime-web/webgpu' : 'onnxruntime-web/wasm';
      // a silent fallback must not be reported under the other path's name
      if (r.runtime !== path) throw new Error(`Chromium ran ${r.runtime}, not ${path} (adapter: ${r.adapter})`);
      return {
        bench: 'sdk-encode', where: 'chromium', path: r.runtime, model: name, n: r.ms.length, what: 'decode+preprocess+model, one image at a time',
        model_load_ms: round(r.loadMs), first_encode_ms: round(r.firstMs), encode_ms_p50: round(pct(r.ms, 50)), encode_ms_p99: round(pct(r.ms, 99)), images_per_s: round(1000 / (r.ms.reduce((a, b) => a + b, 0) / r.ms.length)),
        ...(webgpu ? { adapter: `${r.adapter}: a CPU emulating a GPU, correctness only, not speed` } : {}),
      };
    });
  } finally {
    await browser.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(JSON.stringify(await chromiumLine(false)));
if (values['chromium-webgpu']) console.log(JSON.stringify(await chromiumLine(true)));
const deno = await denoRunner();
try {
  for (const path of ['webgpu', 'wasm'] as const) {
    const r = await deno.run(name, path, DENO_PASSES);
    if (!r.items.every((i) => i.bits_match)) throw new Error(`${r.runtime}: sign bits differ from PyTorch's`);
    console.log(JSON.stringify({
      bench: 'sdk-encode', where: 'deno', path: r.runtime, model: name, n: r.timed, what: `model only, ${r.n} golden inputs x ${DENO_PASSES} passes, one image at a time`,
      encode_ms_per_image: round(r.encode_ms_per_image), max_abs_du: Math.max(...r.items.map((i) => i.max_abs_du)),
      ...(path === 'webgpu' ? { adapter: 'Mesa llvmpipe (software Vulkan): correctness only, not speed' } : {}),
    }));
  }
} finally {
  deno.close();
}
