// Image bytes -> pixels for the encoder: PNG (@jsquash/png) and JPEG (@jsquash/jpeg), both
// WebAssembly, and DICOM (dicom.ts; a JPEG Baseline one's frame through the JPEG path here, JPEG-LS and
// JPEG 2000 frames through dicom-codecs.ts's CharLS and OpenJPEG). The limits are checked on the header and the chunk/segment structure BEFORE any
// decoding, so a huge declared size, a decompression bomb or a truncated file is refused without
// allocating the pixels. The codecs' WASM modules are injected (`initImageCodecs`): Node compiles
// them from node_modules (image-node.ts) and hands over JPEG-LS and JPEG 2000 frame decoders
// that run in a worker thread under a deadline (codec-thread.ts), workerd imports them at build
// time, and the browser SDK hands over CharLS and OpenJPEG as loaders, which download them on
// their first frame.
import { init as initPng, decode as decodePng } from '@jsquash/png/decode.js';
import decodeJpeg, { init as initJpeg } from '@jsquash/jpeg/decode.js';
import { leadingHex } from '../util/bytes.ts';
import { MedhashError } from '../util/errors.ts';
import { mediaType } from '../util/media-type.ts';
import { dicomGeometry, frameOutOfRange, inflatedCap, isDicom } from './dicom.ts';
import { DicomCodecs, type DicomCodecModules, type FrameDecoders } from './dicom-codecs.ts';

export interface DecodedImage {
  width: number;
  height: number;
  /** 1: grey; 3: RGB; 4: RGBA (PNG palette or with alpha; alpha is ignored downstream). */
  channels: 1 | 3 | 4;
  /** Interleaved samples; for bitDepth 16, two bytes per sample, big-endian as in PNG. */
  data: Uint8Array;
  bitDepth: 8 | 16;
}

export interface ImageLimits {
  maxBytes: number;
  /** Largest width or height. */
  maxSide: number;
  maxPixels: number;
}

export const DEFAULT_LIMITS: ImageLimits = { maxBytes: 8 * 1024 * 1024, maxSide: 4096, maxPixels: 16 * 1024 * 1024 };

/**
 * The compiled WebAssembly of PNG and JPEG, and for DICOM's JPEG-LS and JPEG 2000 either that of
 * CharLS and OpenJPEG, each a module or a loader of one (`WasmSource`), decoded in this thread, or
 * the frame decoders themselves (`frames`: Node's codec thread).
 */
export type ImageCodecs = { png: WebAssembly.Module; jpeg: WebAssembly.Module } & (DicomCodecModules | { frames: FrameDecoders });

let ready: Promise<void> | null = null;
let frameDecoders: FrameDecoders | null = null;

/** Instantiates the PNG and JPEG codecs once per isolate (the DICOM ones on their first frame); later calls reuse the first. */
export function initImageCodecs(codecs: ImageCodecs): Promise<void> {
  frameDecoders ??= 'frames' in codecs ? codecs.frames : new DicomCodecs(codecs);
  ready ??= Promise.all([initPng(codecs.png), initJpeg(codecs.jpeg)]).then(() => undefined);
  return ready;
}

type Format = 'png' | 'jpeg' | 'dicom';

const NAMES: Record<Format, string> = { png: 'PNG', jpeg: 'JPEG', dicom: 'DICOM' };

/** The media types an image may be sent as (what a route's Content-Type must be). */
export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'application/dicom'] as const;
export type ImageType = (typeof IMAGE_TYPES)[number];

const err = (status: 400 | 413 | 415 | 422, code: string, message: string) => new MedhashError(status, code, message, 'image');

const CONTENT_TYPES: Record<string, Format | null> = {
  'image/png': 'png',
  'image/jpeg': 'jpeg',
  'image/jpg': 'jpeg',
  'image/pjpeg': 'jpeg',
  'application/dicom': 'dicom',
  // no claim: sniff the bytes
  'application/octet-stream': null,
};

function sniff(b: Uint8Array): Format | null {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (isDicom(b)) return 'dicom';
  return null;
}

/** A file's first bytes in hex, for a message that says what a file is not. */
export function startHex(b: Uint8Array): string {
  return leadingHex(b, 8);
}

/** Checks the declared size against the limits; the only allocation after this is the decode. */
function checkSize(width: number, height: number, limits: ImageLimits): void {
  if (width === 0 || height === 0) throw err(422, 'corrupt_image', `image declares an empty size ${width}x${height}`);
  if (width > limits.maxSide || height > limits.maxSide) {
    throw err(413, 'image_too_large', `image is ${width}x${height}; width and height may be at most ${limits.maxSide}`);
  }
  if (width * height > limits.maxPixels) {
    throw err(413, 'image_too_large', `image is ${width}x${height} = ${width * height} pixels; at most ${limits.maxPixels}`);
  }
}

interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
}

const be32 = (b: Uint8Array, i: number) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;

/**
 * Walks the PNG chunk list: IHDR first, every chunk complete, at least one IDAT, ending in IEND.
 * A truncated file fails here instead of inside the decoder.
 */
function pngHeader(b: Uint8Array): PngHeader {
  if (b.length < 33 || be32(b, 8) !== 13 || String.fromCharCode(...b.subarray(12, 16)) !== 'IHDR') {
    throw err(422, 'corrupt_image', 'PNG has no complete IHDR header');
  }
  const h = { width: be32(b, 16), height: be32(b, 20), bitDepth: b[24], colorType: b[25] };
  const validDepths: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };
  if (!validDepths[h.colorType]?.includes(h.bitDepth)) {
    throw err(422, 'corrupt_image', `PNG declares colour type ${h.colorType} with bit depth ${h.bitDepth}, which PNG does not define`);
  }
  let pos = 8;
  let idat = 0;
  let palette = false;
  for (;;) {
    if (pos + 12 > b.length) throw err(422, 'corrupt_image', `PNG is truncated: chunk at byte ${pos} is incomplete (no IEND)`);
    const len = be32(b, pos);
    const type = String.fromCharCode(...b.subarray(pos + 4, pos + 8));
    if (len > 0x7fffffff || pos + 12 + len > b.length) throw err(422, 'corrupt_image', `PNG is truncated: chunk ${JSON.stringify(type)} at byte ${pos} runs past the end`);
    if (type === 'PLTE' && idat === 0) palette = true;
    if (type === 'IDAT') idat += len;
    pos += 12 + len;
    if (type === 'IEND') break;
  }
  if (idat === 0) throw err(422, 'corrupt_image', 'PNG has no image data (IDAT)');
  // the decoder fails on it saying nothing; PIL would make up a grey palette
  if (h.colorType === 3 && !palette) throw err(422, 'corrupt_image', 'palette PNG has no palette (PLTE) before its image data');
  return h;
}

interface JpegHeader {
  width: number;
  height: number;
  components: number;
}

const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/** The coding processes of the frame headers mozjpeg cannot decode (SOF0-2 are the ones it can). */
const UNDECODABLE_SOF: Record<number, string> = {
  0xc3: 'lossless',
  0xc5: 'hierarchical',
  0xc6: 'hierarchical',
  0xc7: 'hierarchical',
  0xc9: 'arithmetic-coded',
  0xca: 'arithmetic-coded',
  0xcb: 'arithmetic-coded',
  0xcd: 'arithmetic-coded',
  0xce: 'arithmetic-coded',
  0xcf: 'arithmetic-coded',
};

/**
 * Walks the JPEG marker segments and entropy-coded data up to EOI. mozjpeg decodes a truncated
 * JPEG "successfully" with grey filler, so the walk is what refuses truncation.
 */
function jpegHeader(b: Uint8Array): JpegHeader {
  let pos = 2;
  let header: JpegHeader | null = null;
  let scans = 0;
  const truncated = () => err(422, 'corrupt_image', `JPEG is truncated at byte ${b.length} (no end-of-image marker)`);
  while (pos < b.length) {
    if (b[pos] !== 0xff) throw err(422, 'corrupt_image', `JPEG is corrupt: expected a marker at byte ${pos}`);
    while (pos < b.length && b[pos] === 0xff) pos++; // fill bytes
    if (pos >= b.length) throw truncated();
    const m = b[pos++];
    if (m === 0xd9) {
      if (!header || scans === 0) throw err(422, 'corrupt_image', 'JPEG ends before any image data');
      return header;
    }
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; // standalone markers
    if (pos + 2 > b.length) throw truncated();
    const len = (b[pos] << 8) | b[pos + 1];
    if (len < 2) throw err(422, 'corrupt_image', `JPEG is corrupt: segment length ${len} at byte ${pos}`);
    if (pos + len > b.length) throw truncated();
    if (isSof(m)) {
      if (len < 8) throw err(422, 'corrupt_image', 'JPEG frame header is too short');
      const precision = b[pos + 2];
      if (precision !== 8) throw err(415, 'unsupported_image_type', `JPEG with ${precision}-bit samples is not supported (8-bit only)`);
      // mozjpeg is built without them and fails with no message; PIL would decode arithmetic coding, so both refuse it here
      if (m in UNDECODABLE_SOF) {
        throw err(415, 'unsupported_image_type', `${UNDECODABLE_SOF[m]} JPEG (SOF${m - 0xc0}) is not supported (Huffman-coded baseline, extended or progressive only)`);
      }
      header = { height: (b[pos + 3] << 8) | b[pos + 4], width: (b[pos + 5] << 8) | b[pos + 6], components: b[pos + 7] };
      if (header.components !== 1 && header.components !== 3) {
        throw err(415, 'unsupported_image_type', `JPEG with ${header.components} colour components is not supported (grey or YCbCr only)`);
      }
    }
    pos += len;
    if (m === 0xda) {
      if (!header) throw err(422, 'corrupt_image', 'JPEG has image data before its frame header');
      scans++;
      // entropy-coded data runs to the next marker that is neither a stuffed 0xff00 nor a restart
      for (;;) {
        if (pos + 1 >= b.length) throw truncated();
        if (b[pos] === 0xff && b[pos + 1] !== 0x00 && !(b[pos + 1] >= 0xd0 && b[pos + 1] <= 0xd7) && b[pos + 1] !== 0xff) break;
        pos++;
      }
    }
  }
  throw truncated();
}

function formatOf(bytes: Uint8Array, contentType: string | undefined): Format {
  const sniffed = sniff(bytes);
  const type = mediaType(contentType);
  if (type !== '') {
    if (!(type in CONTENT_TYPES)) throw err(415, 'unsupported_image_type', `content type ${JSON.stringify(type)} is not supported: send ${IMAGE_TYPES.join(', ')}`);
    const claimed = CONTENT_TYPES[type];
    if (claimed && sniffed && claimed !== sniffed) {
      throw err(415, 'unsupported_image_type', `content type ${type} does not match the bytes, which are ${NAMES[sniffed]}`);
    }
    if (claimed === 'dicom' && !sniffed) throw err(415, 'unsupported_image_type', 'not a DICOM Part 10 file: no "DICM" after its 128-byte preamble');
  }
  if (!sniffed) throw err(415, 'unsupported_image_type', `not a PNG, JPEG or DICOM image (starts with ${startHex(bytes)})`);
  return sniffed;
}

/** Decoder failures on bytes that passed the structural walk: corrupt compressed data. */
async function guarded<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    // Some codecs give no reason: mozjpeg throws a bare object (its message goes to stderr), the
    // PNG decoder wasm-bindgen's "`unwrap_throw` failed". Those would only confuse the caller.
    const said = e instanceof Error && !e.message.includes('unwrap_throw') ? e.message : '';
    throw err(422, 'corrupt_image', `${what} could not be decoded: ${said || 'its compressed data is corrupt (the decoder gives no detail)'}`);
  }
}

/** Takes channels 0..keep-1 of each RGBA pixel. */
function fromRgba(rgba: ArrayLike<number>, pixels: number, keep: 1 | 3 | 4): Uint8Array {
  if (keep === 4) return rgba instanceof Uint8Array ? rgba : Uint8Array.from(rgba);
  const out = new Uint8Array(pixels * keep);
  for (let p = 0, o = 0; p < pixels; p++) for (let c = 0; c < keep; c++) out[o++] = rgba[p * 4 + c];
  return out;
}

/** 16-bit RGBA samples -> big-endian byte pairs of channels 0..keep-1. */
function fromRgba16(rgba: Uint16Array, pixels: number, keep: 1 | 4): Uint8Array {
  const out = new Uint8Array(pixels * keep * 2);
  for (let p = 0, o = 0; p < pixels; p++) {
    for (let c = 0; c < keep; c++) {
      const v = rgba[p * 4 + c];
      out[o++] = v >> 8;
      out[o++] = v & 0xff;
    }
  }
  return out;
}

/**
 * 413 for an image of more than `limits.maxBytes`: also what a browser checks on a file's size
 * before reading it (the SDK, the search page), so that a huge file is refused unread.
 */
export function checkImageBytes(size: number, limits: ImageLimits = DEFAULT_LIMITS): void {
  if (size > limits.maxBytes) throw err(413, 'image_too_large', `image is ${size} bytes; at most ${limits.maxBytes} (${limits.maxBytes / 2 ** 20} MiB)`);
}

/** What else a caller asks of the decoding. */
export interface DecodeOptions {
  /** Which frame (0-based) of a multi-frame DICOM to decode: required for one, 0 or absent for any other image. */
  frame?: number;
}

/** 400 unless `frame` is absent or a non-negative integer (what an API parameter must be before it reaches a decoder). */
export function checkFrame(frame: number | undefined): void {
  if (frame !== undefined && !(Number.isSafeInteger(frame) && frame >= 0)) {
    throw new MedhashError(400, 'invalid_field', `frame must be a non-negative integer, got ${frame}`, 'frame');
  }
}

/**
 * Decodes a PNG, JPEG or DICOM (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000;
 * `options.frame` of a multi-frame one). `contentType`, when given, must be one of
 * IMAGE_TYPES or application/octet-stream and agree with the bytes. Throws MedhashError: 400
 * empty or a malformed frame, 413 too large (bytes or declared size, one frame's), 415 not an
 * image of these or an unsupported variant (a multi-frame DICOM without a frame), 422
 * truncated/corrupt or a frame out of range.
 */
export async function decodeImage(bytes: Uint8Array, contentType?: string, limits: ImageLimits = DEFAULT_LIMITS, options: DecodeOptions = {}): Promise<DecodedImage> {
  checkFrame(options.frame);
  if (bytes.length === 0) throw err(400, 'empty_image', 'image is empty (0 bytes)');
  checkImageBytes(bytes.length, limits);
  const format = formatOf(bytes, contentType);
  // a PNG or JPEG is one frame
  if (format !== 'dicom' && options.frame !== undefined && options.frame > 0) throw frameOutOfRange(options.frame, 1);
  if (format === 'dicom') {
    const { geometry, decode } = await dicomGeometry(bytes, options.frame, inflatedCap(limits.maxBytes));
    checkSize(geometry.width, geometry.height, limits);
    // only a JPEG Baseline or Extended, JPEG-LS or JPEG 2000 file calls on a codec: an uncompressed (deflated or not), RLE or JPEG Lossless one needs no initialisation
    const frames = async () => (await codecsReady(), frameDecoders as FrameDecoders);
    return decode({
      jpeg: (jpeg) => decodeJpegFile(jpeg, limits),
      jpegLs: async (f, t) => (await frames()).jpegLs(f, t),
      jpeg2000: async (f, t) => (await frames()).jpeg2000(f, t),
    });
  }
  await codecsReady();

  if (format === 'png') {
    // the decoder wants its own ArrayBuffer
    const own = bytes.slice().buffer;
    const h = pngHeader(bytes);
    checkSize(h.width, h.height, limits);
    const pixels = h.width * h.height;
    if (h.bitDepth === 16) {
      const img = await guarded('PNG', async () => decodePng(own, { bitDepth: 16 }));
      // grey keeps its full range (scaled by its maximum later); other 16-bit types keep RGBA
      const keep = h.colorType === 0 ? 1 : 4;
      const data = img.data as Uint16Array;
      const out = { width: img.width, height: img.height, channels: keep, data: fromRgba16(data, pixels, keep), bitDepth: 16 } as const;
      (img as { free?: () => void }).free?.();
      return out;
    }
    const img = await guarded('PNG', async () => decodePng(own));
    const keep = h.colorType === 0 ? 1 : h.colorType === 2 ? 3 : 4;
    return { width: img.width, height: img.height, channels: keep, data: fromRgba(new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.length), pixels, keep), bitDepth: 8 };
  }
  return decodeJpegFile(bytes, limits);
}

async function codecsReady(): Promise<void> {
  if (!ready) throw new MedhashError(500, 'codecs_not_initialised', 'image codecs are not initialised: call initImageCodecs first');
  await ready;
}

/** A JPEG file (sent as one, or the frame of a JPEG Baseline DICOM): walked, its size checked, decoded. */
async function decodeJpegFile(bytes: Uint8Array, limits: ImageLimits): Promise<DecodedImage> {
  await codecsReady();
  const h = jpegHeader(bytes);
  checkSize(h.width, h.height, limits);
  // the decoder wants its own ArrayBuffer
  const img = await guarded('JPEG', () => decodeJpeg(bytes.slice().buffer));
  if (img.width !== h.width || img.height !== h.height) {
    throw err(422, 'corrupt_image', `JPEG decoded to ${img.width}x${img.height}, its header says ${h.width}x${h.height}`);
  }
  const keep = h.components === 1 ? 1 : 3;
  return { width: img.width, height: img.height, channels: keep, data: fromRgba(new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.length), h.width * h.height, keep), bitDepth: 8 };
}
