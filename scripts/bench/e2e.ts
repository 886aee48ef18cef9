// End-to-end search-by-image benchmark (issue 4, "Numbers"): a 64x64 PNG in, ranked results out,
// through the Hono app on Node (app.fetch in-process: the route, decode, preprocessing, the
// encoder path, the Hamming search over every shard) over n synthetic codes written straight
// into the store, with real query images (the data set's `query` split, rendered as 64x64 grey
// PNGs). One JSON line per encoder path: "backend-cpu" (the inference backend as its own
// process) and "ort-web-wasm" (no backend: the in-process fallback), with the CPU time each
// process spent per search, and encode-only latency and throughput for the same path.
//
//   npm run bench:e2e -- [--json] [--n 1000000] [--requests 2000] [--concurrency 8]
//                        [--paths backend-cpu,ort-web-wasm] [--model models/NAME.onnx] [--threads 1]
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../functions/api/app.ts';
import { generateSecret, hashSecret } from '../../functions/auth/keys.ts';
import { spawnBackend, type BackendProcess } from '../../functions/backend/process.ts';
import { loadCard, type ModelCard } from '../../functions/encode/card.ts';
import { decodeImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { encodePng } from '../../functions/encode/png-encode.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { createNodeBackend } from '../../functions/entries/node.ts';
import { createNodeImageEncoder } from '../../functions/inference/node.ts';
import { RemoteEncoder } from '../../functions/inference/remote.ts';
import { loadWebEncoder } from '../../functions/encode/model.ts';
import type { CollectionSpec, WriteOp } from '../../functions/store/writer.ts';
import { dataSetImages } from '../cli/images.ts';
import { sharedDataRoot } from '../data/shared-data.ts';
import { randomWords } from './random.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const PATHS = ['backend-cpu', 'ort-web-wasm'] as const;
type PathName = (typeof PATHS)[number];
/** What the route's `path` field says for each benchmarked path. */
const ROUTE_PATH: Record<PathName, string> = { 'backend-cpu': 'backend', 'ort-web-wasm': 'ort-web-wasm' };
const N_QUERIES = 64;
const WARMUP = 50;
const ENCODE_ROUNDS = 200;

interface Options { json: boolean; n: number; requests: number; concurrency: number; paths: PathName[]; model: string; threads: number }

function parseArgs(argv: string[]): Options {
  const mednist = join(ROOT, 'models', 'mednist-darf-b64.onnx');
  const o: Options = {
    json: false, n: 1e6, requests: 2000, concurrency: 8, paths: [...PATHS], threads: 1,
    model: existsSync(mednist) ? mednist : join(ROOT, 'models', 'brain_tumor_mri-darf-b64.onnx'),
  };
  const num = (v: string | undefined, name: string) => {
    const x = Number(v);
    if (!Number.isInteger(x) || x <= 0) throw new Error(`--${name} must be a positive integer`);
    return x;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--n') o.n = num(argv[++i], 'n');
    else if (a === '--requests') o.requests = num(argv[++i], 'requests');
    else if (a === '--concurrency') o.concurrency = num(argv[++i], 'concurrency');
    else if (a === '--model') o.model = argv[++i];
    else if (a === '--threads') o.threads = num(argv[++i], 'threads');
    else if (a === '--paths') {
      o.paths = (argv[++i] ?? '').split(',') as PathName[];
      if (o.paths.some((p) => !PATHS.includes(p))) throw new Error(`--paths: among ${PATHS.join(', ')}`);
    } else throw new Error(`unknown option ${a} (options: --json --n --requests --concurrency --paths --model --threads)`);
  }
  return o;
}

const progress = (msg: string) => process.stderr.write(`[bench:e2e] ${msg}\n`);

/** Real query images, each rendered as the model sees it (grey, 64x64) and saved as PNG. */
async function queryPngs(set: string, input: ModelCard['input']): Promise<Uint8Array<ArrayBuffer>[]> {
  const { channels, size } = input;
  const data = await dataSetImages(join(sharedDataRoot(), set), 'query');
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (const f of data.images.slice(0, N_QUERIES)) {
    const x = preprocess(await decodeImage(await f.read(), f.contentType), input);
    const grey = new Uint8Array(size * size);
    // channel 0 is the luma for a 1-channel model; for RGB models, the mean of the channels
    for (let i = 0; i < grey.length; i++) {
      let v = 0;
      for (let c = 0; c < channels; c++) v += x[c * size * size + i];
      grey[i] = Math.round((255 * v) / channels);
    }
    out.push(await encodePng({ width: size, height: size, channels: 1, data: grey, bitDepth: 8 }));
  }
  await data.close();
  return out;
}

const CLOCK_TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));

/** CPU time (user + system) a process has used so far, from /proc (Linux). */
function processCpuMs(pid: number): number {
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of stat.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

async function closedLoop(total: number, concurrency: number, one: (i: number) => Promise<void>): Promise<{ lat: number[]; wallMs: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < total; i = next++) {
        const t = performance.now();
        await one(i);
        lat.push(performance.now() - t);
      }
    }),
  );
  return { lat: lat.sort((a, b) => a - b), wallMs: performance.now() - t0 };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { card, onnx } = await loadCard(o.model);
  // NAME-darf-bBITS, or its int8 variant NAME-darf-bBITS-int8 (scripts/int8.sh)
  const set = card.name.replace(/-darf-b\d+(-int8)?$/, '');
  await initNodeImageCodecs();
  const pngs = await queryPngs(set, card.input);
  const dir = mkdtempSync(join(tmpdir(), 'medhash-bench-e2e-'));
  const rows: Record<string, unknown>[] = [];
  let backend: BackendProcess | null = null;
  try {
    for (const path of o.paths) {
      backend = path === 'backend-cpu' ? await spawnBackend(o.model, ['--threads', String(o.threads)]) : null;
      // A generous timeout: this measures the backend path, and must not fall back on a slow moment.
      const images = await createNodeImageEncoder({ model: o.model, backendUrl: backend?.url, timeoutMs: 30_000 });
      if (!backend) await images.preload();
      // The access log on, as `medhash serve` runs it: one line per request to a file.
      const log = openSync(join(dir, `${path}.access.log`), 'a');
      const node = await createNodeBackend({ dataDir: join(dir, path), images, accessLog: (line) => void writeSync(log, `${line}\n`) });
      const b = node.backend;
      const tenant = await b.control.createTenant('bench');
      // A plan above the bench's rate: it measures latency, not the default plan's 429s.
      await b.ledger(tenant.id).setPlan(tenant.id, { rate_per_second: 1e6, burst: 1e6, monthly_quota: null }, { key_id: 'operator', action: 'plan.update' });
      const col = await b.control.createCollection(tenant.id, { name: 'bulk', bits: card.bits as 64, descriptor_dims: 0, model_id: card.model_id });
      const spec: CollectionSpec = { id: col.id, bits: col.bits as 64, descriptor_dims: 0 };
      const t0 = performance.now();
      const words = randomWords(7);
      const bytes = card.bits / 8;
      for (let start = 0; start < o.n; start += 16384) {
        const ops: WriteOp[] = [];
        for (let i = start; i < Math.min(o.n, start + 16384); i++) {
          const code = new Uint8Array(bytes);
          const dv = new DataView(code.buffer);
          for (let j = 0; j < bytes; j += 4) dv.setUint32(j, words.next().value as number);
          ops.push({ op: 'put', record: { id: `s${String(i).padStart(8, '0')}`, code, descriptor: new Int8Array(0), metadata: '{}' } });
        }
        await b.writer(spec).apply(ops);
      }
      progress(`${path}: ${o.n} synthetic codes stored in ${round((performance.now() - t0) / 1000, 1)} s`);

      const app = createApp(b);
      // A key for the app's own auth path, as every real request pays it.
      const secret = generateSecret();
      await b.control.createKey(tenant.id, { scopes: ['search'] }, await hashSecret(secret));
      const search = async (i: number) => {
        // allow_ood: the bulk of the index is random codes, so the k-NN part of the OOD gate would
        // (rightly) refuse every query; the gate's cost is still paid, only its verdict is ignored.
        const res = await app.fetch(new Request('http://bench/v1/collections/bulk/search/image?k=10&allow_ood=true', {
          method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'image/png' }, body: pngs[i % pngs.length],
        }));
        const body = (await res.json()) as { path?: string; results?: unknown[] };
        if (res.status !== 200 || body.path !== ROUTE_PATH[path] || body.results?.length !== 10) throw new Error(`${path}: unexpected answer ${res.status} ${JSON.stringify(body).slice(0, 200)}`);
      };
      // The first search loads and verifies every shard: once by code, before anything is timed.
      await app.fetch(new Request('http://bench/v1/collections/bulk/search', {
        method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: JSON.stringify({ code: '00'.repeat(card.bits / 8) }),
      }));
      await closedLoop(WARMUP, o.concurrency, search);
      progress(`${path}: ${o.requests} searches at concurrency ${o.concurrency}`);
      // CPU per search of each process: which one runs out of core first.
      const edgeCpu0 = process.cpuUsage();
      const backendCpu0 = backend ? processCpuMs(backend.child.pid!) : 0;
      const s = await closedLoop(o.requests, o.concurrency, search);
      const edgeCpu = process.cpuUsage(edgeCpu0);
      const backendCpuMs = backend ? processCpuMs(backend.child.pid!) - backendCpu0 : null;

      // Encode only: one image at a time (latency) and batches of 32 (throughput).
      const tensors = await Promise.all(pngs.map(async (p) => preprocess(await decodeImage(p, 'image/png'), card.input)));
      const per = tensors[0].length;
      const batch = new Float32Array(32 * per);
      for (let i = 0; i < 32; i++) batch.set(tensors[i % tensors.length], i * per);
      let encodeOne: (i: number) => Promise<unknown>;
      let encodeBatch: () => Promise<unknown>;
      if (backend) {
        const remote = new RemoteEncoder(backend.url, 10_000);
        encodeOne = (i) => remote.encode({ tensor: tensors[i % tensors.length] });
        encodeBatch = () => remote.encodeBatch(Array.from({ length: 32 }, (_, i) => ({ tensor: tensors[i % tensors.length] })));
      } else {
        const enc = await loadWebEncoder(onnx, card);
        encodeOne = (i) => enc.run(tensors[i % tensors.length], 1);
        encodeBatch = () => enc.run(batch, 32);
      }
      const one = await closedLoop(ENCODE_ROUNDS, 1, (i) => encodeOne(i).then(() => undefined));
      const many = await closedLoop(Math.max(5, ENCODE_ROUNDS / 16), 1, () => encodeBatch().then(() => undefined));
      rows.push({
        bench: 'e2e', n_items: o.n, path, model_id: card.model_id, requests: o.requests, ort_threads: path === 'backend-cpu' ? o.threads : 1,
        p50_ms: round(quantile(s.lat, 0.5)), p99_ms: round(quantile(s.lat, 0.99)), qps: round((1000 * o.requests) / s.wallMs, 1), concurrency: o.concurrency,
        edge_cpu_ms_per_search: round((edgeCpu.user + edgeCpu.system) / 1000 / o.requests, 2),
        backend_cpu_ms_per_search: backendCpuMs === null ? null : round(backendCpuMs / o.requests, 2),
        encode_p50_ms: round(quantile(one.lat, 0.5)), encode_p99_ms: round(quantile(one.lat, 0.99)),
        encode_batch32_images_per_s: round((32 * 1000) / quantile(many.lat, 0.5), 1),
      });
      node.close();
      closeSync(log);
      await backend?.stop();
      backend = null;
    }
  } finally {
    await backend?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  if (o.json) for (const r of rows) console.log(JSON.stringify(r));
  else console.table(rows);
}

await main();
