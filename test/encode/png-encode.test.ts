// encodePng (functions/encode/png-encode.ts): the PNG of a DICOM frame decodes to exactly the
// DecodedImage the DICOM gave (channels, bit depth, pixels), for every frame of every DCMTK
// fixture the decoder reads, and for images whose rows take each of PNG's filters; what it cannot
// write losslessly it refuses.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, type DecodedImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { encodePng } from '../../functions/encode/png-encode.ts';
import { DICOM_FIXTURES, DICOM_MULTI_FRAME } from './fixtures.ts';

beforeAll(() => initNodeImageCodecs());

const roundTrip = async (img: DecodedImage) => decodeImage(await encodePng(img), 'image/png');

/** The filter type of each row of an 8-bit PNG of one IDAT, as encodePng writes it. */
function rowFilters(png: Uint8Array, img: DecodedImage): number[] {
  const dv = new DataView(png.buffer, png.byteOffset);
  const idatAt = 8 + 12 + dv.getUint32(8);
  const raw = inflateSync(png.subarray(idatAt + 8, idatAt + 8 + dv.getUint32(idatAt)));
  return Array.from({ length: img.height }, (_, y) => raw[y * (img.width * img.channels + 1)]);
}

describe('encodePng', () => {
  it('every frame of every DICOM fixture the decoder reads: its PNG decodes to the same DecodedImage', async () => {
    const channels = new Set<number>();
    let frames = 0;
    for (const file of readdirSync(DICOM_FIXTURES).filter((f) => f.endsWith('.dcm'))) {
      const bytes = new Uint8Array(readFileSync(join(DICOM_FIXTURES, file)));
      for (const frame of DICOM_MULTI_FRAME[file] ? [...Array(DICOM_MULTI_FRAME[file]).keys()] : [undefined]) {
        const img = await decodeImage(bytes, 'application/dicom', undefined, { frame }).catch(() => null);
        if (!img) continue; // refused (decoded.json says why): nothing to send
        expect(await roundTrip(img), `${file} frame ${frame}`).toEqual(img);
        channels.add(img.channels);
        frames++;
      }
    }
    expect([...channels].sort()).toEqual([1, 3]);
    expect(frames).toBeGreaterThan(70);
  });

  it('rows of noise, ramps and flat areas take several of the five filters; the pixels come back all the same', async () => {
    for (const [width, height, ch] of [[1, 1, 1], [5, 3, 3], [97, 61, 1], [64, 40, 3]] as const) {
      const data = new Uint8Array(width * height * ch);
      let seed = width * 31 + height;
      for (let i = 0; i < data.length; i++) {
        const y = Math.floor(i / (width * ch));
        seed = (seed * 1103515245 + 12345) >>> 0;
        // noise, a horizontal ramp, a vertical ramp, flat: a band each
        data[i] = [seed >>> 24, i % (width * ch), y * 5, 200][y % 4] & 0xff;
      }
      const img: DecodedImage = { width, height, channels: ch, data, bitDepth: 8 };
      expect(await roundTrip(img), `${width}x${height}x${ch}`).toEqual(img);
      if (height > 8) expect(new Set(rowFilters(await encodePng(img), img)).size, `${width}x${height}x${ch}`).toBeGreaterThanOrEqual(3);
    }
  });

  it('refuses what PNG would not give back as it is: 16-bit samples, RGBA, too few samples', async () => {
    await expect(encodePng({ width: 1, height: 1, channels: 1, data: new Uint8Array(2), bitDepth: 16 })).rejects.toThrow('encodePng writes 8-bit grey or RGB images, not 1 channel(s) of 16 bits');
    await expect(encodePng({ width: 1, height: 1, channels: 4, data: new Uint8Array(4), bitDepth: 8 })).rejects.toThrow('not 4 channel(s) of 8 bits');
    await expect(encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(6), bitDepth: 8 })).rejects.toThrow('encodePng: 6 bytes of samples for a 2x2 image of 3 channel(s)');
  });
});
