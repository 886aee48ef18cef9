// `medhash index --dicom`: a PACS / media export indexed as it is, through the real CLI (as a
// child process) against the Node app, through the backend and in-process. The export is built
// with the test's own DICOM writer: a DICOMDIR, extensionless images in DICOM/PA.../IM... and in a
// folder named after the patient, a multi-frame file, a structured report (no pixel data), a file
// that is not DICOM, debris, and a second copy of one instance. Items are named by their SOP
// Instance UIDs, carry the DICOM metadata and no label, and nothing of the folder names.
import { copyFileSync, mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { concatBytes } from '../functions/util/bytes.ts';
import { Client } from '../scripts/cli/client.ts';
import { dicomExport } from '../scripts/cli/images.ts';
import { cs, DICOM_FIXTURES, dicomDir, element, part10, pixelModule, ui } from './encode/fixtures.ts';
import { failure, MODEL, startCliWorld, type CliWorld } from './shared/cli-world.ts';

const STUDY = '1.2.826.0.1.3680043.10.1410.92.1';
const SERIES = '1.2.826.0.1.3680043.10.1410.93.1';
/** The instances: a CT slice, a 3-frame XA cine, a second CT slice (in the patient-named folder), and a structured report. */
const SOP = { ct: '1.2.826.0.1.3680043.10.1410.91.1', cine: '1.2.826.0.1.3680043.10.1410.91.2', ct2: '1.2.826.0.1.3680043.10.1410.91.3', sr: '1.2.826.0.1.3680043.10.1410.91.4' };
const CINE = [0, 1, 2].map((n) => `${SOP.cine}#frame=${n}`);
const ALL = [SOP.ct, ...CINE, SOP.ct2];
const PATIENT = 'DOE^JOHN';

/** An instance of the export: its SOP Instance UID, modality, patient name and, unless it is a report, `frames` 32 x 32 frames (each a different ramp). */
function instance(sop: string, modality: string, frames = 1): Uint8Array {
  const side = 32;
  const header = [
    element(0x0008, 0x0018, 'UI', ui(sop)), element(0x0008, 0x0060, 'CS', cs(modality)), element(0x0010, 0x0010, 'PN', cs(PATIENT)),
    element(0x0018, 0x0015, 'CS', cs('CHEST')), element(0x0020, 0x000d, 'UI', ui(STUDY)), element(0x0020, 0x000e, 'UI', ui(SERIES)),
  ];
  if (frames === 0) return part10(concatBytes([...header, element(0x0040, 0xa040, 'CS', cs('CONTAINER'))]));
  const pixels = Uint8Array.from({ length: frames * side * side }, (_, i) => {
    const [k, y, x] = [Math.floor(i / (side * side)), Math.floor(i / side) % side, i % side];
    return (x * (k + 3) * 2 + y * (3 - k) * 3 + sop.length) & 0xff;
  });
  const extra = frames > 1 ? [element(0x0028, 0x0008, 'IS', cs(String(frames)))] : [];
  return part10(concatBytes([...header, pixelModule(side, side, { extra }), element(0x7fe0, 0x0010, 'OB', pixels)]));
}

let w: CliWorld;
let dir: string;
let exp: string;
let url: string;
let api: Client;
let key: string;

const cli = (args: string[], env?: Record<string, string>) => w.cli(args, env);
const viaBackend = () => w.viaBackend();
const collection = () => w.collection();

/** Which of the images' ids (and of the report's and the multi-frame file's own) the collection holds. */
async function ids(name: string): Promise<string[]> {
  const found: string[] = [];
  for (const id of [...ALL, SOP.cine, SOP.sr]) {
    const res = await fetch(`${url}/v1/collections/${name}/items/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${key}` } });
    if (res.status === 200) found.push(id);
    else expect(res.status).toBe(404);
  }
  return found;
}

const item = (name: string, id: string) => api.request<{ code: string; metadata: Record<string, string> }>('GET', `/v1/collections/${name}/items/${encodeURIComponent(id)}`);

/** Writes `bytes` at `path` below `root`, making its folders. */
function put(root: string, path: string, bytes: Uint8Array | string) {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), bytes);
}

beforeAll(async () => {
  w = await startCliWorld('dicom');
  ({ dir, url, key, api } = w);
  exp = join(dir, 'export');
  put(exp, 'DICOMDIR', dicomDir(['DICOM\\PA000001\\ST000001\\SE000001\\IM000001', 'DICOM\\PA000001\\ST000001\\SE000001\\IM000002']));
  put(exp, 'DICOM/PA000001/ST000001/SE000001/IM000001', instance(SOP.ct, 'CT'));
  put(exp, 'DICOM/PA000001/ST000001/SE000001/IM000002', instance(SOP.cine, 'XA', 3));
  put(exp, 'DICOM/PA000001/ST000001/SE000002/IM000001', instance(SOP.sr, 'SR', 0));
  // a PACS export's own layout: the patient's name as a folder, the file named by its UID, no extension
  put(exp, `DOE_JOHN/${STUDY}/${SERIES}/${SOP.ct2}`, instance(SOP.ct2, 'CT'));
  // the same instance exported twice: indexed once
  put(exp, 'DOE_JOHN/copy/IM000001', instance(SOP.ct, 'CT'));
  put(exp, 'README.TXT', 'Open VIEWER.EXE to view the images.\n');
  // debris, though its bytes are an image's: a macOS fork of a file
  put(exp, 'DICOM/PA000001/ST000001/SE000001/._IM000001', instance(SOP.ct, 'CT'));
}, 120_000);

afterAll(() => w?.close());

describe('the walk of a DICOM export', () => {
  it('keeps each DICOM image by its bytes, whatever its name, named by its SOP Instance UID; counts what it skips', async () => {
    const link = join(dir, 'linked');
    put(link, 'x', '');
    // a link to a file is its file, as Python sees it; a non-DICOM file is sniffed, never read
    // whole (this one is over the 2 GiB Node's readFile refuses, and sparse)
    symlinkSync(join(exp, 'DICOM/PA000001/ST000001/SE000001/IM000001'), join(link, 'IM1'));
    writeFileSync(join(link, 'VIEWER.EXE'), '');
    truncateSync(join(link, 'VIEWER.EXE'), 3 * 2 ** 30);
    const l = await dicomExport(link);
    expect([l.images.map((f) => [f.id, f.origin, f.frames, f.label]), l.notDicom, l.notImages]).toEqual([[[SOP.ct, join(link, 'IM1'), 1, undefined]], 2, 0]);

    const e = await dicomExport(exp);
    const at = (p: string) => join(exp, p);
    expect(e.images.map((f) => [f.id, f.origin, f.frames])).toEqual([
      [SOP.ct, at('DICOM/PA000001/ST000001/SE000001/IM000001'), 1],
      [SOP.cine, at('DICOM/PA000001/ST000001/SE000001/IM000002'), 3],
      [SOP.ct2, at(`DOE_JOHN/${STUDY}/${SERIES}/${SOP.ct2}`), 1],
    ]);
    // README.TXT; the DICOMDIR and the report; the second copy
    expect([e.notDicom, e.notImages, e.duplicates]).toEqual([1, 2, [at('DOE_JOHN/copy/IM000001')]]);
  });

  it('refuses, by name, a file cut short inside its pixel data, rather than keeping it and skipping a complete copy after it', async () => {
    const cut = join(dir, 'cut');
    const whole = instance(SOP.cine, 'XA', 3);
    put(cut, 'A/IM000001', whole.slice(0, -100));
    put(cut, 'B/IM000001', whole);
    await expect(dicomExport(cut)).rejects.toThrow(`${join(cut, 'A/IM000001')}: DICOM is truncated: 3 frames of 32x32 pixels need 3072 bytes of pixel data, 2972 are present`);
  });
});

describe('medhash index --dicom', () => {
  it('indexes the images of the export (backend), items by SOP Instance UID with their DICOM metadata and no label; says what it skipped', async () => {
    const name = await collection();
    const run = await cli(['index', '--collection', name, '--dicom', exp, '--frames', 'all'], viaBackend());
    expect(run.stderr).toContain(`${exp}: 3 DICOM image file(s); skipped 1 file(s) not DICOM, 2 DICOM object(s) without pixel data (DICOMDIR, SR, presentation states), 1 copies of an instance already listed (${join(exp, 'DOE_JOHN/copy/IM000001')})`);
    expect(run.stderr).toContain('0 of 5 already published');
    expect(run.stderr).toMatch(/indexed 5 items/);
    expect(await ids(name)).toEqual(ALL);
    for (const id of ALL) {
      const got = await item(name, id);
      const sop = id.split('#')[0];
      expect(got.metadata, id).toEqual({ modality: sop === SOP.cine ? 'XA' : 'CT', body_part: 'CHEST', study_uid: STUDY, series_uid: SERIES, sop_uid: sop });
      expect(JSON.stringify(got)).not.toMatch(/DOE/);
    }
    // the frames are three different images
    expect(new Set(await Promise.all(CINE.map(async (id) => (await item(name, id)).code))).size).toBeGreaterThan(1);
  });

  it('resumes (in-process, then through the backend): a re-run encodes only what is left, under the same ids', async () => {
    const name = await collection();
    const first = await cli(['index', '--collection', name, '--dicom', exp, '--frames', 'all', '--max-items', '2', '--model', MODEL]);
    expect(first.stderr).toMatch(/indexed 2 items/);
    expect(await ids(name)).toEqual([SOP.ct, CINE[0]]);
    const again = await cli(['index', '--collection', name, '--dicom', exp, '--frames', 'all'], viaBackend());
    expect(again.stderr).toContain('2 of 5 already published');
    expect(again.stderr).toMatch(/indexed 3 items/);
    expect(await ids(name)).toEqual(ALL);
    // the two encoders agree: a fresh run in-process gives the backend's codes
    const local = await collection();
    await cli(['index', '--collection', local, '--dicom', exp, '--frames', 'first', '--model', MODEL]);
    expect(await ids(local)).toEqual([SOP.ct, CINE[0], SOP.ct2]);
    for (const id of [SOP.ct, CINE[0], SOP.ct2]) expect((await item(local, id)).code, id).toBe((await item(name, id)).code);
  });

  it('errors: --dicom with another source; an export without images; a file whose header does not read, or without a SOP Instance UID, named', async () => {
    const name = await collection();
    const both = await failure(cli(['index', '--collection', name, '--dicom', exp, '--images', exp]));
    expect([both.code, both.stderr]).toEqual([2, expect.stringContaining('give exactly one of --codes, --images, --dicom, --data')]);

    const empty = join(dir, 'empty');
    put(empty, 'DICOMDIR', dicomDir([]));
    put(empty, 'index.html', '<html></html>');
    const none = await failure(cli(['index', '--collection', name, '--dicom', empty], viaBackend()));
    expect([none.code, none.stderr]).toEqual([1, expect.stringContaining(`medhash: ${empty}: 0 DICOM image file(s); skipped 1 file(s) not DICOM, 1 DICOM object(s) without pixel data`)]);

    const bad = join(dir, 'bad');
    put(bad, 'IM000001', instance(SOP.ct, 'CT'));
    mkdirSync(join(bad, 'SE2'));
    copyFileSync(join(DICOM_FIXTURES, 'grey8-bigendian.dcm'), join(bad, 'SE2', 'IM000001'));
    const refused = await failure(cli(['index', '--collection', name, '--dicom', bad], viaBackend()));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`medhash: ${join(bad, 'SE2', 'IM000001')}: DICOM transfer syntax 1.2.840.10008.1.2.2 (Explicit VR Big Endian) is not supported`);

    const anonymous = join(dir, 'anonymous');
    put(anonymous, 'IM000001', part10(concatBytes([pixelModule(2, 2), element(0x7fe0, 0x0010, 'OB', new Uint8Array(4))])));
    const unnamed = await failure(cli(['index', '--collection', name, '--dicom', anonymous], viaBackend()));
    expect([unnamed.code, unnamed.stderr]).toEqual([1, expect.stringContaining(`medhash: ${join(anonymous, 'IM000001')}: no valid SOP Instance UID (0008,0018), by which --dicom names its item`)]);
    // nothing was indexed by any of them
    expect(await ids(name)).toEqual([]);
  });
});
