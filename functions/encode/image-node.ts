// Node entry for the image codecs: compiles the WASM decoders (PNG, JPEG, CharLS, OpenJPEG) from
// node_modules (their own default loaders fetch or read the .wasm by URL, which does not suit) and
// hands them to image.ts, CharLS and OpenJPEG by way of the codec thread (codec-thread.ts), which
// decodes DICOM's JPEG-LS and JPEG 2000 frames off the event loop, under a deadline.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { CodecThread } from './codec-thread.ts';
import { initImageCodecs } from './image.ts';

const require = createRequire(import.meta.url);

export async function initNodeImageCodecs(): Promise<void> {
  const compile = async (name: string) => WebAssembly.compile(await readFile(require.resolve(name)));
  const [png, jpeg, charls, openjpeg] = await Promise.all([
    compile('@jsquash/png/codec/pkg/squoosh_png_bg.wasm'),
    compile('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm'),
    compile('@cornerstonejs/codec-charls/decodewasm'),
    compile('@cornerstonejs/codec-openjpeg/decodewasm'),
  ]);
  await initImageCodecs({ png, jpeg, frames: new CodecThread({ charls, openjpeg }) });
}
