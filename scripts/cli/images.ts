// Image files for `medhash index --images` / `--dicom` / `--data`: a folder with one sub-folder
// per class, a DICOM export as it is (a PACS or media export, `dicomExport`), or a
// `../shared/data` set (manifest.csv + images.tar, members read in place by offset through
// scripts/data/shared-data.ts), and the items they make: one per image, or one per frame of a
// multi-frame DICOM (`imageItems`). Only a DICOM's header is read before it is encoded. A local
// file has its own byte limit (LOCAL_FILE_MAX_BYTES), not the service's request limit.
import { open, readFile, stat } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import { dicomFrameCount, dicomMetadata, dicomWholeFrameCount, inflatedCap, isDicom, NotAnImage, undeflated } from '../../functions/encode/dicom.ts';
import { DEFAULT_LIMITS, type ImageLimits, type ImageType } from '../../functions/encode/image.ts';
import { classFolderFiles, contentTypeOf, folderFiles, IMAGE_EXTENSIONS, readManifest, TarReader } from '../data/shared-data.ts';

export interface ImageFile {
  id: string;
  /** Its class (folder or manifest); a DICOM export has none, and its items no `label`. */
  label?: string;
  contentType: ImageType;
  read(): Promise<Uint8Array>;
  /** Where it came from, for error messages: the file, shared by the items of its frames. */
  origin: string;
  /** Which frame (0-based) of a multi-frame DICOM this item is; absent for a single-image file. */
  frame?: number;
  /** The file's Number of Frames, when its lister has read its header already (`dicomExport`): `imageItems` does not read it again. */
  frames?: number;
}

/**
 * The most bytes a local image file may have. The service's 8 MiB (DEFAULT_LIMITS.maxBytes) is a
 * request's limit, for bytes that cross the network into a shared process; a file the CLI reads
 * itself costs only this process's memory, which holds one file at a time (encode.ts), so the limit
 * is what a workstation can hold once: 1 GiB, room for an enhanced CT of 2000 512 x 512 16-bit
 * frames (1000 MiB), and half of the 2 GiB past which Node's readFile refuses a file. A file over
 * it is refused by its size, unread.
 */
export const LOCAL_FILE_MAX_BYTES = 1024 * 1024 * 1024;

/**
 * What the CLI decodes a local DICOM under: the whole file up to LOCAL_FILE_MAX_BYTES (a deflated
 * one inflating to as much, `inflatedCap`), each frame under the service's pixel limits (maxSide,
 * maxPixels), which bound what one decoded frame costs. A PNG or JPEG is one image and goes to the
 * backend as it is: it keeps DEFAULT_LIMITS, so that both encoding paths take the same files.
 */
export const LOCAL_DICOM_LIMITS: ImageLimits = { ...DEFAULT_LIMITS, maxBytes: LOCAL_FILE_MAX_BYTES };
/** The cap on a local deflated DICOM's data set: as large as an uncompressed local file may be. */
export const LOCAL_MAX_INFLATED = inflatedCap(LOCAL_FILE_MAX_BYTES);

/** Refuses a file of `size` bytes over LOCAL_FILE_MAX_BYTES, before it is read; the caller names the file. */
function checkLocalSize(size: number): void {
  if (size > LOCAL_FILE_MAX_BYTES) throw new Error(`file is ${size} bytes; a local image file may have at most ${LOCAL_FILE_MAX_BYTES} (${LOCAL_FILE_MAX_BYTES / 2 ** 30} GiB, LOCAL_FILE_MAX_BYTES)`);
}

/** A local image file's bytes, refused unread (by its size) over LOCAL_FILE_MAX_BYTES; the caller names the file. */
export async function readLocalFile(file: string): Promise<Uint8Array> {
  checkLocalSize((await stat(file)).size);
  return new Uint8Array(await readFile(file));
}

/**
 * The most frames `--frames all` takes of one file. Each becomes an item, listed before encoding
 * starts (for the progress bar's total and the checkpoint), and a header's Number of Frames is
 * only bounded by the file's bytes: a deflated file of 1 MB could claim 10^9 frames of one pixel
 * and fill memory with items. 100,000 is far above a CT, MR or XA series in one file; a whole-slide
 * image's largest level may have more tiles, which `--frames first` or `--max-items` bound.
 */
export const MAX_FRAMES_PER_FILE = 100_000;

/** The item's place for a message: its file, and its frame when it is one. */
export const where = (f: ImageFile): string => (f.frame === undefined ? f.origin : `${f.origin} frame ${f.frame}`);

/** What `run` gives, or its failure under `place`'s name (a file, or `where` of an item). */
export async function named<T>(place: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw new Error(`${place}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** An image of a class folder or data set: it has its label. */
export type LabelledImage = ImageFile & { label: string };

/** `dir/<label>/.../<file>.{png,jpg,jpeg,dcm}` (contentTypeOf); ids are the paths below `dir` (`<label>/<file>`), sorted. */
export async function folderImages(dir: string): Promise<LabelledImage[]> {
  const out: LabelledImage[] = [];
  for (const { label, path } of await classFolderFiles(dir, (name) => contentTypeOf(name) !== undefined)) {
    const file = join(dir, path);
    out.push({ id: path.split(sep).join('/'), label, contentType: contentTypeOf(path)!, read: () => readLocalFile(file), origin: file });
  }
  if (out.length === 0) throw new Error(`${dir}: no ${IMAGE_EXTENSIONS.join('/')} files in class sub-folders`);
  return out;
}

/** The bytes a Part 10 file has before its meta group: the preamble and "DICM". */
const PART10_MAGIC_END = 132;

/** Whether `file` is DICOM Part 10, by its first 132 bytes alone (whatever its name). */
async function sniffDicom(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const head = new Uint8Array(PART10_MAGIC_END);
    const { bytesRead } = await fh.read(head, 0, PART10_MAGIC_END, 0);
    return isDicom(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/** A DICOM export's images, and what its walk left out. */
export interface DicomExport {
  images: ImageFile[];
  /** Files that are not DICOM Part 10 (a viewer, its autorun, an index.html). */
  notDicom: number;
  /** DICOM objects without an image (NotAnImage): the DICOMDIR, structured reports, presentation states, key objects. */
  notImages: number;
  /** Files of a SOP Instance UID an earlier file had: the same instance exported twice, indexed once. */
  duplicates: string[];
}

/**
 * Every DICOM image below `dir` as it is exported (a PACS's `<patient>/<study>/<series>/<uid>.dcm`,
 * a media's DICOMDIR and `DICOM/PA000001/.../IM000001`): files walked as --images walks a class
 * (folderFiles: sorted, links as Python sees them, debris left out), each kept by its bytes (the
 * Part 10 magic), whatever its name. A kept file is read once here, for the id and its Number of
 * Frames; one whose header does not read, or whose pixel data does not hold all its frames, stops
 * the listing, named, before anything is encoded.
 *
 * The id is the SOP Instance UID, not the path: it is the same in every export of the instance
 * (a PACS numbers a re-export's files anew, so a re-run upserts rather than duplicates, and the
 * checkpoint still knows what was published); a folder may be named after the patient, a UID
 * says nothing of them; it is unique by definition; and, digits and dots, it never holds the
 * `#frame=` of a frame's id. The cost: a resumed run reads each file's header again to know it.
 */
export async function dicomExport(dir: string): Promise<DicomExport> {
  const out: DicomExport = { images: [], notDicom: 0, notImages: 0, duplicates: [] };
  const seen = new Set<string>();
  for (const path of await folderFiles(dir, dir, () => true)) {
    const file = join(dir, path);
    if (!(await sniffDicom(file))) {
      out.notDicom++;
      continue;
    }
    const read = () => readLocalFile(file);
    let header: { sop?: string; frames: number };
    try {
      // a deflated file inflated once for both walks; a file cut short inside its pixel data is
      // refused here, by name, before anything is indexed and before a complete copy of it that
      // follows would be skipped as its duplicate
      const bytes = await undeflated(await read(), LOCAL_MAX_INFLATED);
      header = { sop: (await dicomMetadata(bytes, LOCAL_MAX_INFLATED)).sop_uid, frames: await dicomWholeFrameCount(bytes, LOCAL_MAX_INFLATED) };
    } catch (e) {
      if (e instanceof NotAnImage) {
        out.notImages++;
        continue;
      }
      throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (header.sop === undefined) throw new Error(`${file}: no valid SOP Instance UID (0008,0018), by which --dicom names its item`);
    if (seen.has(header.sop)) {
      out.duplicates.push(file);
      continue;
    }
    seen.add(header.sop);
    out.images.push({ id: header.sop, contentType: 'application/dicom', read, origin: file, frames: header.frames });
  }
  return out;
}

export interface DataSetImages {
  images: LabelledImage[];
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
    id: `${set}/${r.path}`, label: r.label, contentType: contentTypeOf(r.path)!, origin: `${dir}/images.tar:${r.path}`,
    read: async () => {
      checkLocalSize(tar.members.get(r.path)?.size ?? 0);
      return tar.read(r.path);
    },
  }));
  return { images, close: () => tar.close() };
}

/** What `medhash index --frames` does with a multi-frame DICOM: an item per frame, frame 0 only, or none. */
export const FRAME_CHOICES = ['all', 'first', 'skip'] as const;
export type FrameChoice = (typeof FRAME_CHOICES)[number];

/**
 * The item id of frame `n` of the file whose id is `fileId`. A file's id ends in its image
 * extension (`.dcm`; contentTypeOf) or is a SOP Instance UID (`dicomExport`: digits and dots),
 * never in `#frame=<digits>`, so no frame's id is another file's, and the last `#frame=` splits a
 * frame's id back into its file's id and frame.
 */
export const frameItemId = (fileId: string, n: number): string => `${fileId}#frame=${n}`;

export interface ImageItems {
  /** In file order; a frame item keeps its file's label, content type, `read` and `origin`. */
  items: ImageFile[];
  /** Multi-frame DICOMs that gave no item (`skip`, or no choice made). */
  multiFrame: ImageFile[];
}

/**
 * The items of `files`, up to `max`: a PNG, JPEG or single-frame DICOM is one item under its
 * file's id; a multi-frame DICOM gives, per `frames`, one item per frame (`all`), frame 0 alone
 * (`first`; under its frame id too, so that a later `all` adds frames 1 and up beside it) or none
 * (`skip`, or `frames` undefined). Counting frames reads each DICOM's header here, one file at a
 * time and no pixel decoded (unless its lister has: `ImageFile.frames`), so that the total is known before encoding starts. A file that does
 * not read, or whose header the decoder refuses, counts as one item: the encoder then refuses it,
 * naming the file and the reason, as it refuses any file it cannot read. A file whose own id is
 * `published` (the checkpoint's) was one item when it was indexed and is not read again: a resumed
 * run reads only the files it still has to encode, as it did before frames were counted.
 */
export async function imageItems(files: ImageFile[], frames: FrameChoice | undefined, max = Infinity, published: (id: string) => boolean = () => false): Promise<ImageItems> {
  const out: ImageItems = { items: [], multiFrame: [] };
  for (const f of files) {
    if (out.items.length >= max) break;
    let count = f.frames ?? 1;
    if (f.frames === undefined && f.contentType === 'application/dicom' && !published(f.id)) {
      try {
        count = await dicomFrameCount(await f.read(), LOCAL_MAX_INFLATED);
      } catch {
        // refused by the encoder, with the reason
      }
    }
    if (count === 1) out.items.push(f);
    else if (frames === 'all' || frames === 'first') {
      const n = frames === 'all' ? Math.min(count, max - out.items.length) : 1;
      if (n > MAX_FRAMES_PER_FILE) {
        throw new Error(`${f.origin}: its Number of Frames is ${count}; --frames all takes at most ${MAX_FRAMES_PER_FILE} frames of one file (MAX_FRAMES_PER_FILE): use --frames first, or --max-items`);
      }
      for (let k = 0; k < n; k++) out.items.push({ ...f, id: frameItemId(f.id, k), frame: k });
    } else out.multiFrame.push(f);
  }
  return out;
}
