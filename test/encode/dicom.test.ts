// DICOM input: files written by DCMTK (test/fixtures/dicom, scripts/fixtures/make-dicom.ts) decode
// to exactly the pixels of the JPEGs they were made from, so they give the same tensor and code;
// rescale, window and MONOCHROME1 act as the standard says; every variant this decoder does not
// read (compressed, deflated, big-endian, multi-frame) and every broken file is a 4xx naming why.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { dicomMetadata, MAX_DEPTH, MAX_ELEMENTS } from '../../functions/encode/dicom.ts';
import { decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { concatBytes } from '../../functions/util/bytes.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { CT, DICOM_FIXTURES, DICOM_SOURCES, DICOM_STUDY_UID, GARBAGE12, dataDir, mutateDicom } from './fixtures.ts';
import { seededRandom } from '../shared/random.ts';

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

/** A minimal explicit-VR little-endian Part 10 file of the given data set bytes (for hostile shapes DCMTK will not write). */
function part10(dataSet: Uint8Array): Uint8Array {
  const syntax = new TextEncoder().encode('1.2.840.10008.1.2.1\0');
  const meta = new Uint8Array(8 + syntax.length);
  meta.set([0x02, 0x00, 0x10, 0x00, 0x55, 0x49, syntax.length, 0]);
  meta.set(syntax, 8);
  const out = new Uint8Array(132 + meta.length + dataSet.length);
  out.set(new TextEncoder().encode('DICM'), 128);
  out.set(meta, 132);
  out.set(dataSet, 132 + meta.length);
  return out;
}

/** One explicit-VR element (OB/OW/SQ: reserved bytes and a 4-byte length, PS3.5 7.1.2). */
function element(group: number, el: number, vr: string, value: Uint8Array): Uint8Array {
  const long = ['OB', 'OW', 'SQ'].includes(vr);
  const head = long ? 12 : 8;
  const out = new Uint8Array(head + value.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, group, true);
  v.setUint16(2, el, true);
  out.set(new TextEncoder().encode(vr), 4);
  if (long) v.setUint32(8, value.length, true);
  else v.setUint16(6, value.length, true);
  out.set(value, head);
  return out;
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

  it.each(['rgb8-explicit', 'rgb8-planar1'])('an RGB DICOM (%s) equals the Kather JPEG it was made from', async (name) => {
    const fromJpeg = await decodeImage(await jpeg(DICOM_SOURCES.rgb), 'image/jpeg');
    const img = await decodeImage(fixture(name), 'application/dicom');
    expect(img).toMatchObject({ width: 150, height: 150, channels: 3, bitDepth: 8 });
    expect(Buffer.from(img.data).equals(Buffer.from(fromJpeg.data))).toBe(true);
  });

  it('12 bits stored in 16: the unused high bits are ignored, negatives sign-extended, and with no window the range is stretched', async () => {
    const img = await decodeImage(fixture('ct12-garbage-nowindow'));
    expect(GARBAGE12.values).toEqual([-2048, -1000, -1, 0, 1, 1000, 2047]);
    // (v + 2048) / 4095 * 255, rounded
    expect([...img.data]).toEqual([0, 65, 127, 128, 128, 190, 255]);
  });

  it.each([
    // centre 0, width 4, stored -3..3; values worked out by hand from PS3.3 C.11.2.1.2.1 and C.11.2.1.3
    ['voi-linear', [0, 0, 85, 170, 255, 255, 255]],
    ['voi-linear-exact', [0, 0, 64, 128, 191, 255, 255]],
    ['voi-sigmoid', [12, 30, 69, 128, 186, 225, 243]],
  ])('VOI LUT function: %s', async (name, expected) => {
    expect([...(await decodeImage(fixture(name))).data]).toEqual(expected);
  });

  it('the rescale slope scales before the window', async () => {
    const img = await decodeImage(fixture('ct16-slope2'));
    const at = (s: number) => img.data[(s % 64) * CT.size + Math.floor(s / 64)];
    // HU = 2 s - 1024; window 40/400 spans HU -160..239.5
    expect([at(432), at(433), at(532), at(631), at(632)]).toEqual([0, 1, 128, 254, 255]);
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

describe('DICOM metadata for ingest', () => {
  it.each(['grey8-explicit', 'grey8-implicit'])('%s gives modality, body part and the three UIDs, nothing else', (name) => {
    expect(dicomMetadata(fixture(name))).toEqual({
      modality: 'CR', body_part: 'HAND', study_uid: DICOM_STUDY_UID, series_uid: '1.2.826.0.1.3680043.10.1410.3.1', sop_uid: '1.2.826.0.1.3680043.10.1410.1.1',
    });
  });

  it('leaves out a malformed UID or code string instead of failing the item', () => {
    const file = part10(concatBytes([
      element(0x0008, 0x0060, 'CS', new TextEncoder().encode('MR')),
      element(0x0018, 0x0015, 'CS', new TextEncoder().encode('C^R ')),
      element(0x0020, 0x000d, 'UI', new TextEncoder().encode('not.a.uid')),
      element(0x7fe0, 0x0010, 'OB', new Uint8Array(0)),
    ]));
    expect(dicomMetadata(file)).toEqual({ modality: 'MR' });
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

  it('a header of a million tiny elements is a quick 422, never a million objects', async () => {
    const tiny = element(0x0009, 0x0010, 'LO', new Uint8Array(0));
    const file = part10(concatBytes(Array.from({ length: 1_000_000 }, () => tiny)));
    expect(file.length).toBeLessThan(DEFAULT_LIMITS.maxBytes);
    const e = await refusal(decodeImage(file, 'application/dicom'));
    expect([e.status, e.message]).toEqual([422, `DICOM has more than ${MAX_ELEMENTS} elements before its pixel data`]);
  });

  it('sequences nested without end are a 422', async () => {
    // (0009,1001) SQ of undefined length, holding an item of undefined length, holding the next...
    const open = new Uint8Array([0x09, 0x00, 0x01, 0x10, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
    const e = await refusal(decodeImage(part10(concatBytes(Array.from({ length: 20_000 }, () => open)))));
    expect([e.status, e.message]).toEqual([422, `DICOM nests sequences more than ${MAX_DEPTH} deep`]);
  });

  it('a High Bit other than Bits Stored - 1 is refused (415), and a Rescale Slope that is not a number is a 422', async () => {
    const us = (n: number) => new Uint8Array([n & 0xff, n >> 8]);
    const header = (highBit: number, slope: string) => part10(concatBytes([
      element(0x0028, 0x0002, 'US', us(1)), element(0x0028, 0x0004, 'CS', new TextEncoder().encode('MONOCHROME2 ')),
      element(0x0028, 0x0010, 'US', us(1)), element(0x0028, 0x0011, 'US', us(2)), element(0x0028, 0x0100, 'US', us(16)),
      element(0x0028, 0x0101, 'US', us(12)), element(0x0028, 0x0102, 'US', us(highBit)), element(0x0028, 0x0103, 'US', us(0)),
      element(0x0028, 0x1053, 'DS', new TextEncoder().encode(slope)),
      element(0x7fe0, 0x0010, 'OW', new Uint8Array([1, 0, 2, 0])),
    ]));
    expect((await decodeImage(header(11, '1 '))).data.length).toBe(2);
    const high = await refusal(decodeImage(header(15, '1 ')));
    expect([high.status, high.message]).toEqual([415, expect.stringContaining('High Bit 15 for 12 bits stored')]);
    const slope = await refusal(decodeImage(header(11, 'x ')));
    expect([slope.status, slope.message]).toEqual([422, expect.stringContaining('Rescale Slope (0028,1053) is not a number')]);
  });

  it('3000 seeded mutations of the fixtures (bytes set, lengths maxed, files cut short) each give a 4xx or a well-formed image, never another error', async () => {
    const files = readdirSync(DICOM_FIXTURES).filter((f) => f.endsWith('.dcm')).map((f) => fixture(f.slice(0, -4)));
    const rnd = seededRandom(20261127).int;
    const escaped: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const bytes = mutateDicom(files[rnd(files.length)], rnd);
      for (const run of [() => decodeImage(bytes, 'application/dicom'), async () => dicomMetadata(bytes)]) {
        try {
          const out = await run();
          if ('width' in out && out.data.length !== out.width * out.height * out.channels * (out.bitDepth / 8)) escaped.push(`case ${i}: ${out.width}x${out.height} image of ${out.data.length} bytes`);
        } catch (e) {
          if (!(e instanceof MedhashError && e.status >= 400 && e.status < 500)) escaped.push(`case ${i}: ${String(e)}`);
        }
      }
    }
    expect(escaped).toEqual([]);
  });

  it('application/dicom that is not DICOM -> 415, and DICOM sent as image/png -> 415', async () => {
    const notDicom = await refusal(decodeImage(new Uint8Array(300).fill(7), 'application/dicom'));
    expect([notDicom.status, notDicom.message]).toEqual([415, expect.stringContaining('DICM')]);
    const mislabelled = await refusal(decodeImage(fixture('grey8-explicit'), 'image/png'));
    expect([mislabelled.status, mislabelled.message]).toEqual([415, expect.stringContaining('which are DICOM')]);
  });
});
