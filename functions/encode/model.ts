// Running an exported model (docs/MODEL_CARD.md, "ONNX graph"): one Encoder interface over
// onnxruntime-node (CUDA when asked and present, else CPU) and onnxruntime-web (WebGPU where
// `navigator.gpu` gives a hardware adapter, else single-threaded wasm, which also takes over from a WebGPU session
// that fails a run), plus the two ways a continuous hash `u` leaves the service: the packed sign
// code and the int8 re-ranking descriptor.
import type { ModelCard } from './card.ts';
import { acceptSharedMemoryUploads } from './webgpu-deno.ts';

export interface EncodeOutputs {
  n: number;
  bits: number;
  /** (n, bits) continuous hash; the code is u > 0. */
  u: Float32Array;
  /** (n, classes) class logits in the card's `classes` order. */
  logits: Float32Array;
  /** (n, F) fused features. */
  features: Float32Array;
  oodScore: Float32Array;
  oodRecon: Float32Array;
  oodMaha: Float32Array;
  /** Feature-statistics distance; null for models exported before it existed. */
  oodStats: Float32Array | null;
}

export interface Encoder {
  readonly card: ModelCard;
  /**
   * Which runtime and execution provider actually runs the model, e.g. 'onnxruntime-node/cpu'.
   * Read it after a run: onnxruntime-web/webgpu turns into onnxruntime-web/wasm when a run fails
   * on the GPU (loadWebEncoder).
   */
  readonly runtime: string;
  /** `x` is an (n, C, S, S) batch as preprocess() makes it. */
  run(x: Float32Array, n: number): Promise<EncodeOutputs>;
  close(): Promise<void>;
}

/** The part of onnxruntime's API both packages share, so one runner serves both. */
interface OrtTensor {
  data: unknown;
  dims: readonly number[];
}
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
type TensorCtor = new (type: 'float32', data: Float32Array, dims: number[]) => OrtTensor;

/** A session and the name of the runtime and execution provider it runs on. */
interface Runner {
  runtime: string;
  session: OrtSession;
}

/**
 * onnxruntime-web runs one session run at a time, all sessions together: its WebGPU build suspends
 * a run while the GPU works, and a second run started meanwhile deadlocked Chromium's page or
 * failed ("Session already started"). Its encoders' runs queue here.
 */
let ortWebTurn: Promise<unknown> = Promise.resolve();
/**
 * Whether this process has tried a WebGPU session. Until then, wasm encoders run outside the
 * queue, as they always did (wasm runs do not suspend on a device): queued, the edge's in-process
 * fallback lost about a tenth of its throughput in bench:e2e (docs/BENCHMARKS.md, run 11).
 */
let webgpuStarted = false;
function inOrtWebTurn<T>(f: () => Promise<T>): Promise<T> {
  const p = ortWebTurn.then(f);
  ortWebTurn = p.catch(() => undefined);
  return p;
}

interface WebOptions {
  /**
   * Settles when the GPU device is lost. onnxruntime-web's runs on it then never settle (the
   * read-back's rejection does not reach its wasm), so a run waits on this too.
   */
  lost?: Promise<unknown>;
  /**
   * Loaded when a run fails: it reruns that batch and takes all later ones. Should the load fail,
   * that run fails with its error and the next run tries the load again.
   */
  fallback?: () => Promise<Runner>;
}

/** With `web`, runs take onnxruntime-web's turn and, given a fallback, recover on it. */
function makeEncoder(card: ModelCard, first: Runner, Tensor: TensorCtor, web?: WebOptions): Encoder {
  const { channels, size, name } = card.input;
  const per = channels * size * size;
  const f32 = (t: OrtTensor | undefined, key: string): Float32Array => {
    if (!t || !(t.data instanceof Float32Array)) throw new Error(`model ${card.name}: output ${key} is missing or not float32`);
    return t.data;
  };
  type Feeds = Record<string, OrtTensor>;
  let current = first;
  /** `first` failed a run: every run from then on goes to the fallback. */
  let failed = false;
  /**
   * The fallback's load while it runs, then its runner. A failed load is forgotten: the run that
   * asked for it gets its error, and the next run loads again (one try per run, so no retry storm).
   */
  let loading: Promise<Runner> | null = null;
  const lost = web?.lost?.then((info) => Promise.reject(new Error(`GPU device lost (${(info as { message?: string }).message ?? 'no reason given'})`)));
  lost?.catch(() => undefined); // answered by the runs that wait on it
  const onFirst = (feeds: Feeds) => (lost ? Promise.race([first.session.run(feeds), lost]) : first.session.run(feeds));
  const onFallback = async (feeds: Feeds, load: () => Promise<Runner>) => {
    const fresh = loading === null;
    loading ??= load().then(
      (r) => (current = r),
      (e: unknown) => {
        loading = null;
        throw e;
      },
    );
    const { session } = await loading;
    // Twice, on the session just loaded: a run left hanging on a lost device keeps
    // onnxruntime-web's one turn (above), which the next run frees by failing with "Session
    // already started".
    return fresh ? session.run(feeds).catch(() => session.run(feeds)) : session.run(feeds);
  };
  const recover = async (cause: unknown, feeds: Feeds, load: () => Promise<Runner>) => {
    failed = true;
    console.warn(`model ${card.name}: a run on ${first.runtime} failed (${String(cause)}); loading the fallback`);
    // released first, so the two never hold the model's memory together; whatever a lost
    // device makes release throw does not matter any more
    await first.session.release().catch(() => undefined);
    return onFallback(feeds, load);
  };
  const infer = (feeds: Feeds) => {
    if (!web) return first.session.run(feeds);
    const { fallback } = web;
    // in the turn, so a run sees the state the runs before it left: one switch, one load at a time
    return inOrtWebTurn(async () => {
      if (!fallback) return onFirst(feeds);
      if (failed) return onFallback(feeds, fallback);
      return onFirst(feeds).catch((e: unknown) => recover(e, feeds, fallback));
    });
  };
  return {
    card,
    get runtime() {
      // between a failed run and a fallback that loaded, `first` is released and nothing runs the model
      return failed && current === first ? `none (${first.runtime} failed; the next run loads its fallback)` : current.runtime;
    },
    async run(x, n) {
      if (!Number.isInteger(n) || n <= 0 || x.length !== n * per) {
        throw new Error(`encoder input must hold ${n} x ${channels}x${size}x${size} floats, got ${x.length}`);
      }
      const out = await infer({ [name]: new Tensor('float32', x, [n, channels, size, size]) });
      const u = f32(out.u, 'u');
      if (u.length !== n * card.bits) throw new Error(`model ${card.name}: u has ${u.length} values, expected ${n} x ${card.bits}`);
      return {
        n,
        bits: card.bits,
        u,
        logits: f32(out.logits, 'logits'),
        features: f32(out.features, 'features'),
        oodScore: f32(out.ood_score, 'ood_score'),
        oodRecon: f32(out.ood_recon, 'ood_recon'),
        oodMaha: f32(out.ood_maha, 'ood_maha'),
        // added with the feature-statistics score; older exports lack it
        oodStats: out.ood_stats ? f32(out.ood_stats, 'ood_stats') : null,
      };
    },
    // after a switch `first` is released already; with no fallback loaded there is nothing to release
    close: async () => (failed ? (await loading?.catch(() => null))?.session.release() : first.session.release()),
  };
}

/**
 * Imported by a name bundlers cannot follow: workerd cannot load onnxruntime-node's native addon,
 * and bundling it would break the worker build of any module that imports packCode from here.
 */
const NODE_ORT = 'onnxruntime-node';

export interface NodeEncoderOptions {
  /** Try the CUDA execution provider first; falls back to the CPU when it is missing. */
  cuda?: boolean;
  /** onnxruntime's intra-op threads; unset: its default (one per core). */
  threads?: number;
}

/** onnxruntime-node. `runtime` says whether CUDA or the CPU ended up running the model. */
export async function loadNodeEncoder(onnxBytes: Uint8Array, card: ModelCard, opts: NodeEncoderOptions = {}): Promise<Encoder> {
  const ort = (await import(/* @vite-ignore */ NODE_ORT)) as typeof import('onnxruntime-node');
  const threads = opts.threads === undefined ? {} : { intraOpNumThreads: opts.threads };
  if (opts.cuda && ort.listSupportedBackends().some((b) => b.name === 'cuda')) {
    try {
      const session = await ort.InferenceSession.create(onnxBytes, { executionProviders: ['cuda'], ...threads });
      return makeEncoder(card, { runtime: 'onnxruntime-node/cuda', session }, ort.Tensor);
    } catch {
      // the package lists CUDA but its provider library, driver or GPU is missing (onnxruntime
      // logs one error line then): the CPU below still answers
    }
  }
  const session = await ort.InferenceSession.create(onnxBytes, { executionProviders: ['cpu'], ...threads });
  return makeEncoder(card, { runtime: 'onnxruntime-node/cpu', session }, ort.Tensor);
}

export interface WebEncoderOptions {
  /**
   * Run WebGPU on a software adapter too (`isFallbackAdapter`: a CPU emulating a GPU, such as
   * SwiftShader), which is correct but tens of times slower than wasm here: for tests and
   * measurements of the WebGPU path on machines without a GPU.
   */
  softwareGpu?: boolean;
}

interface GpuAdapterLike {
  isFallbackAdapter?: boolean;
  info?: { isFallbackAdapter?: boolean };
}

/**
 * onnxruntime-web, in-process on Node, Deno or a browser: WebGPU when `navigator.gpu` gives a
 * hardware adapter, else the wasm backend on one thread (no worker threads needed). A WebGPU
 * session that fails a run (device lost, out of memory, the GPU process gone) is replaced by a
 * wasm one, which answers that run and the later ones; `runtime` then says wasm.
 */
export async function loadWebEncoder(onnxBytes: Uint8Array, card: ModelCard, opts: WebEncoderOptions = {}): Promise<Encoder> {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = 1;
  // holds on to the model's bytes while a WebGPU encoder may still need them
  const wasm = async (): Promise<Runner> => ({ runtime: 'onnxruntime-web/wasm', session: await ort.InferenceSession.create(onnxBytes, { executionProviders: ['wasm'] }) });
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<GpuAdapterLike | null> } } | undefined)?.gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  // GPUAdapterInfo.isFallbackAdapter, or the adapter's own in older implementations
  const software = adapter ? (adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false) : false;
  if (adapter && (!software || opts.softwareGpu)) {
    acceptSharedMemoryUploads();
    webgpuStarted = true;
    try {
      const session = await ort.InferenceSession.create(onnxBytes, { executionProviders: ['webgpu'] });
      const device = (await ort.env.webgpu.device) as { lost: Promise<unknown> } | undefined;
      return makeEncoder(card, { runtime: 'onnxruntime-web/webgpu', session }, ort.Tensor, { lost: device?.lost, fallback: wasm });
    } catch {
      // this build or adapter cannot run WebGPU kernels: wasm below
    }
  }
  return makeEncoder(card, await wasm(), ort.Tensor, webgpuStarted ? {} : undefined);
}

/** Row i of an (n, dims) matrix. */
export function row(m: Float32Array, dims: number, i: number): Float32Array {
  return m.subarray(i * dims, (i + 1) * dims);
}

/** The binary code of one `u`: bit i = bit (7 - i % 8) of byte i / 8, set where u > 0. */
export function packCode(u: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(Math.ceil(u.length / 8));
  for (let i = 0; i < u.length; i++) if (u[i] > 0) out[i >> 3] |= 1 << (7 - (i & 7));
  return out;
}

/** The int8 re-ranking descriptor of one `u`: round(127 u / max|u|), halves away from zero. */
export function descriptor(u: ArrayLike<number>): Int8Array {
  let max = 0;
  for (let i = 0; i < u.length; i++) max = Math.max(max, Math.abs(u[i]));
  const out = new Int8Array(u.length);
  if (max === 0) return out;
  for (let i = 0; i < u.length; i++) {
    const v = (127 * u[i]) / max;
    out[i] = Math.sign(v) * Math.round(Math.abs(v));
  }
  return out;
}
