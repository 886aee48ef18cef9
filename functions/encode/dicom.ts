// DICOM Part 10 files -> 8-bit pixels for the encoder (the rest of the path is the PNG/JPEG
// one). Uncompressed little-endian transfer syntaxes only: a compressed or big-endian file is
// refused with 415 naming its syntax, never guessed at. Grey values go through the file's own
// modality rescale and first VOI window, as a viewer shows them by default. The header is read
// for pixel attributes alone: nothing of it (patient, study, dates) is returned, kept or logged.
import dicomParser from 'dicom-parser';
import { MedhashError } from '../util/errors.ts';
import type { DecodedImage } from './image.ts';

const err = (status: 413 | 415 | 422, code: string, message: string) => new MedhashError(status, code, message, 'image');

const SUPPORTED: Record<string, string> = {
  '1.2.840.10008.1.2': 'Implicit VR Little Endian',
  '1.2.840.10008.1.2.1': 'Explicit VR Little Endian',
};

/** Names of the common transfer syntaxes this decoder refuses, for the error message. */
const REFUSED: Record<string, string> = {
  '1.2.840.10008.1.2.1.99': 'Deflated Explicit VR Little Endian',
  '1.2.840.10008.1.2.2': 'Explicit VR Big Endian',
  '1.2.840.10008.1.2.4.50': 'JPEG Baseline',
  '1.2.840.10008.1.2.4.51': 'JPEG Extended',
  '1.2.840.10008.1.2.4.57': 'JPEG Lossless',
  '1.2.840.10008.1.2.4.70': 'JPEG Lossless SV1',
  '1.2.840.10008.1.2.4.80': 'JPEG-LS Lossless',
  '1.2.840.10008.1.2.4.81': 'JPEG-LS Near-Lossless',
  '1.2.840.10008.1.2.4.90': 'JPEG 2000 Lossless',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000',
  '1.2.840.10008.1.2.5': 'RLE Lossless',
};

/** True when the bytes are a DICOM Part 10 file (128-byte preamble, then "DICM"). */
export function isDicom(b: Uint8Array): boolean {
  return b.length >= 132 && b[128] === 0x44 && b[129] === 0x49 && b[130] === 0x43 && b[131] === 0x4d;
}

export interface DicomGeometry {
  width: number;
  height: number;
}

type DataSet = ReturnType<typeof dicomParser.parseDicom>;

/** The parser throws Errors, strings, and objects holding the message in `exception`. */
function parserMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'object' && e !== null && 'exception' in e) return String((e as { exception: unknown }).exception);
  return String(e);
}

function parse(bytes: Uint8Array): DataSet {
  let meta: DataSet;
  try {
    meta = dicomParser.readPart10Header(bytes);
  } catch (e) {
    throw err(422, 'corrupt_image', `DICOM file meta header could not be read (${parserMessage(e)})`);
  }
  const syntax = meta.string('x00020010')?.replace(/\0/g, '').trim() ?? '';
  if (!(syntax in SUPPORTED)) {
    const name = REFUSED[syntax] ?? (syntax ? 'an unsupported transfer syntax' : 'no transfer syntax');
    throw err(415, 'unsupported_image_type',
      `DICOM transfer syntax ${syntax || '(missing)'} (${name}) is not supported: send the file uncompressed, in Explicit or Implicit VR Little Endian (e.g. dcmdjpeg or gdcmconv --raw)`);
  }
  try {
    return dicomParser.parseDicom(bytes);
  } catch (e) {
    throw err(422, 'corrupt_image', `DICOM is truncated or corrupt: its data set could not be parsed (${parserMessage(e)})`);
  }
}

interface Attributes {
  rows: number;
  columns: number;
  samples: number;
  photometric: string;
  bitsAllocated: number;
  bitsStored: number;
  signed: boolean;
  planar: number;
  frames: number;
  pixelOffset: number;
  pixelLength: number;
}

function attributes(ds: DataSet, fileLength: number): Attributes {
  const us = (tag: string, name: string): number => {
    const v = ds.uint16(tag);
    if (v === undefined) throw err(422, 'corrupt_image', `DICOM has no ${name} (${tag.slice(1, 5)},${tag.slice(5)}), which an image needs`);
    return v;
  };
  const rows = us('x00280010', 'Rows');
  const columns = us('x00280011', 'Columns');
  const bitsAllocated = us('x00280100', 'Bits Allocated');
  const a: Attributes = {
    rows, columns, bitsAllocated,
    samples: ds.uint16('x00280002') ?? 1,
    photometric: (ds.string('x00280004') ?? '').trim().toUpperCase(),
    bitsStored: ds.uint16('x00280101') ?? bitsAllocated,
    signed: (ds.uint16('x00280103') ?? 0) === 1,
    planar: ds.uint16('x00280006') ?? 0,
    frames: ds.intString('x00280008') ?? 1,
    pixelOffset: 0,
    pixelLength: 0,
  };
  const pixels = ds.elements.x7fe00010;
  if (!pixels) throw err(422, 'corrupt_image', 'DICOM has no Pixel Data (7FE0,0010): it is not an image');
  if (pixels.encapsulatedPixelData || pixels.hadUndefinedLength) throw err(422, 'corrupt_image', 'DICOM pixel data is encapsulated in an uncompressed transfer syntax');
  a.pixelOffset = pixels.dataOffset;
  a.pixelLength = pixels.length;
  if (a.pixelOffset + a.pixelLength > fileLength) {
    throw err(422, 'corrupt_image', `DICOM is truncated: its pixel data declares ${a.pixelLength} bytes, ${fileLength - a.pixelOffset} are present`);
  }
  return a;
}

function check(a: Attributes): void {
  const grey = a.photometric === 'MONOCHROME1' || a.photometric === 'MONOCHROME2';
  if (!(grey && a.samples === 1) && !(a.photometric === 'RGB' && a.samples === 3)) {
    throw err(415, 'unsupported_image_type',
      `DICOM photometric interpretation ${a.photometric || '(missing)'} with ${a.samples} sample(s) per pixel is not supported (MONOCHROME1, MONOCHROME2 or RGB)`);
  }
  if (a.bitsAllocated !== 8 && a.bitsAllocated !== 16) throw err(415, 'unsupported_image_type', `DICOM with ${a.bitsAllocated} bits allocated per sample is not supported (8 or 16)`);
  if (a.photometric === 'RGB' && a.bitsAllocated !== 8) throw err(415, 'unsupported_image_type', 'DICOM RGB with 16-bit samples is not supported');
  if (a.bitsStored < 1 || a.bitsStored > a.bitsAllocated) throw err(422, 'corrupt_image', `DICOM declares ${a.bitsStored} bits stored in ${a.bitsAllocated} allocated`);
  if (a.frames !== 1) throw err(415, 'unsupported_image_type', `DICOM with ${a.frames} frames is not supported: send one frame per request`);
}

/**
 * The header's checks, then its size for the caller's limits; `decode` checks that the pixel
 * data is all there (after the limits, so a huge declared size is a 413) and reads it.
 */
export function dicomGeometry(bytes: Uint8Array): { geometry: DicomGeometry; decode: () => DecodedImage } {
  const ds = parse(bytes);
  const a = attributes(ds, bytes.length);
  check(a);
  const decode = () => {
    const need = a.rows * a.columns * a.samples * (a.bitsAllocated / 8);
    if (a.pixelLength < need) throw err(422, 'corrupt_image', `DICOM is truncated: ${a.columns}x${a.rows} pixels need ${need} bytes of pixel data, it has ${a.pixelLength}`);
    return pixels(ds, a, bytes);
  };
  return { geometry: { width: a.columns, height: a.rows }, decode };
}

/** Stored grey values -> modality values (rescale slope and intercept). */
function modalityValues(a: Attributes, bytes: Uint8Array, slope: number, intercept: number): Float64Array {
  const n = a.rows * a.columns;
  const out = new Float64Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset + a.pixelOffset, n * (a.bitsAllocated / 8));
  const mask = a.bitsStored >= 32 ? 0xffffffff : (1 << a.bitsStored) - 1;
  const sign = 1 << (a.bitsStored - 1);
  for (let i = 0; i < n; i++) {
    let v = (a.bitsAllocated === 16 ? view.getUint16(i * 2, true) : view.getUint8(i)) & mask;
    if (a.signed && v & sign) v -= mask + 1;
    out[i] = v * slope + intercept;
  }
  return out;
}

/**
 * Modality values -> 0..255: the linear VOI window of PS3.3 C.11.2.1.2.1 when the file has one
 * (its first centre/width), else the values' own minimum to maximum, except plain 8-bit data,
 * which is kept as stored.
 */
function toGrey8(ds: DataSet, a: Attributes, values: Float64Array, plain8: boolean): Uint8Array {
  const out = new Uint8Array(values.length);
  const centre = ds.floatString('x00281050', 0);
  const width = ds.floatString('x00281051', 0);
  if (centre !== undefined && width !== undefined && Number.isFinite(centre) && width >= 1) {
    const lo = centre - 0.5 - (width - 1) / 2;
    const hi = centre - 0.5 + (width - 1) / 2;
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      out[i] = x <= lo ? 0 : x > hi ? 255 : Math.round(((x - (centre - 0.5)) / (width - 1) + 0.5) * 255);
    }
  } else if (plain8) {
    for (let i = 0; i < values.length; i++) out[i] = values[i];
  } else {
    let min = Infinity;
    let max = -Infinity;
    for (const x of values) {
      if (x < min) min = x;
      if (x > max) max = x;
    }
    const span = max - min;
    for (let i = 0; i < values.length; i++) out[i] = span > 0 ? Math.round(((values[i] - min) / span) * 255) : 0;
  }
  if (a.photometric === 'MONOCHROME1') for (let i = 0; i < out.length; i++) out[i] = 255 - out[i];
  return out;
}

function pixels(ds: DataSet, a: Attributes, bytes: Uint8Array): DecodedImage {
  if (a.photometric === 'RGB') {
    const n = a.rows * a.columns;
    const src = bytes.subarray(a.pixelOffset, a.pixelOffset + 3 * n);
    // planar configuration 1 stores the three colour planes one after the other
    const data = a.planar === 1 ? Uint8Array.from({ length: 3 * n }, (_, i) => src[(i % 3) * n + Math.floor(i / 3)]) : src.slice();
    return { width: a.columns, height: a.rows, channels: 3, data, bitDepth: 8 };
  }
  const slope = ds.floatString('x00281053') ?? 1;
  const intercept = ds.floatString('x00281052') ?? 0;
  const plain8 = a.bitsAllocated === 8 && !a.signed && slope === 1 && intercept === 0;
  const grey = toGrey8(ds, a, modalityValues(a, bytes, slope, intercept), plain8);
  return { width: a.columns, height: a.rows, channels: 1, data: grey, bitDepth: 8 };
}
