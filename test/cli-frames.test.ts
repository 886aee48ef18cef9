// `medhash index --frames`: a multi-frame DICOM in a class folder indexed frame by frame through
// the real CLI (as a child process), through the backend and in-process, against the Node app.
// Each frame's item must hold the code a search by image of that frame (`?frame=n`) computes;
// frames are encoded in the chunks other images take, the file read once (across chunks) and one
// item at a time, a deflated file inflated once. A DICOM over the service's 8 MiB indexes too: the CLI decodes it under its own limit
// and sends the backend tensors (seen in the sizes of the requests the backend receives). So does
// `medhash search --image` of one: the CLI decodes the frame and sends it as a PNG, whose answer is
// the one a POST of the DICOM (or of the frame's single-frame twin) gets.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageEncoding } from '../functions/backend/protocol.ts';
import { Client } from '../scripts/cli/client.ts';
import { encodedSource, openBatchEncoder, type BatchEncoder } from '../scripts/cli/encode.ts';
import { folderImages, imageItems, LOCAL_DICOM_LIMITS, LOCAL_FILE_MAX_BYTES, MAX_FRAMES_PER_FILE, type ImageFile } from '../scripts/cli/images.ts';
import type { IndexRecord } from '../scripts/cli/sources.ts';
import { decodeImage, DEFAULT_LIMITS } from '../functions/encode/image.ts';
import { concatBytes } from '../functions/util/bytes.ts';
import { cs, DICOM_FIXTURES, DICOM_STUDY_UID, element, part10, pixelModule } from './encode/fixtures.ts';
import { failure, MODEL, startCliWorld, type CliWorld } from './shared/cli-world.ts';

// compressed, without a Basic Offset Table: the frames are found by their JPEG streams
const MULTI = 'grey8-frames3-jpeg-lossless-sv1-fs1-nobot.dcm';
const FRAME_IDS = [0, 1, 2].map((n) => `Hand/cine.dcm#frame=${n}`);

let w: CliWorld;
let dir: string;
let folder: string;
let backend: CliWorld['backend'];
let url: string;
let api: Client;
let key: string;
/** Each frame's code as search by image computes it (`?frame=n`), and its descriptor (`/v1/encode?frame=n`). */
const frameCodes: string[] = [];
const frameDescriptors: number[][] = [];

const cli = (args: string[], env?: Record<string, string>) => w.cli(args, env);
const viaBackend = () => w.viaBackend();
const collection = () => w.collection();

async function ids(name: string): Promise<string[]> {
  const found: string[] = [];
  for (const id of [...FRAME_IDS, 'Hand/cine.dcm', 'Hand/single.dcm', 'Hand/bigendian.dcm']) {
    const res = await fetch(`${url}/v1/collections/${name}/items/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${key}` } });
    if (res.status === 200) found.push(id);
    else expect(res.status).toBe(404);
  }
  return found;
}

const item = (name: string, id: string) => api.request<{ code: string; descriptor: number[]; metadata: Record<string, string> }>('GET', `/v1/collections/${name}/items/${encodeURIComponent(id)}`);

beforeAll(async () => {
  w = await startCliWorld('frames');
  ({ dir, url, key, api, backend } = w);
  folder = join(dir, 'study');
  mkdirSync(join(folder, 'Hand'), { recursive: true });
  copyFileSync(join(DICOM_FIXTURES, MULTI), join(folder, 'Hand', 'cine.dcm'));
  copyFileSync(join(DICOM_FIXTURES, 'grey8-explicit.dcm'), join(folder, 'Hand', 'single.dcm'));
  const probe = await collection();
  const bytes = new Uint8Array(readFileSync(join(DICOM_FIXTURES, MULTI)));
  const post = (path: string) => fetch(`${url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/dicom' }, body: bytes });
  for (const n of [0, 1, 2]) {
    frameCodes.push(((await (await post(`/v1/collections/${probe}/search/image?allow_ood=true&frame=${n}`)).json()) as { code: string }).code);
    frameDescriptors.push(((await (await post(`/v1/encode?frame=${n}`)).json()) as { encoding: { descriptor: number[] } }).encoding.descriptor);
  }
}, 120_000);

afterAll(() => w?.close());

describe('medhash index --frames', () => {
  it('all: an item per frame, each with the code of a search by that frame, the file\'s metadata kept', async () => {
    // three distinct frames (the hand, its negative, its mirror image): their descriptors tell
    // them apart where the 64-bit codes may not, so a frame mix-up shows
    expect(new Set(frameDescriptors.map((d) => JSON.stringify(d))).size).toBe(3);
    const name = await collection();
    const run = await cli(['index', '--collection', name, '--images', folder, '--frames', 'all'], viaBackend());
    // the frames were counted before encoding: the total is 4 items from 2 files
    expect(run.stderr).toContain('0 of 4 already published');
    expect(run.stderr).toMatch(/indexed 4 items/);
    expect(await ids(name)).toEqual([...FRAME_IDS, 'Hand/single.dcm']);
    for (const n of [0, 1, 2]) {
      const got = await item(name, FRAME_IDS[n]);
      expect(got.code, `frame ${n}`).toBe(frameCodes[n]);
      expect(got.descriptor, `frame ${n}`).toEqual(frameDescriptors[n]);
      expect(got.metadata).toMatchObject({ label: 'Hand', modality: 'CR', body_part: 'HAND', study_uid: DICOM_STUDY_UID });
    }
  });

  it('first: frame 0 alone, under its frame id (in-process encoder)', async () => {
    const name = await collection();
    const run = await cli(['index', '--collection', name, '--images', folder, '--frames', 'first', '--model', MODEL]);
    expect(run.stderr).toContain('0 of 2 already published');
    expect(await ids(name)).toEqual([FRAME_IDS[0], 'Hand/single.dcm']);
    expect((await item(name, FRAME_IDS[0])).code).toBe(frameCodes[0]);
    expect((await item(name, FRAME_IDS[0])).descriptor).toEqual(frameDescriptors[0]);
  });

  it('without --frames: indexes the rest, then fails naming the multi-frame file and the choices; skip leaves it out quietly', async () => {
    const name = await collection();
    const e = await failure(cli(['index', '--collection', name, '--images', folder], viaBackend()));
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/indexed 1 items/);
    expect(e.stderr).toContain(`medhash: 1 multi-frame DICOM file(s) not indexed: ${join(folder, 'Hand', 'cine.dcm')}; give --frames all to index each frame as its own item, --frames first for frame 0 alone, or --frames skip to leave them out`);
    expect(await ids(name)).toEqual(['Hand/single.dcm']);
    const skipped = await cli(['index', '--collection', name, '--images', folder, '--frames', 'skip'], viaBackend());
    expect(skipped.stderr).toContain('1 multi-frame DICOM file(s) not indexed');
    expect(skipped.stderr).toContain('(--frames skip)');
    expect(await ids(name)).toEqual(['Hand/single.dcm']);
    // a bad value is a usage error naming the choices
    const bad = await failure(cli(['index', '--collection', name, '--images', folder, '--frames', 'some']));
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--frames must be all, first, skip')]);
    // --max-items counts items from the first: a negative count is a usage error, not an empty run
    const negative = await failure(cli(['index', '--collection', name, '--images', folder, '--frames', 'all', '--max-items=-1'], viaBackend()));
    expect([negative.code, negative.stderr]).toEqual([2, expect.stringContaining('--max-items must be 0 or more')]);
  });

  it('a file whose header does not read stops the run named by its path, as before', async () => {
    const bad = join(dir, 'bad');
    mkdirSync(join(bad, 'Hand'), { recursive: true });
    copyFileSync(join(DICOM_FIXTURES, 'grey8-bigendian.dcm'), join(bad, 'Hand', 'bigendian.dcm'));
    const name = await collection();
    const e = await failure(cli(['index', '--collection', name, '--images', bad, '--frames', 'all'], viaBackend()));
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/bad\/Hand\/bigendian\.dcm: DICOM transfer syntax 1\.2\.840\.10008\.1\.2\.2 \(Explicit VR Big Endian\)/);
  });

  it('resumes: a re-run skips the frames already published', async () => {
    const name = await collection();
    // --max-items counts items, frames included: frames 0 and 1 of the file
    await cli(['index', '--collection', name, '--images', folder, '--frames', 'all', '--max-items', '2'], viaBackend());
    expect(await ids(name)).toEqual(FRAME_IDS.slice(0, 2));
    const again = await cli(['index', '--collection', name, '--images', folder, '--frames', 'all'], viaBackend());
    expect(again.stderr).toContain('2 of 4 already published');
    expect(again.stderr).toMatch(/indexed 2 items/);
    expect(await ids(name)).toEqual([...FRAME_IDS, 'Hand/single.dcm']);
    expect((await item(name, FRAME_IDS[2])).descriptor).toEqual(frameDescriptors[2]);
  });
});

describe('frames in chunks', () => {
  it('through the backend, items are read one at a time: a batch holds one DICOM file\'s bytes at once', async () => {
    let reading = 0;
    let most = 0;
    const files = (await folderImages(folder)).map((f) => ({
      ...f,
      read: async () => {
        most = Math.max(most, ++reading);
        try {
          return await f.read();
        } finally {
          reading--;
        }
      },
    }));
    const { items } = await imageItems(files, 'all');
    most = 0;
    const encoder = await openBatchEncoder({ backendUrl: backend.url });
    const out = await encoder.encode(items);
    expect(most).toBe(1);
    expect(out.slice(0, 3).map((e) => e.descriptor)).toEqual(frameDescriptors);
  });

  it('counting frames does not read a file already published as one item: a resumed run reads what it encodes', async () => {
    const read: string[] = [];
    const files = (await folderImages(folder)).map((f) => ({ ...f, read: () => (read.push(f.id), f.read()) }));
    const published = new Set(['Hand/single.dcm', FRAME_IDS[0]]);
    const { items } = await imageItems(files, 'all', Infinity, (id) => published.has(id));
    expect(items.map((f) => f.id)).toEqual([...FRAME_IDS, 'Hand/single.dcm']);
    // the multi-frame file is read for its count (frames 1 and 2 are still to do); the single-frame one is not
    expect(read).toEqual(['Hand/cine.dcm']);
  });

  it('a multi-frame file\'s frames take the chunks other images take, its bytes read once across them', async () => {
    let reads = 0;
    const files = (await folderImages(folder)).map((f) => ({ ...f, read: () => (reads++, f.read()) }));
    const { items } = await imageItems(files, 'all');
    expect(items.map((f) => f.id)).toEqual([...FRAME_IDS, 'Hand/single.dcm']);
    // counting the frames read each DICOM once, its header walked, no pixel decoded
    expect(reads).toBe(2);
    reads = 0;
    const chunks: string[][] = [];
    const encoder: BatchEncoder = {
      model_id: 'm', bits: 64, path: 'test', close: async () => undefined,
      async encode(images) {
        chunks.push(images.map((f) => f.id));
        for (const f of images) await f.read();
        return images.map((f) => ({ code: String(f.frame ?? 'x') }) as ImageEncoding);
      },
    };
    const records: IndexRecord[] = [];
    for await (const r of encodedSource(items, encoder, { descriptors: false, chunk: 2 }).records()) records.push(r);
    expect(chunks).toEqual([FRAME_IDS.slice(0, 2), [FRAME_IDS[2], 'Hand/single.dcm']]);
    // the 3-frame file once for its two chunks, the single-frame file once
    expect(reads).toBe(2);
    const cine = join(folder, 'Hand', 'cine.dcm');
    expect(records.map((r) => [r.code, r.origin])).toEqual([['0', `${cine} frame 0`], ['1', `${cine} frame 1`], ['2', `${cine} frame 2`], ['x', join(folder, 'Hand', 'single.dcm')]]);
    expect(records.every((r) => r.metadata?.modality === 'CR' && r.metadata.study_uid === DICOM_STUDY_UID)).toBe(true);
  });
  it('a header claiming more frames than MAX_FRAMES_PER_FILE is refused naming the file, before any item is listed; --max-items or --frames first take it', async () => {
    const count = MAX_FRAMES_PER_FILE + 1;
    // one-pixel frames: the file has as many bytes as the frames it claims, as the header check asks
    const dataSet = concatBytes([pixelModule(1, 1, { extra: [element(0x0028, 0x0008, 'IS', cs(String(count)))] }), element(0x7fe0, 0x0010, 'OB', new Uint8Array(count + (count % 2)))]);
    const file: ImageFile = { id: 'Hand/tiles.dcm', label: 'Hand', contentType: 'application/dicom', origin: 'tiles.dcm', read: async () => part10(dataSet) };
    await expect(imageItems([file], 'all')).rejects.toThrow(`tiles.dcm: its Number of Frames is ${count}; --frames all takes at most ${MAX_FRAMES_PER_FILE} frames`);
    expect((await imageItems([file], 'all', 10)).items.map((f) => f.frame)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect((await imageItems([file], 'first')).items.map((f) => f.id)).toEqual(['Hand/tiles.dcm#frame=0']);
  });
  it('a deflated multi-frame file is inflated once, not once per frame decoded nor per chunk', async () => {
    const side = 256;
    const raw = Uint8Array.from({ length: 4 * side * side }, (_, i) => (i * 7 + (i >> 16) * 50) & 0xff);
    const plain = concatBytes([element(0x0008, 0x0060, 'CS', cs('CR')), pixelModule(side, side, { extra: [element(0x0028, 0x0008, 'IS', cs('4'))] }), element(0x7fe0, 0x0010, 'OB', raw)]);
    const deflated = part10(new Uint8Array(deflateRawSync(plain)), '1.2.840.10008.1.2.1.99');
    const file: ImageFile = { id: 'Hand/d.dcm', label: 'Hand', contentType: 'application/dicom', origin: 'd.dcm', read: async () => deflated };
    const { items } = await imageItems([file], 'all');
    const frames: string[] = [];
    const encoder: BatchEncoder = {
      model_id: 'm', bits: 64, path: 'test', close: async () => undefined,
      async encode(images) {
        for (const f of images) frames.push(createHash('sha256').update((await decodeImage(await f.read(), f.contentType, LOCAL_DICOM_LIMITS, { frame: f.frame })).data).digest('hex'));
        return images.map(() => ({ code: '0' }) as ImageEncoding);
      },
    };
    const Real = globalThis.DecompressionStream;
    let inflations = 0;
    globalThis.DecompressionStream = class extends Real {
      constructor(format: CompressionFormat) {
        super(format);
        inflations++;
      }
    };
    try {
      for await (const r of encodedSource(items, encoder, { descriptors: false, chunk: 3 }).records()) expect(r.metadata?.modality).toBe('CR');
    } finally {
      globalThis.DecompressionStream = Real;
    }
    expect(inflations).toBe(1);
    const want = await Promise.all([0, 1, 2, 3].map(async (k) => createHash('sha256').update((await decodeImage(deflated, 'application/dicom', LOCAL_DICOM_LIMITS, { frame: k })).data).digest('hex')));
    expect(frames).toEqual(want);
  });
});

describe('a multi-frame DICOM over the service\'s 8 MiB', () => {
  // five 16-bit 1024 x 1024 frames, uncompressed: 10 MiB, each frame a different ramp
  const side = 1024;
  const frameBytes = side * side * 2;
  const raw = new Uint8Array(5 * frameBytes);
  for (let k = 0; k < 5; k++) {
    const v = new DataView(raw.buffer, k * frameBytes, frameBytes);
    for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) v.setUint16(2 * (y * side + x), ((x * (k + 1) + y * (5 - k)) * 7) & 0xfff, true);
  }
  // a Study Instance UID of 16 characters: even, no padding
  const BIG_STUDY = '1.2.826.0.1.99.7';
  const file = (frames: number, pixels: Uint8Array, study?: string) =>
    part10(concatBytes([
      ...(study ? [element(0x0020, 0x000d, 'UI', cs(study))] : []),
      pixelModule(side, side, { bits: 16, stored: 12, extra: frames > 1 ? [element(0x0028, 0x0008, 'IS', cs(String(frames)))] : [] }),
      element(0x7fe0, 0x0010, 'OW', pixels),
    ]));
  const twin = (k: number) => file(1, raw.subarray(k * frameBytes, (k + 1) * frameBytes));
  const ids = [0, 1, 2, 3, 4].map((n) => `Hand/big.dcm#frame=${n}`);

  it('indexes through the backend, which receives tensors, not the file, and in-process: each frame the code of its single-frame twin', async () => {
    const big = join(dir, 'big');
    mkdirSync(join(big, 'Hand'), { recursive: true });
    const bytes = file(5, raw);
    expect(bytes.length).toBeGreaterThan(DEFAULT_LIMITS.maxBytes);
    writeFileSync(join(big, 'Hand', 'big.dcm'), bytes);
    // each frame alone, a file the service takes: its code by search by image, its descriptor by /v1/encode
    const probe = await collection();
    const want: { code: string; descriptor: number[] }[] = [];
    for (let k = 0; k < 5; k++) {
      const post = (path: string) => fetch(`${url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/dicom' }, body: twin(k) as Uint8Array<ArrayBuffer> });
      const code = ((await (await post(`/v1/collections/${probe}/search/image?allow_ood=true`)).json()) as { code: string }).code;
      want.push({ code, descriptor: ((await (await post('/v1/encode')).json()) as { encoding: { descriptor: number[] } }).encoding.descriptor });
    }
    expect(new Set(want.map((w) => JSON.stringify(w.descriptor))).size).toBe(5);

    // the size of every request the backend receives while the CLI indexes
    const sizes: number[] = [];
    const seen = (req: { method?: string; url?: string; headers: Record<string, unknown> }) => {
      if (req.method === 'POST' && req.url === '/v1/encode') sizes.push(Number(req.headers['content-length']));
    };
    backend.server.on('request', seen);
    const name = await collection();
    try {
      const run = await cli(['index', '--collection', name, '--images', big, '--frames', 'all'], viaBackend());
      expect(run.stderr).toMatch(/indexed 5 items/);
    } finally {
      backend.server.off('request', seen);
    }
    // one request of five 64 x 64 float32 tensors (16 KiB each, base64): not the 10 MiB file, not once per frame
    expect(sizes).toHaveLength(1);
    expect(sizes[0]).toBeLessThan(5 * 23_000);
    const local = await collection();
    await cli(['index', '--collection', local, '--images', big, '--frames', 'all', '--model', MODEL]);
    for (const [k, id] of ids.entries()) {
      for (const c of [name, local]) {
        const got = await item(c, id);
        expect([got.code, got.descriptor], `${c} frame ${k}`).toEqual([want[k].code, want[k].descriptor]);
      }
    }
  }, 120_000);

  it('a file over the CLI\'s own limit is refused unread, the message naming it and the limit', async () => {
    const huge = join(dir, 'huge');
    mkdirSync(join(huge, 'Hand'), { recursive: true });
    const path = join(huge, 'Hand', 'huge.dcm');
    writeFileSync(path, '');
    // sparse: its size says it, and nothing is read
    truncateSync(path, LOCAL_FILE_MAX_BYTES + 1);
    const name = await collection();
    for (const env of [viaBackend(), {}]) {
      const e = await failure(cli(['index', '--collection', name, '--images', huge, '--frames', 'all', '--model', MODEL], env));
      expect(e.code).toBe(1);
      expect(e.stderr).toContain(`medhash: ${path}: file is ${LOCAL_FILE_MAX_BYTES + 1} bytes; a local image file may have at most ${LOCAL_FILE_MAX_BYTES} (1 GiB, LOCAL_FILE_MAX_BYTES)`);
    }
  });

  describe('medhash search --image of a DICOM', () => {
    // the 10 MiB file of five frames (its own study), a single-frame file and the small 3-frame
    // one (both of DICOM_STUDY_UID), indexed frame by frame: nine items of two studies
    let searched: string;
    let path: string;
    const small = () => join(dir, 'query', 'Hand', 'cine.dcm');
    beforeAll(async () => {
      const query = join(dir, 'query');
      mkdirSync(join(query, 'Hand'), { recursive: true });
      path = join(query, 'Hand', 'big.dcm');
      writeFileSync(path, file(5, raw, BIG_STUDY));
      copyFileSync(join(folder, 'Hand', 'single.dcm'), join(query, 'Hand', 'single.dcm'));
      copyFileSync(join(folder, 'Hand', 'cine.dcm'), small());
      searched = await collection();
      await cli(['index', '--collection', searched, '--images', query, '--frames', 'all'], viaBackend());
    }, 60_000);
    /** The answer of a POST of `body` (a DICOM) to search by image, with `query`. */
    const direct = async (body: Uint8Array, query: string) => {
      const res = await fetch(`${url}/v1/collections/${searched}/search/image?${query}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/dicom' }, body: body as Uint8Array<ArrayBuffer> });
      expect(res.status, await res.clone().text()).toBe(200);
      return res.json();
    };
    // the synthetic frames are far from the model's training data: their results are asked for anyway
    const search = async (args: string[]) => JSON.parse((await cli(['search', '--collection', searched, '--json', '--allow-ood', ...args])).stdout) as {
      code: string; ood: { verdict: string }; results: { id: string; distance: number }[];
    };

    it('by frame k of the file over 8 MiB: that frame\'s own item first at distance 0, with the OOD verdict, the answer a POST of its single-frame twin gets; the OOD gate refuses it without --allow-ood', async () => {
      expect(readFileSync(path).length).toBeGreaterThan(DEFAULT_LIMITS.maxBytes);
      for (const k of [1, 3]) {
        const r = await search(['--image', path, '--frame', String(k)]);
        expect(r.results[0], `frame ${k}`).toMatchObject({ id: ids[k], distance: 0 });
        expect(r.code).toBe((await item(searched, ids[k])).code);
        expect(r.ood.verdict).toBe('out_of_distribution');
        expect(r, `frame ${k}`).toEqual(await direct(twin(k), 'k=10&allow_ood=true'));
      }
      // without --allow-ood, the service's gate refuses it as it refuses any such image
      const refused = await failure(cli(['search', '--collection', searched, '--image', path, '--frame', '1']));
      expect([refused.code, refused.stderr]).toEqual([1, expect.stringContaining('medhash: 422 out_of_distribution: the query looks out of distribution')]);
    }, 60_000);

    it('--exclude-own-study leaves out the file\'s own items (its study UID sent by the CLI), keeping the other study\'s', async () => {
      const r = await search(['--image', path, '--frame', '2', '--exclude-own-study']);
      expect(r.results.map((x) => x.id).sort()).toEqual([...FRAME_IDS, 'Hand/single.dcm'].sort());
      expect(r).toEqual(await direct(twin(2), `k=10&allow_ood=true&exclude_study_uid=${BIG_STUDY}`));
    }, 60_000);

    it('a small DICOM: the CLI\'s answer is a POST of the file\'s (the same code, the same list), with and without --exclude-own-study', async () => {
      const bytes = new Uint8Array(readFileSync(small()));
      expect(await search(['--image', small(), '--frame', '1'])).toEqual(await direct(bytes, 'k=10&allow_ood=true&frame=1'));
      const own = await search(['--image', small(), '--frame', '1', '--exclude-own-study']);
      expect(own).toEqual(await direct(bytes, 'k=10&allow_ood=true&frame=1&exclude_own_study=true'));
      expect(own.results.map((x) => x.id)).toEqual(expect.arrayContaining(ids));
      expect(own.results).toHaveLength(5);
    }, 60_000);

    it('refuses clearly: a DICOM naming no study with --exclude-own-study, both exclusions at once, a multi-frame file without --frame, a negative frame, a frame too large to send as PNG', async () => {
      const noStudy = join(dir, 'query', 'nostudy.dcm');
      writeFileSync(noStudy, twin(0));
      const e = await failure(cli(['search', '--collection', searched, '--image', noStudy, '--exclude-own-study']));
      expect([e.code, e.stderr]).toEqual([1, expect.stringContaining(`medhash: ${noStudy}: --exclude-own-study: the DICOM has no valid Study Instance UID (0020,000D)`)]);
      const both = await failure(cli(['search', '--collection', searched, '--image', path, '--exclude-own-study', '--exclude-study-uid', '1.2']));
      expect([both.code, both.stderr]).toEqual([2, expect.stringContaining('give one of --exclude-own-study, --exclude-study-uid')]);
      const none = await failure(cli(['search', '--collection', searched, '--image', path]));
      expect([none.code, none.stderr]).toEqual([1, expect.stringContaining(`medhash: ${path}: the DICOM has 5 frames: choose one with --frame (0 to 4)`)]);
      const negative = await failure(cli(['search', '--collection', searched, '--image', path, '--frame=-1']));
      expect([negative.code, negative.stderr]).toEqual([2, expect.stringContaining('--frame must be 0 or more')]);
      // 4096 x 4096 of noise: a PNG of about 16 MiB, which no filter makes smaller
      const noise = join(dir, 'query', 'noise.dcm');
      writeFileSync(noise, part10(concatBytes([pixelModule(4096, 4096), element(0x7fe0, 0x0010, 'OB', randomBytes(4096 * 4096))])));
      const big = await failure(cli(['search', '--collection', searched, '--image', noise]));
      expect([big.code, big.stderr]).toEqual([1, expect.stringMatching(new RegExp(`medhash: ${noise}: as a lossless PNG it is \\d+ bytes, over the 8388608 \\(8 MiB\\) a search by image may send`))]);
    }, 60_000);
  });
});
