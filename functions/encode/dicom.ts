// DICOM Part 10 files -> 8-bit pixels for the encoder (the rest of the path is the PNG/JPEG
// one). Little-endian transfer syntaxes with the pixels uncompressed (the data set deflated or
// not: a deflated one is inflated first, under a cap, then walked as any other), RLE Lossless
// (decoded here), JPEG Lossless (jpeg-lossless.ts), JPEG Baseline and 8-bit JPEG Extended (decoded
// by image.ts's JPEG codec, passed in), JPEG-LS or JPEG 2000 (dicom-codecs.ts's CharLS and
// OpenJPEG, passed in), one frame: a multi-frame file's frame is the caller's to choose (`frame`,
// 0-based; how many there are, `dicomFrameCount`, from the header alone), and only that frame is
// located (one pass over the fragment table) and decoded; any other syntax (big endian, 12-bit
// JPEG Extended) is refused with 415 naming it, never guessed at. Each compressed form only yields the stored samples an uncompressed file holds,
// which then take the one path below. Grey values go through the file's own
// modality rescale or Modality LUT Sequence, and first VOI window or else its VOI LUT Sequence's
// first LUT (an enhanced file's: the frame's functional groups'), as a viewer shows them by default. Decoding reads the
// header for pixel attributes alone: nothing of it (patient, study, dates) is returned, kept or
// logged. `dicomMetadata` is the one other reader, for ingest (the five attributes an item's
// metadata has room for: modality, body part, study/series/instance UIDs) and for a search's
// exclusion of its own study; it never reads a patient field.
//
// The file is walked, not parsed into objects: top-level elements are skipped by their length
// and only group 0028 and the Pixel Data are kept, with a cap on elements and on sequence
// nesting; the descents are into the Modality and VOI LUT Sequences' first items, and into an
// enhanced file's functional groups (PS3.3 C.7.6.16), for the decoded frame's rescale, window and
// VOI LUT (the shared item and that frame's item alone). So an
// 8 MiB file of a million tiny elements costs a bounded loop, not a million objects (a Worker has 128 MB), and nothing the size of the image is allocated (or decoded)
// before the caller's size limits have passed, but for a deflated data set, inflated first under its own cap (MAX_INFLATED_BYTES). Decompression writes into a buffer of exactly
// Rows x Columns x samples x bytes, and every run, fragment and offset is checked against its
// bounds: a file that disagrees with itself is a 422 naming where.
import { concatBytes, leadingHex } from '../util/bytes.ts';
import { MedhashError } from '../util/errors.ts';
import type { FrameDecoders } from './dicom-codecs.ts';
import type { DecodedImage } from './image.ts';
import { decodeJpegLossless } from './jpeg-lossless.ts';

const err = (status: 413 | 415 | 422, code: string, message: string) => new MedhashError(status, code, message, 'image');
const corrupt = (message: string) => err(422, 'corrupt_image', message);
const unsupported = (message: string) => err(415, 'unsupported_image_type', message);

/**
 * A DICOM object that is well formed but holds no image: no Pixel Data at its top level (a
 * structured report, presentation state, key object selection), or a media directory (DICOMDIR).
 * The service answers it as before (422 corrupt_image: nothing to encode); its own class lets
 * `medhash index --dicom` tell it from a broken file, skip it and count it, with the walk below
 * the one place that decides what is an image.
 */
export class NotAnImage extends MedhashError {
  constructor() {
    super(422, 'corrupt_image', 'DICOM has no Pixel Data (7FE0,0010) at its top level: it is not an image', 'image');
  }
}

/** Media Storage Directory Storage (PS3.4 Annex F), the SOP class of a DICOMDIR, whatever its file name. */
export const MEDIA_STORAGE_DIRECTORY = '1.2.840.10008.1.3.10';

/** A transfer syntax read here: its name, whether the data set is explicit VR, how the Pixel Data is stored. */
interface Syntax {
  name: string;
  explicit: boolean;
  pixels: 'native' | 'rle' | 'jpeg' | 'jpeg-lossless' | 'jpeg-ls' | 'jpeg2000';
  /** JPEG Lossless SV1: predictor 1 only. */
  sv1?: boolean;
  /** Deflated Explicit VR Little Endian: the data set after the file meta group is one raw DEFLATE stream. */
  deflated?: boolean;
  /** JPEG Extended: the frame's own header (SOF0 or SOF1) says whether its samples are 8 bits, which alone are read. */
  extended?: boolean;
}

/** The Transfer Syntax UID a deflated file's data set has once inflated (`undeflated`). */
const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
const SUPPORTED: Record<string, Syntax> = {
  '1.2.840.10008.1.2': { name: 'Implicit VR Little Endian', explicit: false, pixels: 'native' },
  [EXPLICIT_VR_LITTLE_ENDIAN]: { name: 'Explicit VR Little Endian', explicit: true, pixels: 'native' },
  '1.2.840.10008.1.2.1.99': { name: 'Deflated Explicit VR Little Endian', explicit: true, pixels: 'native', deflated: true },
  '1.2.840.10008.1.2.4.50': { name: 'JPEG Baseline', explicit: true, pixels: 'jpeg' },
  '1.2.840.10008.1.2.4.51': { name: 'JPEG Extended', explicit: true, pixels: 'jpeg', extended: true },
  '1.2.840.10008.1.2.4.57': { name: 'JPEG Lossless', explicit: true, pixels: 'jpeg-lossless' },
  '1.2.840.10008.1.2.4.70': { name: 'JPEG Lossless SV1', explicit: true, pixels: 'jpeg-lossless', sv1: true },
  '1.2.840.10008.1.2.4.80': { name: 'JPEG-LS Lossless', explicit: true, pixels: 'jpeg-ls' },
  '1.2.840.10008.1.2.4.81': { name: 'JPEG-LS Near-Lossless', explicit: true, pixels: 'jpeg-ls' },
  '1.2.840.10008.1.2.4.90': { name: 'JPEG 2000 Lossless', explicit: true, pixels: 'jpeg2000' },
  '1.2.840.10008.1.2.4.91': { name: 'JPEG 2000', explicit: true, pixels: 'jpeg2000' },
  '1.2.840.10008.1.2.5': { name: 'RLE Lossless', explicit: true, pixels: 'rle' },
};

/** Names of the common transfer syntaxes this decoder refuses, for the error message. */
const REFUSED: Record<string, string> = {
  '1.2.840.10008.1.2.2': 'Explicit VR Big Endian',
};

/** Explicit-VR value representations with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2). */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
const UNDEFINED_LENGTH = 0xffffffff;
/** Far above any real header (a few hundred elements), far below what costs time. */
export const MAX_ELEMENTS = 50_000;
export const MAX_DEPTH = 8;
/**
 * The most a deflated file's data set may inflate to: 4 x the 8 MiB a file may have (the default
 * limits' maxBytes), room for a 16-bit 4000 x 4000 frame. Real data sets deflate 2 to 4 times; a
 * bomb (DEFLATE reaches 1032:1) is stopped at the cap, never inflated whole.
 */
export const MAX_INFLATED_BYTES = 32 * 1024 * 1024;
/**
 * The cap on a deflated data set for a reader whose files may have up to `maxBytes`: what an
 * uncompressed file may hold (a deflated file is never refused what the same data set
 * uncompressed is taken with), and never under MAX_INFLATED_BYTES. The service's 8 MiB gives
 * MAX_INFLATED_BYTES; `medhash index`, whose local files may be larger, gives its file limit.
 */
export const inflatedCap = (maxBytes: number): number => Math.max(MAX_INFLATED_BYTES, maxBytes);
/** Input fed to the inflater at a time: what it may write past the cap is at most 1032 times this. */
const INFLATE_CHUNK = 4096;

/** True when the bytes are a DICOM Part 10 file (128-byte preamble, then "DICM"). */
export function isDicom(b: Uint8Array): boolean {
  return b.length >= 132 && b[128] === 0x44 && b[129] === 0x49 && b[130] === 0x43 && b[131] === 0x4d;
}

const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
/** The first `max` bytes of a value as text: every attribute read here is shorter (a UID is
 * read one byte past its limit, to tell one too long), and a hostile one stays cheap. */
const ascii = (v: Uint8Array, max = 64) => String.fromCharCode(...v.subarray(0, max));

interface Header {
  group: number;
  element: number;
  length: number;
  /** Where the value starts. */
  value: number;
  /** The value representation; null in implicit VR and for items and delimiters. */
  vr: string | null;
}

type Values = Map<number, Uint8Array>;
/** A Modality or VOI LUT Sequence as walked: how many items it has, and its first item's group 0028 values (LUT Descriptor, LUT Data). */
interface LutSequence {
  items: number;
  values: Values;
}
/** A macro's values: its first item's group 0028 values and, for a Frame VOI LUT, the VOI LUT Sequence that item holds (the Frame VOI LUT With LUT macro). */
interface Macro {
  values: Values;
  lut?: LutSequence;
}
/** The two functional group macros read here; absent when the group item lacks it. */
interface Macros {
  /** Pixel Value Transformation (0028,9145): Rescale Intercept, Slope. */
  rescale?: Macro;
  /** Frame VOI LUT (0028,9132): Window Center, Width, VOI LUT Function, VOI LUT Sequence. */
  voi?: Macro;
}
/**
 * How to read an item the walk descends into: where its group 0028 values go, which of its
 * sequences to read, and (`name`) the sequence it is an item of, for a LUT's item: an element
 * running past it is then named.
 */
interface ItemReader {
  values?: Values;
  sequence?: (tag: number) => SequenceReader | undefined;
  name?: string;
}
/** How to read item k of a sequence; null skips it, as every item of a sequence without a reader is. */
type SequenceReader = (k: number) => ItemReader | null;

const SHARED_GROUPS = 0x52009229;
const PER_FRAME_GROUPS = 0x52009230;
const PIXEL_VALUE_TRANSFORMATION = 0x00289145;
const FRAME_VOI_LUT = 0x00289132;
const MODALITY_LUT_SEQUENCE = 0x00283000;
const VOI_LUT_SEQUENCE = 0x00283010;

/**
 * A LUT sequence, handed to `keep` as its walk starts (so one without items is seen): its items
 * counted, item 0's values kept, the others skipped.
 */
const lutSequence = (tag: number, keep: (l: LutSequence) => void): SequenceReader => {
  const lut: LutSequence = { items: 0, values: new Map() };
  keep(lut);
  return (k) => {
    lut.items = k + 1;
    return k === 0 ? { values: lut.values, name: label(tag & 0xffff) } : null;
  };
};
/** Item 0 of a macro's sequence, its values (and a Frame VOI LUT's VOI LUT Sequence) into a new macro handed to `keep`; the other items skipped. */
const firstItem = (keep: (m: Macro) => void, lutTag?: number): SequenceReader => (k) => {
  if (k !== 0) return null;
  const macro: Macro = { values: new Map() };
  keep(macro);
  return { values: macro.values, sequence: (tag) => (tag === lutTag ? lutSequence(tag, (l) => { macro.lut = l; }) : undefined) };
};
/**
 * A functional group item: its two macros into `into`. The Frame VOI LUT may hold a VOI LUT
 * Sequence (the Frame VOI LUT With LUT macro, PS3.3 C.7.6.16.2.10b); the Pixel Value
 * Transformation macro holds rescale alone (no Modality LUT Sequence), so only its values are read.
 */
const groupItem = (into: Macros): ItemReader => ({
  sequence: (tag) => (tag === PIXEL_VALUE_TRANSFORMATION ? firstItem((m) => { into.rescale = m; }) : tag === FRAME_VOI_LUT ? firstItem((m) => { into.voi = m; }, VOI_LUT_SEQUENCE) : undefined),
});

/**
 * What the walk keeps: the transfer syntax, the values of the wanted tags (group << 16 | element),
 * and where the Pixel Data lies (for encapsulated pixel data, where its first item starts).
 */
interface Walked {
  syntax: Syntax;
  attrs: Values;
  /** The top level's Modality LUT Sequence (0028,3000) and VOI LUT Sequence (0028,3010), when present. */
  modalityLut?: LutSequence;
  voiLut?: LutSequence;
  pixelOffset: number;
  pixelLength: number;
  /** Item 0 of the Shared Functional Groups Sequence, item `frame` of the Per-frame one, and how many items that has (null: none). */
  shared: Macros;
  perFrame: Macros;
  perFrameItems: number | null;
}

class Walker {
  private readonly view: DataView;
  private elements = 0;

  /** `keep`: besides group 0028 (the pixel attributes), which top-level tags to keep; `frame`: whose per-frame functional group to read. */
  constructor(private readonly b: Uint8Array, private readonly keep: ReadonlySet<number> = new Set(), private readonly frame = 0) {
    this.view = new DataView(b.buffer, b.byteOffset, b.length);
  }

  /** One element header at `pos`. Items and delimiters (group FFFE) have no VR in any syntax. */
  private header(pos: number, explicit: boolean): Header {
    if (++this.elements > MAX_ELEMENTS) throw corrupt(`DICOM has more than ${MAX_ELEMENTS} elements before its pixel data`);
    if (pos + 8 > this.b.length) throw corrupt(`DICOM is truncated: an element header at byte ${pos} runs past the end`);
    const group = this.view.getUint16(pos, true);
    const element = this.view.getUint16(pos + 2, true);
    if (group === 0xfffe || !explicit) return { group, element, length: this.view.getUint32(pos + 4, true), value: pos + 8, vr: null };
    const vr = String.fromCharCode(this.b[pos + 4], this.b[pos + 5]);
    if (!/^[A-Z]{2}$/.test(vr)) {
      throw corrupt(`DICOM element (${hex4(group)},${hex4(element)}) at byte ${pos} has no value representation, though the transfer syntax says explicit VR`);
    }
    if (LONG_VRS.has(vr)) {
      if (pos + 12 > this.b.length) throw corrupt(`DICOM is truncated: an element header at byte ${pos} runs past the end`);
      return { group, element, length: this.view.getUint32(pos + 8, true), value: pos + 12, vr };
    }
    return { group, element, length: this.view.getUint16(pos + 6, true), value: pos + 8, vr };
  }

  /** The position after a defined-length value, checked to lie inside the file. */
  private end(h: Header): number {
    const end = h.value + h.length;
    if (end > this.b.length) throw corrupt(`DICOM is truncated: element (${hex4(h.group)},${hex4(h.element)}) declares ${h.length} bytes, ${this.b.length - h.value} are left`);
    return end;
  }

  /** A defined-length value read as a sequence: VR SQ, or any in implicit VR (where the tag alone says). */
  private static sequenceVr(h: Header): boolean {
    return h.vr === 'SQ' || h.vr === null;
  }

  /**
   * Walks a sequence's items from `pos` up to `end` (a defined length) or, when null, its Sequence
   * Delimitation Item. `read` says how to read each item; one it skips is passed over by its
   * length, or, of undefined length, by walking its elements as before.
   */
  private sequence(pos: number, end: number | null, explicit: boolean, depth: number, read?: SequenceReader): number {
    if (depth > MAX_DEPTH) throw corrupt(`DICOM nests sequences more than ${MAX_DEPTH} deep`);
    for (let k = 0; ; k++) {
      if (end !== null && pos >= end) {
        if (pos > end) throw corrupt(`DICOM sequence ending at byte ${end} holds an item running to byte ${pos}`);
        return pos;
      }
      const h = this.header(pos, explicit);
      if (end === null && h.group === 0xfffe && h.element === 0xe0dd) return h.value;
      if (h.group !== 0xfffe || h.element !== 0xe000) throw corrupt(`DICOM sequence holds (${hex4(h.group)},${hex4(h.element)}) where an item belongs`);
      const r = read?.(k) ?? null;
      pos = h.length === UNDEFINED_LENGTH ? this.item(h.value, null, explicit, depth, r) : r ? this.item(h.value, this.end(h), explicit, depth, r) : this.end(h);
    }
  }

  /** Walks an item's data set up to `end` (a defined length) or, when null, its Item Delimitation Item, keeping what `read` asks for. */
  private item(pos: number, end: number | null, explicit: boolean, depth: number, read: ItemReader | null): number {
    for (;;) {
      if (end !== null && pos >= end) {
        if (pos > end) throw corrupt(`DICOM item ending at byte ${end} holds an element running to byte ${pos}`);
        return pos;
      }
      const h = this.header(pos, explicit);
      if (end === null && h.group === 0xfffe && h.element === 0xe00d) return h.value;
      const tag = ((h.group << 16) | h.element) >>> 0;
      // asked only of an element walked as a sequence: a LUT sequence's reader counts its items from there
      const inner = h.length === UNDEFINED_LENGTH || Walker.sequenceVr(h) ? read?.sequence?.(tag) : undefined;
      if (h.length === UNDEFINED_LENGTH) pos = this.sequence(h.value, null, explicit, depth + 1, inner);
      else if (inner) pos = this.sequence(h.value, this.end(h), explicit, depth + 1, inner);
      else {
        const next = this.end(h);
        if (read?.name && end !== null && next > end) {
          throw corrupt(`DICOM's ${tagName(h.group, h.element)} in the first item of the ${read.name} runs to byte ${next}, past the item's end at byte ${end}`);
        }
        if (read?.values && h.group === 0x0028) read.values.set(tag, this.b.subarray(h.value, next));
        pos = next;
      }
    }
  }

  /** The file meta group (0002): the transfer syntax, one this decoder reads (415 otherwise), and where the data set starts. */
  meta(): { syntax: Syntax; end: number; syntaxValue: [number, number]; sopClass: string } {
    let pos = 132;
    let syntax = '';
    let sopClass = '';
    let syntaxValue: [number, number] = [pos, pos];
    // the file meta group (0002) is explicit VR little endian whatever the data set's syntax
    while (pos + 2 <= this.b.length && this.view.getUint16(pos, true) === 0x0002) {
      const h = this.header(pos, true);
      if (h.length === UNDEFINED_LENGTH) throw corrupt('DICOM file meta header has an element of undefined length');
      const end = this.end(h);
      if (h.element === 0x0010) {
        syntax = ascii(this.b.subarray(h.value, end)).replace(/[\0 ]+$/, '');
        syntaxValue = [h.value, end];
      }
      if (h.element === 0x0002) sopClass = ascii(this.b.subarray(h.value, end)).replace(/[\0 ]+$/, '');
      pos = end;
    }
    if (!Object.hasOwn(SUPPORTED, syntax)) {
      const name = Object.hasOwn(REFUSED, syntax) ? REFUSED[syntax] : syntax ? 'an unsupported transfer syntax' : 'no transfer syntax';
      throw unsupported(`DICOM transfer syntax ${syntax || '(missing)'} (${name}) is not supported: send the file uncompressed, in Explicit (deflated or not) or Implicit VR Little Endian (e.g. dcmdjpeg or gdcmconv --raw), or in RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000`);
    }
    return { syntax: SUPPORTED[syntax], end: pos, syntaxValue, sopClass };
  }

  /** The walk of a file whose data set is plain (a deflated one's inflated by `inflated` first). */
  walk(): Walked {
    const { syntax: ts, end: dataSet, sopClass } = this.meta();
    // never an image (PS3.3 F.3), and a large one's directory records (about ten elements per
    // file on the media) pass MAX_ELEMENTS: told by its meta header, not walked
    if (sopClass === MEDIA_STORAGE_DIRECTORY) throw new NotAnImage();
    let pos = dataSet;
    const attrs: Values = new Map();
    let shared: Macros = {};
    let perFrame: Macros = {};
    let perFrameItems: number | null = null;
    const luts: { modalityLut?: LutSequence; voiLut?: LutSequence } = {};
    // the functional groups: item 0 of the shared sequence, item `frame` of the per-frame one (the
    // others only counted, or walked as any undefined-length item is)
    const groups = (tag: number): SequenceReader => {
      const into: Macros = {};
      if (tag === SHARED_GROUPS) {
        shared = into;
        return (k) => (k === 0 ? groupItem(into) : null);
      }
      perFrame = into;
      perFrameItems = 0;
      return (k) => {
        perFrameItems = k + 1;
        return k === this.frame ? groupItem(into) : null;
      };
    };
    while (pos < this.b.length) {
      const h = this.header(pos, ts.explicit);
      if (h.group === 0x7fe0 && h.element === 0x0010) {
        const encapsulated = h.length === UNDEFINED_LENGTH;
        if (encapsulated && ts.pixels === 'native') throw corrupt('DICOM pixel data is encapsulated in an uncompressed transfer syntax');
        if (!encapsulated && ts.pixels !== 'native') throw corrupt(`DICOM pixel data is not encapsulated, though the transfer syntax is ${ts.name}`);
        // its length (or its items) is checked against the file after the caller's size limits (a 413 first)
        return { syntax: ts, attrs, ...luts, pixelOffset: h.value, pixelLength: encapsulated ? UNDEFINED_LENGTH : h.length, shared, perFrame, perFrameItems };
      }
      const tag = ((h.group << 16) | h.element) >>> 0;
      const group = tag === SHARED_GROUPS || tag === PER_FRAME_GROUPS;
      const lut = tag === MODALITY_LUT_SEQUENCE || tag === VOI_LUT_SEQUENCE;
      if (h.length === UNDEFINED_LENGTH || ((group || lut) && Walker.sequenceVr(h))) {
        const read = group ? groups(tag) : lut ? lutSequence(tag, (l) => { luts[tag === MODALITY_LUT_SEQUENCE ? 'modalityLut' : 'voiLut'] = l; }) : undefined;
        pos = this.sequence(h.value, h.length === UNDEFINED_LENGTH ? null : this.end(h), ts.explicit, 1, read);
        continue;
      }
      const end = this.end(h);
      if (h.group === 0x0028 || this.keep.has(tag)) attrs.set(tag, this.b.subarray(h.value, end));
      pos = end;
    }
    throw new NotAnImage();
  }
}

/**
 * The file as the walk reads it: a deflated file (PS3.5 A.5: everything after the file meta group
 * is one raw DEFLATE stream, RFC 1951) with its data set inflated after its meta group, any other
 * as it is. The stream is fed a chunk at a time as the inflated bytes are taken (the stream's own
 * backpressure), so a bomb is stopped a little past `cap` (413), not inflated whole;
 * a stream that is corrupt or cut short is a 422. Bytes after its final block are the runtime's
 * affair (the Compression Standard refuses them, as browsers do; Node 22's stream ignores them).
 */
async function inflated(bytes: Uint8Array, cap: number): Promise<Uint8Array> {
  const { syntax, end } = new Walker(bytes).meta();
  if (!syntax.deflated) return bytes;
  // the input a chunk at a time, pulled only as the inflater asks (highWaterMark 0: none queued ahead)
  let at = end;
  const input = new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(c) {
      if (at >= bytes.length) c.close();
      else c.enqueue(bytes.subarray(at, (at += INFLATE_CHUNK)) as Uint8Array<ArrayBuffer>);
    },
  }, { highWaterMark: 0 });
  const reader = input.pipeThrough(new DecompressionStream('deflate-raw')).getReader();
  const parts: Uint8Array[] = [bytes.subarray(0, end)];
  let total = 0;
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch {
      throw corrupt(`DICOM's deflated data set (from byte ${end}) is not a whole DEFLATE stream: it is corrupt or cut short`);
    }
    if (chunk.done) return concatBytes(parts);
    total += chunk.value.length;
    if (total > cap) {
      await reader.cancel().catch(() => {});
      throw err(413, 'image_too_large', `DICOM's deflated data set inflates to more than ${cap} bytes (${cap / 2 ** 20} MiB), the most a deflated file may hold`);
    }
    parts.push(chunk.value);
  }
}

interface Attributes {
  syntax: Syntax;
  /** Number of Frames (1 when absent), and the frame to decode. */
  frames: number;
  frame: number;
  rows: number;
  columns: number;
  samples: number;
  photometric: string;
  bitsAllocated: number;
  bitsStored: number;
  signed: boolean;
  planar: number;
  slope: number;
  intercept: number;
  window: { centre: number; width: number; fn: string } | null;
  /** The Modality LUT, which replaces the rescale, and the VOI LUT, used without a window (PS3.3 C.11.1, C.11.2). */
  modalityLut: Lut | null;
  voiLut: Lut | null;
  pixelOffset: number;
  pixelLength: number;
}

const NAMES: Record<number, string> = {
  0x0002: 'Samples per Pixel', 0x0004: 'Photometric Interpretation', 0x0006: 'Planar Configuration', 0x0008: 'Number of Frames',
  0x0010: 'Rows', 0x0011: 'Columns', 0x0100: 'Bits Allocated', 0x0101: 'Bits Stored', 0x0102: 'High Bit',
  0x0103: 'Pixel Representation', 0x1050: 'Window Center', 0x1051: 'Window Width', 0x1052: 'Rescale Intercept',
  0x1053: 'Rescale Slope', 0x1056: 'VOI LUT Function', 0x3000: 'Modality LUT Sequence', 0x3002: 'LUT Descriptor',
  0x3006: 'LUT Data', 0x3010: 'VOI LUT Sequence',
};
const label = (e: number) => `${NAMES[e]} (0028,${hex4(e)})`;
/** An element by its name when it has one here, else by its tag. */
const tagName = (group: number, element: number) => (group === 0x0028 && Object.hasOwn(NAMES, element) ? label(element) : `(${hex4(group)},${hex4(element)})`);

/** A LUT to apply: the first input value mapped, the bits per entry, the entries (masked to those bits). */
interface Lut {
  first: number;
  bits: number;
  data: Uint16Array;
}
/** The most entries a LUT Descriptor can declare (0 stands for it). */
const MAX_LUT_ENTRIES = 65536;

/**
 * A LUT sequence's first item as a LUT (PS3.3 C.11.1.1, C.11.2.1.1): LUT Descriptor (entries, 0
 * meaning 65536; the first input value mapped, read as signed when `signed`; bits per entry, 8 to
 * 16) and LUT Data, one 16-bit word an entry (US or OW, or any VR in implicit VR), or for 8 bits
 * an entry a byte, packed two a word (as DCMTK reads either). Entries are masked to their bits, as
 * DCMTK masks them. Anything that disagrees is a 422 naming the attribute and `where`.
 */
function lookupTable(l: LutSequence, tag: number, where: string, signed: boolean): Lut {
  const of = `${label(tag)}${where}`;
  if (l.items === 0) throw corrupt(`DICOM's ${of} has no item`);
  const descriptor = l.values.get(0x00283002);
  if (descriptor === undefined) throw corrupt(`DICOM's ${of} has no ${label(0x3002)}`);
  if (descriptor.length !== 6) throw corrupt(`DICOM's ${label(0x3002)} in the ${of} is ${descriptor.length} bytes; it is three 16-bit values (6 bytes)`);
  const d = new DataView(descriptor.buffer, descriptor.byteOffset, 6);
  const entries = d.getUint16(0, true) || MAX_LUT_ENTRIES;
  const first = signed ? d.getInt16(2, true) : d.getUint16(2, true);
  const bits = d.getUint16(4, true);
  if (bits < 8 || bits > 16) throw corrupt(`DICOM's ${label(0x3002)} in the ${of} gives ${bits} bits per entry; it is 8 to 16`);
  const raw = l.values.get(0x00283006);
  if (raw === undefined) throw corrupt(`DICOM's ${of} has no ${label(0x3006)}`);
  if (raw.length > 2 * MAX_LUT_ENTRIES) throw corrupt(`DICOM's ${label(0x3006)} in the ${of} is ${raw.length} bytes, more than ${MAX_LUT_ENTRIES} entries of 16 bits`);
  const packed = bits === 8 && raw.length !== 2 * entries && raw.length === entries + (entries % 2);
  if (raw.length !== 2 * entries && !packed) {
    throw corrupt(`DICOM's ${label(0x3006)} in the ${of} is ${raw.length} bytes; its ${label(0x3002)} declares ${entries} entries of ${bits} bits (${2 * entries} bytes${bits === 8 ? `, or ${entries + (entries % 2)} packed` : ''})`);
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.length);
  const mask = (1 << bits) - 1;
  const data = Uint16Array.from({ length: entries }, (_, i) => (packed ? raw[i] : view.getUint16(2 * i, true)) & mask);
  return { first, bits, data };
}

/** A LUT's entry for input `x`: its integer part (toward zero, as DCMTK takes it) from the first value mapped, the ends beyond. */
const lookup = (l: Lut, x: number) => l.data[Math.min(Math.max(Math.trunc(x) - l.first, 0), l.data.length - 1)];

const DECIMAL_STRING = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The first value of a text attribute (DS, IS, CS, UI), trimmed; undefined when absent or empty. */
function text(values: Values, tag: number, max?: number): string | undefined {
  const v = values.get(tag);
  const s = v && ascii(v, max).split('\\')[0].replace(/^[\0 ]+|[\0 ]+$/g, '');
  return s === '' ? undefined : s;
}

/** A frame index out of the file's range: the caller's mistake, named by its parameter. */
export const frameOutOfRange = (frame: number, frames: number) =>
  new MedhashError(422, 'frame_out_of_range', `frame ${frame} is out of range: the image has ${frames} frame${frames === 1 ? '' : 's'} (0 to ${frames - 1})`, 'frame');

/** Where a macro's values were read, its LUT sequence (a Modality or VOI LUT Sequence) if it has one, and how a message names it ('' at the top level). */
interface Source {
  values: Values;
  lut?: LutSequence;
  where: string;
}

function attributes(w: Walked, fileLength: number, frame: number | undefined): Attributes {
  const top: Source = { values: w.attrs, where: '' };
  // the functional groups' macro replaces the top-level attributes (its LUT sequence included),
  // the frame's own item the shared one, each macro whole (docs/ENCODING.md, "Enhanced multi-frame files")
  const source = (m: keyof Macros): Source => {
    const own = w.perFrame[m];
    const shared = w.shared[m];
    if (own) return { ...own, where: ` in frame ${frame ?? 0}'s item of the Per-frame Functional Groups Sequence (5200,9230)` };
    if (shared) return { ...shared, where: ' in the Shared Functional Groups Sequence (5200,9229)' };
    return { ...top, lut: m === 'rescale' ? w.modalityLut : w.voiLut };
  };
  const rescale = source('rescale');
  const voi = source('voi');
  const us = (e: number, fallback?: number): number => {
    const v = w.attrs.get(0x00280000 | e);
    if (v === undefined || v.length === 0) {
      if (fallback === undefined) throw corrupt(`DICOM has no ${label(e)}, which an image needs`);
      return fallback;
    }
    if (v.length < 2) throw corrupt(`DICOM's ${label(e)} is not a 16-bit value`);
    return v[0] | (v[1] << 8);
  };
  const num = (e: number, from = top): number | undefined => {
    const s = text(from.values, 0x00280000 | e);
    if (s === undefined) return undefined;
    // DICOM's decimal and integer strings (PS3.5 6.2, DS and IS), not all that Number() reads
    // ("0x10", "Infinity"): the Python mirror then needs no JavaScript semantics.
    const n = DECIMAL_STRING.test(s) ? Number(s) : Number.NaN;
    if (!Number.isFinite(n)) throw corrupt(`DICOM's ${label(e)}${from.where} is not a number: ${JSON.stringify(s)}`);
    return n;
  };
  const bitsAllocated = us(0x0100);
  const bitsStored = us(0x0101, bitsAllocated);
  const highBit = us(0x0102, bitsStored - 1);
  const representation = us(0x0103, 0);
  const frames = num(0x0008) ?? 1;
  // a Modality LUT Sequence replaces the rescale, which is then not read
  const slope = rescale.lut ? 1 : num(0x1053, rescale) ?? 1;
  const centre = num(0x1050, voi);
  const width = num(0x1051, voi);
  const a: Attributes = {
    syntax: w.syntax,
    frames,
    frame: frame ?? 0,
    rows: us(0x0010),
    columns: us(0x0011),
    samples: us(0x0002, 1),
    photometric: (text(w.attrs, 0x00280004) ?? '').toUpperCase(),
    bitsAllocated,
    bitsStored,
    signed: representation === 1,
    planar: us(0x0006, 0),
    slope,
    intercept: rescale.lut ? 0 : num(0x1052, rescale) ?? 0,
    window: centre !== undefined && width !== undefined ? { centre, width, fn: (text(voi.values, 0x00281056) ?? 'LINEAR').toUpperCase() } : null,
    modalityLut: null,
    voiLut: null,
    pixelOffset: w.pixelOffset,
    pixelLength: w.pixelLength,
  };
  const grey = a.photometric === 'MONOCHROME1' || a.photometric === 'MONOCHROME2';
  // in JPEG the YCbCr -> RGB conversion is the JPEG decoder's, as for any JPEG; in JPEG 2000 the
  // inverse component transform (RCT, ICT) is OpenJPEG's
  const jpeg = a.syntax.pixels === 'jpeg';
  const j2k = a.syntax.pixels === 'jpeg2000';
  const colour = a.photometric === 'RGB' || (jpeg && (a.photometric === 'YBR_FULL_422' || a.photometric === 'YBR_FULL'))
    || (j2k && (a.photometric === 'YBR_RCT' || a.photometric === 'YBR_ICT'));
  if (!(grey && a.samples === 1) && !(colour && a.samples === 3)) {
    const accepted = jpeg ? 'MONOCHROME1, MONOCHROME2, RGB, YBR_FULL or YBR_FULL_422' : j2k ? 'MONOCHROME1, MONOCHROME2, RGB, YBR_RCT or YBR_ICT' : 'MONOCHROME1, MONOCHROME2 or RGB';
    throw unsupported(`DICOM photometric interpretation ${a.photometric || '(missing)'} with ${a.samples} sample(s) per pixel is not supported (${accepted})`);
  }
  if (bitsAllocated !== 8 && bitsAllocated !== 16) throw unsupported(`DICOM with ${bitsAllocated} bits allocated per sample is not supported (8 or 16)`);
  if (colour && bitsAllocated !== 8) throw unsupported(`DICOM ${a.photometric} with 16-bit samples is not supported`);
  // JPEG Extended's frame header says whether its samples are 8 bits (jpegFrame)
  if (jpeg && !a.syntax.extended && bitsAllocated !== 8) throw corrupt(`DICOM in JPEG Baseline declares ${bitsAllocated} bits allocated; JPEG Baseline holds 8-bit samples`);
  if (bitsStored < 1 || bitsStored > bitsAllocated) throw corrupt(`DICOM declares ${bitsStored} bits stored in ${bitsAllocated} allocated`);
  if (highBit !== bitsStored - 1) throw unsupported(`DICOM with High Bit ${highBit} for ${bitsStored} bits stored is not supported (only High Bit = Bits Stored - 1)`);
  if (representation > 1) throw corrupt(`DICOM's ${label(0x0103)} is ${representation}; it must be 0 (unsigned) or 1 (signed)`);
  if (a.planar > 1) throw corrupt(`DICOM's ${label(0x0006)} is ${a.planar}; it must be 0 or 1`);
  if (!Number.isInteger(frames) || frames < 1) throw corrupt(`DICOM's ${label(0x0008)} is ${text(w.attrs, 0x00280008)}`);
  // every frame takes at least a byte of the file: a count beyond that is a lie, and a cap on what it can cost
  if (frames > fileLength) throw corrupt(`DICOM's ${label(0x0008)} is ${text(w.attrs, 0x00280008)}, more frames than the file has bytes (${fileLength})`);
  if (w.perFrameItems !== null && w.perFrameItems !== frames) {
    throw corrupt(`DICOM's Per-frame Functional Groups Sequence (5200,9230) has ${w.perFrameItems} item${w.perFrameItems === 1 ? '' : 's'}; ${label(0x0008)} is ${frames} (one item a frame)`);
  }
  if (frames > 1 && frame === undefined) throw unsupported(`DICOM has ${frames} frames: choose one with \`frame\` (0 to ${frames - 1})`);
  if (frame !== undefined && frame >= frames) throw frameOutOfRange(frame, frames);
  if (slope === 0) throw corrupt(`DICOM's ${label(0x1053)}${rescale.where} is 0, which would make every pixel the same`);
  if (a.window && !['LINEAR', 'LINEAR_EXACT', 'SIGMOID'].includes(a.window.fn)) {
    throw unsupported(`DICOM ${label(0x1056)} ${a.window.fn}${voi.where} is not supported (LINEAR, LINEAR_EXACT or SIGMOID)`);
  }
  if (rescale.lut) a.modalityLut = lookupTable(rescale.lut, 0x3000, rescale.where, a.signed);
  if (voi.lut) {
    // the first value a VOI LUT maps is signed when the modality transform's output can be
    // negative, as DCMTK reads it: never after a Modality LUT (its entries are unsigned), else
    // over the range of stored values Bits Stored and Pixel Representation allow
    const [lo, hi] = a.signed ? [-(2 ** (bitsStored - 1)), 2 ** (bitsStored - 1) - 1] : [0, 2 ** bitsStored - 1];
    a.voiLut = lookupTable(voi.lut, 0x3010, voi.where, !a.modalityLut && Math.min(lo * a.slope + a.intercept, hi * a.slope + a.intercept) < 0);
  }
  return a;
}

/** The VOI function of PS3.3 C.11.2.1.2 and C.11.2.1.3 to 0..255, or null for a window it cannot use. */
function windowFunction(win: NonNullable<Attributes['window']>): ((x: number) => number) | null {
  const { centre: c, width: w, fn } = win;
  if (fn === 'LINEAR') {
    if (w < 1) return null;
    const lo = c - 0.5 - (w - 1) / 2;
    const hi = c - 0.5 + (w - 1) / 2;
    return (x) => (x <= lo ? 0 : x > hi ? 255 : ((x - (c - 0.5)) / (w - 1) + 0.5) * 255);
  }
  if (w <= 0) return null;
  if (fn === 'LINEAR_EXACT') return (x) => (x <= c - w / 2 ? 0 : x > c + w / 2 ? 255 : ((x - c) / w + 0.5) * 255);
  return (x) => 255 / (1 + Math.exp((-4 * (x - c)) / w));
}

/**
 * Grey pixels from `raw`, the samples as an uncompressed file stores them (little endian): stored
 * values masked to Bits Stored and sign-extended, then through a lookup table from stored value
 * to byte (at most 65536 entries: no per-pixel float array).
 */
function greyPixels(a: Attributes, raw: Uint8Array): Uint8Array {
  const n = a.rows * a.columns;
  const view = new DataView(raw.buffer, raw.byteOffset, n * (a.bitsAllocated / 8));
  const mask = (1 << a.bitsStored) - 1;
  const sign = 1 << (a.bitsStored - 1);
  const stored = (i: number) => {
    const v = (a.bitsAllocated === 16 ? view.getUint16(i * 2, true) : view.getUint8(i)) & mask;
    return a.signed && v & sign ? v - mask - 1 : v;
  };
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = stored(i);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const { modalityLut, voiLut } = a;
  const modality = modalityLut ? (s: number) => lookup(modalityLut, s) : (s: number) => s * a.slope + a.intercept;
  const voi = a.window && windowFunction(a.window);
  let toByte: (s: number) => number;
  if (voi) {
    toByte = (s) => Math.round(voi(modality(s)));
  } else if (voiLut) {
    // the entry's top 8 of its bits, as DCMTK scales a VOI LUT's output to 8 bits
    toByte = (s) => lookup(voiLut, modality(s)) >> (voiLut.bits - 8);
  } else if (a.bitsAllocated === 8 && a.bitsStored === 8 && !a.signed && !modalityLut && a.slope === 1 && a.intercept === 0) {
    toByte = (s) => s;
  } else {
    // the stretch over the data's own range: rescale is linear, so its ends are the stored ends;
    // a Modality LUT's are its least and greatest output over the stored range
    let [lo, hi] = [modality(min), modality(max)].sort((x, y) => x - y);
    if (modalityLut) for (let s = min; s <= max; s++) [lo, hi] = [Math.min(lo, modality(s)), Math.max(hi, modality(s))];
    toByte = (s) => (hi > lo ? Math.round(((modality(s) - lo) / (hi - lo)) * 255) : 0);
  }
  const lut = new Uint8Array(max - min + 1);
  for (let s = min; s <= max; s++) lut[s - min] = a.photometric === 'MONOCHROME1' ? 255 - toByte(s) : toByte(s);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = lut[stored(i) - min];
  return out;
}

/** RGB pixels, interleaved, from `raw` in the given planar configuration. */
function rgbPixels(a: Attributes, raw: Uint8Array, planar: number): Uint8Array {
  const n = a.rows * a.columns;
  const src = raw.subarray(0, 3 * n);
  if (planar === 0) return src.slice();
  // planar configuration 1 stores the three colour planes one after the other
  const out = new Uint8Array(3 * n);
  for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) out[p * 3 + c] = src[c * n + p];
  return out;
}

/** The one path every transfer syntax ends in: stored samples -> 8-bit pixels. */
function pixels(a: Attributes, raw: Uint8Array, planar: number): DecodedImage {
  if (a.samples === 3) return { width: a.columns, height: a.rows, channels: 3, data: rgbPixels(a, raw, planar), bitDepth: 8 };
  return { width: a.columns, height: a.rows, channels: 1, data: greyPixels(a, raw), bitDepth: 8 };
}

const ITEM = 0xe000;
const SEQUENCE_DELIMITATION = 0xe0dd;

/** Whether a JPEG fragment ends a JPEG stream: its last bytes are EOI (FF D9), maybe padded with one 00 to an even length. */
function endsWithEoi(f: Uint8Array): boolean {
  const n = f[f.length - 1] === 0 ? f.length - 1 : f.length;
  return n >= 2 && f[n - 2] === 0xff && f[n - 1] === 0xd9;
}

/**
 * Frame `index` of an encapsulated Pixel Data (PS3.5 A.4) of `frames` frames whose first item
 * starts at `pos`: the Basic Offset Table item, then fragment items up to the Sequence
 * Delimitation Item; the frame's fragments, joined. Which fragments are the frame's:
 * - the Basic Offset Table's, when it is not empty: one offset per frame (4 x frames bytes), the
 *   first 0, each after the last, each at the start of a fragment item;
 * - else all of them, for one frame;
 * - else one fragment per frame, when there are as many fragments as frames (RLE must: A.4.2);
 * - else, for JPEG syntaxes, fragments up to one that ends in EOI, a JPEG stream per frame (A.4
 *   lets a frame span fragments, never a fragment two frames).
 * Anything else, a zero-length fragment of a multi-frame file included, is a 422 naming it. One
 * pass over the item headers finds the frame (with every offset checked), a second over the
 * frame's own items copies it: no object per fragment, whatever their number.
 */
function encapsulatedFrame(b: Uint8Array, pos: number, frames: number, index: number, jpeg: boolean): Uint8Array {
  const view = new DataView(b.buffer, b.byteOffset, b.length);
  /** The length of the item at `at`; null for the Sequence Delimitation Item, where `last` allows it. */
  const item = (at: number, what: string, last: boolean) => {
    if (at + 8 > b.length) throw corrupt(`DICOM encapsulated pixel data is truncated: no Sequence Delimitation Item before the end of the file (byte ${at})`);
    const group = view.getUint16(at, true);
    const element = view.getUint16(at + 2, true);
    const length = view.getUint32(at + 4, true);
    if (group === 0xfffe && element === SEQUENCE_DELIMITATION && last) return null;
    if (group !== 0xfffe || element !== ITEM) throw corrupt(`DICOM encapsulated pixel data holds (${hex4(group)},${hex4(element)}) at byte ${at} where ${what} belongs`);
    if (length === UNDEFINED_LENGTH || at + 8 + length > b.length) {
      throw corrupt(`DICOM encapsulated pixel data is truncated: the item at byte ${at} declares ${length === UNDEFINED_LENGTH ? 'an undefined length' : `${length} bytes`}, ${b.length - at - 8} are left`);
    }
    return length;
  };
  const table = item(pos, 'the Basic Offset Table item', false) as number;
  if (table !== 0 && table !== 4 * frames) {
    throw corrupt(`DICOM Basic Offset Table is ${table} bytes, though the file has ${frames === 1 ? 'one frame' : `${frames} frames`} (0 or ${4 * frames} bytes)`);
  }
  const offset = (k: number) => view.getUint32(pos + 8 + 4 * k, true);
  if (table !== 0) {
    if (offset(0) !== 0) throw corrupt(`DICOM Basic Offset Table puts frame 1 at byte ${offset(0)} of the fragments; it starts at 0`);
    for (let k = 1; k < frames; k++) {
      if (offset(k) <= offset(k - 1)) throw corrupt(`DICOM Basic Offset Table is out of order: frame ${k + 1} at byte ${offset(k)} of the fragments, frame ${k} at ${offset(k - 1)}`);
    }
  }
  const first = pos + 8 + table;
  // where frame `index` starts and ends (item positions) by the table (or the one frame), by one
  // fragment per frame, and by EOI; each numbering's frame of the current fragment
  const byTable = { start: -1, end: -1, frame: 0 };
  const byCount = { start: -1, end: -1, frame: 0 };
  const byEoi = { start: -1, end: -1, frame: 0 };
  const see = (span: { start: number; end: number; frame: number }, at: number, next: number) => {
    if (span.frame !== index) return;
    if (span.start < 0) span.start = at;
    span.end = next;
  };
  let fragments = 0;
  let ended = false;
  let at = first;
  for (let length = item(at, 'a fragment item', true); length !== null; length = item(at, 'a fragment item', true)) {
    fragments++;
    if (length === 0 && frames > 1) throw corrupt(`DICOM encapsulated pixel data's fragment ${fragments} (the item at byte ${at}) is empty, in a file of ${frames} frames`);
    const next = at + 8 + length;
    if (table !== 0) {
      const rel = at - first;
      while (byTable.frame + 1 < frames && rel >= offset(byTable.frame + 1)) {
        if (rel > offset(byTable.frame + 1)) throw corrupt(`DICOM Basic Offset Table puts frame ${byTable.frame + 2} at byte ${offset(byTable.frame + 1)} of the fragments, where no fragment item starts`);
        byTable.frame++;
      }
    }
    see(byTable, at, next);
    byCount.frame = fragments - 1;
    see(byCount, at, next);
    see(byEoi, at, next);
    ended = jpeg && endsWithEoi(b.subarray(at + 8, next));
    if (ended) byEoi.frame++;
    at = next;
  }
  if (fragments === 0) throw corrupt('DICOM encapsulated pixel data has no fragment: the frame is missing');
  let span = byTable;
  if (table !== 0) {
    if (byTable.frame !== frames - 1) throw corrupt(`DICOM Basic Offset Table puts frame ${byTable.frame + 2} at byte ${offset(byTable.frame + 1)} of the fragments, past their ${at - first} bytes`);
  } else if (frames > 1) {
    if (fragments === frames) span = byCount;
    else if (!jpeg) throw corrupt(`DICOM encapsulated pixel data has ${fragments} fragments for ${frames} frames and no Basic Offset Table; RLE puts each frame in one fragment`);
    else if (byEoi.frame !== frames || !ended) {
      throw corrupt(`DICOM encapsulated pixel data has ${fragments} fragments for ${frames} frames and no Basic Offset Table, and its fragments end ${byEoi.frame} JPEG stream${byEoi.frame === 1 ? '' : 's'} (EOI)${ended ? '' : ', then more fragments'}`);
    } else span = byEoi;
  }
  let total = 0;
  let count = 0;
  for (let p = span.start; p < span.end; p += 8 + view.getUint32(p + 4, true)) {
    total += view.getUint32(p + 4, true);
    count++;
  }
  if (count === 1) return b.subarray(span.start + 8, span.end);
  const out = new Uint8Array(total);
  for (let p = span.start, to = 0; p < span.end; ) {
    const length = view.getUint32(p + 4, true);
    out.set(b.subarray(p + 8, p + 8 + length), to);
    to += length;
    p += 8 + length;
  }
  return out;
}

/**
 * One RLE segment (PS3.5 G.3.2, PackBits): header byte h < 128 copies the next h + 1 bytes,
 * h > 128 repeats the next byte 257 - h times, 128 does nothing. Writes exactly `n` bytes to
 * out[start], out[start + stride], ...; each turn reads at least one byte, so the loop is bounded
 * by the segment's length. Bytes left after the n-th (an encoder's padding) are not read.
 */
function rleSegment(src: Uint8Array, out: Uint8Array, start: number, stride: number, n: number, which: string): void {
  let i = 0;
  let o = 0;
  while (o < n) {
    if (i >= src.length) throw corrupt(`DICOM ${which} stops short: it decodes to ${o} bytes of the ${n} the image needs`);
    const h = src[i++];
    if (h === 128) continue;
    const run = h < 128 ? h + 1 : 257 - h;
    const reads = h < 128 ? run : 1;
    if (i + reads > src.length) throw corrupt(`DICOM ${which} runs past its end: the run at byte ${i - 1} needs ${reads} byte(s), ${src.length - i} are left`);
    if (o + run > n) throw corrupt(`DICOM ${which} writes past the image: the run at byte ${i - 1} writes ${run} bytes at ${o} of ${n}`);
    for (let k = 0; k < run; k++) out[start + (o + k) * stride] = src[h < 128 ? i + k : i];
    i += reads;
    o += run;
  }
}

/**
 * An RLE Lossless frame (PS3.5 G.2) -> the samples as an uncompressed file stores them, planar
 * configuration 1: the 64-byte header (the number of segments, then 15 offsets), then one segment
 * per byte of each sample, the samples' planes in order, each sample's most significant byte
 * first, whatever Planar Configuration says (segments are planes by definition, G.2).
 */
function rleFrame(a: Attributes, f: Uint8Array): Uint8Array {
  if (f.length < 64) throw corrupt(`DICOM RLE frame is ${f.length} bytes, shorter than its 64-byte header`);
  const view = new DataView(f.buffer, f.byteOffset, f.length);
  const count = view.getUint32(0, true);
  const bytes = a.bitsAllocated / 8;
  const need = a.samples * bytes;
  if (count < 1 || count > 15) throw corrupt(`DICOM RLE header declares ${count} segment(s); it holds 1 to 15`);
  if (count !== need) throw corrupt(`DICOM RLE header declares ${count} segment(s); ${a.samples} sample(s) of ${a.bitsAllocated} bits need ${need}`);
  const offsets = Array.from({ length: count }, (_, k) => view.getUint32(4 + 4 * k, true));
  if (offsets[0] !== 64) throw corrupt(`DICOM RLE segment 1 starts at byte ${offsets[0]}; it follows the 64-byte header, at 64`);
  for (let k = 1; k < count; k++) {
    if (offsets[k] <= offsets[k - 1]) throw corrupt(`DICOM RLE segment offsets are out of order: segment ${k + 1} at byte ${offsets[k]}, segment ${k} at ${offsets[k - 1]}`);
    if (offsets[k] >= f.length) throw corrupt(`DICOM RLE segment ${k + 1} starts at byte ${offsets[k]}, past the frame's ${f.length} bytes`);
  }
  const n = a.rows * a.columns;
  const raw = new Uint8Array(n * need);
  for (let k = 0; k < count; k++) {
    const sample = Math.floor(k / bytes);
    // little endian, as the uncompressed path reads it: the most significant byte goes last
    const start = sample * n * bytes + (bytes - 1 - (k % bytes));
    rleSegment(f.subarray(offsets[k], k + 1 < count ? offsets[k + 1] : f.length), raw, start, bytes, n, `RLE segment ${k + 1} of ${count}`);
  }
  return raw;
}

export interface DicomGeometry {
  width: number;
  height: number;
}

/** Decodes a JPEG file as the JPEG path of image.ts does: its structural walk, the caller's limits, the codec. */
export type JpegDecoder = (jpeg: Uint8Array) => Promise<DecodedImage>;

/**
 * The codecs a compressed frame may need, from the caller (image.ts): its JPEG path, and the
 * JPEG-LS and JPEG 2000 frame decoders (CharLS and OpenJPEG, in this thread or Node's codec thread).
 */
export interface FrameCodecs extends FrameDecoders {
  jpeg: JpegDecoder;
}

/**
 * A JPEG's first frame header (SOFn) from the marker segments before it: its marker and sample
 * precision; null when a scan or the end comes first (the JPEG path then names the fault).
 */
function jpegFrameHeader(f: Uint8Array): { marker: number; precision: number } | null {
  for (let pos = 2; pos + 4 < f.length && f[pos] === 0xff; ) {
    const m = f[pos + 1];
    if (m === 0xda || m === 0xd9) return null;
    if (m === 0xff) pos++; // a fill byte
    else if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) pos += 2; // standalone markers
    else if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) return { marker: m, precision: f[pos + 4] };
    else pos += 2 + ((f[pos + 2] << 8) | f[pos + 3]);
  }
  return null;
}

/**
 * JPEG Baseline, and JPEG Extended with 8-bit samples: the frame through the JPEG decoder, which
 * must agree with the header. JPEG Extended (Processes 2 and 4) is sequential Huffman DCT, SOF0 or
 * SOF1, of 8 or 12 bits: its 8-bit frames are what the JPEG path reads; 12 bits is a 415.
 */
async function jpegFrame(a: Attributes, f: Uint8Array, decodeJpeg: JpegDecoder): Promise<Uint8Array> {
  const what = `DICOM ${a.syntax.name} frame`;
  if (!(f.length >= 3 && f[0] === 0xff && f[1] === 0xd8 && f[2] === 0xff)) {
    throw corrupt(`${what} is not a JPEG (starts with ${leadingHex(f, 4) || 'nothing'})`);
  }
  const sof = a.syntax.extended ? jpegFrameHeader(f) : null;
  if (sof && sof.precision !== 8) {
    throw unsupported(`DICOM JPEG Extended with ${sof.precision}-bit samples is not supported: decompress it (dcmdjpeg in.dcm out.dcm) or send it in JPEG Lossless; 8-bit JPEG Extended is read`);
  }
  if (sof && sof.marker > 0xc1) throw corrupt(`${what} is coded as SOF${sof.marker - 0xc0}; JPEG Extended is SOF0 or SOF1 (sequential, Huffman)`);
  if (sof && a.bitsAllocated !== 8) throw corrupt(`${what} holds 8-bit samples; the header says ${a.bitsAllocated} bits allocated`);
  let img: DecodedImage;
  try {
    img = await decodeJpeg(f);
  } catch (e) {
    if (e instanceof MedhashError && e.status < 500) throw new MedhashError(e.status, e.code, `${what}: ${e.message}`, 'image');
    throw e;
  }
  if (img.width !== a.columns || img.height !== a.rows) throw corrupt(`${what} is ${img.width}x${img.height}; the header says ${a.columns}x${a.rows}`);
  if (img.channels !== a.samples) throw corrupt(`${what} has ${img.channels} component(s); the header says ${a.samples} sample(s) per pixel`);
  return img.data;
}

/**
 * The header's checks, then its size (one frame's) for the caller's limits; `decode` (after the
 * limits, so a huge declared size is a 413 before anything is read or allocated) checks that the
 * pixel data is all there, decompresses frame `frame` (0-based; required when the file has several,
 * 0 or none otherwise) if need be, and maps it to 8-bit pixels. `maxInflated`: the cap on a
 * deflated data set (`inflatedCap` of the caller's byte limit).
 */
export async function dicomGeometry(file: Uint8Array, frame?: number, maxInflated = MAX_INFLATED_BYTES): Promise<{ geometry: DicomGeometry; decode: (codecs: FrameCodecs) => Promise<DecodedImage> }> {
  const bytes = await inflated(file, maxInflated);
  const a = attributes(new Walker(bytes, undefined, frame).walk(), bytes.length, frame);
  const encapsulated = () => encapsulatedFrame(bytes, a.pixelOffset, a.frames, a.frame, a.syntax.pixels !== 'rle');
  const decode = async (codecs: FrameCodecs): Promise<DecodedImage> => {
    if (a.syntax.pixels === 'rle') return pixels(a, rleFrame(a, encapsulated()), 1);
    // the decoder's output is interleaved, whatever Planar Configuration says
    if (a.syntax.pixels === 'jpeg') return pixels(a, await jpegFrame(a, encapsulated(), codecs.jpeg), 0);
    if (a.syntax.pixels === 'jpeg-ls') {
      // interleaved or planar as the scan is (ILV), whatever Planar Configuration says
      const { raw, planar } = await codecs.jpegLs(encapsulated(), { ...a, syntax: a.syntax.name });
      return pixels(a, raw, planar);
    }
    if (a.syntax.pixels === 'jpeg2000') {
      // interleaved by OpenJPEG, whatever Planar Configuration says
      const { raw, planar } = await codecs.jpeg2000(encapsulated(), { ...a, syntax: a.syntax.name });
      return pixels(a, raw, planar);
    }
    if (a.syntax.pixels === 'jpeg-lossless') {
      // interleaved too, whatever Planar Configuration says
      return pixels(a, decodeJpegLossless(encapsulated(), { ...a, syntax: a.syntax.name, sv1: a.syntax.sv1 === true }), 0);
    }
    const need = nativeFrameBytes(a, bytes.length);
    const at = a.pixelOffset + a.frame * need;
    return pixels(a, bytes.subarray(at, at + need), a.planar);
  };
  return { geometry: { width: a.columns, height: a.rows }, decode };
}

/**
 * The bytes of one frame of native (uncompressed) pixel data, after checking that all the frames
 * are there, not only the one read: they follow each other, each exactly that long.
 */
function nativeFrameBytes(a: Attributes, fileLength: number): number {
  const need = a.rows * a.columns * a.samples * (a.bitsAllocated / 8);
  const present = Math.min(a.pixelLength, fileLength - a.pixelOffset);
  if (present < need * a.frames) {
    throw corrupt(`DICOM is truncated: ${a.frames > 1 ? `${a.frames} frames of ` : ''}${a.columns}x${a.rows} pixels need ${need * a.frames} bytes of pixel data, ${present} are present`);
  }
  return need;
}

/**
 * A deflated file as the Explicit VR Little Endian file it stands for: its data set inflated once
 * (under `maxInflated`), the Transfer Syntax UID's value rewritten in place, NUL-padded to its
 * length, so that each offset a message names is the one the deflated file's decode names; any
 * other file as it is. For a caller that decodes several frames of one file (`medhash index`):
 * each decode of the deflated file would inflate the whole data set again. Throws as decoding
 * would for a stream it refuses.
 */
export async function undeflated(file: Uint8Array, maxInflated = MAX_INFLATED_BYTES): Promise<Uint8Array> {
  const { syntax, syntaxValue: [from, to] } = new Walker(file).meta();
  if (!syntax.deflated) return file;
  const out = await inflated(file, maxInflated);
  out.fill(0, from, to).set(new TextEncoder().encode(EXPLICIT_VR_LITTLE_ENDIAN), from);
  return out;
}

/**
 * Number of Frames of a file `decodeImage` can read, from its header alone (no pixel data is read
 * or decoded; a deflated file is inflated, as decoding inflates it): what `frame` ranges over, for a caller that enumerates frames before decoding any
 * (`medhash index --frames`). Throws as decoding would for a header it refuses (`maxInflated` as
 * for dicomGeometry).
 */
export async function dicomFrameCount(file: Uint8Array, maxInflated = MAX_INFLATED_BYTES): Promise<number> {
  const bytes = await inflated(file, maxInflated);
  return attributes(new Walker(bytes).walk(), bytes.length, 0).frames;
}

/**
 * Number of Frames of a whole file: dicomFrameCount, after checking, without decoding any frame,
 * that its pixel data holds every frame (native: all their bytes; encapsulated: every item up to
 * the Sequence Delimitation Item, and the Basic Offset Table). For a lister that must tell a
 * file cut short from a complete copy of the same instance (`medhash index --dicom`); the
 * item walk reads the fragments' headers only. Throws as decoding would.
 */
export async function dicomWholeFrameCount(file: Uint8Array, maxInflated = MAX_INFLATED_BYTES): Promise<number> {
  const bytes = await inflated(file, maxInflated);
  const a = attributes(new Walker(bytes).walk(), bytes.length, 0);
  if (a.syntax.pixels === 'native') nativeFrameBytes(a, bytes.length);
  else encapsulatedFrame(bytes, a.pixelOffset, a.frames, 0, a.syntax.pixels !== 'rle');
  return a.frames;
}

/** The item metadata a DICOM file gives ingest; a value that is missing or malformed is left out. */
export interface DicomMetadata {
  modality?: string;
  body_part?: string;
  study_uid?: string;
  series_uid?: string;
  sop_uid?: string;
}

const METADATA_TAGS: Record<keyof DicomMetadata, number> = {
  modality: 0x00080060, body_part: 0x00180015, study_uid: 0x0020000d, series_uid: 0x0020000e, sop_uid: 0x00080018,
};
/** A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters; the API's metadata schema takes the same rule. */
export const DICOM_UID = /^[0-9]+(\.[0-9]+)*$/;
export const MAX_UID_LENGTH = 64;
/** A code string (CS, PS3.5 6.2): upper-case letters, digits, space and underscore, at most 16. */
const CODE_STRING = /^[A-Z0-9 _]{1,16}$/;

/** Modality, Body Part Examined and the study, series and instance UIDs of a readable DICOM file (a deflated one inflated first). */
export async function dicomMetadata(file: Uint8Array, maxInflated = MAX_INFLATED_BYTES): Promise<DicomMetadata> {
  const w = new Walker(await inflated(file, maxInflated), new Set(Object.values(METADATA_TAGS))).walk();
  const out: DicomMetadata = {};
  for (const [field, tag] of Object.entries(METADATA_TAGS) as [keyof DicomMetadata, number][]) {
    // a UID of 65 characters or more is malformed, not its first 64: read past them (and past
    // the padding of one of 64), so that --dicom never names two instances by one cut-off UID
    const v = text(w.attrs, tag, MAX_UID_LENGTH + 2);
    const ok = v !== undefined && (field.endsWith('_uid') ? DICOM_UID.test(v) && v.length <= MAX_UID_LENGTH : CODE_STRING.test(v));
    if (ok) out[field] = v;
  }
  return out;
}
