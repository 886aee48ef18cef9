// Builds the browser SDK (functions/sdk/client.ts) into one ES module, dist/sdk/medhash-sdk.mjs,
// with the assets it loads at run time beside it: onnxruntime-web's wasm (the WebGPU-capable
// build its bundle loads) and the PNG/JPEG decoders. Serve the folder and pass its URL as `assetsUrl`.
//   npm run build:sdk [-- --outdir DIR]
import { copyFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { build } from 'esbuild';

const require = createRequire(import.meta.url);
const ROOT = join(import.meta.dirname, '..');

export async function buildSdk(outdir = join(ROOT, 'dist', 'sdk')): Promise<string> {
  mkdirSync(outdir, { recursive: true });
  await build({
    entryPoints: [join(ROOT, 'functions', 'sdk', 'client.ts')],
    outfile: join(outdir, 'medhash-sdk.mjs'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    // Reached only by loadCard and loadNodeEncoder, which the SDK never calls.
    external: ['node:*', 'onnxruntime-node'],
    logLevel: 'warning',
  });
  const ortDist = join(ROOT, 'node_modules', 'onnxruntime-web', 'dist');
  copyFileSync(join(ortDist, 'ort-wasm-simd-threaded.jsep.wasm'), join(outdir, 'ort-wasm-simd-threaded.jsep.wasm'));
  copyFileSync(require.resolve('@jsquash/png/codec/pkg/squoosh_png_bg.wasm'), join(outdir, 'squoosh_png_bg.wasm'));
  copyFileSync(require.resolve('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm'), join(outdir, 'mozjpeg_dec.wasm'));
  return outdir;
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const i = process.argv.indexOf('--outdir');
  console.error(`SDK built in ${await buildSdk(i > 0 ? process.argv[i + 1] : undefined)}`);
}
