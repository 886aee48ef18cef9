// Browser SDK (one ES module, bundled by functions/sdk/build.ts): encodes an image on the
// partner's device with the service's own model (decodeImage + preprocess + onnxruntime-web,
// WebGPU where `navigator.gpu` gives a hardware adapter, wasm otherwise) and searches by the code and
// descriptor only, so no image ever leaves the device. The model's card and .onnx come from
// GET /v1/models/{model_id}/... (or a static folder, `modelsUrl`), and the .onnx is checked
// against the card's sha256 before use. The encoding is the server's own (backend/encoding.ts),
// so a code computed here equals the one search by image computes.
import * as ort from 'onnxruntime-web';
import { encodingOf } from '../backend/encoding.ts';
import type { ImageEncoding } from '../backend/protocol.ts';
import { checkOnnx, parseCard, type ModelCard } from '../encode/card.ts';
import { dicomMetadata, isDicom } from '../encode/dicom.ts';
import { checkImageBytes, decodeImage, DEFAULT_LIMITS, initImageCodecs, startHex, type DecodeOptions } from '../encode/image.ts';
import { loadWebEncoder, type Encoder } from '../encode/model.ts';
import { preprocess } from '../encode/preprocess.ts';
import { calibrationOf } from '../safety/calibration.ts';
import { assess, OodRefusal } from '../safety/gate.ts';
import { concatBytes } from '../util/bytes.ts';
import { retryAfterSeconds } from '../util/retry-after.ts';
import { allPages } from '../util/pages.ts';

/**
 * The WebAssembly files the SDK fetches at run time, served beside the bundle by the Node app
 * (/sdk/...) or by whoever hosts the SDK (`npm run build:sdk` copies them into dist/sdk/).
 */
export const ASSETS = {
  /** onnxruntime-web's default bundle (WebGPU through JSEP, and wasm) loads this one binary. */
  ort: 'ort-wasm-simd-threaded.jsep.wasm',
  png: 'squoosh_png_bg.wasm',
  jpeg: 'mozjpeg_dec.wasm',
  /** DICOM JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG), Emscripten builds. */
  charls: 'charlswasm_decode.wasm',
  openjpeg: 'openjpegwasm_decode.wasm',
} as const;

export interface ClientOptions {
  apiKey: string;
  /** The service's origin; default the page's. */
  baseUrl?: string;
  /** Where the ASSETS lie; default the folder this module was loaded from. */
  assetBase?: string;
  /**
   * A folder laid out as models/ (NAME.card.json and the .onnx each card names), to download
   * models from instead of the service's /v1/models, which only the Node entry serves: with a
   * Workers deployment, host the models statically and name the folder here.
   */
  modelsUrl?: string;
  /**
   * Encode with WebGPU on a software adapter too (a CPU emulating a GPU), which is correct but far
   * slower than wasm; by default such an adapter is passed over for wasm. For tests and measurements.
   */
  softwareGpu?: boolean;
  /**
   * How long an API call (a search, a page of the collections list, a model's card) may wait for
   * its whole answer before it fails with MedhashTimeoutError; default 30 000 (30 s). Model
   * downloads have none: they report their progress, and 28 MB over a slow link may take minutes.
   */
  timeoutMs?: number;
}

/**
 * Without a limit, a search that a stuck service or a lost connection never answers waits for
 * whatever limit the browser or runtime has, if any. A search by code answers in milliseconds;
 * this leaves room for a cold start and a slow link.
 */
const DEFAULT_TIMEOUT_MS = 30_000;
/** The longest delay a timer keeps: 2^31 - 1 ms. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export interface CollectionSummary {
  name: string;
  bits: number;
  descriptor_dims: number;
  model_id: string | null;
}

export interface OodAssessment {
  score: number | null;
  threshold: number | null;
  verdict: 'in_distribution' | 'out_of_distribution' | 'not_assessed';
  reasons: string[];
}

export interface SearchHit {
  id: string;
  distance: number;
  similarity: number | null;
  score: number;
  metadata: Record<string, string>;
}

export interface SearchAnswer {
  generation: number;
  truncated: boolean;
  ood: OodAssessment;
  results: SearchHit[];
}

export interface SearchOptions {
  k?: number;
  radius?: number;
  /** Weight of descriptor similarity in the score, 0-1; sent only with a descriptor. */
  contentWeight?: number;
  /** Answer an out-of-distribution query (marked so) instead of the 422 refusal. */
  allowOod?: boolean;
  /** Keep only items whose metadata field is this value (or one of these); fields combine with AND. */
  filter?: { label?: string | string[]; modality?: string | string[]; body_part?: string | string[] };
  /** Leave out the items of this study, or of this patient reference (the query's own). */
  excludeStudyUid?: string;
  excludePatientRef?: string;
  /** searchImage with a DICOM: leave out the items of the image's own study (its Study Instance UID, read here). */
  excludeOwnStudy?: boolean;
  /** searchImage with a multi-frame DICOM, which needs it: the frame to encode, from 0. */
  frame?: number;
}

/**
 * What the service's search by image reports per image (hex code, int8 descriptor, class
 * probabilities, the model's OOD score and threshold), plus where and how fast it ran here.
 */
export interface EncodedImage extends ImageEncoding {
  runtime: string;
  encodeMs: number;
}

/**
 * A non-2xx answer: the service's `{"error":{code,message,field,details}}`, plus `ood` on a 422
 * refusal and the Retry-After header, what a caller needs to back off on 429 and 402.
 */
export class MedhashApiError extends Error {
  override name = 'MedhashApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly ood?: OodAssessment,
    /** The facts behind the error: on 429 `{retry_after_s, limit, window_s}`, on 402 `{quota, used, requested, resets_at}`. */
    readonly details?: Record<string, unknown>,
    /** Seconds to wait before retrying, from Retry-After, seconds or HTTP-date (429; a 402 has none: `details.resets_at` says when the quota renews). */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}

/**
 * An API call with no whole answer within the client's `timeoutMs`: the service is stuck or
 * overloaded, or the connection was lost. Not a MedhashApiError: no answer of the service's came.
 */
export class MedhashTimeoutError extends Error {
  override name = 'MedhashTimeoutError';
  constructor(
    readonly url: string,
    readonly timeoutMs: number,
  ) {
    super(`${url}: no answer within ${timeoutMs / 1000} s; is the service overloaded, or the connection lost?`);
  }
}

/** What a model load downloads: the model's .onnx, and onnxruntime-web's .wasm (once per page). */
export type Download = 'model' | 'runtime';

/** Download progress: bytes so far and the total when the server says it, of `what`. */
export type Progress = (loaded: number, total: number | null, what: Download) => void;

let codecs: Promise<void> | null = null;

/**
 * The image decoders' WebAssembly, from `assetBase` (default: the folder this module was loaded
 * from): PNG and JPEG downloaded and compiled once per page, here; CharLS and OpenJPEG (DICOM's
 * JPEG-LS and JPEG 2000, which few images are) each on the first frame that needs it, and kept
 * (dicom-codecs.ts). A model load waits for this; so must anything that decodes an image before
 * one, such as a compressed DICOM's preview. A failed download (a network blip) is forgotten, so
 * the next call, or the next such frame, tries again rather than failing until the page is reloaded.
 */
export function loadImageCodecs(assetBase: string = new URL('./', import.meta.url).href): Promise<void> {
  const onFirstFrame = (name: string, what: string) => () =>
    compile(assetUrl(assetBase, name)).catch((e: unknown) => {
      throw new Error(`the ${what} decoder could not be loaded: ${errorText(e)}`);
    });
  codecs ??= Promise.all([ASSETS.png, ASSETS.jpeg].map((name) => compile(assetUrl(assetBase, name))))
    .then(([png, jpeg]) => initImageCodecs({ png, jpeg, charls: onFirstFrame(ASSETS.charls, 'DICOM JPEG-LS (CharLS)'), openjpeg: onFirstFrame(ASSETS.openjpeg, 'DICOM JPEG 2000 (OpenJPEG)') }))
    .catch((e: unknown) => {
      codecs = null;
      throw e;
    });
  return codecs;
}

/** onnxruntime-web's .wasm download, and the loads waiting on it, each told its progress. */
let runtime: { ready: Promise<void>; listeners: Set<Progress> } | null = null;

/** An encoder for one model card, running in this page. */
export class BrowserEncoder {
  constructor(
    readonly card: ModelCard,
    private readonly encoder: Encoder,
  ) {}

  /** What runs the model now: onnxruntime-web/webgpu becomes onnxruntime-web/wasm after a failed GPU run. */
  get runtime(): string {
    return this.encoder.runtime;
  }

  /**
   * PNG, JPEG or DICOM (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000) bytes -> code,
   * descriptor, class probabilities and OOD score; `options.frame` picks a multi-frame DICOM's frame.
   */
  async encode(bytes: Uint8Array, contentType?: string, options: DecodeOptions = {}): Promise<EncodedImage> {
    const t0 = performance.now();
    const img = await decodeImage(bytes, contentType, DEFAULT_LIMITS, options);
    const out = await this.encoder.run(preprocess(img, this.card.input), 1);
    return { ...encodingOf(this.card, out, 0), runtime: this.encoder.runtime, encodeMs: performance.now() - t0 };
  }

  close(): Promise<void> {
    return this.encoder.close();
  }
}

export class MedhashClient {
  private readonly base: string;
  private readonly assets: string;
  private readonly timeoutMs: number;
  private readonly encoders = new Map<string, Promise<BrowserEncoder>>();

  constructor(private readonly opts: ClientOptions) {
    this.base = (opts.baseUrl ?? globalThis.location?.origin ?? '').replace(/\/$/, '');
    this.assets = opts.assetBase ?? new URL('./', import.meta.url).href;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // AbortSignal.timeout takes whole milliseconds (0.5 would be 0), and its timer fires at once
    // past 2^31 - 1 (Node, browsers): either way every call would fail at once
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs <= 0 || this.timeoutMs > MAX_TIMEOUT_MS) {
      throw new Error(`timeoutMs must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS} (about 24.8 days), got ${opts.timeoutMs}`);
    }
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${this.opts.apiKey}`);
    const url = `${this.base}${path}`;
    // the browser's own error for a service that does not answer is a bare "Failed to fetch"
    const res = await fetch(url, { ...init, headers }).catch((e: unknown) => {
      throw new Error(`${url}: no answer from the service (${errorText(e)}); is it down, or unreachable from here?`);
    });
    if (res.ok) return res;
    // A body that is not JSON is a proxy's page; one cut off by the caller's abort is its timeout (requestJson).
    const body = (await res.json().catch((e: unknown) => (init.signal?.aborted ? Promise.reject(e) : null))) as { error?: { code: string; message: string; field?: string; details?: Record<string, unknown> }; ood?: OodAssessment } | null;
    const e = body?.error;
    // the service sends whole seconds; a proxy or gateway in front of it may send a date
    const retryAfterS = retryAfterSeconds(res.headers.get('retry-after'));
    throw new MedhashApiError(res.status, e?.code ?? 'http_error', e?.message ?? `${path}: HTTP ${res.status}`, e?.field, body?.ood, e?.details, retryAfterS);
  }

  /** A 2xx answer's JSON body, the whole of it within `timeoutMs`. */
  private async requestJson<T>(path: string, init: RequestInit = {}): Promise<T> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      return await jsonOf<T>(await this.request(path, { ...init, signal }), path, `is ${this.base || 'this origin'} the medhash service?`);
    } catch (e) {
      // the abort fails whatever was waiting, the fetch or the body's read, each in its own words
      if (signal.aborted && !(e instanceof MedhashApiError)) throw new MedhashTimeoutError(`${this.base}${path}`, this.timeoutMs);
      throw e;
    }
  }

  /** Every collection the key may use, by name (all pages). */
  collections(): Promise<CollectionSummary[]> {
    return allPages<CollectionSummary>('/v1/collections', 'collections', (q) => this.requestJson(q));
  }

  /** The model of `modelId`, downloaded, sha256-checked and started once per client. */
  encoder(modelId: string, onProgress?: Progress): Promise<BrowserEncoder> {
    let e = this.encoders.get(modelId);
    if (!e) {
      e = this.loadEncoder(modelId, onProgress);
      e.catch(() => this.encoders.delete(modelId));
      this.encoders.set(modelId, e);
    }
    return e;
  }

  /**
   * Releases every model this client loaded (one still loading, when its load ends); encodes still
   * running on them fail. A page that makes a new client per key calls it on the old one, or each
   * connect would keep another copy of the model in memory.
   */
  async close(): Promise<void> {
    const loads = [...this.encoders.values()];
    this.encoders.clear();
    await Promise.all(loads.map((e) => e.then((enc) => enc.close(), () => undefined)));
  }

  private async loadEncoder(modelId: string, onProgress?: Progress): Promise<BrowserEncoder> {
    let card: ModelCard;
    let fetchOnnx: () => Promise<Response>;
    if (this.opts.modelsUrl) {
      // A model_id is NAME@sha256-prefix; the files are named by NAME, the card checked below.
      const name = encodeURIComponent(modelId.split('@')[0]);
      const cardUrl = new URL(`${name}.card.json`, withSlash(new URL(this.opts.modelsUrl, globalThis.location?.href).href));
      card = parseCard(await jsonOf(await get(cardUrl.href), cardUrl.href, 'is modelsUrl a copy of models/?'));
      fetchOnnx = () => get(new URL(card.onnx, cardUrl).href);
    } else {
      const id = encodeURIComponent(modelId);
      card = parseCard(await this.requestJson(`/v1/models/${id}/card`));
      fetchOnnx = () => this.request(`/v1/models/${id}/onnx`);
    }
    // the card is checked before the model's download starts: a wrong one is refused without it
    if (card.model_id !== modelId) throw new Error(`${modelId}: got the card of ${card.model_id}`);
    // The id, which the collection records, pins the model's bytes (docs/MODEL_CARD.md): a card
    // edited to fit another .onnx would pass checkOnnx and make codes the collection's are not.
    const pinned = modelId.slice(modelId.lastIndexOf('@') + 1);
    if (!/^[0-9a-f]{12}$/.test(pinned) || !card.sha256.startsWith(pinned)) {
      throw new Error(`${modelId}: the card's sha256 ${card.sha256} is not that of the model this id names (it starts ${pinned}); a model_id is NAME@ the first 12 hex digits of the .onnx's sha256`);
    }
    const onnxRes = await fetchOnnx();
    const onnx = await readAll(onnxRes, (loaded, total) => onProgress?.(loaded, total, 'model'));
    await checkOnnx(card, onnx);
    await loadImageCodecs(this.assets);
    await loadRuntime(assetUrl(this.assets, ASSETS.ort), onProgress);
    return new BrowserEncoder(card, await loadWebEncoder(onnx, card, { softwareGpu: this.opts.softwareGpu }));
  }

  /** Search by code (hex or base64), with the descriptor when there is one. */
  async search(collection: string, code: string, descriptor: number[] | undefined, opts: SearchOptions = {}): Promise<SearchAnswer> {
    const body: Record<string, unknown> = { code, k: opts.k ?? 10 };
    if (opts.radius !== undefined) body.radius = opts.radius;
    if (descriptor) {
      body.descriptor = descriptor;
      if (opts.contentWeight !== undefined) body.content_weight = opts.contentWeight;
    }
    if (opts.allowOod) body.allow_ood = true;
    if (opts.filter) body.filter = opts.filter;
    if (opts.excludeStudyUid !== undefined) body.exclude_study_uid = opts.excludeStudyUid;
    if (opts.excludePatientRef !== undefined) body.exclude_patient_ref = opts.excludePatientRef;
    return this.requestJson<SearchAnswer>(`/v1/collections/${encodeURIComponent(collection)}/search`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  /**
   * Encodes `image` here with the collection's model and searches by its code; the descriptor
   * goes along when the collection stores descriptors of the model's size. The image stays here.
   */
  async searchImage(collection: CollectionSummary, image: Blob, opts: SearchOptions = {}, onProgress?: Progress): Promise<{ encoded: EncodedImage; answer: SearchAnswer }> {
    if (!collection.model_id) throw new Error(`collection ${collection.name} names no model, so its codes cannot be computed here`);
    const enc = await this.encoder(collection.model_id, onProgress);
    if (enc.card.bits !== collection.bits) throw new Error(`model ${enc.card.model_id} makes ${enc.card.bits}-bit codes; collection ${collection.name} holds ${collection.bits}-bit codes`);
    // refused unread: decodeImage would refuse it only after the whole file is in memory
    checkImageBytes(image.size);
    const bytes = new Uint8Array(await image.arrayBuffer());
    const query = { ...opts };
    if (opts.excludeOwnStudy) {
      if (opts.excludeStudyUid !== undefined) throw new Error('give excludeStudyUid or excludeOwnStudy, not both');
      // as the service's search by image does: the one header field read, for this exclusion alone
      const study = isDicom(bytes) ? (await dicomMetadata(bytes)).study_uid : undefined;
      if (study === undefined) throw new Error('excludeOwnStudy needs a DICOM image with a valid Study Instance UID (0020,000D)');
      query.excludeStudyUid = study;
    }
    const encoded = await enc.encode(bytes, image.type || undefined, { frame: opts.frame });
    const withDescriptor = collection.descriptor_dims > 0 && collection.descriptor_dims === encoded.descriptor.length;
    // A code alone hardly tells an X-ray from a photo (docs/OOD.md), and the image is here: the
    // gate is search by image's, on the model's own score, so the service's code-only gate is
    // passed over (allow_ood) and its results withheld here when the image is refused. The score
    // is combined with the code's k-NN distance by a max, so an image its model score alone
    // refuses is refused before any search is sent (and billed).
    if (!opts.allowOod) refuseIfOod(imageOod(enc.card, encoded, null));
    const answer = await this.search(collection.name, encoded.code, withDescriptor ? encoded.descriptor : undefined, { ...query, allowOod: true });
    const ood = imageOod(enc.card, encoded, answer.ood);
    if (!opts.allowOod) refuseIfOod(ood);
    return { encoded, answer: { ...answer, ood } };
  }
}

/**
 * What the service's search by image assesses for this image: the model's own OOD score, combined
 * with the code's k-NN distance where the card says that helps. A search by code reports that
 * distance as its score, or null where it could not use it (an index too small for the
 * calibration); `byCode` null: before any search, the model's score alone.
 */
function imageOod(card: ModelCard, encoded: EncodedImage, byCode: OodAssessment | null): OodAssessment {
  const knnDistance = byCode === null || byCode.verdict === 'not_assessed' ? null : byCode.score;
  return assess(calibrationOf(card), {
    knnDistance,
    // the service has already left the k-NN part out for an index too small for it
    indexCount: knnDistance === null ? 0 : Number.POSITIVE_INFINITY,
    model: { score: encoded.ood.score, threshold: encoded.ood.threshold },
  });
}

function refuseIfOod(ood: OodAssessment): void {
  if (ood.verdict !== 'out_of_distribution') return;
  const r = new OodRefusal(ood);
  throw new MedhashApiError(r.status, r.code, r.message, r.field, ood);
}

/** The URL of asset `name` (one of ASSETS) in the folder `base`. */
function assetUrl(base: string, name: string): string {
  return new URL(name, withSlash(base)).href;
}

/** A folder URL as a base for relative names. */
function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}

/**
 * A 2xx answer's JSON. Anything else, such as a web server's or a proxy's HTML page at that
 * address, fails naming the URL and what came, not as the parser's "Unexpected token '<'".
 */
async function jsonOf<T>(res: Response, what: string, hint: string): Promise<T> {
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${what}: the answer is not the service's JSON (HTTP ${res.status}, ${res.headers.get('content-type') ?? 'no content type'}); ${hint}`);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A static file (asset, model), without the API key: it goes to the service only. */
async function get(url: string): Promise<Response> {
  const res = await fetch(url).catch((e: unknown) => {
    throw new Error(`${url}: could not be downloaded (${errorText(e)}); is the server down, or unreachable from here?`);
  });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res;
}

async function compile(url: string): Promise<WebAssembly.Module> {
  return WebAssembly.compile(await fetchWasm(url));
}

const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

/**
 * A .wasm file's bytes, checked whole before anything starts them: a 200 that is not the module (a
 * proxy's error page, a cut-off download) fails here with the file's URL, and the next load fetches
 * again. Handed to onnxruntime-web unchecked, such bytes would fail its backend's start, which it
 * remembers: every later model load on the page would fail until a reload.
 */
async function fetchWasm(url: string, onProgress: (loaded: number, total: number | null) => void = () => {}): Promise<Uint8Array<ArrayBuffer>> {
  const res = await get(url);
  const bytes = await readAll(res, onProgress);
  if (WebAssembly.validate(bytes)) return bytes;
  const announced = res.headers.get('content-length');
  const why = !WASM_MAGIC.every((b, i) => bytes[i] === b)
    ? `is not WebAssembly (${bytes.length} bytes starting ${startHex(bytes)}; ${res.headers.get('content-type') ?? 'no content type'})`
    : announced !== null && bytes.length < Number(announced)
      ? `is incomplete: ${bytes.length} of the ${announced} bytes announced`
      : `is not a valid WebAssembly module (${bytes.length} bytes: cut off or damaged)`;
  throw new Error(`${url} ${why}; loading again fetches it again`);
}

/**
 * Downloads onnxruntime-web's .wasm (28 MB) once per page and hands it over as
 * `ort.env.wasm.wasmBinary`: fetched by ort itself it would report no progress. Only the .wasm: the
 * default bundle already holds onnxruntime's JavaScript glue. A model load that starts while the
 * download runs hears the rest of its progress; a failed download, or bytes that are not the module,
 * are forgotten, as the codecs' are.
 */
function loadRuntime(url: string, onProgress?: Progress): Promise<void> {
  if (!runtime) {
    const listeners = new Set<Progress>();
    const ready = fetchWasm(url, (loaded, total) => listeners.forEach((l) => l(loaded, total, 'runtime')))
      .then((wasm) => {
        ort.env.wasm.wasmBinary = wasm;
      })
      .catch((e: unknown) => {
        runtime = null;
        throw e;
      });
    runtime = { ready, listeners };
  }
  const { ready, listeners } = runtime;
  if (!onProgress) return ready;
  listeners.add(onProgress);
  return ready.finally(() => listeners.delete(onProgress));
}

/**
 * A response's body, its progress told chunk by chunk. A download that breaks off (the connection
 * closed short of its Content-Length) fails naming the file and how far it got: the browser's own
 * error is a bare "network error".
 */
async function readAll(res: Response, onProgress: (loaded: number, total: number | null) => void): Promise<Uint8Array<ArrayBuffer>> {
  const header = res.headers.get('content-length');
  const total = header === null ? null : Number(header);
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read().catch((e: unknown) => {
      const got = total === null ? `broke off after ${loaded} bytes` : `${loaded} of the ${total} bytes announced`;
      throw new Error(`${res.url} is incomplete: ${got} (${errorText(e)}); loading again fetches it again`);
    });
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress(loaded, total);
  }
  return concatBytes(chunks);
}
