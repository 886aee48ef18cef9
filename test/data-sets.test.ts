// Data sets as the evaluation scripts open them: the TypeScript md5 split rule reproduces every
// split of ../shared/data's manifests, and a class folder made of a set's own files opens with
// the splits, labels and bytes the manifest gives those files, as the Python reader splits it;
// .dcm files in it are read too (as by the Python reader), and encode as the JPEG they were made from.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCard } from '../functions/encode/card.ts';
import { decodeImage } from '../functions/encode/image.ts';
import { initNodeImageCodecs } from '../functions/encode/image-node.ts';
import { loadNodeEncoder, packCode, row } from '../functions/encode/model.ts';
import { encodeMembers } from '../scripts/data/encode-set.ts';
import { IMAGE_EXTENSIONS, md5Split, openDataSet, readManifest, TarReader } from '../scripts/data/shared-data.ts';
import { folderImages } from '../scripts/cli/images.ts';
import { dataDir, DICOM_FIXTURES, DICOM_SOURCES, MODELS } from './encode/fixtures.ts';

describe('md5Split', () => {
  it.each(['brain_tumor_mri', 'kather_crc_2016', 'mednist'])('gives the manifest split of every %s image', async (set) => {
    const rows = await readManifest(dataDir(set));
    expect(rows.length).toBeGreaterThan(1000);
    const wrong = rows.filter((r) => md5Split(r.md5) !== r.split);
    expect(wrong).toEqual([]);
  });
});

describe('openDataSet with a model\'s classes', () => {
  it('leaves out the rows of classes the model never saw, as the Python evaluation does', async () => {
    const dir = dataDir('brain_tumor_mri');
    const all = await readManifest(dir);
    const { rows, reader } = await openDataSet(dir, ['glioma', 'notumor']);
    await reader.close();
    expect(new Set(rows.map((r) => r.label))).toEqual(new Set(['glioma', 'notumor']));
    expect(rows).toEqual(all.filter((r) => r.label === 'glioma' || r.label === 'notumor'));
  });
});

describe('openDataSet on a class folder', () => {
  const root = mkdtempSync(join(tmpdir(), 'medhash-folder-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('splits, labels and reads files as the manifest does for the same images', async () => {
    const src = dataDir('brain_tumor_mri');
    const manifest = await readManifest(src);
    // 15 images of each class as <class>/<file>, one more in a sub-folder with an upper-case extension, and a non-image file
    const picked = ['glioma', 'meningioma', 'notumor', 'pituitary'].flatMap((label) => manifest.filter((r) => r.label === label).slice(0, 15));
    const tar = await TarReader.open(join(src, 'images.tar'));
    const expected = new Map<string, { label: string; split: string; bytes: Uint8Array }>();
    for (const r of picked) {
      const bytes = await tar.read(r.path);
      const path = join(r.label, r.path.replace(/\//g, '_'));
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), bytes);
      expected.set(path, { label: r.label, split: r.split, bytes });
    }
    await tar.close();
    mkdirSync(join(root, 'glioma', 'nested'), { recursive: true });
    const first = expected.get(join('glioma', picked[0].path.replace(/\//g, '_')))!;
    writeFileSync(join(root, 'glioma', 'nested', 'copy.JPG'), first.bytes);
    expected.set(join('glioma', 'nested', 'copy.JPG'), first);
    writeFileSync(join(root, 'glioma', 'notes.txt'), 'not an image');

    const { rows, reader } = await openDataSet(root);
    try {
      expect(rows).toHaveLength(picked.length + 1);
      expect(new Set(rows.map((r) => r.split)).size).toBeGreaterThan(1);
      for (const row of rows) {
        const want = expected.get(row.path)!;
        expect(row.label, row.path).toBe(want.label);
        expect(row.split, row.path).toBe(want.split);
        expect(Buffer.from(await reader.read(row.path)).equals(Buffer.from(want.bytes))).toBe(true);
      }
    } finally {
      await reader.close();
    }
  });

  it('reads linked class folders and linked images as the Python reader does', async () => {
    const top = mkdtempSync(join(tmpdir(), 'medhash-links-'));
    try {
      const src = dataDir('brain_tumor_mri');
      const rows = (await readManifest(src)).slice(0, 4);
      const tar = await TarReader.open(join(src, 'images.tar'));
      mkdirSync(join(top, 'originals'));
      for (const [i, r] of rows.entries()) writeFileSync(join(top, 'originals', `${i}.jpg`), await tar.read(r.path));
      await tar.close();
      const folder = join(top, 'images');
      mkdirSync(join(folder, 'a'), { recursive: true });
      copyFileSync(join(top, 'originals', '0.jpg'), join(folder, 'a', 'plain.jpg'));
      symlinkSync(join(top, 'originals', '1.jpg'), join(folder, 'a', 'linked.jpg'));
      symlinkSync(join(top, 'missing.jpg'), join(folder, 'a', 'broken.jpg'));
      symlinkSync(join(top, 'originals'), join(folder, 'b'));
      const python = [
        'import json, sys',
        `sys.path.insert(0, ${JSON.stringify(join(import.meta.dirname, '..', 'models'))})`,
        'from pathlib import Path',
        'from medhash_model.data import _folder_records',
        `print(json.dumps([[r.id, r.label, r.split] for r in _folder_records(Path(${JSON.stringify(folder)}))]))`,
      ].join('\n');
      const want = JSON.parse(execFileSync('/usr/bin/python3', ['-c', python], { encoding: 'utf8' })) as string[][];
      expect(want).toHaveLength(6);
      const { rows: got, reader } = await openDataSet(folder);
      await reader.close();
      const key = (r: string[]) => r.join('|');
      expect(got.map((r) => [r.path, r.label, r.split]).map(key).sort()).toEqual(want.map(key).sort());
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });

  it("leaves out archive debris (macOS's ._ forks, __MACOSX, hidden folders) on every reader, and walks sub-folders", async () => {
    const folder = mkdtempSync(join(tmpdir(), 'medhash-debris-'));
    try {
      const src = dataDir('brain_tumor_mri');
      const [r0, r1] = (await readManifest(src)).slice(0, 2);
      const tar = await TarReader.open(join(src, 'images.tar'));
      mkdirSync(join(folder, 'a', 'sub'), { recursive: true });
      writeFileSync(join(folder, 'a', 'plain.jpg'), await tar.read(r0.path));
      writeFileSync(join(folder, 'a', 'sub', 'deep.jpg'), await tar.read(r1.path));
      await tar.close();
      const fork = new Uint8Array([0, 5, 22, 7, 0, 2, 0, 0]); // AppleDouble header: not a JPEG
      writeFileSync(join(folder, 'a', '._plain.jpg'), fork);
      writeFileSync(join(folder, 'a', '.DS_Store'), fork);
      mkdirSync(join(folder, '__MACOSX', 'a'), { recursive: true });
      writeFileSync(join(folder, '__MACOSX', 'a', '._plain.jpg'), fork);
      mkdirSync(join(folder, 'a', '.thumbs'));
      copyFileSync(join(folder, 'a', 'plain.jpg'), join(folder, 'a', '.thumbs', 'plain.jpg'));
      const python = [
        'import json, sys',
        `sys.path.insert(0, ${JSON.stringify(join(import.meta.dirname, '..', 'models'))})`,
        'from pathlib import Path',
        'from medhash_model.data import _folder_records',
        `print(json.dumps([[r.id, r.label] for r in _folder_records(Path(${JSON.stringify(folder)}))]))`,
      ].join('\n');
      const want = [['a/plain.jpg', 'a'], ['a/sub/deep.jpg', 'a']];
      expect(JSON.parse(execFileSync('/usr/bin/python3', ['-c', python], { encoding: 'utf8' }))).toEqual(want);
      const { rows, reader } = await openDataSet(folder);
      await reader.close();
      expect(rows.map((r) => [r.path, r.label])).toEqual(want);
      expect((await folderImages(folder)).map((f) => [f.id, f.label])).toEqual(want);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('reads .dcm files as the Python reader does, and a DICOM encodes as the JPEG it was made from', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'medhash-dicom-'));
    try {
      const tar = await TarReader.open(join(dataDir(DICOM_SOURCES.grey.set), 'images.tar'));
      mkdirSync(join(folder, 'Hand', 'sub'), { recursive: true });
      writeFileSync(join(folder, 'Hand', 'scan.jpeg'), await tar.read(DICOM_SOURCES.grey.member));
      await tar.close();
      copyFileSync(join(DICOM_FIXTURES, 'grey8-explicit.dcm'), join(folder, 'Hand', 'scan.dcm'));
      copyFileSync(join(DICOM_FIXTURES, 'ct16-window.dcm'), join(folder, 'Hand', 'sub', 'SCAN2.DCM'));
      writeFileSync(join(folder, 'Hand', '._scan.dcm'), new Uint8Array([0, 5, 22, 7]));
      const python = [
        'import json, sys',
        `sys.path.insert(0, ${JSON.stringify(join(import.meta.dirname, '..', 'models'))})`,
        'from pathlib import Path',
        'from medhash_model.data import IMAGE_EXT, _folder_records',
        `print(json.dumps([list(IMAGE_EXT), [[r.id, r.label, r.split] for r in _folder_records(Path(${JSON.stringify(folder)}))]]))`,
      ].join('\n');
      const [extensions, want] = JSON.parse(execFileSync('/usr/bin/python3', ['-c', python], { encoding: 'utf8' })) as [string[], string[][]];
      // one list a side, the same on both
      expect(IMAGE_EXTENSIONS).toEqual(extensions);
      expect(want.map((r) => r[0])).toEqual(['Hand/scan.dcm', 'Hand/scan.jpeg', 'Hand/sub/SCAN2.DCM']);
      const { rows, reader } = await openDataSet(folder);
      try {
        expect(rows.map((r) => [r.path, r.label, r.split])).toEqual(want);
        expect((await folderImages(folder)).map((f) => [f.id, f.contentType])).toEqual([
          ['Hand/scan.dcm', 'application/dicom'], ['Hand/scan.jpeg', 'image/jpeg'], ['Hand/sub/SCAN2.DCM', 'application/dicom']]);
        // the evaluation's own path: the reader's bytes, sniffed by decodeImage, preprocessed and encoded
        await initNodeImageCodecs();
        const [dcm, jpeg] = [await decodeImage(await reader.read('Hand/scan.dcm')), await decodeImage(await reader.read('Hand/scan.jpeg'))];
        expect(Buffer.from(dcm.data).equals(Buffer.from(jpeg.data))).toBe(true);
        const { card, onnx } = await loadCard(join(MODELS, 'mednist-darf-b64.card.json'));
        const encoder = await loadNodeEncoder(onnx, card);
        const codes: string[] = [];
        try {
          await encodeMembers(reader, rows.map((r) => r.path), encoder, 8, (_paths, out) => {
            for (let i = 0; i < out.n; i++) codes.push(Buffer.from(packCode(row(out.u, card.bits, i))).toString('hex'));
          });
        } finally {
          await encoder.close();
        }
        expect(codes).toHaveLength(3);
        expect(codes[0]).toBe(codes[1]);
      } finally {
        await reader.close();
      }
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('names the problem when a folder holds no class folders with images', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'medhash-empty-'));
    try {
      await expect(openDataSet(empty)).rejects.toThrow(/neither manifest.csv \+ images.tar nor class folders/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
