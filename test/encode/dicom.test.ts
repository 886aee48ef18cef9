// DICOM input: files written by DCMTK (test/fixtures/dicom, scripts/fixtures/make-dicom.ts) decode
// to exactly the pixels of the JPEGs they were made from, so they give the same tensor and code,
// whether uncompressed (deflated or not), RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000;
// rescale, window and MONOCHROME1 act as the standard says; each frame of a multi-frame file is the single-frame file of its
// samples; every variant this decoder does not read (other compressions, 12-bit JPEG Extended, big-endian, a multi-frame file
// without a frame) and every broken file (a bad RLE run or fragment table, a deflate bomb included) is a
// 4xx naming why, and the size limits come before any decompression of the pixels.
import { readdirSync, readFileSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { dicomFrameCount, dicomMetadata, dicomWholeFrameCount, inflatedCap, MAX_DEPTH, MAX_ELEMENTS, MAX_INFLATED_BYTES, NotAnImage } from '../../functions/encode/dicom.ts';
import { EmscriptenCodec } from '../../functions/encode/dicom-codecs.ts';
import { bundle, ENTRIES } from '../../functions/sdk/build.ts';
import { decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { concatBytes } from '../../functions/util/bytes.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { LOCAL_DICOM_LIMITS, LOCAL_FILE_MAX_BYTES, LOCAL_MAX_INFLATED } from '../../scripts/cli/images.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { CT, DEFLATE_BOMB, DICOM_FIXTURES, DICOM_MULTI_FRAME, DICOM_SOURCES, DICOM_STUDY_UID, GARBAGE12, cs, dataDir, dicomDir, dicomFragments, element, encapsulatedPixelData, mutateDicom, part10, pixelModule, rleFrame } from './fixtures.ts';
import { seededRandom } from '../shared/random.ts';

beforeAll(() => initNodeImageCodecs());

const fixture = (name: string) => new Uint8Array(readFileSync(join(DICOM_FIXTURES, `${name}.dcm`)));

/** A one-frame encapsulated fixture, its frame's codestream, and `broken(f)`: the same file with `f` as its frame. */
function oneFrame(name: string): { good: Uint8Array; frame: Uint8Array; broken: (f: Uint8Array) => Uint8Array } {
  const good = fixture(name);
  const [frame] = dicomFragments(good);
  const head = good.subarray(0, Buffer.from(good).lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00])));
  return { good, frame, broken: (f) => concatBytes([head, encapsulatedPixelData([f])]) };
}

async function jpeg(src: { set: string; member: string }): Promise<Uint8Array> {
  const tar = await TarReader.open(join(dataDir(src.set), 'images.tar'));
  try {
    return await tar.read(src.member);
  } finally {
    await tar.close();
  }
}

const RLE = '1.2.840.10008.1.2.5';

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

describe('Modality and VOI LUT Sequences (PS3.3 C.11.1, C.11.2)', () => {
  // the DX-like fixtures: 32 x 32, stored 0, 4, ..., 4092 (12 bits); lut-voi16's LUT maps stored i
  // to round(65535 (i / 4095)^0.6), 16 bits (scripts/fixtures/make-dicom.ts)
  const curve = Array.from({ length: 4096 }, (_, i) => Math.round(65535 * (i / 4095) ** 0.6));

  it('a VOI LUT Sequence, with no window, maps each stored value to the top 8 bits of its entry (as dcm2pnm +Wl 1)', async () => {
    const img = await decodeImage(fixture('lut-voi16'));
    expect([...img.data]).toEqual(Array.from({ length: 1024 }, (_, i) => curve[i * 4] >> 8));
  });

  it('MONOCHROME1 (Implicit VR) inverts it; an 8-bit LUT as US words and packed in OW is the same LUT', async () => {
    const two = await decodeImage(fixture('lut-voi16'));
    expect([...(await decodeImage(fixture('lut-voi16-monochrome1-implicit'))).data]).toEqual([...two.data].map((v) => 255 - v));
    expect(Buffer.from((await decodeImage(fixture('lut-voi8-packed'))).data).equals(Buffer.from((await decodeImage(fixture('lut-voi8-us'))).data))).toBe(true);
  });

  it('a window beside the VOI LUT wins; a Modality LUT replaces the rescale before the window', async () => {
    // LINEAR (PS3.3 C.11.2.1.2.1)
    const linear = (c: number, w: number) => (x: number) => (x <= c - 0.5 - (w - 1) / 2 ? 0 : x > c - 0.5 + (w - 1) / 2 ? 255 : Math.round(((x - (c - 0.5)) / (w - 1) + 0.5) * 255));
    const both = await decodeImage(fixture('lut-voi16-and-window'));
    // window 1000/1500 on stored 4i, the LUT unused
    expect([...both.data]).toEqual(Array.from({ length: 1024 }, (_, i) => linear(1000, 1500)(4 * i)));
    const img = await decodeImage(fixture('lut-modality-window'));
    // stored c * 64 + r; Modality LUT from -100: round(16383 sqrt(i / 2999)); window 12000/6000
    const m = (s: number) => Math.round(16383 * (Math.min(Math.max(s + 100, 0), 2999) / 2999) ** 0.5);
    const win = linear(12000, 6000);
    const at = (r: number, c: number) => img.data[r * CT.size + c];
    for (const [r, c] of [[0, 0], [10, 20], [30, 25], [63, 40], [5, 63]]) expect(at(r, c), `${r},${c}`).toBe(win(m(c * 64 + r)));
  });

  it('a descriptor or data that disagrees is a 422 naming the attribute', async () => {
    const golden = JSON.parse(readFileSync(join(DICOM_FIXTURES, 'decoded.json'), 'utf8')) as { made: { name: string; refused?: { status: number; code: string; message: string } }[] };
    const refused = (name: string) => golden.made.find((m) => m.name === name)?.refused;
    expect(refused('lut-voi-bits-17')).toEqual({ status: 422, code: 'corrupt_image', message: "DICOM's LUT Descriptor (0028,3002) in the VOI LUT Sequence (0028,3010) gives 17 bits per entry; it is 8 to 16" });
    expect(refused('lut-modality-sequence-empty')?.message).toBe("DICOM's Modality LUT Sequence (0028,3000) has no item");
    expect(refused('lut-voi-data-of-65537-entries')?.message).toMatch(/LUT Data \(0028,3006\) .* more than 65536 entries/);
    expect(refused('lut-voi-data-longer-than-its-descriptor')?.message).toMatch(/LUT Data \(0028,3006\) .* is 10 bytes; its LUT Descriptor \(0028,3002\) declares 4 entries/);
    expect(refused('lut-voi-data-runs-past-its-item')?.message).toMatch(/LUT Data \(0028,3006\) in the first item of the VOI LUT Sequence \(0028,3010\) runs to byte \d+, past the item's end/);
    expect(refused('lut-enhanced-per-frame-lut-empty-frame-1')?.message).toBe("DICOM's VOI LUT Sequence (0028,3010) in frame 1's item of the Per-frame Functional Groups Sequence (5200,9230) has no item");
  });
});

describe('DICOM metadata for ingest', () => {
  it.each(['grey8-explicit', 'grey8-implicit', 'grey8-rle', 'grey8-deflated'])('%s gives modality, body part and the three UIDs, nothing else', async (name) => {
    expect(await dicomMetadata(fixture(name))).toEqual({
      modality: 'CR', body_part: 'HAND', study_uid: DICOM_STUDY_UID, series_uid: '1.2.826.0.1.3680043.10.1410.3.1', sop_uid: '1.2.826.0.1.3680043.10.1410.1.1',
    });
  });

  it('leaves out a malformed UID or code string instead of failing the item', async () => {
    const file = part10(concatBytes([
      element(0x0008, 0x0060, 'CS', new TextEncoder().encode('MR')),
      element(0x0018, 0x0015, 'CS', new TextEncoder().encode('C^R ')),
      element(0x0020, 0x000d, 'UI', new TextEncoder().encode('not.a.uid')),
      element(0x7fe0, 0x0010, 'OB', new Uint8Array(0)),
    ]));
    expect(await dicomMetadata(file)).toEqual({ modality: 'MR' });
  });

  it('leaves out a UID over 64 characters, not its first 64 (two such instances would share one id under --dicom); keeps one of 64, padded', async () => {
    const uid = (n: number) => `1.2.${'3'.repeat(n - 4)}`;
    const file = (sop: string) => part10(concatBytes([
      element(0x0008, 0x0018, 'UI', new TextEncoder().encode(sop)),
      element(0x0020, 0x000d, 'UI', new TextEncoder().encode(`${uid(64)}\0\0`)),
      element(0x7fe0, 0x0010, 'OB', new Uint8Array(0)),
    ]));
    expect(await dicomMetadata(file(`${uid(65)}\0`))).toEqual({ study_uid: uid(64) });
    expect(await dicomMetadata(file(`${uid(64)}${'0'.repeat(200)}`))).toEqual({ study_uid: uid(64) });
    expect(await dicomMetadata(file(uid(64)))).toEqual({ study_uid: uid(64), sop_uid: uid(64) });
  });
});

/** One image, uncompressed and as RLE Lossless (by the test side's encoder), from the same raw samples. */
function twins(rows: number, columns: number, raw: Uint8Array, o: Parameters<typeof pixelModule>[2] = {}): [Uint8Array, Uint8Array] {
  const head = pixelModule(rows, columns, o);
  const frame = rleFrame(raw, { samples: o.samples ?? 1, bytes: (o.bits ?? 8) / 8, columns, planar: o.planar ?? 0 });
  return [part10(concatBytes([head, element(0x7fe0, 0x0010, 'OB', raw)])), part10(concatBytes([head, encapsulatedPixelData([frame])]), RLE)];
}

/** A 2 x 3 8-bit grey RLE file (16-bit with `bits`) of a hand-made frame: the header's segment count and offsets, then the segments. */
function rleFile(segments: number[][], o: { count?: number; offsets?: number[]; bits?: number } = {}): Uint8Array {
  const header = new DataView(new ArrayBuffer(64));
  header.setUint32(0, o.count ?? segments.length, true);
  (o.offsets ?? segments.map((_, k) => 64 + segments.slice(0, k).reduce((n, x) => n + x.length, 0))).forEach((at, k) => header.setUint32(4 + 4 * k, at, true));
  const frame = concatBytes([new Uint8Array(header.buffer), ...segments.map((x) => Uint8Array.from(x))]);
  return part10(concatBytes([pixelModule(2, 3, { bits: o.bits }), encapsulatedPixelData([frame])]), RLE);
}

describe('compressed DICOM: RLE Lossless and JPEG Baseline', () => {
  it.each([['grey8-rle', 'grey8-explicit'], ['ct16-window-rle', 'ct16-window'], ['rgb8-rle', 'rgb8-explicit']])(
    'an RLE file by DCMTK (%s) decodes to exactly the pixels of the one it was made from', async (rle, plain) => {
      const [a, b] = [await decodeImage(fixture(rle), 'application/dicom'), await decodeImage(fixture(plain), 'application/dicom')];
      expect({ ...a, data: null }).toEqual({ ...b, data: null });
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    },
  );

  it('RLE by the test encoder equals the uncompressed file: 16-bit signed through a window, 12 bits stored, MONOCHROME1, RGB in either planar configuration', async () => {
    const rnd = seededRandom(20261130).int;
    const bytes = (n: number, f: () => number) => Uint8Array.from({ length: n }, f);
    const window = [element(0x0028, 0x1050, 'DS', cs('40')), element(0x0028, 0x1051, 'DS', cs('400')), element(0x0028, 0x1052, 'DS', cs('-1024'))];
    // runs (long and short) among noise, so both kinds of PackBits run occur in every segment
    const runny = (n: number) => { let v = 0; return bytes(n, () => (rnd(4) === 0 ? (v = rnd(256)) : v)); };
    const cases: [string, Uint8Array, Uint8Array][] = [
      ['16-bit window', ...twins(37, 53, runny(37 * 53 * 2), { bits: 16, signed: true, extra: window })],
      ['16-bit noise', ...twins(5, 300, bytes(5 * 300 * 2, () => rnd(256)), { bits: 16 })],
      ['8-bit MONOCHROME1', ...twins(9, 200, runny(9 * 200), { photometric: 'MONOCHROME1' })],
      ['RGB planar 0', ...twins(11, 13, runny(11 * 13 * 3), { samples: 3, photometric: 'RGB', planar: 0 })],
      ['RGB planar 1', ...twins(11, 13, runny(11 * 13 * 3), { samples: 3, photometric: 'RGB', planar: 1 })],
      ['12 of 16 bits stored, junk above', ...twins(3, 40, bytes(3 * 40 * 2, () => rnd(256)), { bits: 16, stored: 12, signed: true })],
      ['constant 256 x 256', ...twins(256, 256, new Uint8Array(256 * 256).fill(200))],
    ];
    for (const [name, plain, rle] of cases) {
      const [a, b] = [await decodeImage(plain, 'application/dicom'), await decodeImage(rle, 'application/dicom')];
      expect(b.data.length, name).toBe(a.data.length);
      expect(Buffer.from(b.data).equals(Buffer.from(a.data)), name).toBe(true);
    }
    // the encoder compresses (runs are replicated), so the decoder's run handling is what is tested
    expect(cases[cases.length - 1][2].length).toBeLessThan(2000);
  });

  it('JPEG Baseline: img2dcm\'s grey file decodes as the JPEG it holds, to the pixels of grey8-explicit', async () => {
    const file = fixture('grey8-jpeg-baseline');
    const [jpegBytes] = dicomFragments(file);
    const [fromDicom, fromJpeg, plain] = [await decodeImage(file, 'application/dicom'), await decodeImage(jpegBytes, 'image/jpeg'), await decodeImage(fixture('grey8-explicit'))];
    expect(fromDicom).toMatchObject({ width: 64, height: 64, channels: 1, bitDepth: 8 });
    expect(Buffer.from(fromDicom.data).equals(Buffer.from(fromJpeg.data))).toBe(true);
    expect(Buffer.from(fromDicom.data).equals(Buffer.from(plain.data))).toBe(true);
  });

  it('JPEG Baseline in colour (dcmcjpeg, YBR_FULL_422): RGB as its JPEG decodes, close to the tile it was compressed from', async () => {
    const file = fixture('rgb8-jpeg-baseline');
    const img = await decodeImage(file, 'application/dicom');
    expect(img).toMatchObject({ width: 32, height: 32, channels: 3, bitDepth: 8 });
    expect(Buffer.from(img.data).equals(Buffer.from((await decodeImage(dicomFragments(file)[0], 'image/jpeg')).data))).toBe(true);
    const tile = await decodeImage(fixture('rgb8-explicit'));
    let error = 0;
    for (let r = 0; r < 32; r++) for (let i = 0; i < 96; i++) error += Math.abs(img.data[r * 96 + i] - tile.data[r * 150 * 3 + i]);
    // lossy, but the colours are converted back: left in YCbCr, the mean error would be tens of levels
    expect(error / (32 * 96)).toBeLessThan(6);
  });

  it('JPEG Baseline samples take the uncompressed path: MONOCHROME1 inverts them, a window maps them', async () => {
    const [jpegBytes] = dicomFragments(fixture('grey8-jpeg-baseline'));
    const plain = await decodeImage(fixture('grey8-explicit'));
    const file = (photometric: string, extra: Uint8Array[] = []) =>
      part10(concatBytes([pixelModule(64, 64, { photometric, extra }), encapsulatedPixelData([jpegBytes], new Uint8Array(4))]), '1.2.840.10008.1.2.4.50');
    expect([...(await decodeImage(file('MONOCHROME1'))).data]).toEqual([...plain.data].map((v) => 255 - v));
    const windowed = await decodeImage(file('MONOCHROME2', [element(0x0028, 0x1050, 'DS', cs('128')), element(0x0028, 0x1051, 'DS', cs('2'))]));
    // a window 2 wide at 128: below black, above white
    expect([...windowed.data]).toEqual([...plain.data].map((v) => (v <= 127 ? 0 : 255)));
  });

  it.each([
    ['a literal run past its segment\'s end', rleFile([[0x05, 1, 2, 3], [0xfb, 9]], { bits: 16 }), /RLE segment 1 of 2 runs past its end: the run at byte 0 needs 6 byte\(s\), 3 are left/],
    ['a run writing past the image', rleFile([[0xf9, 7]]), /RLE segment 1 of 1 writes past the image: the run at byte 0 writes 8 bytes at 0 of 6/],
    ['a segment that stops short', rleFile([[0x02, 1, 2, 3]]), /RLE segment 1 of 1 stops short: it decodes to 3 bytes of the 6 the image needs/],
    ['16 segments', rleFile([[0xfb, 9]], { count: 16 }), /RLE header declares 16 segment\(s\); it holds 1 to 15/],
    ['a segment count the image does not have', rleFile([[0xfb, 9]], { bits: 16 }), /declares 1 segment\(s\); 1 sample\(s\) of 16 bits need 2/],
    ['offsets out of order', rleFile([[0xfb, 9], [0xfb, 8]], { offsets: [64, 40], bits: 16 }), /RLE segment offsets are out of order: segment 2 at byte 40, segment 1 at 64/],
    ['an offset past the frame', rleFile([[0xfb, 9], [0xfb, 8]], { offsets: [64, 1000], bits: 16 }), /RLE segment 2 starts at byte 1000, past the frame's 68 bytes/],
    ['a first offset other than 64', rleFile([[0, 0, 0, 0, 0xfb, 9]], { offsets: [68] }), /RLE segment 1 starts at byte 68; it follows the 64-byte header/],
    ['no Sequence Delimitation Item', rleFile([[0xfb, 9]]).subarray(0, -8), /encapsulated pixel data is truncated: no Sequence Delimitation Item/],
    ['a Basic Offset Table of two frames', part10(concatBytes([pixelModule(2, 3), encapsulatedPixelData([new Uint8Array(66)], new Uint8Array(8))]), RLE), /Basic Offset Table is 8 bytes, though the file has one frame/],
    ['no fragment', part10(concatBytes([pixelModule(2, 3), encapsulatedPixelData([])]), RLE), /has no fragment: the frame is missing/],
  ])('an RLE file with %s -> 422 naming it', async (_, file, message) => {
    const e = await refusal(decodeImage(file, 'application/dicom'));
    expect([e.status, e.code]).toEqual([422, 'corrupt_image']);
    expect(e.message).toMatch(message);
  });

  it('the size limits come first: a compressed file declaring 20000 x 20000 is the uncompressed one\'s 413, whatever its frame holds', async () => {
    const uncompressed = await refusal(decodeImage(part10(concatBytes([pixelModule(20000, 20000), element(0x7fe0, 0x0010, 'OB', new Uint8Array(4))]))));
    expect([uncompressed.status, uncompressed.message]).toEqual([413, 'image is 20000x20000; width and height may be at most 4096']);
    const garbage = new Uint8Array(8).fill(0xff);
    for (const syntax of [RLE, '1.2.840.10008.1.2.4.50']) {
      const e = await refusal(decodeImage(part10(concatBytes([pixelModule(20000, 20000), encapsulatedPixelData([garbage])]), syntax)));
      expect([e.status, e.code, e.message]).toEqual([413, 'image_too_large', uncompressed.message]);
    }
    // a good RLE frame under the caller's tighter limits: refused before it is decompressed
    const [, rle] = twins(256, 256, new Uint8Array(256 * 256).fill(200));
    const tight = await refusal(decodeImage(rle, 'application/dicom', { ...DEFAULT_LIMITS, maxPixels: 10_000 }));
    expect([tight.status, tight.message]).toEqual([413, 'image is 256x256 = 65536 pixels; at most 10000']);
  });
});

describe('JPEG-LS (CharLS)', () => {
  const JPEG_LS = '1.2.840.10008.1.2.4.80';

  it.each([['grey8-jpeg-ls', 'grey8-explicit'], ['ct16-window-jpeg-ls', 'ct16-window'], ['ct12-garbage-nowindow-jpeg-ls', 'ct12-garbage-nowindow'],
    ['rgb8-corner-jpeg-ls', 'rgb8-corner-explicit'], ['rgb8-corner-jpeg-ls-planes', 'rgb8-corner-explicit']])(
    'a lossless file by dcmcjpls (%s) decodes to exactly the pixels of the one it was made from', async (jls, plain) => {
      const [a, b] = [await decodeImage(fixture(jls), 'application/dicom'), await decodeImage(fixture(plain), 'application/dicom')];
      expect({ ...a, data: null }).toEqual({ ...b, data: null });
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    },
  );

  it('near-lossless (1.2.840.10008.1.2.4.81, NEAR 2): within 2 grey levels of the hand it was made from, and not equal to it', async () => {
    const [a, b] = [await decodeImage(fixture('grey8-jpeg-ls-near')), await decodeImage(fixture('grey8-explicit'))];
    expect(Math.max(...a.data.map((v, i) => Math.abs(v - b.data[i])))).toBe(2);
  });

  it('a bad frame leaves CharLS usable: truncated, garbage, then a good frame, twice over', async () => {
    const { good, frame, broken } = oneFrame('ct16-window-jpeg-ls');
    const want = await decodeImage(fixture('ct16-window'));
    for (let round = 0; round < 2; round++) {
      const truncated = await refusal(decodeImage(broken(frame.subarray(0, frame.length >> 1))));
      expect([truncated.status, truncated.code, truncated.message]).toEqual([422, 'corrupt_image', expect.stringMatching(/^DICOM JPEG-LS Lossless frame could not be decoded: /)]);
      const garbage = frame.slice();
      garbage.fill(0xff, 40, 200);
      expect((await refusal(decodeImage(broken(garbage)))).status).toBe(422);
      expect(Buffer.from((await decodeImage(good)).data).equals(Buffer.from(want.data))).toBe(true);
    }
  });

  it('the frame header must agree with the DICOM header before CharLS sees the frame: a 65535 x 65535 SOF55 under a 64 x 64 header is a 422 naming both', async () => {
    const { frame, broken } = oneFrame('ct16-window-jpeg-ls');
    const huge = frame.slice();
    huge.set([0xff, 0xff, 0xff, 0xff], 7);
    const e = await refusal(decodeImage(broken(huge)));
    expect([e.status, e.message]).toEqual([422, 'DICOM JPEG-LS Lossless frame is 65535x65535; the header says 64x64']);
    const bad = await refusal(decodeImage(part10(concatBytes([pixelModule(2, 3), encapsulatedPixelData([new Uint8Array(8)])]), JPEG_LS)));
    expect([bad.status, bad.message]).toEqual([422, 'DICOM JPEG-LS Lossless frame is not a JPEG-LS stream (starts with 00 00 00 00)']);
  });

  it('the codecs\' Emscripten glue is imported on a first frame, not with the module: a bundle of the API app (what the Worker carries, decoding nothing) holds none of it, the browser SDK\'s both', async () => {
    // a line of every Emscripten glue (onnxruntime-web's too, in the SDK)
    const glue = (js: Uint8Array) => new TextDecoder().decode(js).split('instantiateWasm callback failed').length - 1;
    expect(glue(await bundle(join(import.meta.dirname, '..', '..', 'functions', 'api', 'app.ts')))).toBe(0);
    expect(glue(await bundle(ENTRIES['medhash-sdk.js']))).toBe(3);
  });

  it('the codec loader: a C++ exception keeps the instance, a trap drops it for a fresh one', async () => {
    const empty = await WebAssembly.compile(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    let made = 0;
    const factory = (o: Record<string, unknown>) => new Promise<{ n: number; getExceptionMessage: (e: number) => string }>((resolve) => {
      (o.instantiateWasm as (i: WebAssembly.Imports, r: (x: WebAssembly.Instance) => void) => unknown)({}, () => resolve({ n: ++made, getExceptionMessage: (e) => `exception ${e}` }));
    });
    const codec = new EmscriptenCodec(async () => factory, empty);
    const failure = (f: (m: { n: number }) => never) => codec.run(f).then(() => 'ran', (e: Error) => e.message);
    expect(await failure(() => { throw 1234; })).toBe('exception 1234');
    expect(await codec.run((m) => m.n)).toBe(1);
    expect(await failure(() => { throw new WebAssembly.RuntimeError('unreachable'); })).toBe('unreachable');
    expect(await codec.run((m) => m.n)).toBe(2);
  });

  it('a codec given a loader of its module calls it on the first frame, again after a failed load, never after a good one (a trap included)', async () => {
    const empty = await WebAssembly.compile(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    const factory = (o: Record<string, unknown>) => new Promise<object>((resolve) => {
      (o.instantiateWasm as (i: WebAssembly.Imports, r: (x: WebAssembly.Instance) => void) => unknown)({}, () => resolve({}));
    });
    let loads = 0;
    const codec = new EmscriptenCodec(async () => factory, async () => {
      if (loads++ === 0) throw new Error('https://example.test/sdk/charlswasm_decode.wasm: HTTP 404');
      return empty;
    });
    expect(loads).toBe(0);
    expect(await codec.run(() => 'ran').catch((e: Error) => e.message)).toBe('https://example.test/sdk/charlswasm_decode.wasm: HTTP 404');
    expect(await Promise.all([codec.run(() => 'ran'), codec.run(() => 'ran')])).toEqual(['ran', 'ran']);
    await codec.run(() => { throw new WebAssembly.RuntimeError('unreachable'); }).catch(() => {});
    expect(await codec.run(() => 'ran')).toBe('ran');
    expect(loads).toBe(2);
  });
});

describe('JPEG 2000 (OpenJPEG)', () => {
  it.each([['grey8-jpeg2000-lossless', 'grey8-explicit'], ['ct16-window-jpeg2000-lossless', 'ct16-window'], ['ct12-garbage-nowindow-jpeg2000-lossless', 'ct12-garbage-nowindow'],
    ['rgb8-corner-jpeg2000-lossless', 'rgb8-corner-explicit'], ['rgb8-corner-jpeg2000-lossless-rct', 'rgb8-corner-explicit']])(
    'a reversible codestream by opj_compress (%s) decodes to exactly the pixels of the one it was made from', async (j2k, plain) => {
      const [a, b] = [await decodeImage(fixture(j2k), 'application/dicom'), await decodeImage(fixture(plain), 'application/dicom')];
      expect({ ...a, data: null }).toEqual({ ...b, data: null });
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    },
  );

  // left in YCbCr, or with the wrong sign or shift, the mean error would be tens of levels
  it.each([['grey8-jpeg2000-lossy', 'grey8-explicit', 10], ['rgb8-corner-jpeg2000-lossy-ict', 'rgb8-corner-explicit', 10]])(
    'an irreversible one at 1:8 (%s, 1.2.840.10008.1.2.4.91) is close to %s: mean error under %s levels', async (j2k, plain, bound) => {
      const [a, b] = [await decodeImage(fixture(j2k)), await decodeImage(fixture(plain))];
      expect(a.data.length).toBe(b.data.length);
      const error = a.data.reduce((n, v, i) => n + Math.abs(v - b.data[i]), 0) / a.data.length;
      expect(error).toBeGreaterThan(0);
      expect(error).toBeLessThan(bound as number);
    },
  );

  it('signed samples of 8 bits or fewer keep their sign (the build would clamp them at 0): as 8 and 16 bits allocated, the uncompressed file of the same samples', async () => {
    // grey8's reversible codestream with Ssiz's sign bit set holds exactly its samples less 128
    const plain = fixture('grey8-explicit');
    const samples = plain.subarray(Buffer.from(plain).lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00])) + 12);
    expect(samples.length).toBe(64 * 64);
    const [frame] = dicomFragments(fixture('grey8-jpeg2000-lossless'));
    const signedFrame = frame.slice();
    signedFrame[42] |= 0x80;
    const less128 = samples.map((v) => v - 128);
    expect(less128.some((v) => v >= 128)).toBe(true);
    for (const bits of [8, 16]) {
      const head = pixelModule(64, 64, { bits, stored: 8, signed: true });
      const raw = bits === 8 ? less128 : new Uint8Array(Int16Array.from(samples, (v) => v - 128).buffer);
      const [a, b] = [
        await decodeImage(part10(concatBytes([head, encapsulatedPixelData([signedFrame])]), '1.2.840.10008.1.2.4.90')),
        await decodeImage(part10(concatBytes([head, element(0x7fe0, 0x0010, 'OB', raw)]))),
      ];
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    }
  });

  it('a bad codestream leaves OpenJPEG usable: 33 decomposition levels, garbage tile data, then a good frame, twice over', async () => {
    // ct16's codestream: COD at 45 (its decomposition levels at 54), one tile-part from 119 (its data from 133) to the EOC at 239
    const { good, frame, broken } = oneFrame('ct16-window-jpeg2000-lossless');
    const want = await decodeImage(fixture('ct16-window'));
    for (let round = 0; round < 2; round++) {
      const levels = frame.slice();
      levels[54] = 33;
      const bad = await refusal(decodeImage(broken(levels)));
      expect([bad.status, bad.code, bad.message]).toEqual([422, 'corrupt_image', expect.stringMatching(/^DICOM JPEG 2000 Lossless frame could not be decoded: /)]);
      const garbage = frame.slice();
      garbage.fill(0xff, 140, 230);
      const out = await decodeImage(broken(garbage)).then((img) => img.data.length, (e: MedhashError) => e.status);
      expect([422, 64 * 64]).toContain(out);
      expect(Buffer.from((await decodeImage(good)).data).equals(Buffer.from(want.data))).toBe(true);
    }
  });

  it('the SIZ segment must agree with the DICOM header before OpenJPEG sees the codestream: size, sign, tiles', async () => {
    const { frame, broken } = oneFrame('ct16-window-jpeg2000-lossless');
    const withSiz = (edits: [number, number[]][]) => {
      const f = frame.slice();
      for (const [at, bytes] of edits) f.set(bytes, at);
      return broken(f);
    };
    const huge = await refusal(decodeImage(withSiz([[8, [0, 0, 0x40, 0]], [12, [0, 0, 0x40, 0]], [24, [0, 0, 0x40, 0]], [28, [0, 0, 0x40, 0]]])));
    expect([huge.status, huge.message]).toEqual([422, 'DICOM JPEG 2000 Lossless frame is 16384x16384; the header says 64x64']);
    const unsigned = await refusal(decodeImage(withSiz([[42, [0x0f]]])));
    expect(unsigned.message).toBe("DICOM JPEG 2000 Lossless frame has unsigned samples; the header's Pixel Representation (0028,0103) says signed");
    const tiles = await refusal(decodeImage(withSiz([[24, [0, 0, 0, 0]], [28, [0, 0, 0, 0]]])));
    expect(tiles.message).toBe('DICOM JPEG 2000 Lossless frame declares tiles of 0x0');
    // this build reads a tile side of 2^31, Debian's OpenJPEG (Pillow's, in Python) refuses it: refused alike
    const wide = await refusal(decodeImage(withSiz([[24, [0x80, 0, 0, 0]]])));
    expect(wide.message).toBe('DICOM JPEG 2000 Lossless frame declares tiles of 2147483648x64; a side may be at most 2147483647');
    expect((await decodeImage(withSiz([[24, [0x7f, 0xff, 0xff, 0xff]]]))).width).toBe(64);
  });
});

describe('Deflated Explicit VR Little Endian', () => {
  it('DCMTK\'s deflated file (dcmconv +td) decodes to the pixels of its explicit twin', async () => {
    expect((await decodeImage(fixture('grey8-deflated'), 'application/dicom')).data).toEqual((await decodeImage(fixture('grey8-explicit'), 'application/dicom')).data);
  });

  it('a deflate bomb (8 MiB inflating to 8 GiB) is a 413 naming the cap, stopped there, not inflated whole', async () => {
    const meta = fixture('grey8-deflated').subarray(0, 322);
    const zeros = DEFAULT_LIMITS.maxBytes - meta.length - 64;
    const bomb = concatBytes([meta, Buffer.from(DEFLATE_BOMB.head, 'hex'), new Uint8Array(zeros), Buffer.from(DEFLATE_BOMB.tail, 'hex')]);
    for (const run of [() => decodeImage(bomb, 'application/dicom'), () => dicomMetadata(bomb), () => dicomFrameCount(bomb)]) {
      const e = await refusal(run());
      expect([e.status, e.code, e.message]).toEqual([413, 'image_too_large', `DICOM's deflated data set inflates to more than ${MAX_INFLATED_BYTES} bytes (32 MiB), the most a deflated file may hold`]);
    }
  });

  it('a deflated file may inflate to as much as an uncompressed file may have: 32 MiB for the service, the local file limit for medhash index', async () => {
    // five 16-bit 2048 x 2048 frames, 40 MiB of pixels, deflated to a few hundred KiB
    const side = 2048;
    const raw = new Uint8Array(5 * side * side * 2);
    for (let k = 0; k < 5; k++) for (let i = 0; i < side * side; i += 97) raw[(k * side * side + i) * 2 + 1] = (i >> 13) + k;
    const plain = concatBytes([pixelModule(side, side, { bits: 16, extra: [element(0x0028, 0x0008, 'IS', cs('5'))] }), element(0x7fe0, 0x0010, 'OW', raw)]);
    const deflated = part10(new Uint8Array(deflateRawSync(plain)), '1.2.840.10008.1.2.1.99');
    expect(deflated.length).toBeLessThan(DEFAULT_LIMITS.maxBytes);
    const e = await refusal(decodeImage(deflated, 'application/dicom', DEFAULT_LIMITS, { frame: 4 }));
    expect([e.status, e.message]).toEqual([413, `DICOM's deflated data set inflates to more than ${MAX_INFLATED_BYTES} bytes (32 MiB), the most a deflated file may hold`]);
    expect(inflatedCap(LOCAL_DICOM_LIMITS.maxBytes)).toBe(LOCAL_MAX_INFLATED);
    expect(LOCAL_MAX_INFLATED).toBe(LOCAL_FILE_MAX_BYTES);
    const got = await decodeImage(deflated, 'application/dicom', LOCAL_DICOM_LIMITS, { frame: 4 });
    // Buffer.equals: toEqual walks 8 MiB a value at a time
    expect(Buffer.from(got.data).equals((await decodeImage(part10(plain), 'application/dicom', LOCAL_DICOM_LIMITS, { frame: 4 })).data)).toBe(true);
    expect(await dicomFrameCount(deflated, LOCAL_MAX_INFLATED)).toBe(5);
  });

  it('a DEFLATE stream cut short, or none, is a 422 naming it', async () => {
    const file = fixture('grey8-deflated');
    for (const bytes of [file.subarray(0, file.length - 10), file.subarray(0, 322)]) {
      const e = await refusal(decodeImage(bytes, 'application/dicom'));
      expect([e.status, e.code, e.message]).toEqual([422, 'corrupt_image', "DICOM's deflated data set (from byte 322) is not a whole DEFLATE stream: it is corrupt or cut short"]);
    }
  });
});

describe('JPEG Extended (1.2.840.10008.1.2.4.51)', () => {
  it('8-bit frames (dcmcjpeg +ee, SOF1) decode through the JPEG path to what dcmdjpeg decodes them to, grey and YBR_FULL_422 colour', async () => {
    for (const [extended, dcmdjpeg] of [['grey8-jpeg-extended', 'grey8-extended-dcmdjpeg'], ['rgb8-corner-jpeg-extended', 'rgb8-corner-extended-dcmdjpeg']]) {
      const got = await decodeImage(fixture(extended), 'application/dicom');
      const want = await decodeImage(fixture(dcmdjpeg), 'application/dicom');
      expect([got.width, got.height, got.channels]).toEqual([want.width, want.height, want.channels]);
      expect(Math.max(...got.data.map((v, i) => Math.abs(v - want.data[i]))), extended).toBeLessThanOrEqual(1);
    }
  });

  it('12-bit frames are a 415 naming them and the fix', async () => {
    const e = await refusal(decodeImage(fixture('ct12-garbage-nowindow-jpeg-extended'), 'application/dicom'));
    expect([e.status, e.code, e.message]).toEqual([415, 'unsupported_image_type', 'DICOM JPEG Extended with 12-bit samples is not supported: decompress it (dcmdjpeg in.dcm out.dcm) or send it in JPEG Lossless; 8-bit JPEG Extended is read']);
  });
});

describe('refused DICOM', () => {
  it('grey8-bigendian -> 415 naming its transfer syntax and what to send', async () => {
    const e = await refusal(decodeImage(fixture('grey8-bigendian'), 'application/dicom'));
    expect([e.status, e.code]).toEqual([415, 'unsupported_image_type']);
    expect(e.message).toContain('1.2.840.10008.1.2.2 (Explicit VR Big Endian)');
    expect(e.message).toMatch(/send the file uncompressed, in Explicit \(deflated or not\) or Implicit VR Little Endian .* or in RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000$/);
  });

  it.each([
    ['1.2.840.10008.1.2.4.100', 'an unsupported transfer syntax'],
  ])('the other compressions stay refused: %s (%s) -> 415', async (syntax, name) => {
    const e = await refusal(decodeImage(part10(concatBytes([pixelModule(2, 3), encapsulatedPixelData([new Uint8Array(8)])]), syntax)));
    expect([e.status, e.message]).toEqual([415, expect.stringContaining(`${syntax} (${name}) is not supported`)]);
  });


  it('a multi-frame file without a frame -> 415 naming `frame` and the range', async () => {
    const e = await refusal(decodeImage(fixture('grey8-two-frames')));
    expect([e.status, e.code, e.message]).toEqual([415, 'unsupported_image_type', 'DICOM has 2 frames: choose one with `frame` (0 to 1)']);
  });

  it('frame k of a multi-frame file is the single-frame file of the same samples (uncompressed, RLE, JPEG Lossless; table or none; fragments)', async () => {
    const plain = fixture('grey8-frames3');
    const samples = plain.subarray(plain.length - 3 * 64 * 64);
    for (const k of [0, 1, 2]) {
      const alone = part10(concatBytes([pixelModule(64, 64), element(0x7fe0, 0x0010, 'OB', samples.subarray(k * 4096, (k + 1) * 4096))]));
      const want = (await decodeImage(alone, 'application/dicom')).data;
      for (const name of ['grey8-frames3', 'grey8-frames3-rle', 'grey8-frames3-rle-nobot', 'grey8-frames3-jpeg-lossless-sv1', 'grey8-frames3-jpeg-lossless-sv1-fs1', 'grey8-frames3-jpeg-lossless-sv1-fs1-nobot']) {
        expect((await decodeImage(fixture(name), 'application/dicom', DEFAULT_LIMITS, { frame: k })).data, `${name} frame ${k}`).toEqual(want);
      }
    }
  });

  it('frame k of an enhanced multi-frame file takes its rescale and window from the functional groups: the pixels of its classic twin, values at the top level', async () => {
    for (const family of ['ct16-enhanced-frames3', 'ct16-enhanced-shared-frames3']) {
      for (const k of [0, 1, 2]) {
        const want = (await decodeImage(fixture(`${family}-twin${k}`), 'application/dicom')).data;
        expect((await decodeImage(fixture(family), 'application/dicom', DEFAULT_LIMITS, { frame: k })).data, `${family} frame ${k}`).toEqual(want);
      }
    }
    // one item a frame in the Per-frame Functional Groups Sequence, whatever the frame asked for
    for (const frame of [0, 2, undefined]) {
      const e = await refusal(decodeImage(fixture('ct16-enhanced-frames3-items2'), 'application/dicom', DEFAULT_LIMITS, { frame }));
      expect([e.status, e.code, e.message]).toEqual([422, 'corrupt_image', "DICOM's Per-frame Functional Groups Sequence (5200,9230) has 2 items; Number of Frames (0028,0008) is 3 (one item a frame)"]);
    }
    await expect(dicomFrameCount(fixture('ct16-enhanced-frames3-items2'))).rejects.toThrow(/has 2 items/);
  });

  it('dicomFrameCount: Number of Frames from the header alone, refused as decoding refuses the header', async () => {
    for (const [name, frames] of Object.entries(DICOM_MULTI_FRAME)) expect(await dicomFrameCount(fixture(name.replace(/\.dcm$/, ''))), name).toBe(frames);
    expect(await dicomFrameCount(fixture('grey8-explicit'))).toBe(1);
    expect(await dicomFrameCount(fixture('grey8-deflated'))).toBe(1);
    // no pixel is read: a file cut short inside its pixel data, which decoding refuses, still counts
    const cut = fixture('grey8-frames3').slice(0, -4096);
    expect(await dicomFrameCount(cut)).toBe(3);
    expect((await refusal(decodeImage(cut, 'application/dicom', DEFAULT_LIMITS, { frame: 0 }))).status).toBe(422);
    const e = await refusal(dicomFrameCount(fixture('grey8-bigendian')));
    expect([e.status, e.message]).toEqual([415, expect.stringContaining('Explicit VR Big Endian')]);
  });

  it('dicomWholeFrameCount: Number of Frames of a file whose pixel data holds every frame; a file cut short is refused as decoding its last frame is', async () => {
    for (const [name, frames] of Object.entries(DICOM_MULTI_FRAME)) expect(await dicomWholeFrameCount(fixture(name.replace(/\.dcm$/, ''))), name).toBe(frames);
    expect(await dicomWholeFrameCount(fixture('grey8-deflated'))).toBe(1);
    // cut inside the last frame: native, RLE without a Basic Offset Table, JPEG-LS with one
    for (const name of ['grey8-frames3', 'grey8-frames3-rle-nobot', 'ct16-window-frames3-jpeg-ls']) {
      const cut = fixture(name).slice(0, -64);
      expect(await dicomFrameCount(cut), name).toBe(3);
      const e = await refusal(dicomWholeFrameCount(cut));
      const last = await refusal(decodeImage(cut, 'application/dicom', DEFAULT_LIMITS, { frame: 2 }));
      expect([e.status, e.code, e.message], name).toEqual([422, 'corrupt_image', last.message]);
      expect(e.message, name).toMatch(/truncated/);
    }
  });

  it('a frame out of range -> 422 naming `frame` and the count; a PNG or JPEG is one frame', async () => {
    const e = await refusal(decodeImage(fixture('grey8-frames3-rle'), 'application/dicom', DEFAULT_LIMITS, { frame: 3 }));
    expect([e.status, e.code, e.field, e.message]).toEqual([422, 'frame_out_of_range', 'frame', 'frame 3 is out of range: the image has 3 frames (0 to 2)']);
    const png = await jpeg(DICOM_SOURCES.grey);
    expect((await decodeImage(png, 'image/jpeg', DEFAULT_LIMITS, { frame: 0 })).width).toBe(64);
    const one = await refusal(decodeImage(png, 'image/jpeg', DEFAULT_LIMITS, { frame: 1 }));
    expect([one.status, one.field, one.message]).toEqual([422, 'frame', 'frame 1 is out of range: the image has 1 frame (0 to 0)']);
  });

  it.each([-1, 1.5, Number.NaN, 2 ** 53])('a malformed frame (%s) -> 400 naming it, before the bytes are read', async (frame) => {
    const e = await refusal(decodeImage(new Uint8Array(0), 'application/dicom', DEFAULT_LIMITS, { frame }));
    expect([e.status, e.code, e.field]).toEqual([400, 'invalid_field', 'frame']);
  });

  it('a hostile frame table costs one pass: 800,000 two-byte fragments for 3 frames -> a quick 422', async () => {
    const frames = element(0x0028, 0x0008, 'IS', cs('3'));
    const item = new Uint8Array([0xfe, 0xff, 0x00, 0xe0, 2, 0, 0, 0, 0, 0]);
    const many = new Uint8Array(item.length * 800_000);
    for (let at = 0; at < many.length; at += item.length) many.set(item, at);
    const head = new Uint8Array([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0x00, 0xe0, 0, 0, 0, 0]);
    const file = part10(concatBytes([pixelModule(2, 3, { extra: [frames] }), head, many, new Uint8Array([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0])]), '1.2.840.10008.1.2.4.70');
    const started = performance.now();
    const e = await refusal(decodeImage(file, 'application/dicom', DEFAULT_LIMITS, { frame: 1 }));
    expect(performance.now() - started).toBeLessThan(2000);
    expect([e.status, e.message]).toEqual([422, 'DICOM encapsulated pixel data has 800000 fragments for 3 frames and no Basic Offset Table, and its fragments end 0 JPEG streams (EOI), then more fragments']);
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

  it('a DICOM without Pixel Data, and a DICOMDIR however many records it has, are NotAnImage: the 422 the service gives, a kind medhash index --dicom skips', async () => {
    const report = part10(concatBytes([element(0x0008, 0x0060, 'CS', cs('SR')), element(0x0040, 0xa040, 'CS', cs('CONTAINER'))]));
    // a media of 20,000 files, its records of undefined length: 80,000 elements, past MAX_ELEMENTS
    const dir = dicomDir(Array.from({ length: 20_000 }, (_, i) => `DICOM\\PA000001\\ST000001\\SE000001\\IM${String(i).padStart(6, '0')}`), { undefinedLength: true });
    for (const file of [report, dir, dicomDir([])]) {
      const e = await refusal(decodeImage(file, 'application/dicom'));
      expect(e).toBeInstanceOf(NotAnImage);
      expect([e.status, e.code, e.message]).toEqual([422, 'corrupt_image', 'DICOM has no Pixel Data (7FE0,0010) at its top level: it is not an image']);
      await expect(dicomFrameCount(file)).rejects.toBeInstanceOf(NotAnImage);
    }
    // a broken file is not NotAnImage: it is refused, not skipped
    await expect(dicomFrameCount(part10(element(0x0008, 0x0060, 'CS', cs('SR')).subarray(0, 9)))).rejects.not.toBeInstanceOf(NotAnImage);
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
