// Node's JPEG-LS and JPEG 2000 frames decode in a worker thread under a deadline (codec-thread.ts):
// a malformed JPEG-LS scan on which CharLS spins for seconds before failing
// (test/fixtures/dicom/hostile/jpeg-ls-cut-scan-spins-charls.dcm: a 64x64 16-bit frame cut inside
// its scan, ~9 s of CPU in CharLS 2.4) is a 422 `decode_timeout` past its deadline, the event loop
// runs on meanwhile, the next frames get a fresh thread, and a frame queued behind a slow one has
// a deadline of its own; a frame in a Node Buffer is copied, not its buffer moved; a thread that
// cannot be made, or that never starts, fails the frames waiting, not the process.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { CodecThread, DEADLINE_BASE_MS, frameDeadlineMs } from '../../functions/encode/codec-thread.ts';
import type { CodecTarget } from '../../functions/encode/dicom-codecs.ts';
import { decodeImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { DICOM_FIXTURES } from './fixtures.ts';
import { png, scanlines } from './png-fixtures.ts';

/** While set, new Worker throws as Node does when the process can make no more threads. */
let noThreads = false;
/** While set, a new thread runs a script that never says it is ready: a start that hangs. */
let hangs = false;
vi.mock('node:worker_threads', async (original) => {
  const m = await original<typeof import('node:worker_threads')>();
  class Worker extends m.Worker {
    constructor(...[script, options]: ConstructorParameters<typeof m.Worker>) {
      if (noThreads) throw Object.assign(new Error('EAGAIN'), { code: 'ERR_WORKER_INIT_FAILED' });
      super(hangs ? 'setInterval(() => {}, 1000)' : script, options);
    }
  }
  return { ...m, Worker };
});

const require = createRequire(import.meta.url);
const fixture = (name: string) => new Uint8Array(readFileSync(join(DICOM_FIXTURES, name)));
const HOSTILE = fixture('hostile/jpeg-ls-cut-scan-spins-charls.dcm');
const HOSTILE_TARGET: CodecTarget = { rows: 64, columns: 64, samples: 1, bitsAllocated: 16, bitsStored: 16, signed: false, syntax: 'JPEG-LS Lossless' };
const GOOD_LS = fixture('grey8-jpeg-ls.dcm');
const GOOD_J2K = fixture('grey8-jpeg2000-lossless.dcm');

/** The codestream of a file of one frame in one fragment: its last item (fffe,e000). */
function codestream(file: Uint8Array): Uint8Array {
  const at = Buffer.from(file).lastIndexOf(Buffer.from([0xfe, 0xff, 0x00, 0xe0]));
  return file.subarray(at + 8, at + 8 + Buffer.from(file).readUInt32LE(at + 4));
}

const timeoutMessage = (t: CodecTarget) =>
  `DICOM ${t.syntax} frame took longer than ${(frameDeadlineMs(t) / 1000).toFixed(1)} s to decode; a valid frame of ${t.columns}x${t.rows} decodes in well under that: the stream is malformed`;

beforeAll(() => initNodeImageCodecs());

describe('JPEG-LS and JPEG 2000 frames on Node: a worker thread, a deadline', () => {
  it('a JPEG-LS frame that holds CharLS for seconds is a 422 decode_timeout naming the limit; good frames decode after it (a fresh thread) as before it', async () => {
    const before = [await decodeImage(GOOD_LS), await decodeImage(GOOD_J2K)];
    const e = await decodeImage(HOSTILE).catch((x: unknown) => x);
    expect(e).toMatchObject({ status: 422, code: 'decode_timeout', field: 'image', message: timeoutMessage(HOSTILE_TARGET) });
    expect([await decodeImage(GOOD_LS), await decodeImage(GOOD_J2K)]).toEqual(before);
  });

  it('while that frame decodes, the event loop runs: a PNG decode started after it completes first', async () => {
    // the codecs instantiated, so that the old in-thread path would reach CharLS before the PNG
    await decodeImage(GOOD_LS);
    const order: string[] = [];
    const slow = decodeImage(HOSTILE).catch(() => undefined).then(() => order.push('dicom'));
    await new Promise((ok) => setTimeout(ok, 0));
    const fast = decodeImage(png({ width: 2, height: 1, colorType: 0, bitDepth: 8, raw: scanlines(2, 1, 1, 8, [1, 2]) })).then(() => order.push('png'));
    await Promise.all([slow, fast]);
    expect(order).toEqual(['png', 'dicom']);
  });

  it('a frame queued behind a slow one is not charged its time: its deadline runs from the start of its own decode', async () => {
    const compile = (name: string) => WebAssembly.compile(readFileSync(require.resolve(name)));
    const thread = new CodecThread({ charls: await compile('@cornerstonejs/codec-charls/decodewasm'), openjpeg: await compile('@cornerstonejs/codec-openjpeg/decodewasm') }, () => DEADLINE_BASE_MS);
    try {
      const good: CodecTarget = { rows: 64, columns: 64, samples: 1, bitsAllocated: 8, bitsStored: 8, signed: false, syntax: 'JPEG-LS Lossless' };
      // both posted at once: the good frame waits out the slow one's whole deadline, then decodes within its own
      const [slow, fast] = await Promise.allSettled([thread.jpegLs(codestream(HOSTILE), HOSTILE_TARGET), thread.jpegLs(codestream(GOOD_LS), good)]);
      expect(slow).toMatchObject({ status: 'rejected', reason: { code: 'decode_timeout' } });
      expect(fast).toMatchObject({ status: 'fulfilled', value: { planar: 0 } });
      expect((fast as PromiseFulfilledResult<{ raw: Uint8Array }>).value.raw.length).toBe(64 * 64);
    } finally {
      await thread.close();
    }
  });

  it('a DICOM in a Node Buffer (whose slice() is a view, not a copy) decodes as a Uint8Array does, and the caller\'s bytes stay whole', async () => {
    const want = [await decodeImage(GOOD_LS), await decodeImage(GOOD_J2K)];
    // a Buffer of its own memory (readFile's), whose buffer a transfer would detach, and small ones
    // in Node's shared pool, which cannot be transferred
    const own = [await readFile(join(DICOM_FIXTURES, 'grey8-jpeg-ls.dcm')), await readFile(join(DICOM_FIXTURES, 'grey8-jpeg2000-lossless.dcm'))];
    const pooled = [Buffer.from(GOOD_LS), Buffer.from(GOOD_J2K)];
    expect(own.map((b) => b.buffer.byteLength === b.length)).toEqual([true, true]);
    expect(pooled.map((b) => b.buffer.byteLength > b.length)).toEqual([true, true]);
    for (const [ls, j2k] of [own, pooled]) {
      expect([await decodeImage(ls), await decodeImage(j2k)]).toEqual(want);
      expect([ls.length, j2k.length]).toEqual([GOOD_LS.length, GOOD_J2K.length]);
    }
  });

  it('no thread to be had (new Worker throws ERR_WORKER_INIT_FAILED: the process at its thread limit) fails the frames waiting, not the process; the next frame gets a thread', async () => {
    const compile = (name: string) => WebAssembly.compile(readFileSync(require.resolve(name)));
    const deadline = vi.fn(() => DEADLINE_BASE_MS);
    const thread = new CodecThread({ charls: await compile('@cornerstonejs/codec-charls/decodewasm'), openjpeg: await compile('@cornerstonejs/codec-openjpeg/decodewasm') }, deadline);
    const good: CodecTarget = { rows: 64, columns: 64, samples: 1, bitsAllocated: 8, bitsStored: 8, signed: false, syntax: 'JPEG-LS Lossless' };
    const cannotStart = 'the codec thread could not start: EAGAIN';
    try {
      // the first thread starts; the one that should replace it past the slow frame's deadline cannot (in the timer)
      const both = Promise.allSettled([thread.jpegLs(codestream(HOSTILE), HOSTILE_TARGET), thread.jpegLs(codestream(GOOD_LS), good)]);
      noThreads = true;
      const [slow, queued] = await both;
      expect(slow).toMatchObject({ status: 'rejected', reason: { code: 'decode_timeout' } });
      expect(queued).toMatchObject({ status: 'rejected', reason: { message: cannotStart } });
      // a frame posted while no thread can be made
      await expect(thread.jpegLs(codestream(GOOD_LS), good)).rejects.toThrow(cannotStart);
      noThreads = false;
      deadline.mockClear();
      // threads again: this frame decodes, and only this one (none of those that failed was kept)
      expect((await thread.jpegLs(codestream(GOOD_LS), good)).raw.length).toBe(64 * 64);
      expect(deadline).toHaveBeenCalledTimes(1);
    } finally {
      noThreads = false;
      await thread.close();
    }
  });

  it('a thread that does not start within its start deadline fails the frames waiting for it; the next frame gets a fresh thread', async () => {
    const compile = (name: string) => WebAssembly.compile(readFileSync(require.resolve(name)));
    const thread = new CodecThread({ charls: await compile('@cornerstonejs/codec-charls/decodewasm'), openjpeg: await compile('@cornerstonejs/codec-openjpeg/decodewasm') }, frameDeadlineMs, 2000);
    const good: CodecTarget = { rows: 64, columns: 64, samples: 1, bitsAllocated: 8, bitsStored: 8, signed: false, syntax: 'JPEG-LS Lossless' };
    try {
      hangs = true;
      const waiting = Promise.allSettled([thread.jpegLs(codestream(GOOD_LS), good), thread.jpeg2000(codestream(GOOD_J2K), { ...good, syntax: 'JPEG 2000 Lossless' })]);
      hangs = false;
      for (const r of await waiting) expect(r).toMatchObject({ status: 'rejected', reason: { message: 'the codec thread did not start within 2 s' } });
      expect((await thread.jpegLs(codestream(GOOD_LS), good)).raw.length).toBe(64 * 64);
    } finally {
      hangs = false;
      await thread.close();
    }
  });

  it('the deadline is over 3x the slowest legit frame measured (docs/ENCODING.md): 2.6 s for a 4096x4096 16-bit JPEG 2000 one', () => {
    expect(frameDeadlineMs({ ...HOSTILE_TARGET, rows: 4096, columns: 4096 })).toBeGreaterThan(3 * 2557);
  });
});
