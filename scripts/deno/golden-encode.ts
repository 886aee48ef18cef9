// Run by Deno (test/sdk/deno.test.ts and `npm run bench:sdk` bundle it for browsers first, so that onnxruntime-web's
// WebGPU build is the one loaded): the golden inputs of one model through loadWebEncoder, one
// JSON line out with the runtime, each item's sign bits and max |delta u| against PyTorch, and
// the encode time per image. Args: card.json, .onnx, golden .json, ort .wasm path, webgpu|wasm,
// and how many timed passes over the golden images (default 1).
import * as ort from 'onnxruntime-web';
import { checkOnnx, parseCard } from '../../functions/encode/card.ts';
import { loadWebEncoder, packCode, row } from '../../functions/encode/model.ts';

declare const Deno: { args: string[]; readFile(path: string): Promise<Uint8Array>; readTextFile(path: string): Promise<string> };

interface GoldenItem { id: string; input: string; u: number[]; bits_hex: string }

const [cardPath, onnxPath, goldenPath, ortWasm, path, passes = '1'] = Deno.args;
if (path === 'wasm') {
  // loadWebEncoder takes WebGPU whenever the runtime offers it: hide it to measure the wasm path
  Object.defineProperty(globalThis.navigator, 'gpu', { value: undefined });
}
const card = parseCard(JSON.parse(await Deno.readTextFile(cardPath)));
const onnx = await Deno.readFile(onnxPath);
await checkOnnx(card, onnx);
// handed over as bytes: Emscripten's loader cannot fetch a file: URL under Deno
ort.env.wasm.wasmBinary = await Deno.readFile(ortWasm);
// Deno's adapter here may be a CPU's: WebGPU is measured on it, as asked
const encoder = await loadWebEncoder(onnx, card, { softwareGpu: path === 'webgpu' });
const golden = JSON.parse(await Deno.readTextFile(goldenPath)) as { items: GoldenItem[] };

const b64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const inputs = golden.items.map((it) => new Float32Array(b64(it.input).buffer));
const per = inputs[0].length;
const batch = new Float32Array(per * inputs.length);
inputs.forEach((x, i) => batch.set(x, i * per));

const out = await encoder.run(batch, inputs.length);
const items = golden.items.map((it, i) => {
  const u = row(out.u, card.bits, i);
  let du = 0;
  for (let j = 0; j < card.bits; j++) du = Math.max(du, Math.abs(u[j] - it.u[j]));
  return { id: it.id, bits_match: hex(packCode(u)) === it.bits_hex, max_abs_du: du };
});

// one image at a time, after the batch above warmed the session up
const t0 = performance.now();
for (let p = 0; p < Number(passes); p++) for (const x of inputs) await encoder.run(x, 1);
const encodeMs = (performance.now() - t0) / (inputs.length * Number(passes));
await encoder.close();
console.log(JSON.stringify({ model: card.name, runtime: encoder.runtime, n: items.length, timed: inputs.length * Number(passes), encode_ms_per_image: encodeMs, items }));
