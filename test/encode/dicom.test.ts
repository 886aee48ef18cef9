// DICOM input: files written by DCMTK (test/fixtures/dicom, scripts/fixtures/make-dicom.ts) decode
// to exactly the pixels of the JPEGs they were made from, so they give the same tensor and code;
// rescale, window and MONOCHROME1 act as the standard says; every variant this decoder does not
// read (compressed, deflated, big-endian, multi-frame) and every broken file is a 4xx naming why.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { CT, DICOM_FIXTURES, DICOM_SOURCES, dataDir } from './fixtures.ts';

beforeAll(() => initNodeImageCodecs());

const fixture = (name: string) => new Uint8Array(readFileSync(join(DICOM_FIXTURES, `${name}.dcm`)));

async function jpeg(src: { set: string; member: string }): Promise<Uint8Array> {
  const tar = await TarReader.open(join(dataDir(src.set), 'images.tar'));
  try {
    return await tar.read(src.member);
  } finally {
    await tar.close();
  }
}

async function refusal(p: Promise<unknown>): Promise<MedhashError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(MedhashError);
  return e as MedhashError;
}

describe('DICOM decodes to the pixels it holds', () => {
  it.each(['grey8-explicit', 'grey8-implicit'])('%s equals the grey JPEG it was made from', async (name) => {
    const fromJpeg = await decodeImage(await jpeg(DICOM_SOURCES.grey), 'image/jpeg');
    for (const type of ['application/dicom', undefined]) {
      const img = await decodeImage(fixture(name), type);
      expect(img).toMatchObject({ width: fromJpeg.width, height: fromJpeg.height, channels: 1, bitDepth: 8 });
      expect(Buffer.from(img.data).equals(Buffer.from(fromJpeg.data))).toBe(true);
    }
  });

  it('an RGB DICOM equals the Kather JPEG it was made from', async () => {
    const fromJpeg = await decodeImage(await jpeg(DICOM_SOURCES.rgb), 'image/jpeg');
    const img = await decodeImage(fixture('rgb8-explicit'), 'application/dicom');
    expect(img).toMatchObject({ width: 150, height: 150, channels: 3, bitDepth: 8 });
    expect(Buffer.from(img.data).equals(Buffer.from(fromJpeg.data))).toBe(true);
  });

  it('a signed 16-bit CT goes through its rescale and its window', async () => {
    const img = await decodeImage(fixture('ct16-window'), 'application/dicom');
    expect(img).toMatchObject({ width: CT.size, height: CT.size, channels: 1, bitDepth: 8 });
    const at = (r: number, c: number) => img.data[r * CT.size + c];
    // stored c * 64 + r, minus 1024: below the window's lower edge (-160) is black, above its upper edge white
    expect(at(0, 0)).toBe(0);
    expect(at(63, 13)).toBe(20); // stored 895, HU -129: inside the window, near its bottom
    expect(at(0, 13)).toBe(0); // HU -192
    expect(at(40, 16)).toBe(128); // HU 40, the centre
    expect(at(0, 63)).toBe(255);
    // monotone along the ramp
    for (let i = 1; i < CT.size * CT.size; i++) {
      const [r0, c0, r1, c1] = [(i - 1) % 64, Math.floor((i - 1) / 64), i % 64, Math.floor(i / 64)];
      expect(at(r1, c1)).toBeGreaterThanOrEqual(at(r0, c0));
    }
  });

  it('MONOCHROME1 is the inverse of MONOCHROME2 (implicit VR file)', async () => {
    const two = await decodeImage(fixture('ct16-window'));
    const one = await decodeImage(fixture('ct16-window-monochrome1'));
    expect([...one.data]).toEqual([...two.data].map((v) => 255 - v));
  });
});

describe('refused DICOM', () => {
  it.each([
    ['grey8-jpeg-baseline', '1.2.840.10008.1.2.4.50 (JPEG Baseline)'],
    ['grey8-deflated', '1.2.840.10008.1.2.1.99 (Deflated Explicit VR Little Endian)'],
    ['grey8-bigendian', '1.2.840.10008.1.2.2 (Explicit VR Big Endian)'],
  ])('%s -> 415 naming its transfer syntax and what to send', async (name, syntax) => {
    const e = await refusal(decodeImage(fixture(name), 'application/dicom'));
    expect([e.status, e.code]).toEqual([415, 'unsupported_image_type']);
    expect(e.message).toContain(syntax);
    expect(e.message).toMatch(/send the file uncompressed/);
  });

  it('two frames -> 415', async () => {
    const e = await refusal(decodeImage(fixture('grey8-two-frames')));
    expect([e.status, e.message]).toEqual([415, expect.stringContaining('2 frames')]);
  });

  it('truncated pixel data -> 422', async () => {
    const whole = fixture('grey8-explicit');
    const e = await refusal(decodeImage(whole.subarray(0, whole.length - 100), 'application/dicom'));
    expect([e.status, e.code]).toEqual([422, 'corrupt_image']);
    expect(e.message).toMatch(/truncated/);
  });

  it('a declared 20000 rows -> 413 before any pixel is read', async () => {
    const b = fixture('grey8-explicit').slice();
    // (0028,0010) US, length 2: the Rows element of an explicit-VR file
    const rows = Buffer.from(b).indexOf(Buffer.from([0x28, 0x00, 0x10, 0x00, 0x55, 0x53, 0x02, 0x00]));
    expect(rows).toBeGreaterThan(132);
    new DataView(b.buffer).setUint16(rows + 8, 20000, true);
    const e = await refusal(decodeImage(b, 'application/dicom'));
    expect([e.status, e.code]).toEqual([413, 'image_too_large']);
    expect(e.message).toContain('20000');
  });

  it('application/dicom that is not DICOM -> 415, and DICOM sent as image/png -> 415', async () => {
    const notDicom = await refusal(decodeImage(new Uint8Array(300).fill(7), 'application/dicom'));
    expect([notDicom.status, notDicom.message]).toEqual([415, expect.stringContaining('DICM')]);
    const mislabelled = await refusal(decodeImage(fixture('grey8-explicit'), 'image/png'));
    expect([mislabelled.status, mislabelled.message]).toEqual([415, expect.stringContaining('which are DICOM')]);
  });
});
