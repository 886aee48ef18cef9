// Hand-built PNG files for the decoder tests: valid images of each colour type and depth, and the
// hostile ones (huge declared size, decompression bomb, corrupt or truncated data).
import { deflateSync } from 'node:zlib';
import { crc32 } from '../../functions/shards/crc32.ts';
import { concatBytes } from '../../functions/util/bytes.ts';

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  const typed = new TextEncoder().encode(type);
  out.set(typed, 4);
  out.set(data, 8);
  const body = out.subarray(4, 8 + data.length);
  dv.setUint32(8 + data.length, crc32(body) >>> 0);
  return out;
}

export interface PngSpec {
  width: number;
  height: number;
  colorType: 0 | 2 | 3 | 4 | 6;
  bitDepth: 1 | 2 | 4 | 8 | 16;
  /** Filtered scanlines (filter byte 0 + samples), before deflate. */
  raw?: Uint8Array;
  /** Replaces the deflated IDAT payload. */
  idat?: Uint8Array;
  palette?: Uint8Array;
}

const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** Scanlines with filter type 0 from row-major samples (big-endian for 16 bits, packed MSB first below 8). */
export function scanlines(width: number, height: number, samplesPerPixel: number, bitDepth: 1 | 2 | 4 | 8 | 16, samples: ArrayLike<number>): Uint8Array {
  if (bitDepth < 8) {
    const stride = 1 + Math.ceil((width * samplesPerPixel * bitDepth) / 8);
    const out = new Uint8Array(stride * height);
    for (let y = 0; y < height; y++) {
      for (let i = 0; i < width * samplesPerPixel; i++) {
        const bit = i * bitDepth;
        out[y * stride + 1 + (bit >> 3)] |= samples[y * width * samplesPerPixel + i] << (8 - bitDepth - (bit & 7));
      }
    }
    return out;
  }
  const bps = bitDepth / 8;
  const stride = 1 + width * samplesPerPixel * bps;
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < width * samplesPerPixel; i++) {
      const v = samples[y * width * samplesPerPixel + i];
      const at = y * stride + 1 + i * bps;
      if (bps === 2) {
        out[at] = v >> 8;
        out[at + 1] = v & 0xff;
      } else out[at] = v;
    }
  }
  return out;
}

export function png(spec: PngSpec): Uint8Array {
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, spec.width);
  dv.setUint32(4, spec.height);
  ihdr[8] = spec.bitDepth;
  ihdr[9] = spec.colorType;
  const idat = spec.idat ?? deflateSync(spec.raw ?? new Uint8Array((1 + Math.ceil((spec.width * SAMPLES[spec.colorType] * spec.bitDepth) / 8)) * spec.height));
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...(spec.palette ? [chunk('PLTE', spec.palette)] : []),
    chunk('IDAT', idat),
    chunk('IEND', new Uint8Array(0)),
  ];
  return concatBytes(parts);
}
