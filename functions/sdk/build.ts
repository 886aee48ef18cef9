// Builds the browser SDK with esbuild (Node only): the SDK module itself (medhash-sdk.js) and the
// search page's script (ui.js), plus where the WebAssembly files they fetch lie in node_modules.
// The Node app builds in memory on first request (functions/sdk/serve-node.ts); `npm run
// build:sdk` (scripts/build-sdk.ts) writes the same files to a folder for self-hosting.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ASSETS } from './index.ts';

const require = createRequire(import.meta.url);

export const ENTRIES = {
  'medhash-sdk.js': join(import.meta.dirname, 'index.ts'),
  'ui.js': join(import.meta.dirname, 'ui', 'page.ts'),
} as const;

/** Each ASSETS file and its path on this machine. */
export function assetFiles(): Record<string, string> {
  return {
    // beside the package's main file: its `exports` do not list the .wasm files
    [ASSETS.ort]: join(dirname(require.resolve('onnxruntime-web')), ASSETS.ort),
    [ASSETS.png]: require.resolve(`@jsquash/png/codec/pkg/${ASSETS.png}`),
    [ASSETS.jpeg]: require.resolve(`@jsquash/jpeg/codec/dec/${ASSETS.jpeg}`),
  };
}

/** One entry bundled for browsers (also how Deno runs onnxruntime-web's WebGPU build). */
export async function bundle(entry: string): Promise<Uint8Array> {
  // esbuild is a build-time tool, so it is imported only here
  const esbuild = await import('esbuild');
  const r = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent',
    outfile: 'out.js',
    // card.ts imports node:fs lazily for loadCard, which a browser never calls
    external: ['node:*'],
  });
  const js = r.outputFiles.find((f) => f.path.endsWith('.js'));
  if (!js) throw new Error(`esbuild produced no bundle of ${entry}`);
  return js.contents;
}

/** The two bundles by file name. */
export async function buildBundles(): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [name, entry] of Object.entries(ENTRIES)) out.set(name, await bundle(entry));
  return out;
}
