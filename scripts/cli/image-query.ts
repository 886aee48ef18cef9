// The body of `medhash search --image FILE`: a PNG or JPEG as it is; a DICOM's chosen frame
// decoded here and sent as a lossless PNG, with the file's Study Instance UID for
// --exclude-own-study. Every DICOM takes this way, not only one over the service's 8 MiB: with one
// way, what a small file's search proves (the same answer as a POST of the file) holds for the
// 300 MiB enhanced CT too, and a file's answer, errors and exclusions do not change at 8 MiB.
import { MAX_BODY_BYTES } from '../../functions/api/schemas.ts';
import { dicomFrameCount, dicomMetadata, undeflated } from '../../functions/encode/dicom.ts';
import { decodeImage, type ImageType } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { encodePng } from '../../functions/encode/png-encode.ts';
import { RawBody } from './client.ts';
import { LOCAL_DICOM_LIMITS, LOCAL_MAX_INFLATED, named, readLocalFile } from './images.ts';

export interface ImageQuery {
  body: RawBody;
  /** The `frame` query parameter: the one asked for a PNG or JPEG (the service checks it); none for a DICOM's PNG, one frame. */
  frame?: number;
  /** The DICOM's Study Instance UID, when its own study is to be left out (`exclude_study_uid`). */
  studyUid?: string;
}

/**
 * The request for `file` of `type`, its frame `frame` (0-based; a multi-frame DICOM needs one).
 * A DICOM is read under the CLI's own limit (LOCAL_DICOM_LIMITS, as `medhash index` reads it) and
 * its frame goes as the PNG that the service decodes to the very pixels the DICOM gave
 * (png-encode.ts): the service then decodes, preprocesses, encodes, OOD-gates, filters and meters
 * it as any image. `ownStudy`: the file's study UID is looked up, as the service would look it up.
 */
export async function imageQuery(file: string, type: ImageType, frame: number | undefined, ownStudy: boolean): Promise<ImageQuery> {
  const bytes = await named(file, () => readLocalFile(file));
  if (type !== 'application/dicom') return { body: new RawBody(bytes as Uint8Array<ArrayBuffer>, type), frame };
  // inflated once (a deflated file) for both its header and its frame
  const plain = await named(file, () => undeflated(bytes, LOCAL_MAX_INFLATED));
  let studyUid: string | undefined;
  if (ownStudy) {
    studyUid = (await named(file, () => dicomMetadata(plain, LOCAL_MAX_INFLATED))).study_uid;
    if (studyUid === undefined) throw new Error(`${file}: --exclude-own-study: the DICOM has no valid Study Instance UID (0020,000D)`);
  }
  if (frame === undefined) {
    // the decoder would say to choose one with `frame`, the API's parameter: here it is --frame
    const frames = await named(file, () => dicomFrameCount(plain, LOCAL_MAX_INFLATED));
    if (frames > 1) throw new Error(`${file}: the DICOM has ${frames} frames: choose one with --frame (0 to ${frames - 1})`);
  }
  const where = frame === undefined ? file : `${file} frame ${frame}`;
  const png = await named(where, async () => {
    await initNodeImageCodecs();
    return encodePng(await decodeImage(plain, type, LOCAL_DICOM_LIMITS, { frame }));
  });
  if (png.length > MAX_BODY_BYTES) {
    throw new Error(`${where}: as a lossless PNG it is ${png.length} bytes, over the ${MAX_BODY_BYTES} (${MAX_BODY_BYTES / 2 ** 20} MiB) a search by image may send`);
  }
  return { body: new RawBody(png, 'image/png'), studyUid };
}
