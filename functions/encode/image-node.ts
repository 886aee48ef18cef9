// Node entry for the image codecs: compiles the two WASM decoders from node_modules (their own
// default init fetches the .wasm by URL, which Node cannot) and hands them to image.ts.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { initImageCodecs } from './image.ts';

const require = createRequire(import.meta.url);

export async function initNodeImageCodecs(): Promise<void> {
  const [png, jpeg] = await Promise.all([
    readFile(require.resolve('@jsquash/png/codec/pkg/squoosh_png_bg.wasm')),
    readFile(require.resolve('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm')),
  ]);
  await initImageCodecs({ png: await WebAssembly.compile(png), jpeg: await WebAssembly.compile(jpeg) });
}
