// Builds the browser SDK with esbuild (Node only): the SDK module itself (medhash-sdk.js) and the
// search page's script (ui.js), plus where the WebAssembly files they fetch and the page's own files
// lie. The Node app builds in memory on first request (functions/sdk/serve-node.ts); `npm run
// build:sdk` (scripts/build-sdk.ts) writes the same files to a folder (writeSdk) for self-hosting.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ASSETS } from './index.ts';

const require = createRequire(import.meta.url);

export const ENTRIES = {
  'medhash-sdk.js': join(import.meta.dirname, 'index.ts'),
  'ui.js': join(import.meta.dirname, 'ui', 'page.ts'),
} as const;

/** The search page (served at /ui) and its stylesheet (/sdk/ui.css, linked from the page). */
export const PAGE = join(import.meta.dirname, 'ui', 'index.html');
export const STYLESHEET = { name: 'ui.css', path: join(import.meta.dirname, 'ui', 'ui.css') } as const;

/** Each ASSETS file and its path on this machine. */
export function assetFiles(): Record<string, string> {
  return {
    // beside the package's main file: its `exports` do not list the .wasm files
    [ASSETS.ort]: join(dirname(require.resolve('onnxruntime-web')), ASSETS.ort),
    [ASSETS.png]: require.resolve(`@jsquash/png/codec/pkg/${ASSETS.png}`),
    [ASSETS.jpeg]: require.resolve(`@jsquash/jpeg/codec/dec/${ASSETS.jpeg}`),
    [ASSETS.charls]: require.resolve('@cornerstonejs/codec-charls/decodewasm'),
    [ASSETS.openjpeg]: require.resolve('@cornerstonejs/codec-openjpeg/decodewasm'),
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
    // card.ts imports node:fs lazily for loadCard, which a browser never calls; the DICOM codecs'
    // Emscripten glue requires fs and path only when it runs on Node
    external: ['node:*', 'fs', 'path'],
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

/**
 * Writes into `dir` what the Node app serves under /sdk/ (the bundles, the page's stylesheet, the
 * .wasm files) and the page it serves at /ui, as index.html; returns the file names written.
 */
export async function writeSdk(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (const [name, js] of await buildBundles()) {
    await writeFile(join(dir, name), js);
    names.push(name);
  }
  for (const [name, path] of [...Object.entries(assetFiles()), [STYLESHEET.name, STYLESHEET.path], ['index.html', PAGE]]) {
    await copyFile(path, join(dir, name));
    names.push(name);
  }
  return names;
}
