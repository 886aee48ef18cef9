// Hamming search benchmark (issue 2, "Numbers"): exact top-k over random packed codes with
// the wasm kernel, native C (native_topk.c, gcc -O3 -march=native), the best plain JS loop
// and usearch's exact search. Single queries, one thread each; every method's distances are
// checked against the wasm kernel's before anything is printed.
//
//   npm run bench:search -- [--json] [--n 1e6,1e7] [--bits 64,128] [--k 100] [--queries N]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import usearch from 'usearch';
import type { Bits, TopK } from '../../wasm/hamming.ts';
import { loadHammingKernel } from '../../wasm/load-node.ts';
import { jsTopK } from './js_topk.ts';
import { fillRandom } from './random.ts';

const SLOW_BUDGET_MS = 8000; // per slow method (JS loop, usearch) and config
const MIN_SLOW_QUERIES = 10;
// Warm-up until V8 has tiered the kernel up to TurboFan (compiled in the background, slow
// when the other core is busy): at least WARMUP queries and WARMUP_MS.
const WARMUP = 20;
const WARMUP_MS = 1000;

interface Options { n: number[]; bits: Bits[]; k: number; queries?: number; json: boolean }

function parseArgs(argv: string[]): Options {
  const o: Options = { n: [1e6, 1e7], bits: [64, 128], k: 100, json: false };
  const list = (v: string | undefined, name: string): number[] => {
    const xs = (v ?? '').split(',').map(Number);
    if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x <= 0)) throw new Error(`bad --${name} ${v}`);
    return xs;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--n') o.n = list(argv[++i], 'n');
    else if (a === '--bits') {
      o.bits = list(argv[++i], 'bits') as Bits[];
      if (o.bits.some((b) => ![16, 32, 64, 128, 256].includes(b))) throw new Error('--bits: 16, 32, 64, 128 or 256');
    } else if (a === '--k') o.k = list(argv[++i], 'k')[0];
    else if (a === '--queries') o.queries = list(argv[++i], 'queries')[0];
    else throw new Error(`unknown option ${a} (options: --n --bits --k --queries --json)`);
  }
  return o;
}

function progress(msg: string): void {
  process.stderr.write(`[bench:search] ${msg}\n`);
}

function percentile(ms: number[], p: number): number {
  const s = [...ms].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const round = (x: number): number => Math.round(x * 1000) / 1000;

function sameDists(name: string, q: number, want: ArrayLike<number>, got: ArrayLike<number>): void {
  const ok = want.length === got.length && Array.from(want).every((d, i) => d === got[i]);
  if (!ok) throw new Error(`${name} disagrees with wasm on query ${q}: [${Array.from(got).slice(0, 8)}...] vs [${Array.from(want).slice(0, 8)}...]`);
}

/** Runs `run` over queries until all are done or the budget is spent (at least `min`). */
function timed(count: number, budgetMs: number, min: number, run: (q: number) => void): number[] {
  const ms: number[] = [];
  const start = performance.now();
  let lastReport = start;
  for (let q = 0; q < count; q++) {
    const t0 = performance.now();
    run(q);
    const t1 = performance.now();
    ms.push(t1 - t0);
    if (t1 - start > budgetMs && ms.length >= min) break;
    if (t1 - lastReport > 2000) {
      progress(`  ${ms.length}/${count} queries`);
      lastReport = t1;
    }
  }
  return ms;
}

function compileNative(dir: string): string {
  const src = fileURLToPath(new URL('./native_topk.c', import.meta.url));
  const bin = join(dir, 'native_topk');
  execFileSync('gcc', ['-O3', '-march=native', '-o', bin, src], { stdio: 'inherit' });
  return bin;
}

interface Row {
  bench: 'search'; n: number; bits: Bits; k: number;
  wasm_p50_ms: number; wasm_p99_ms: number; native_p50_ms: number; js_p50_ms: number; usearch_p50_ms: number;
  mem_bytes_per_million: number; queries: number; js_queries: number; usearch_queries: number;
}

async function benchConfig(n: number, bits: Bits, k: number, nq: number, dir: string, native: string): Promise<Row> {
  const rowBytes = bits / 8;
  progress(`n=${n} bits=${bits} k=${k}: generating codes and ${nq} queries`);
  const codes = new Uint8Array(n * rowBytes + 3 & ~3); // whole 32-bit words for the PRNG
  fillRandom(codes, n ^ bits);
  const table = codes.subarray(0, n * rowBytes);
  const queries = new Uint8Array(nq * rowBytes + 3 & ~3);
  fillRandom(queries, 0x5eed ^ bits);
  const query = (q: number): Uint8Array => queries.subarray(q * rowBytes, (q + 1) * rowBytes);

  // wasm: a fresh instance, so its whole linear memory (stack, table, scratch) is this config's.
  progress('  wasm');
  const kernel = await loadHammingKernel();
  const t = kernel.loadTable(table, bits);
  for (let q = 0, t0 = performance.now(); q < WARMUP || performance.now() - t0 < WARMUP_MS; q++) {
    kernel.topK(t, query(q % nq), k);
  }
  const wasm: TopK[] = [];
  const wasmMs = timed(nq, Infinity, nq, (q) => { wasm[q] = kernel.topK(t, query(q), k); });
  const memPerMillion = (kernel.memoryBytes() / n) * 1e6;
  kernel.freeTable(t);

  progress('  native');
  const tableFile = join(dir, 'table.bin');
  const queryFile = join(dir, 'queries.bin');
  writeFileSync(tableFile, table);
  writeFileSync(queryFile, queries.subarray(0, nq * rowBytes));
  const out = execFileSync(native, [tableFile, String(n), String(bits), queryFile, String(nq), String(k), String(WARMUP)], {
    maxBuffer: 1 << 30, encoding: 'utf8',
  });
  rmSync(tableFile);
  const nativeMs = out.trim().split('\n').map((line, q) => {
    const [ns, ...dists] = line.split(' ').map(Number);
    sameDists('native', q, wasm[q].dists, dists);
    return ns / 1e6;
  });

  progress('  plain JS loop');
  for (let q = 0; q < Math.min(3, nq); q++) jsTopK(table, bits, query(q), k);
  const js: TopK[] = [];
  const jsMs = timed(nq, SLOW_BUDGET_MS, Math.min(MIN_SLOW_QUERIES, nq), (q) => { js[q] = jsTopK(table, bits, query(q), k); });
  js.forEach((r, q) => {
    sameDists('js', q, wasm[q].dists, r.dists);
    sameDists('js rows', q, wasm[q].rows, r.rows); // same tie rule, so the same rows too
  });

  // usearch's exact search takes no packed bits: one int8 per bit with l2sq is exact Hamming.
  progress('  usearch (expanding to one byte per bit)');
  const unpack = (src: Uint8Array): Int8Array => {
    const dst = new Int8Array(src.length * 8);
    for (let i = 0; i < src.length; i++) {
      const b = src[i];
      for (let j = 0; j < 8; j++) dst[i * 8 + j] = (b >> (7 - j)) & 1;
    }
    return dst;
  };
  const expanded = unpack(table);
  const qExpanded = unpack(queries.subarray(0, nq * rowBytes));
  // A copy, not a subarray: usearch's addon reads from the ArrayBuffer start and ignores
  // byteOffset (every subarray query would silently be query 0).
  const uq = (q: number): Int8Array => qExpanded.slice(q * bits, (q + 1) * bits);
  const kk = Math.min(k, n);
  const search = (q: number) => usearch.exactSearch(expanded, uq(q), bits, kk, usearch.MetricKind.L2sq, 1) as { distances: Float32Array };
  search(0);
  progress('  usearch');
  const us: Float32Array[] = [];
  const usearchMs = timed(nq, SLOW_BUDGET_MS, Math.min(MIN_SLOW_QUERIES, nq), (q) => { us[q] = search(q).distances; });
  us.forEach((d, q) => sameDists('usearch', q, wasm[q].dists, d));

  return {
    bench: 'search', n, bits, k,
    wasm_p50_ms: round(percentile(wasmMs, 50)),
    wasm_p99_ms: round(percentile(wasmMs, 99)),
    native_p50_ms: round(percentile(nativeMs, 50)),
    js_p50_ms: round(percentile(jsMs, 50)),
    usearch_p50_ms: round(percentile(usearchMs, 50)),
    mem_bytes_per_million: Math.round(memPerMillion),
    queries: nq, js_queries: jsMs.length, usearch_queries: usearchMs.length,
  };
}

function printTable(rows: Row[]): void {
  const head = ['n', 'bits', 'k', 'wasm p50', 'wasm p99', 'native p50', 'js p50', 'usearch p50', 'wasm/native', 'usearch/wasm', 'MB/1M codes'];
  const body = rows.map((r) => [
    r.n.toLocaleString('en-US'), String(r.bits), String(r.k),
    `${r.wasm_p50_ms} ms`, `${r.wasm_p99_ms} ms`, `${r.native_p50_ms} ms`, `${r.js_p50_ms} ms`, `${r.usearch_p50_ms} ms`,
    `${(r.wasm_p50_ms / r.native_p50_ms).toFixed(2)}x`, `${(r.usearch_p50_ms / r.wasm_p50_ms).toFixed(0)}x`,
    (r.mem_bytes_per_million / 1e6).toFixed(2),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  for (const line of [head, ...body]) console.log(line.map((c, i) => c.padStart(width[i])).join('  '));
  console.log(`queries per config: wasm/native ${rows.map((r) => r.queries).join('/')}, ` +
    `js ${rows.map((r) => r.js_queries).join('/')}, usearch ${rows.map((r) => r.usearch_queries).join('/')}`);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'medhash-bench-'));
  try {
    const native = compileNative(dir);
    const rows: Row[] = [];
    for (const n of o.n) {
      for (const bits of o.bits) {
        const row = await benchConfig(n, bits, o.k, o.queries ?? (n <= 1e6 ? 1000 : 300), dir, native);
        if (o.json) console.log(JSON.stringify(row));
        rows.push(row);
      }
    }
    if (!o.json) printTable(rows);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
