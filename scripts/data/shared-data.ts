// Reader for the ../shared/data layout (see its README): `images.tar` (plain, uncompressed) read
// in place by member offset, and `manifest.csv` (path,label,split,md5). One reader for the
// evaluation scripts, the tests and the CLI, so they all take the very bytes Python reads.
// A plain class folder (`<class>/<file>`) opens as the same kind of data set, split by the same
// md5 rule as the Python reader (models/medhash_model/data.py), so a model trained on a folder is
// evaluated here on the very `db` and `query` images its card's figures come from.
import { createHash } from 'node:crypto';
import { existsSync, type Dirent } from 'node:fs';
import { open, readdir, readFile, stat, type FileHandle } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import type { ImageType } from '../../functions/encode/image.ts';
import { parseCsvLine } from '../cli/sources.ts';

export interface ManifestRow {
  path: string;
  label: string;
  split: string;
  md5: string;
}

export interface TarMember {
  offset: number;
  size: number;
}

const BLOCK = 512;

function cstr(b: Buffer, start: number, len: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end < 0 || end > start + len ? start + len : end);
}

function octal(b: Buffer, start: number, len: number): number {
  const s = cstr(b, start, len).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

/** pax extended header records "LEN key=value\n"; only `path` matters here. */
function paxPath(b: Buffer): string | null {
  let pos = 0;
  while (pos < b.length) {
    const sp = b.indexOf(0x20, pos);
    if (sp < 0) break;
    const len = parseInt(b.toString('utf8', pos, sp), 10);
    if (!(len > 0)) break;
    const rec = b.toString('utf8', sp + 1, pos + len - 1);
    if (rec.startsWith('path=')) return rec.slice(5);
    pos += len;
  }
  return null;
}

/** An uncompressed tar opened for random access: the member index is built once on open. */
export class TarReader {
  private constructor(
    private readonly fh: FileHandle,
    readonly members: ReadonlyMap<string, TarMember>,
  ) {}

  static async open(path: string): Promise<TarReader> {
    const fh = await open(path, 'r');
    const members = new Map<string, TarMember>();
    const header = Buffer.alloc(BLOCK);
    let pos = 0;
    let longName: string | null = null;
    for (;;) {
      const { bytesRead } = await fh.read(header, 0, BLOCK, pos);
      if (bytesRead < BLOCK || header.every((x: number) => x === 0)) break;
      const size = octal(header, 124, 12);
      const type = String.fromCharCode(header[156] || 0x30);
      const dataAt = pos + BLOCK;
      if (type === 'L' || type === 'x') {
        const ext = Buffer.alloc(size);
        await fh.read(ext, 0, size, dataAt);
        longName = type === 'L' ? cstr(ext, 0, size) : paxPath(ext);
      } else if (type === '0' || type === '7') {
        const prefix = header.toString('utf8', 257, 262) === 'ustar' ? cstr(header, 345, 155) : '';
        const name = longName ?? (prefix ? `${prefix}/${cstr(header, 0, 100)}` : cstr(header, 0, 100));
        members.set(name, { offset: dataAt, size });
        longName = null;
      } else {
        longName = null;
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
    }
    return new TarReader(fh, members);
  }

  async read(name: string): Promise<Uint8Array> {
    const m = this.members.get(name);
    if (!m) throw new Error(`no member ${JSON.stringify(name)} in the tar`);
    const out = new Uint8Array(m.size);
    await this.fh.read(out, 0, m.size, m.offset);
    return out;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

export async function readManifest(dataDir: string): Promise<ManifestRow[]> {
  const lines = (await readFile(join(dataDir, 'manifest.csv'), 'utf8')).split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = parseCsvLine(lines[0]);
  const col = (k: string) => {
    const i = header.indexOf(k);
    if (i < 0) throw new Error(`${dataDir}/manifest.csv: no "${k}" column`);
    return i;
  };
  const [p, l, s, m] = [col('path'), col('label'), col('split'), col('md5')];
  return lines.slice(1).map((line) => {
    const c = parseCsvLine(line);
    return { path: c[p], label: c[l], split: c[s], md5: c[m] };
  });
}

/** The split rule of ../shared/data (README): int(md5[:8], 16) % 100 -> train 60 / val 10 / db 20 / query 10. */
export function md5Split(md5hex: string): string {
  const v = parseInt(md5hex.slice(0, 8), 16) % 100;
  return v < 60 ? 'train' : v < 70 ? 'val' : v < 90 ? 'db' : 'query';
}

/** Reads members of a data set by path (a tar member, or a file of a class folder). */
export interface MemberReader {
  read(path: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface DataSet {
  rows: ManifestRow[];
  reader: MemberReader;
}

/**
 * The one list of the image files that folders and data sets may hold, by extension (any case),
 * for evaluation, `medhash index --images` and `medhash search --image`: PNG, JPEG and DICOM
 * (read by functions/encode/dicom.ts: uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000). The Python reader's list is data.py's
 * IMAGE_EXT, the same four.
 */
const TYPES: Record<string, ImageType> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.dcm': 'application/dicom' };

/** The extensions of TYPES, for messages. */
export const IMAGE_EXTENSIONS = Object.keys(TYPES);

/** The media type of an image file by its extension (any case); undefined for other files. */
export const contentTypeOf = (file: string): ImageType | undefined => TYPES[extname(file).toLowerCase()];

/** Whether an entry is a directory or a file through a symbolic link, as Python's Path.is_dir and
 * is_file see it (a broken link is neither): folders of links to the originals are common, and
 * the Python reader trains on the images they point to. */
async function isKind(e: Dirent, kind: 'dir' | 'file'): Promise<boolean> {
  if (!e.isSymbolicLink()) return kind === 'dir' ? e.isDirectory() : e.isFile();
  const s = await stat(join(e.parentPath, e.name)).catch(() => null);
  return kind === 'dir' ? !!s?.isDirectory() : !!s?.isFile();
}

async function filterKind(entries: Dirent[], kind: 'dir' | 'file'): Promise<Dirent[]> {
  const keep = await Promise.all(entries.map((e) => isKind(e, kind)));
  return entries.filter((_, i) => keep[i]);
}

/** Archive debris, not classes or images: names starting with "." (macOS's `._x.jpg` forks,
 * `.DS_Store`) and `__MACOSX` folders, at any depth. The Python reader skips the same. */
const isDebris = (name: string): boolean => name.startsWith('.') || name === '__MACOSX';

/**
 * The files below `top` (recursively, as Python's rglob walks it: links to files are files, links
 * to folders below `top` are not followed) that `accept` takes by name, debris left out, as paths
 * relative to `dir`, sorted. The one walk of a folder here: of each class folder, and of a whole
 * DICOM export (`medhash index --dicom`).
 */
export async function folderFiles(dir: string, top: string, accept: (name: string) => boolean): Promise<string[]> {
  const entries = (await readdir(top, { recursive: true, withFileTypes: true })).filter((e) => accept(e.name));
  const paths = (await filterKind(entries, 'file')).map((e) => relative(dir, join(e.parentPath, e.name)));
  return paths.filter((p) => !p.split(/[\\/]/).some(isDebris)).sort();
}

/**
 * The files of a class folder (`<class>/...`, recursively, as Python's reader walks it) that
 * `accept` takes by name, as paths relative to `dir`: classes sorted, files sorted within each.
 * The one walk of the convention here, for evaluation and `medhash index --images` (Python
 * training mirrors it in data.py).
 */
export async function classFolderFiles(dir: string, accept: (name: string) => boolean): Promise<{ label: string; path: string }[]> {
  const out: { label: string; path: string }[] = [];
  const classes = (await filterKind(await readdir(dir, { withFileTypes: true }), 'dir')).map((e) => e.name).filter((n) => !isDebris(n)).sort();
  for (const label of classes) out.push(...(await folderFiles(dir, join(dir, label), accept)).map((path) => ({ label, path })));
  return out;
}

/** Rows of a class folder: every image below `<class>/` (PNG, JPEG, DICOM), sorted like Python's reader. */
async function classFolderRows(dir: string): Promise<ManifestRow[]> {
  const rows: ManifestRow[] = [];
  for (const { label, path } of await classFolderFiles(dir, (name) => contentTypeOf(name) !== undefined)) {
    const md5 = createHash('md5').update(await readFile(join(dir, path))).digest('hex');
    rows.push({ path, label, split: md5Split(md5), md5 });
  }
  if (rows.length === 0) throw new Error(`${dir}: neither manifest.csv + images.tar nor class folders with ${IMAGE_EXTENSIONS.join('/')} images`);
  return rows;
}

/** The rows of a model's own classes. A model trained with classes held out (`--holdout`) is
 * evaluated without them, as the Python evaluation (known_only) is: they are its near OOD set. */
export function ofClasses(rows: ManifestRow[], classes: readonly string[]): ManifestRow[] {
  const known = new Set(classes);
  return rows.filter((r) => known.has(r.label));
}

/** A ../shared/data set (manifest.csv + images.tar) or a class folder, with a reader for its
 * members; with `classes`, only the rows of those classes. */
export async function openDataSet(dir: string, classes?: readonly string[]): Promise<DataSet> {
  const known = (rows: ManifestRow[]) => (classes ? ofClasses(rows, classes) : rows);
  if (existsSync(join(dir, 'manifest.csv'))) {
    const rows = known(await readManifest(dir));
    return { rows, reader: await TarReader.open(join(dir, 'images.tar')) };
  }
  const rows = known(await classFolderRows(dir));
  return { rows, reader: { read: async (path) => new Uint8Array(await readFile(join(dir, path))), close: async () => undefined } };
}

/** Default data root: `../shared/data` from the repository root, or MEDHASH_DATA. */
export function sharedDataRoot(): string {
  return process.env.MEDHASH_DATA ?? join(process.cwd(), '..', 'shared', 'data');
}
