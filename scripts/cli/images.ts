// Image files for `medhash index --images` / `--data`: a folder with one sub-folder per class,
// or a `../shared/data` set (manifest.csv + images.tar, members read in place by offset through
// scripts/data/shared-data.ts). Nothing is read until it is encoded.
import { readFile } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import type { ImageType } from '../../functions/encode/image.ts';
import { classFolderFiles, contentTypeOf, IMAGE_EXTENSIONS, readManifest, TarReader } from '../data/shared-data.ts';

export interface ImageFile {
  id: string;
  label: string;
  contentType: ImageType;
  read(): Promise<Uint8Array>;
  /** Where it came from, for error messages. */
  origin: string;
}

/** `dir/<label>/.../<file>.{png,jpg,jpeg,dcm}` (contentTypeOf); ids are the paths below `dir` (`<label>/<file>`), sorted. */
export async function folderImages(dir: string): Promise<ImageFile[]> {
  const out: ImageFile[] = [];
  for (const { label, path } of await classFolderFiles(dir, (name) => contentTypeOf(name) !== undefined)) {
    const file = join(dir, path);
    out.push({ id: path.split(sep).join('/'), label, contentType: contentTypeOf(path)!, read: async () => new Uint8Array(await readFile(file)), origin: file });
  }
  if (out.length === 0) throw new Error(`${dir}: no ${IMAGE_EXTENSIONS.join('/')} files in class sub-folders`);
  return out;
}

export interface DataSetImages {
  images: ImageFile[];
  /** Closes the tar; the images cannot be read after. */
  close(): Promise<void>;
}

/** A data set's images of one split, in manifest order; ids are `<set>/<path>`. */
export async function dataSetImages(dir: string, split: string): Promise<DataSetImages> {
  const set = basename(dir.replace(/\/+$/, ''));
  const rows = (await readManifest(dir)).filter((r) => r.split === split);
  if (rows.length === 0) throw new Error(`${dir}: no images in split ${JSON.stringify(split)}`);
  const bad = rows.find((r) => !contentTypeOf(r.path));
  if (bad) throw new Error(`${dir}/manifest.csv: ${bad.path} is not a PNG, JPEG or DICOM file (${IMAGE_EXTENSIONS.join(', ')})`);
  const tar = await TarReader.open(join(dir, 'images.tar'));
  const images = rows.map((r) => ({
    id: `${set}/${r.path}`, label: r.label, contentType: contentTypeOf(r.path)!, read: () => tar.read(r.path), origin: `${dir}/images.tar:${r.path}`,
  }));
  return { images, close: () => tar.close() };
}
