// Where the encoding tests find real data (../shared/data from the repository root, or
// MEDHASH_DATA, as for worktrees that live elsewhere), the models, and a known brain MRI JPEG; the
// DICOM fixtures, and the test side's own writer of DICOM files (explicit-VR elements, group 0028,
// Part 10) and of compressed pixel data (an RLE encoder and the encapsulation), independent of the
// decoder it tests.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { concatBytes } from '../../functions/util/bytes.ts';
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
/** The multi-frame DCMTK fixtures and their Number of Frames: the golden file has an entry per frame of each. */
export const DICOM_MULTI_FRAME: Record<string, number> = {
  'grey8-two-frames.dcm': 2,
  'grey8-frames3.dcm': 3,
  'grey8-frames3-rle.dcm': 3,
  'grey8-frames3-rle-nobot.dcm': 3,
  'grey8-frames3-jpeg-lossless-sv1.dcm': 3,
  'grey8-frames3-jpeg-lossless-sv1-fs1.dcm': 3,
  'grey8-frames3-jpeg-lossless-sv1-fs1-nobot.dcm': 3,
  'grey8-frames3-jpeg-baseline-fs1-nobot.dcm': 3,
  'ct16-window-frames3.dcm': 3,
  'ct16-window-frames3-rle-fs1.dcm': 3,
  'ct16-window-frames3-jpeg-lossless-sv1-fs1-nobot.dcm': 3,
  'grey8-frames3-jpeg-ls-fs1-nobot.dcm': 3,
  'ct16-window-frames3-jpeg-ls.dcm': 3,
  'grey8-frames3-jpeg2000-lossless.dcm': 3,
  'ct16-enhanced-frames3.dcm': 3,
  'ct16-enhanced-shared-frames3.dcm': 3,
};
/** The real JPEGs behind the 8-bit DICOM fixtures: a MedNIST grey X-ray and a Kather RGB tile. */
export const DICOM_SOURCES = {
  grey: { set: 'mednist', member: 'Hand/000000.jpeg' },
  rgb: { set: 'kather_crc_2016', member: '01_TUMOR/13E9B_CRC-Prim-HE-06_008.tif_Row_1_Col_451.jpg' },
} as const;
/** The 16-bit CT-like ramp: stored value = column * 64 + row (signed 16-bit), rescale intercept -1024, window 40/400. */
export const CT = { size: 64, intercept: -1024, centre: 40, width: 400 } as const;
/**
 * The Enhanced CT-style fixtures (PS3.3 C.7.6.16; scripts/fixtures/make-dicom.ts): three frames of
 * a SIZE x SIZE signed 16-bit ramp (the ramp, reversed, transposed), their rescale and window in
 * the functional groups. `shared` is the Shared Functional Groups item's Pixel Value
 * Transformation and Frame VOI LUT; `perFrame[k]`, what frame k's Per-frame item holds of them
 * (frame 1 a multi-valued window, of which the first counts; frame 2 neither). `decoy`: top-level
 * values the enhanced file also carries, which the macros replace whole. Each frame has a classic
 * single-frame twin holding its pixels with its values at the top level.
 */
export const ENHANCED_CT = {
  size: 16,
  shared: { intercept: '-1024', slope: '1', centre: '40', width: '400' },
  perFrame: [{ centre: '-600', width: '1500' }, { intercept: '-2048', slope: '2', centre: '300\\50', width: '1500\\350' }, {}],
  decoy: { intercept: '0', slope: '1', centre: '0', width: '1', fn: 'SIGMOID' },
} as const;
/** 12 bits stored in 16 (signed), one row: the logical values, and the junk written above bit 11. */
export const GARBAGE12 = { values: [-2048, -1000, -1, 0, 1, 1000, 2047], highBits: [0xf000, 0x5000, 0xa000, 0x0000] } as const;
/** The study every DCMTK fixture belongs to (modality CR, body part HAND). */
export const DICOM_STUDY_UID = '1.2.826.0.1.3680043.10.1410.2.1';

/**
 * A raw DEFLATE stream (RFC 1951) of zeros at DEFLATE's utmost ratio, 1032:1, as long as asked:
 * zlib's stream of 1 MiB of zeros is this head, 1016 zero bytes (each four 258-byte matches: 1032
 * zeros) and this tail, and each zero byte more in the middle inflates to 1032 zeros more.
 */
export const DEFLATE_BOMB = { head: 'edc13101000000c2a0f54f6d085fa0', tail: '3e03' };
/** How many bytes a DEFLATE_BOMB of `zeros` middle bytes (at least 1016) inflates to. */
export const deflateBombSize = (zeros: number) => 2 ** 20 + 1032 * (zeros - 1016);

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

/**
 * PackBits as DICOM's RLE encodes a byte segment (PS3.5 G.3.1): each row on its own, a run of 3
 * or more equal bytes replicated, the rest literal, at most 128 bytes a run.
 */
export function packBits(bytes: Uint8Array, rowLength: number): Uint8Array {
  const out: number[] = [];
  for (let row = 0; row < bytes.length; row += rowLength) {
    const end = Math.min(row + rowLength, bytes.length);
    const runAt = (i: number) => i + 2 < end && bytes[i] === bytes[i + 1] && bytes[i] === bytes[i + 2];
    for (let i = row; i < end; ) {
      if (runAt(i)) {
        let run = 3;
        while (i + run < end && run < 128 && bytes[i + run] === bytes[i]) run++;
        out.push(257 - run, bytes[i]);
        i += run;
      } else {
        const start = i;
        while (i < end && i - start < 128 && !runAt(i)) i++;
        out.push(i - start - 1, ...bytes.subarray(start, i));
      }
    }
  }
  return Uint8Array.from(out);
}

/**
 * An RLE Lossless frame (PS3.5 G.2) of samples as an uncompressed file stores them (little
 * endian, in planar configuration `planar`): the 64-byte header, then one segment per byte of each
 * sample, the samples in order, each one's most significant byte first.
 */
export function rleFrame(raw: Uint8Array, o: { samples: number; bytes: number; columns: number; planar: number }): Uint8Array {
  const n = raw.length / (o.samples * o.bytes);
  const segments: Uint8Array[] = [];
  for (let s = 0; s < o.samples; s++) {
    for (let b = o.bytes - 1; b >= 0; b--) {
      const plane = Uint8Array.from({ length: n }, (_, p) => raw[(o.planar ? s * n + p : p * o.samples + s) * o.bytes + b]);
      segments.push(packBits(plane, o.columns));
    }
  }
  const header = new DataView(new ArrayBuffer(64));
  header.setUint32(0, segments.length, true);
  for (let k = 0, at = 64; k < segments.length; at += segments[k].length, k++) header.setUint32(4 + 4 * k, at, true);
  return concatBytes([new Uint8Array(header.buffer), ...segments]);
}

/** An item header (FFFE,xxxx), which has no VR in any transfer syntax. */
function itemHeader(element: number, length: number): Uint8Array {
  const h = new DataView(new ArrayBuffer(8));
  h.setUint16(0, 0xfffe, true);
  h.setUint16(2, element, true);
  h.setUint32(4, length, true);
  return new Uint8Array(h.buffer);
}

/**
 * An encapsulated Pixel Data element (PS3.5 A.4), explicit VR: OB of undefined length, the Basic
 * Offset Table item (`table`, empty by default), one item per fragment (padded to an even length),
 * the Sequence Delimitation Item.
 */
export function encapsulatedPixelData(fragments: Uint8Array[], table: Uint8Array = new Uint8Array(0)): Uint8Array {
  const head = new Uint8Array([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  const items = fragments.map((f) => (f.length % 2 ? concatBytes([f, new Uint8Array(1)]) : f)).flatMap((f) => [itemHeader(0xe000, f.length), f]);
  return concatBytes([head, itemHeader(0xe000, table.length), table, ...items, itemHeader(0xe0dd, 0)]);
}

/** The fragments of a file's encapsulated Pixel Data (after its Basic Offset Table), read simply: for test inputs only. */
export function dicomFragments(file: Uint8Array): Uint8Array[] {
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  let at = Buffer.from(file).indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0, 0, 0xff, 0xff, 0xff, 0xff])) + 12;
  at += 8 + view.getUint32(at + 4, true);
  const out: Uint8Array[] = [];
  while (view.getUint16(at + 2, true) === 0xe000) {
    const length = view.getUint32(at + 4, true);
    out.push(file.subarray(at + 8, at + 8 + length));
    at += 8 + length;
  }
  return out;
}

/**
 * A JPEG Lossless frame (T.81 Annex H, SOF3) of `samples` (rows x columns x components,
 * interleaved, each below 2^precision), by the test side's own encoder: one interleaved scan,
 * predictor `predictor`, point transform `pt`, a restart interval of `restart` samples (whole
 * rows), and one Huffman table giving every difference category a 5-bit code. For the cases
 * DCMTK's dcmcjpeg cannot write (restart intervals) and for hand-broken frames.
 */
export function jpegLosslessFrame(samples: ArrayLike<number>, o: { rows: number; columns: number; components: number; precision: number; predictor?: number; pt?: number; restart?: number }): Uint8Array {
  const { rows, columns, components: nc, precision } = o;
  const predictor = o.predictor ?? 1;
  const pt = o.pt ?? 0;
  const restart = o.restart ?? 0;
  const out: number[] = [0xff, 0xd8];
  const segment = (marker: number, body: number[]) => out.push(0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 0xff, ...body);
  segment(0xc3, [precision, rows >> 8, rows & 0xff, columns >> 8, columns & 0xff, nc, ...Array.from({ length: nc }, (_, c) => [c + 1, 0x11, 0]).flat()]);
  // 17 categories of 5 bits: codes 0-16 in order
  segment(0xc4, [0x00, 0, 0, 0, 0, 17, ...new Array(11).fill(0), ...Array.from({ length: 17 }, (_, k) => k)]);
  if (restart) segment(0xdd, [restart >> 8, restart & 0xff]);
  segment(0xda, [nc, ...Array.from({ length: nc }, (_, c) => [c + 1, 0x00]).flat(), predictor, 0, pt]);
  let acc = 0;
  let n = 0;
  const put = (value: number, count: number) => {
    for (let b = count - 1; b >= 0; b--) {
      acc = (acc << 1) | ((value >> b) & 1);
      if (++n === 8) {
        out.push(acc);
        if (acc === 0xff) out.push(0);
        acc = n = 0;
      }
    }
  };
  const flush = () => {
    if (n > 0) put(0xff, 8 - n);
  };
  const x = (r: number, c: number, k: number) => samples[(r * columns + c) * nc + k] >> pt;
  const rowsPerInterval = restart ? restart / columns : rows;
  for (let r = 0; r < rows; r++) {
    const first = r % rowsPerInterval === 0;
    if (first && r > 0) {
      flush();
      out.push(0xff, 0xd0 + ((r / rowsPerInterval - 1) & 7));
    }
    for (let c = 0; c < columns; c++) {
      for (let k = 0; k < nc; k++) {
        let px: number;
        if (first) px = c === 0 ? 1 << (precision - pt - 1) : x(r, c - 1, k);
        else if (c === 0) px = x(r - 1, 0, k);
        else {
          const [ra, rb, rc] = [x(r, c - 1, k), x(r - 1, c, k), x(r - 1, c - 1, k)];
          px = [0, ra, rb, rc, ra + rb - rc, ra + ((rb - rc) >> 1), rb + ((ra - rc) >> 1), (ra + rb) >> 1][predictor];
        }
        let d = (x(r, c, k) - px) & 0xffff;
        if (d > 32768) d -= 65536;
        const category = d === 0 ? 0 : 32 - Math.clz32(Math.abs(d));
        put(category, 5);
        if (category > 0 && category < 16) put(d > 0 ? d : d + (1 << category) - 1, category);
      }
    }
  }
  flush();
  out.push(0xff, 0xd9);
  return Uint8Array.from(out);
}

/** A UID's value: NUL-padded to an even length (PS3.5 9.1). */
export const ui = (uid: string) => new TextEncoder().encode(uid.length % 2 ? `${uid}\0` : uid);

/**
 * A minimal Part 10 file of the given explicit-VR little-endian data set bytes (for hostile shapes
 * DCMTK will not write, and files of any size); its meta group names the transfer syntax, and the
 * Media Storage SOP Class when given.
 */
export function part10(dataSet: Uint8Array, transferSyntax = '1.2.840.10008.1.2.1', sopClass?: string): Uint8Array {
  const meta = concatBytes([...(sopClass ? [element(0x0002, 0x0002, 'UI', ui(sopClass))] : []), element(0x0002, 0x0010, 'UI', ui(transferSyntax))]);
  const out = new Uint8Array(132 + meta.length + dataSet.length);
  out.set(new TextEncoder().encode('DICM'), 128);
  out.set(meta, 132);
  out.set(dataSet, 132 + meta.length);
  return out;
}

/** An item or sequence tag (group FFFE) with its 4-byte length. */
function delimiter(element: number, length: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint16(0, 0xfffe, true);
  v.setUint16(2, element, true);
  v.setUint32(4, length, true);
  return out;
}

/** Media Storage Directory Storage: a DICOMDIR's SOP class (PS3.4 Annex F). */
export const DICOMDIR_SOP_CLASS = '1.2.840.10008.1.3.10';

/**
 * A DICOMDIR (PS3.3 F.3) as a media export writes it: its meta group's SOP class, a File-set ID
 * and a Directory Record Sequence of an IMAGE record for each of `files` (Referenced File IDs,
 * e.g. DICOM\PA000001\ST000001\SE000001\IM000001); no pixel data. Sequence and items of defined
 * length, or of undefined length (delimited: `dcmmkdir -e` writes that).
 */
export function dicomDir(files: string[], o: { undefinedLength?: boolean } = {}): Uint8Array {
  const body = (f: string) => concatBytes([element(0x0004, 0x1430, 'CS', cs('IMAGE')), element(0x0004, 0x1500, 'CS', cs(f))]);
  const records = files.map((f) => {
    const b = body(f);
    return o.undefinedLength ? concatBytes([delimiter(0xe000, 0xffffffff), b, delimiter(0xe00d, 0)]) : concatBytes([delimiter(0xe000, b.length), b]);
  });
  const sequence = o.undefinedLength
    ? concatBytes([element(0x0004, 0x1220, 'SQ', new Uint8Array(0)).fill(0xff, 8), ...records, delimiter(0xe0dd, 0)])
    : element(0x0004, 0x1220, 'SQ', concatBytes(records));
  return part10(concatBytes([element(0x0004, 0x1130, 'CS', cs('MEDHASH')), sequence]), undefined, DICOMDIR_SOP_CLASS);
}

/** One explicit-VR element (OB/OW/SQ: reserved bytes and a 4-byte length, PS3.5 7.1.2). */
export function element(group: number, el: number, vr: string, value: Uint8Array): Uint8Array {
  const long = ['OB', 'OW', 'SQ'].includes(vr);
  const head = long ? 12 : 8;
  const out = new Uint8Array(head + value.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, group, true);
  v.setUint16(2, el, true);
  out.set(new TextEncoder().encode(vr), 4);
  if (long) v.setUint32(8, value.length, true);
  else v.setUint16(6, value.length, true);
  out.set(value, head);
  return out;
}

export const us = (n: number) => new Uint8Array([n & 0xff, n >> 8]);
export const cs = (s: string) => new TextEncoder().encode(s.length % 2 ? `${s} ` : s);

/** Group 0028 of an image: 8-bit MONOCHROME2 unless told, then `extra` elements. */
export function pixelModule(rows: number, columns: number, o: { samples?: number; photometric?: string; bits?: number; stored?: number; signed?: boolean; planar?: number; extra?: Uint8Array[] } = {}): Uint8Array {
  const bits = o.bits ?? 8;
  const stored = o.stored ?? bits;
  return concatBytes([
    element(0x0028, 0x0002, 'US', us(o.samples ?? 1)), element(0x0028, 0x0004, 'CS', cs(o.photometric ?? 'MONOCHROME2')),
    ...(o.planar === undefined ? [] : [element(0x0028, 0x0006, 'US', us(o.planar))]),
    element(0x0028, 0x0010, 'US', us(rows)), element(0x0028, 0x0011, 'US', us(columns)), element(0x0028, 0x0100, 'US', us(bits)),
    element(0x0028, 0x0101, 'US', us(stored)), element(0x0028, 0x0102, 'US', us(stored - 1)), element(0x0028, 0x0103, 'US', us(o.signed ? 1 : 0)),
    ...(o.extra ?? []),
  ]);
}
