// `medhash index` through a real backend: its batches must fit the backend's body limit (a batch
// of 64 one-megabyte files does not, so the CLI splits by bytes as well as by count), and a full
// queue (503 with Retry-After) must make it wait and send again, not stop. A backend that does not
// report its model's input (which the CLI preprocesses a DICOM by) is refused up front. A PNG or
// JPEG over the service's byte limit is refused here, naming its file. A backend restarted on
// another model mid-run stops the run, saying so, whether or not the new model takes the same input.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it, vi } from 'vitest';
import { startBackend } from '../functions/backend/node.ts';
import { loadCard } from '../functions/encode/card.ts';
import { openBatchEncoder } from '../scripts/cli/encode.ts';
import { folderImages } from '../scripts/cli/images.ts';
import { DICOM_FIXTURES } from './encode/fixtures.ts';
import { png, scanlines } from './encode/png-fixtures.ts';
import { seededRandom } from './shared/random.ts';

const MODELS = join(import.meta.dirname, '..', 'models');
const MODEL = join(MODELS, 'mednist-darf-b64.onnx');

/** A class folder of `n` grey side x side PNGs in `Hand/`, `pixel(i, k)` the i-th pixel of image k. */
function handFolder(prefix: string, n: number, side: number, pixel: (i: number, k: number) => number): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(join(dir, 'Hand'));
  for (let k = 0; k < n; k++) {
    const px = Uint8Array.from({ length: side * side }, (_, i) => pixel(i, k));
    writeFileSync(join(dir, 'Hand', `${String(k).padStart(3, '0')}.png`), png({ width: side, height: side, colorType: 0, bitDepth: 8, raw: scanlines(side, side, 1, 8, px) }));
  }
  return dir;
}

it('encodes a folder whose images together exceed the backend body limit', async () => {
  const rnd = seededRandom(1);
  // ~1 MB of incompressible grey each: 40 of them are ~53 MB of base64
  const dir = handFolder('medhash-body-', 40, 1000, () => rnd.int(256));
  const be = await startBackend({ model: MODEL, port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  try {
    const enc = await openBatchEncoder({ backendUrl: be.url });
    const out = await enc.encode(await folderImages(dir));
    expect(out).toHaveLength(40);
  } finally {
    await be.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

it('refuses a PNG over the service\'s byte limit itself, naming the file: the backend\'s body-limit 413 would name none', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'medhash-big-'));
  mkdirSync(join(dir, 'Hand'));
  // over MAX_BODY_BYTES once in base64: the backend would refuse the request, not the input
  const file = join(dir, 'Hand', 'big.png');
  writeFileSync(file, new Uint8Array(25 << 20));
  const be = await startBackend({ model: MODEL, port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  try {
    const enc = await openBatchEncoder({ backendUrl: be.url });
    await expect(enc.encode(await folderImages(dir))).rejects.toThrow(`${file}: image is ${25 << 20} bytes; at most 8388608 (8 MiB)`);
  } finally {
    await be.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

it('waits when the backend queue is full (503 with Retry-After) and sends the batch again', async () => {
  const dir = handFolder('medhash-queue-', 8, 64, (i, k) => (i * (k + 3)) & 0xff);
  // one model run at a time, and room for 64 waiting inputs
  const be = await startBackend({ model: MODEL, port: 0, hostname: '127.0.0.1', cuda: false, threads: 1, batcher: { maxBatch: 1, maxWaitMs: 0, maxQueue: 64 } });
  const real = globalThis.fetch;
  const statuses: number[] = [];
  const seen = vi.spyOn(globalThis, 'fetch').mockImplementation(async (...args) => {
    const res = await real(...args);
    statuses.push(res.status);
    return res;
  });
  try {
    const enc = await openBatchEncoder({ backendUrl: be.url });
    // read ahead: the encoder reads one item at a time, and the queue must still be full when it sends
    const images = await Promise.all((await folderImages(dir)).map(async (f) => {
      const bytes = await f.read();
      return { ...f, read: async () => bytes };
    }));
    // another client's 64 inputs fill the queue; they drain one model run at a time
    const other = be.service.batcher.submit(Array.from({ length: 64 }, () => new Float32Array(64 * 64).fill(0.5)));
    const out = await enc.encode(images);
    await other;
    expect(out).toHaveLength(8);
    expect(statuses).toContain(503);
    expect(statuses.at(-1)).toBe(200);
  } finally {
    seen.mockRestore();
    await be.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

it('sends a batch again when the connection drops, and gives up after a few tries', async () => {
  const dir = handFolder('medhash-reset-', 3, 64, (i, k) => (i * (k + 5)) & 0xff);
  const be = await startBackend({ model: MODEL, port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  const real = globalThis.fetch;
  let resets = 0;
  let toReset = 1;
  // What undici reports when the backend closes the socket under a request: "fetch failed", caused by ECONNRESET.
  const seen = vi.spyOn(globalThis, 'fetch').mockImplementation(async (...args) => {
    if (String(args[0]).endsWith('/v1/encode') && resets < toReset) {
      resets++;
      throw new TypeError('fetch failed', { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) });
    }
    return real(...args);
  });
  try {
    const enc = await openBatchEncoder({ backendUrl: be.url });
    expect(await enc.encode(await folderImages(dir))).toHaveLength(3);
    expect(resets).toBe(1);
    resets = 0;
    toReset = 100;
    await expect(enc.encode(await folderImages(dir))).rejects.toThrow(/fetch failed: read ECONNRESET/);
    expect(resets).toBe(4); // the first try and three more
  } finally {
    seen.mockRestore();
    await be.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

it('refuses a backend whose /healthz gives no model input (one older than the CLI), saying so', async () => {
  const old = createServer((_, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok', runtime: 'cpu', model_id: 'm@1', bits: 64, queue: 0 })));
  await new Promise<void>((ok) => old.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(old.address() as AddressInfo).port}`;
  try {
    await expect(openBatchEncoder({ backendUrl: url })).rejects.toThrow(
      `inference backend ${url}: GET /healthz does not give its model's input as this CLI needs it (model card: input must be an object): upgrade the backend`,
    );
  } finally {
    await new Promise((ok) => old.close(ok));
  }
});

it('says why a backend cannot be used: its address refusing, or no backend (the API, a web page) answering there', async () => {
  const down = createServer();
  await new Promise<void>((ok) => down.listen(0, '127.0.0.1', ok));
  const downUrl = `http://127.0.0.1:${(down.address() as AddressInfo).port}`;
  await new Promise((ok) => down.close(ok));
  await expect(openBatchEncoder({ backendUrl: downUrl })).rejects.toThrow(`inference backend ${downUrl} is unreachable: connect ECONNREFUSED`);
  for (const [type, body] of [['application/json', '{"status":"ok","runtime":"node"}'], ['text/html', '<html>sign in</html>']]) {
    const other = createServer((_, res) => res.writeHead(200, { 'content-type': type }).end(body));
    await new Promise<void>((ok) => other.listen(0, '127.0.0.1', ok));
    const url = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    try {
      await expect(openBatchEncoder({ backendUrl: url })).rejects.toThrow(`inference backend ${url}: GET /healthz names no model: is MEDHASH_BACKEND_URL the URL of \`medhash backend\` (not of the API)?`);
    } finally {
      await new Promise((ok) => other.close(ok));
    }
  }
});

it('stops, saying so, when the backend changes model mid-run: to one of another input (its tensor 400) or of the same', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'medhash-changed-'));
  mkdirSync(join(dir, 'Hand'));
  // a DICOM goes as a tensor preprocessed for the model the run started with
  copyFileSync(join(DICOM_FIXTURES, 'grey8-explicit.dcm'), join(dir, 'Hand', 'a.dcm'));
  const start = (name: string) => startBackend({ model: join(MODELS, `${name}.onnx`), port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  const [first, rgb, grey] = await Promise.all([start('mednist-darf-b64'), start('kather_crc_2016-darf-b64'), start('brain_tumor_mri-darf-b64')]);
  const real = globalThis.fetch;
  // the backend's address, answered by another process from `now` on: a restart on another model
  let now = first;
  const routed = vi.spyOn(globalThis, 'fetch').mockImplementation((input, init) => {
    const u = String(input instanceof Request ? input.url : input);
    return real(u.startsWith(first.url) ? now.url + u.slice(first.url.length) : u, init);
  });
  try {
    const enc = await openBatchEncoder({ backendUrl: first.url });
    const items = await folderImages(dir);
    expect(await enc.encode(items)).toHaveLength(1);
    for (const [next, name] of [[rgb, 'kather_crc_2016-darf-b64'], [grey, 'brain_tumor_mri-darf-b64']] as const) {
      now = next;
      const { model_id } = (await loadCard(join(MODELS, `${name}.onnx`))).card;
      await expect(enc.encode(items)).rejects.toThrow(`inference backend ${first.url} changed model to ${model_id} while indexing`);
    }
  } finally {
    routed.mockRestore();
    await Promise.all([first, rgb, grey].map((b) => b.close()));
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
