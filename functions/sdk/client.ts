// The browser SDK: client-side encoding for partners whose images must not leave the device.
// The model runs in the page with onnxruntime-web (WebGPU where the browser has it, else wasm),
// with the very decode and preprocessing code of the service (functions/encode), and only the
// code goes to the API (search by code). Built into one ES module by scripts/build-sdk.ts.
import * as ort from 'onnxruntime-web';
import { encodingOf } from '../backend/encoding.ts';
import type { ImageEncoding } from '../backend/protocol.ts';
import { checkOnnx, parseCard, type ModelCard } from '../encode/card.ts';
import { decodeImage, initImageCodecs } from '../encode/image.ts';
import { loadWebEncoder } from '../encode/model.ts';
import { preprocess } from '../encode/preprocess.ts';

export interface SdkOptions {
  /** The medhash API, e.g. https://medhash.example.org */
  baseUrl: string;
  apiKey: string;
  /** URL of NAME.card.json; the .onnx it names is fetched from beside it and checked by sha256. */
  cardUrl: string;
  /** Folder URL holding onnxruntime-web's .wasm and the two image codecs, as `npm run build:sdk` lays them out. */
  assetsUrl: string;
}

export interface SdkSearchResult {
  encoding: ImageEncoding;
  generation: number;
  truncated: boolean;
  results: Array<{ id: string; distance: number; metadata: Record<string, string> }>;
}

async function fetchOk(url: string, init?: RequestInit): Promise<Response> {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

export async function createMedhashClient(o: SdkOptions) {
  const assets = o.assetsUrl.endsWith('/') ? o.assetsUrl : `${o.assetsUrl}/`;
  // The bundle embeds ort's WebGPU-capable (jsep) loader; only its .wasm is fetched, from here.
  ort.env.wasm.wasmPaths = { wasm: `${assets}ort-wasm-simd-threaded.jsep.wasm` };
  const card: ModelCard = parseCard(await (await fetchOk(o.cardUrl)).json());
  const onnx = new Uint8Array(await (await fetchOk(new URL(card.onnx, new URL(o.cardUrl, location.href)).href)).arrayBuffer());
  await checkOnnx(card, onnx);
  const [png, jpeg] = await Promise.all(
    ['squoosh_png_bg.wasm', 'mozjpeg_dec.wasm'].map((f) => WebAssembly.compileStreaming(fetchOk(assets + f))),
  );
  await initImageCodecs({ png, jpeg });
  const encoder = await loadWebEncoder(onnx, card);
  const api = (path: string, body: unknown) =>
    fetchOk(o.baseUrl + path, { method: 'POST', headers: { authorization: `Bearer ${o.apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  const encode = async (bytes: Uint8Array, contentType: string): Promise<ImageEncoding> => {
    const x = preprocess(await decodeImage(bytes, contentType), card.input);
    return encodingOf(card, await encoder.run(x, 1), 0);
  };

  return {
    card,
    /** "onnxruntime-web/webgpu" or "onnxruntime-web/wasm". */
    runtime: encoder.runtime,
    encode,
    /** Encodes here, then searches by code: the image itself is never sent. */
    async searchByImage(collection: string, bytes: Uint8Array, contentType: string, k = 10): Promise<SdkSearchResult> {
      const col = encodeURIComponent(collection);
      const info = (await (await fetchOk(`${o.baseUrl}/v1/collections/${col}`, { headers: { authorization: `Bearer ${o.apiKey}` } })).json()) as { model_id: string | null };
      // Codes of two models are not comparable: refuse, as the server's search by image does.
      if (info.model_id !== card.model_id) throw new Error(`collection ${collection} holds codes of model ${info.model_id ?? '(none)'}, this client encodes with ${card.model_id}`);
      const encoding = await encode(bytes, contentType);
      const r = await api(`/v1/collections/${col}/search`, { code: encoding.code, k });
      return { encoding, ...((await r.json()) as Omit<SdkSearchResult, 'encoding'>) };
    },
  };
}
