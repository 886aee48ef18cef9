// Where the encoding tests find real data (../shared/data from the repository root, or
// MEDHASH_DATA, as for worktrees that live elsewhere), the models, and a known brain MRI JPEG.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sharedDataRoot } from '../../scripts/data/shared-data.ts';

export function dataDir(set: string): string {
  const dir = join(sharedDataRoot(), set);
  if (!existsSync(dir)) throw new Error(`data set ${dir} not found: set MEDHASH_DATA to the shared data folder`);
  return dir;
}

export const MODELS = join(import.meta.dirname, '..', '..', 'models');
export const BRAIN_JPEG = 'Testing/notumor/Te-no_0137.jpg';

/** DICOM files written by DCMTK (scripts/fixtures/make-dicom.ts). */
export const DICOM_FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'dicom');
/** What the service decodes those (and files made for each branch of its decoder) to; the Python mirror must agree (scripts/fixtures/make-dicom-golden.ts). */
export const DICOM_GOLDEN = join(DICOM_FIXTURES, 'decoded.json');
/** The real JPEGs behind the 8-bit DICOM fixtures: a MedNIST grey X-ray and a Kather RGB tile. */
export const DICOM_SOURCES = {
  grey: { set: 'mednist', member: 'Hand/000000.jpeg' },
  rgb: { set: 'kather_crc_2016', member: '01_TUMOR/13E9B_CRC-Prim-HE-06_008.tif_Row_1_Col_451.jpg' },
} as const;
/** The 16-bit CT-like ramp: stored value = column * 64 + row (signed 16-bit), rescale intercept -1024, window 40/400. */
export const CT = { size: 64, intercept: -1024, centre: 40, width: 400 } as const;
/** 12 bits stored in 16 (signed), one row: the logical values, and the junk written above bit 11. */
export const GARBAGE12 = { values: [-2048, -1000, -1, 0, 1, 1000, 2047], highBits: [0xf000, 0x5000, 0xa000, 0x0000] } as const;
/** The study every DCMTK fixture belongs to (modality CR, body part HAND). */
export const DICOM_STUDY_UID = '1.2.826.0.1.3680043.10.1410.2.1';

/**
 * A seeded mutation of a DICOM file: 1-4 edits in its first 1200 bytes past the preamble, the
 * header, where a walker can go wrong: a byte set at random or to an extreme, or the file cut short.
 */
export function mutateDicom(original: Uint8Array, rnd: (n: number) => number): Uint8Array {
  let bytes = original.slice();
  const span = Math.min(bytes.length, 1200) - 128;
  for (let j = 1 + rnd(4); j > 0; j--) {
    const at = 128 + rnd(span);
    const kind = rnd(5);
    if (kind < 3) bytes[at] = rnd(256);
    else if (kind === 3) bytes[at] = [0x00, 0xff, 0x7f, 0x80][rnd(4)];
    else bytes = bytes.subarray(0, 128 + rnd(bytes.length - 128));
  }
  return bytes;
}
