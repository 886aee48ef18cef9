// decodeImage (PNG, JPEG and DICOM) inside real workerd: the codecs' WASM is imported at build time and injected, as
// a Worker that decodes must (workerd refuses to compile WebAssembly from bytes at run time; the Worker entry itself
// forwards image bytes to the inference backend and decodes nothing).
import * as pngWasm from '@jsquash/png/codec/pkg/squoosh_png_bg.wasm';
import jpegModule from '@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm';
import { beforeAll, expect, it } from 'vitest';
import { decodeImage, initImageCodecs } from '../../functions/encode/image.ts';
import { MedhashError } from '../../functions/util/errors.ts';

// the package's own .d.ts types this file as wasm-bindgen exports; wrangler's CompiledWasm rule
// makes its default export the compiled module
const pngModule = (pngWasm as unknown as { default: WebAssembly.Module }).default;

// a 2x1 RGB PNG (red, blue), made with zlib
const PNG = Uint8Array.from(
  atob('iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAADUlEQVR4nGP4zwAE/wEHAAH/4iOeWQAAAABJRU5ErkJggg=='),
  (c) => c.charCodeAt(0),
);

// an 8x8 grey JPEG of value 77, made with PIL
const JPEG = Uint8Array.from(
  atob(
    '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAIBAQEBAQIBAQECAgICAgQDAgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYGCAsICQoKCgoKBggLDAsKDAkKCgr/wAALCAAIAAgBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APjOv//Z',
  ),
  (c) => c.charCodeAt(0),
);

beforeAll(() => initImageCodecs({ png: pngModule, jpeg: jpegModule }));

it('decodes a PNG with build-time imported codecs', async () => {
  const img = await decodeImage(PNG, 'image/png');
  expect(img).toMatchObject({ width: 2, height: 1, channels: 3, bitDepth: 8 });
  expect([...img.data]).toEqual([255, 0, 0, 0, 0, 255]);
});

it('decodes a grey JPEG with build-time imported codecs', async () => {
  const img = await decodeImage(JPEG, 'image/jpeg');
  expect(img).toMatchObject({ width: 8, height: 8, channels: 1, bitDepth: 8 });
  expect(new Set(img.data)).toEqual(new Set([77]));
});

it('refuses a truncated PNG with 422', async () => {
  const e = await decodeImage(PNG.subarray(0, 40), 'image/png').catch((x: unknown) => x);
  expect(e).toBeInstanceOf(MedhashError);
  expect((e as MedhashError).status).toBe(422);
});

// a 2x2 signed 16-bit DICOM (stored 0, 1064, 2000, -5; rescale -1024; window 40/400), made with
// DCMTK's dump2dcm as scripts/fixtures/make-dicom.ts makes the larger ones
const DICOM = Uint8Array.from(
  atob('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABESUNNAgAAAFVMBACwAAAAAgABAE9CAAACAAAAAAECAAIAVUkaADEuMi44NDAuMTAwMDguNS4xLjQuMS4xLjcAAgADAFVJIAAxLjIuODI2LjAuMS4zNjgwMDQzLjEwLjE0MTAuMS4yAAIAEABVSRQAMS4yLjg0MC4xMDAwOC4xLjIuMQACABIAVUkcADEuMi4yNzYuMC43MjMwMDEwLjMuMC4zLjYuNwACABMAU0gQAE9GRklTX0RDTVRLXzM2NyAIABYAVUkaADEuMi44NDAuMTAwMDguNS4xLjQuMS4xLjcACAAYAFVJIAAxLjIuODI2LjAuMS4zNjgwMDQzLjEwLjE0MTAuMS4yACgAAgBVUwIAAQAoAAQAQ1MMAE1PTk9DSFJPTUUyICgAEABVUwIAAgAoABEAVVMCAAIAKAAAAVVTAgAQACgAAQFVUwIAEAAoAAIBVVMCAA8AKAADAVVTAgABACgAUBBEUwIANDAoAFEQRFMEADQwMCAoAFIQRFMGAC0xMDI0ICgAUxBEUwIAMSDgfxAAT1cAAAgAAAAAACgE0Af7/w=='),
  (c) => c.charCodeAt(0),
);

it('decodes an uncompressed DICOM through its rescale and window (no codec involved)', async () => {
  const img = await decodeImage(DICOM, 'application/dicom');
  expect(img).toMatchObject({ width: 2, height: 2, channels: 1, bitDepth: 8 });
  expect([...img.data]).toEqual([0, 128, 255, 0]);
});
