// PNG writer: an 8-bit grey or RGB DecodedImage (what decodeImage gives of a DICOM frame) as a
// lossless PNG that decodeImage reads back to the very same DecodedImage (channels, bit depth,
// pixels), so that a frame sent as PNG is encoded as the DICOM would be (`medhash search --image`
// of a DICOM; the e2e bench's query bodies). Not @jsquash/png's encoder: it writes every image as
// RGBA (colour type 6), which decodes to 4 channels, not the frame's 1 or 3. Web-standard APIs
// (CompressionStream), so any runtime can use it.
import { crc32 } from '../shards/crc32.ts';
import { concatBytes } from '../util/bytes.ts';
import type { DecodedImage } from './image.ts';

const SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** PNG colour type by channel count: 0 grey, 2 RGB (the ones decodeImage keeps as 1 and 3 channels). */
const COLOUR_TYPE = { 1: 0, 3: 2 } as const;

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const paeth = (a: number, b: number, c: number): number => {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};

/**
 * Each row filtered by whichever of PNG's five filters gives the smallest sum of absolute
 * differences (the heuristic of the PNG specification, 12.8): a smooth scan deflates to a fraction
 * of its unfiltered size, which keeps a large frame under a request's byte limit.
 */
function filtered(data: Uint8Array, rowBytes: number, rows: number, bpp: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array((rowBytes + 1) * rows);
  const zero = new Uint8Array(rowBytes);
  const candidates = Array.from({ length: 5 }, () => new Uint8Array(rowBytes));
  for (let y = 0; y < rows; y++) {
    const row = data.subarray(y * rowBytes, (y + 1) * rowBytes);
    const up = y === 0 ? zero : data.subarray((y - 1) * rowBytes, y * rowBytes);
    let best = 0;
    let bestCost = Infinity;
    for (let f = 0; f < 5; f++) {
      const c = candidates[f];
      let cost = 0;
      for (let i = 0; i < rowBytes; i++) {
        const a = i >= bpp ? row[i - bpp] : 0;
        const b = up[i];
        const predicted = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, i >= bpp ? up[i - bpp] : 0);
        const v = (row[i] - predicted) & 0xff;
        c[i] = v;
        cost += v < 128 ? v : 256 - v;
      }
      if (cost < bestCost) [best, bestCost] = [f, cost];
    }
    out[y * (rowBytes + 1)] = best;
    out.set(candidates[best], y * (rowBytes + 1) + 1);
  }
  return out;
}

/** `img` as a PNG file; throws for anything but 8-bit grey or RGB. */
export async function encodePng(img: DecodedImage): Promise<Uint8Array<ArrayBuffer>> {
  if (img.bitDepth !== 8 || (img.channels !== 1 && img.channels !== 3)) {
    throw new Error(`encodePng writes 8-bit grey or RGB images, not ${img.channels} channel(s) of ${img.bitDepth} bits`);
  }
  const rowBytes = img.width * img.channels;
  if (img.data.length !== rowBytes * img.height) throw new Error(`encodePng: ${img.data.length} bytes of samples for a ${img.width}x${img.height} image of ${img.channels} channel(s)`);
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, img.width);
  dv.setUint32(4, img.height);
  // bit depth, colour type, deflate, adaptive filtering, no interlace
  ihdr.set([8, COLOUR_TYPE[img.channels], 0, 0, 0], 8);
  const raw = filtered(img.data, rowBytes, img.height, img.channels);
  const idat = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
  return concatBytes([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', new Uint8Array(0))]);
}
