// Experiment (docs/RUNTIMES.md): can onnxruntime-web run inside workerd? GET /?mode=M encodes
// one constant 64x64 image with the model bundled as data and answers the first 4 values of u.
//   plain:   ort-web as published                          -> fails (no script URL)
//   binary:  env.wasm.wasmBinary = the .wasm bytes          -> fails (no run-time compilation)
//   patched: Emscripten's instantiateWasm hook, given the
//            module wrangler compiled at build time         -> runs
import wasm from './ort-wasm-simd-threaded.wasm';
import wasmBytes from './ort-wasm-bytes.bin';
import model from './model.bin';
import * as ortPatched from './ort.patched.mjs';
import * as ortPlain from './ort.plain.mjs';

let session = null;

export default {
  async fetch(req) {
    const mode = new URL(req.url).searchParams.get('mode') ?? 'plain';
    const ort = mode === 'patched' ? ortPatched : ortPlain;
    ort.env.wasm.numThreads = 1;
    if (mode === 'binary') ort.env.wasm.wasmBinary = wasmBytes;
    if (mode === 'patched') {
      // ort only takes its embedded loader when told the wasm is overridden; the hook then
      // instantiates the build-time module, so this path is never fetched.
      ort.env.wasm.wasmPaths = { wasm: 'file:///unused.wasm' };
      globalThis.__medhashInstantiateWasm = (imports, done) => {
        WebAssembly.instantiate(wasm, imports).then((instance) => done(instance, wasm));
        return {};
      };
    }
    try {
      session ??= await ort.InferenceSession.create(new Uint8Array(model), { executionProviders: ['wasm'] });
      const x = new ort.Tensor('float32', new Float32Array(64 * 64).fill(0.5), [1, 1, 64, 64]);
      const out = await session.run({ image: x });
      return Response.json({ mode, ok: true, u: Array.from(out.u.data.slice(0, 4)) });
    } catch (e) {
      return Response.json({ mode, ok: false, error: String(e && e.stack ? e.stack : e).split('\n')[0] });
    }
  },
};
