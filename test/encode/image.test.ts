// decodeImage: PNG colour types and depths come out as the contract says, and every hostile or
// broken input (empty, truncated, huge declared size, decompression bomb, wrong content type,
// random bytes, corrupt data) is refused with a 4xx naming the problem, never a crash or a hang.
import { deflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { MedhashError } from '../../functions/util/errors.ts';
import { TarReader } from '../../scripts/data/shared-data.ts';
import { png, scanlines } from './png-fixtures.ts';
import { BRAIN_JPEG, dataDir } from './fixtures.ts';

beforeAll(() => initNodeImageCodecs());

async function refusal(p: Promise<unknown>): Promise<MedhashError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(MedhashError);
  return e as MedhashError;
}

describe('valid PNGs', () => {
  it('grey 8-bit keeps one channel', async () => {
    const img = await decodeImage(png({ width: 3, height: 2, colorType: 0, bitDepth: 8, raw: scanlines(3, 2, 1, 8, [1, 2, 3, 4, 5, 6]) }), 'image/png');
    expect(img).toMatchObject({ width: 3, height: 2, channels: 1, bitDepth: 8 });
    expect([...img.data]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('RGB 8-bit keeps three channels, RGBA four', async () => {
    const rgb = await decodeImage(png({ width: 2, height: 1, colorType: 2, bitDepth: 8, raw: scanlines(2, 1, 3, 8, [10, 20, 30, 40, 50, 60]) }));
    expect(rgb.channels).toBe(3);
    expect([...rgb.data]).toEqual([10, 20, 30, 40, 50, 60]);
    const rgba = await decodeImage(png({ width: 1, height: 1, colorType: 6, bitDepth: 8, raw: scanlines(1, 1, 4, 8, [7, 8, 9, 128]) }));
    expect(rgba.channels).toBe(4);
    expect([...rgba.data]).toEqual([7, 8, 9, 128]);
  });

  it('palette PNG expands to its colours', async () => {
    const img = await decodeImage(png({ width: 2, height: 1, colorType: 3, bitDepth: 8, raw: scanlines(2, 1, 1, 8, [1, 0]), palette: new Uint8Array([1, 2, 3, 200, 100, 50]) }));
    expect(img.channels).toBe(4);
    expect([...img.data]).toEqual([200, 100, 50, 255, 1, 2, 3, 255]);
  });

  it('16-bit grey keeps its full range, big-endian', async () => {
    const img = await decodeImage(png({ width: 2, height: 1, colorType: 0, bitDepth: 16, raw: scanlines(2, 1, 1, 16, [0x1234, 0xfffe]) }));
    expect(img).toMatchObject({ channels: 1, bitDepth: 16 });
    expect([...img.data]).toEqual([0x12, 0x34, 0xff, 0xfe]);
  });
});

describe('refused inputs', () => {
  it('zero bytes -> 400', async () => {
    const e = await refusal(decodeImage(new Uint8Array(0), 'image/png'));
    expect([e.status, e.code]).toEqual([400, 'empty_image']);
  });

  it('more bytes than the limit -> 413 before looking at them', async () => {
    const e = await refusal(decodeImage(new Uint8Array(DEFAULT_LIMITS.maxBytes + 1), 'image/png'));
    expect([e.status, e.code]).toEqual([413, 'image_too_large']);
  });

  it('truncated PNG -> 422', async () => {
    const full = png({ width: 16, height: 16, colorType: 2, bitDepth: 8 });
    for (const cut of [20, 40, full.length - 5]) {
      const e = await refusal(decodeImage(full.subarray(0, cut), 'image/png'));
      expect(e.status, `cut at ${cut}`).toBe(422);
      expect(e.message).toMatch(/truncated|IHDR/);
    }
  });

  it('truncated JPEG -> 422 (the decoder alone would fill it with grey)', async () => {
    const tar = await TarReader.open(`${dataDir('brain_tumor_mri')}/images.tar`);
    const jpeg = await tar.read(BRAIN_JPEG);
    await tar.close();
    expect((await decodeImage(jpeg, 'image/jpeg')).width).toBeGreaterThan(0);
    const e = await refusal(decodeImage(jpeg.subarray(0, jpeg.length >> 1), 'image/jpeg'));
    expect([e.status, e.code]).toEqual([422, 'corrupt_image']);
    expect(e.message).toMatch(/truncated/);
  });

  it('a PNG declaring 20000x20000 -> 413 without decoding', async () => {
    const header = png({ width: 20000, height: 20000, colorType: 0, bitDepth: 8, idat: deflateSync(new Uint8Array(16)) });
    const e = await refusal(decodeImage(header, 'image/png'));
    expect([e.status, e.code]).toEqual([413, 'image_too_large']);
    expect(e.message).toContain('20000x20000');
  });

  it('too many pixels within the side limit -> 413', async () => {
    const e = await refusal(decodeImage(png({ width: 300, height: 300, colorType: 0, bitDepth: 8 }), 'image/png', { ...DEFAULT_LIMITS, maxPixels: 50_000 }));
    expect(e.status).toBe(413);
    expect(e.message).toContain('90000 pixels');
  });

  it('decompression bombs: a small PNG inflating to gigapixels is refused; extra inflated data is ignored', async () => {
    // 64 KiB of deflate that inflates to 64 MiB, under a header declaring 8192x8192
    const zeros = deflateSync(new Uint8Array(64 << 20));
    expect(zeros.length).toBeLessThan(100_000);
    const e = await refusal(decodeImage(png({ width: 8192, height: 8192, colorType: 0, bitDepth: 8, idat: zeros }), 'image/png'));
    expect(e.status).toBe(413);
    // the same stream under a small header: the decoder stops at the declared size
    const small = await decodeImage(png({ width: 64, height: 64, colorType: 0, bitDepth: 8, idat: zeros }), 'image/png');
    expect([small.width, small.height, small.data.length]).toEqual([64, 64, 64 * 64]);
  });

  it('wrong or unsupported content type -> 415', async () => {
    const ok = png({ width: 2, height: 2, colorType: 0, bitDepth: 8 });
    for (const type of ['text/plain', 'image/gif', 'application/json']) {
      const e = await refusal(decodeImage(ok, type));
      expect([e.status, e.code], type).toEqual([415, 'unsupported_image_type']);
    }
    const mismatch = await refusal(decodeImage(ok, 'image/jpeg'));
    expect(mismatch.status).toBe(415);
    expect(mismatch.message).toMatch(/does not match the bytes, which are PNG/);
    expect((await decodeImage(ok, 'application/octet-stream')).width).toBe(2);
    expect((await decodeImage(ok, 'image/png; charset=binary')).width).toBe(2);
  });

  it('random bytes and text -> 415 naming what they start with', async () => {
    let seed = 7;
    const random = Uint8Array.from({ length: 4096 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    random[0] = 0x42;
    const e = await refusal(decodeImage(random));
    expect(e.status).toBe(415);
    expect(e.message).toMatch(/not a PNG, JPEG or DICOM image \(starts with 42/);
    expect((await refusal(decodeImage(new TextEncoder().encode('hello world')))).status).toBe(415);
  });

  it('corrupt compressed data -> 422, and the decoder still works afterwards', async () => {
    const bad = png({ width: 32, height: 32, colorType: 0, bitDepth: 8, idat: new Uint8Array([0x78, 0x9c, 1, 2, 3, 4, 5, 6, 7]) });
    const e = await refusal(decodeImage(bad, 'image/png'));
    // not the codec's "`unwrap_throw` failed", which tells the caller nothing
    expect([e.status, e.code, e.message]).toEqual([422, 'corrupt_image', 'PNG could not be decoded: its compressed data is corrupt (the decoder gives no detail)']);
    const short = png({ width: 32, height: 32, colorType: 0, bitDepth: 8, idat: deflateSync(new Uint8Array(10)) });
    expect((await refusal(decodeImage(short))).status).toBe(422);
    expect((await decodeImage(png({ width: 3, height: 3, colorType: 0, bitDepth: 8 }))).width).toBe(3);
  });

  it('JPEG with only a header or garbage after the SOI -> 422', async () => {
    expect((await refusal(decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xd9])))).status).toBe(422);
    expect((await refusal(decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 1, 2])))).status).toBe(422);
    expect((await refusal(decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0x00, 0x41, 0x41, 0x41])))).status).toBe(422);
  });
});
