// JPEG Lossless (ITU T.81 Annex H: Huffman-coded, non-hierarchical, SOF3) frames of DICOM's
// transfer syntaxes 1.2.840.10008.1.2.4.57 (any predictor 1-7) and .70 (predictor 1 only,
// "SV1"), written from the standard: the frame in, the samples out as an uncompressed file
// stores them (little endian, interleaved), for dicom.ts's one path to pixels. Precision 2-16,
// point transform, restart intervals of whole rows, any number of Huffman tables, 1x1 sampling.
// Mirrored step by step by models/medhash_model/dicom.py (the golden file holds both).
//
// The frame header must agree with the DICOM header before the output (the only buffer the size
// of the image) is allocated, and the caller's size limits have passed before this is called.
// Every structural fault is a 422 naming it; each loop consumes input or ends, so a hostile frame
// costs at most one pass over the image.
import { leadingHex } from '../util/bytes.ts';
import { MedhashError } from '../util/errors.ts';
import type { CodecTarget } from './dicom-codecs.ts';

/** What the DICOM header says the frame holds, as for the codecs' frames, and whether the syntax allows predictor 1 alone (SV1). */
export interface LosslessTarget extends CodecTarget {
  sv1: boolean;
}

const corrupt = (message: string) => new MedhashError(422, 'corrupt_image', `DICOM JPEG Lossless frame ${message}`, 'image');
const hex2 = (n: number) => n.toString(16).padStart(2, '0');

/** The other frame types (T.81 Table B.1), named when a frame is not SOF3. */
const PROCESSES: Record<number, string> = {
  0xc0: 'baseline', 0xc1: 'extended sequential', 0xc2: 'progressive', 0xc5: 'differential sequential (hierarchical)',
  0xc6: 'differential progressive (hierarchical)', 0xc7: 'differential lossless (hierarchical)', 0xc9: 'extended sequential, arithmetic-coded',
  0xca: 'progressive, arithmetic-coded', 0xcb: 'lossless, arithmetic-coded', 0xcd: 'differential sequential, arithmetic-coded (hierarchical)',
  0xce: 'differential progressive, arithmetic-coded (hierarchical)', 0xcf: 'differential lossless, arithmetic-coded (hierarchical)',
};

/** A Huffman table as its segment gives it (T.81 B.2.4.2): the number of codes of each length 1-16, then their values. */
interface HuffmanTable {
  counts: Uint8Array;
  values: Uint8Array;
  lookup?: Uint16Array;
}

/**
 * Checks that the codes fit (T.81 C.2, assigned in order of length): as in libjpeg, a length
 * whose codes would reach the all-ones code (reserved, F.1.2.1.3) makes the table bad.
 */
function checkHuffman(counts: Uint8Array, id: number): void {
  let code = 0;
  for (let length = 1; length <= 16; length++) {
    code += counts[length - 1];
    if (counts[length - 1] > 0 && code >= 2 ** length) throw corrupt(`has a bad Huffman table ${id}: more codes of ${length} bits than fit`);
    code *= 2;
  }
}

/**
 * The table as a 65536-entry lookup on the next 16 bits: (code length << 8) | value, 0 where no
 * code matches. Made when a scan uses the table, not per definition: a frame of many tables costs
 * no more than one.
 */
function huffmanLookup(t: HuffmanTable): Uint16Array {
  if (t.lookup) return t.lookup;
  const lookup = new Uint16Array(65536);
  let code = 0;
  let k = 0;
  for (let length = 1; length <= 16; length++) {
    for (let i = 0; i < t.counts[length - 1]; i++, k++, code++) lookup.fill((length << 8) | t.values[k], code << (16 - length), (code + 1) << (16 - length));
    code <<= 1;
  }
  t.lookup = lookup;
  return lookup;
}

/**
 * The entropy-coded data of a scan from `pos`: bytes with 0xFF00 unstuffed, up to the next marker
 * (0xFF then anything but 0x00) or the frame's end; past it, 1 bits that count as missing.
 */
class BitReader {
  private acc = 0;
  private n = 0;
  /** How many of the low bits of `acc` are padding past the data. */
  private pad = 0;
  private atMarker = false;

  constructor(private readonly f: Uint8Array, public pos: number) {}

  private fill(): void {
    while (this.n <= 24) {
      let byte = 0xff;
      const f = this.f;
      if (!this.atMarker && this.pos < f.length && !(f[this.pos] === 0xff && (this.pos + 1 >= f.length || f[this.pos + 1] !== 0))) {
        byte = f[this.pos];
        this.pos += byte === 0xff ? 2 : 1;
      } else {
        this.atMarker = true;
        this.pad += 8;
      }
      this.acc = ((this.acc << 8) | byte) >>> 0;
      this.n += 8;
    }
  }

  /** The next 16 bits, not consumed. */
  peek16(): number {
    this.fill();
    return (this.acc >>> (this.n - 16)) & 0xffff;
  }

  /** Whether `count` more bits are data, not padding. */
  has(count: number): boolean {
    return this.n - this.pad >= count;
  }

  /** `count` (0-16) bits, consumed; `has(count)` is checked by the caller. */
  take(count: number): number {
    this.fill();
    this.n -= count;
    return count === 0 ? 0 : (this.acc >>> this.n) & ((1 << count) - 1);
  }

  /** Drops what is left of the data (an encoder's padding bits or bytes) up to the next marker, where `pos` then points. */
  toMarker(): void {
    const f = this.f;
    while (!this.atMarker && this.pos < f.length && !(f[this.pos] === 0xff && (this.pos + 1 >= f.length || f[this.pos + 1] !== 0))) this.pos += f[this.pos] === 0xff ? 2 : 1;
    this.acc = this.n = this.pad = 0;
    this.atMarker = false;
  }
}

interface FrameHeader {
  precision: number;
  ids: number[];
}

/**
 * A JPEG Lossless frame -> the samples as an uncompressed file of `t`'s attributes stores them:
 * rows x columns x samples, each in bitsAllocated / 8 bytes, little endian, interleaved.
 */
export function decodeJpegLossless(f: Uint8Array, t: LosslessTarget): Uint8Array {
  if (!(f.length >= 2 && f[0] === 0xff && f[1] === 0xd8)) {
    throw corrupt(`is not a JPEG (starts with ${leadingHex(f, 4) || 'nothing'})`);
  }
  const tables: (HuffmanTable | undefined)[] = [];
  let frame: FrameHeader | null = null;
  let restart = 0;
  let out: Uint8Array | null = null;
  const decoded = new Set<number>();
  let pos = 2;
  const truncated = () => corrupt(`is truncated: no end-of-image marker before its end (byte ${f.length})`);
  for (;;) {
    if (pos >= f.length) throw truncated();
    if (f[pos] !== 0xff) throw corrupt(`is corrupt: a marker belongs at byte ${pos}, which is ${hex2(f[pos])}`);
    const at = pos;
    while (pos < f.length && f[pos] === 0xff) pos++;
    if (pos >= f.length) throw truncated();
    const m = f[pos++];
    if (m === 0xd9) {
      if (frame === null) throw corrupt('ends (EOI) before its frame header (SOF3)');
      const missing = frame.ids.filter((id) => !decoded.has(id));
      if (missing.length > 0 || out === null) throw corrupt(`ends (EOI) before component(s) ${missing.join(', ')} are decoded (no scan for them)`);
      return out;
    }
    // standalone markers (T.81 B.1.1.3); a restart marker between scans carries nothing
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue;
    if (m === 0x00 || m === 0xd8) throw corrupt(`is corrupt: marker ff${hex2(m)} at byte ${at}`);
    if (pos + 2 > f.length) throw truncated();
    const length = (f[pos] << 8) | f[pos + 1];
    if (length < 2) throw corrupt(`is corrupt: segment length ${length} at byte ${pos}`);
    const end = pos + length;
    if (end > f.length) throw truncated();
    const p = pos + 2;
    pos = end;
    if (m === 0xc3) {
      if (frame !== null) throw corrupt(`has a second frame header (SOF3) at byte ${at}`);
      if (length < 8) throw corrupt(`frame header (SOF3) is ${length} bytes, too short`);
      const precision = f[p];
      const height = (f[p + 1] << 8) | f[p + 2];
      const width = (f[p + 3] << 8) | f[p + 4];
      const count = f[p + 5];
      if (length !== 8 + 3 * count) throw corrupt(`frame header (SOF3) is ${length} bytes; ${count} component(s) need ${8 + 3 * count}`);
      if (precision < 2 || precision > 16) throw corrupt(`has precision ${precision}; lossless JPEG is 2 to 16 bits`);
      if (width !== t.columns || height !== t.rows) throw corrupt(`is ${width}x${height}; the header says ${t.columns}x${t.rows}`);
      if (count !== t.samples) throw corrupt(`has ${count} component(s); the header says ${t.samples} sample(s) per pixel`);
      // A precision above Bits Stored is common (DCMTK writes 16 for 12 of 16 bits): the samples are
      // masked to Bits Stored as uncompressed ones are. One below it is met in archives too: unsigned
      // samples of fewer bits are the same numbers, but a signed one's sign would sit at bit P - 1.
      if (precision > t.bitsAllocated) throw corrupt(`has precision ${precision}; the header says ${t.bitsAllocated} bits allocated`);
      if (precision < t.bitsStored && t.signed) {
        throw corrupt(`has precision ${precision}, below the ${t.bitsStored} bits stored of signed samples, whose sign bit it would move`);
      }
      const ids: number[] = [];
      for (let c = 0; c < count; c++) {
        const id = f[p + 6 + 3 * c];
        const sampling = f[p + 7 + 3 * c];
        if (ids.includes(id)) throw corrupt(`names component ${id} twice in its frame header`);
        if (sampling !== 0x11) throw corrupt(`samples component ${id} at ${sampling >> 4}x${sampling & 15}; only 1x1 is supported`);
        ids.push(id);
      }
      frame = { precision, ids };
    } else if (m in PROCESSES) {
      throw corrupt(`is ${PROCESSES[m]} (SOF${m - 0xc0}), not lossless with Huffman coding (SOF3), though the transfer syntax is ${t.syntax}`);
    } else if (m === 0xde || m === 0xdf) {
      throw corrupt(`is hierarchical (${m === 0xde ? 'DHP' : 'EXP'} marker), which ${t.syntax} is not`);
    } else if (m === 0xc4) {
      for (let q = p; q < end; ) {
        const cls = f[q] >> 4;
        const id = f[q] & 15;
        if (cls > 1 || id > 3) throw corrupt(`has a bad Huffman table: class ${cls}, id ${id} (class 0 or 1, id 0 to 3)`);
        if (q + 17 > end) throw corrupt(`has a bad Huffman table ${id}: its 16 code counts run past its segment`);
        const counts = f.subarray(q + 1, q + 17);
        const total = counts.reduce((s, x) => s + x, 0);
        if (q + 17 + total > end) throw corrupt(`has a bad Huffman table ${id}: ${total} values run past its segment`);
        checkHuffman(counts, id);
        // AC tables (class 1) have no use in a lossless scan: checked, not kept
        if (cls === 0) tables[id] = { counts, values: f.subarray(q + 17, q + 17 + total) };
        q += 17 + total;
      }
    } else if (m === 0xdd) {
      if (length !== 4) throw corrupt(`restart interval segment (DRI) is ${length} bytes; it is 4`);
      restart = (f[p] << 8) | f[p + 1];
    } else if (m === 0xda) {
      if (frame === null) throw corrupt(`has a scan (SOS) before its frame header (SOF3)`);
      const ns = f[p];
      if (ns < 1 || ns > 4 || length !== 6 + 2 * ns) throw corrupt(`scan header (SOS) is ${length} bytes for ${ns} component(s)`);
      const components: number[] = [];
      const lookups: Uint16Array[] = [];
      for (let s = 0; s < ns; s++) {
        const id = f[p + 1 + 2 * s];
        const table = f[p + 2 + 2 * s] >> 4;
        const index = frame.ids.indexOf(id);
        if (index < 0) throw corrupt(`scan names component ${id}, which its frame header does not have`);
        if (decoded.has(id) || components.includes(index)) throw corrupt(`scan decodes component ${id} a second time`);
        const defined = table < 4 ? tables[table] : undefined;
        if (defined === undefined) throw corrupt(`scan uses Huffman table ${table} for component ${id}, which is not defined`);
        components.push(index);
        lookups.push(huffmanLookup(defined));
      }
      const predictor = f[p + 1 + 2 * ns];
      const se = f[p + 2 + 2 * ns];
      const ah = f[p + 3 + 2 * ns] >> 4;
      const pt = f[p + 3 + 2 * ns] & 15;
      if (predictor < 1 || predictor > 7) throw corrupt(`scan has predictor ${predictor}; lossless JPEG has 1 to 7`);
      if (t.sv1 && predictor !== 1) throw corrupt(`scan has predictor ${predictor}; ${t.syntax} allows predictor 1 only`);
      if (se !== 0 || ah !== 0) throw corrupt(`scan header has Se ${se} and Ah ${ah}; lossless JPEG has 0 and 0`);
      if (pt >= frame.precision) throw corrupt(`scan has point transform ${pt}, not below the precision ${frame.precision}`);
      if (restart % t.columns !== 0) throw corrupt(`has a restart interval of ${restart} samples, not a whole number of rows of ${t.columns}`);
      for (const index of components) decoded.add(frame.ids[index]);
      out ??= new Uint8Array(t.rows * t.columns * t.samples * (t.bitsAllocated >> 3));
      pos = scan(f, pos, out, t, { precision: frame.precision, ids: frame.ids, components, lookups, predictor, pt, restart });
    }
    // APPn, COM, DQT, DNL and the rest: skipped by their length
  }
}

interface Scan {
  precision: number;
  ids: number[];
  /** Frame component indices, in the scan's order, and their Huffman lookups. */
  components: number[];
  lookups: Uint16Array[];
  predictor: number;
  pt: number;
  restart: number;
}

/**
 * One scan's entropy-coded data from `pos`, decoded (F.2.2.1, H.1.2.2) and undone (H.1.2.1,
 * modulo 2^16) into `out`; returns where the marker after it starts. The first row of the image
 * and of each restart interval is predicted from the left (its first sample from 2^(P-Pt-1)), the
 * first sample of every other row from above.
 */
function scan(f: Uint8Array, pos: number, out: Uint8Array, t: LosslessTarget, s: Scan): number {
  const { columns, samples } = t;
  const bytes = t.bitsAllocated >> 3;
  const ns = s.components.length;
  const limit = 1 << (s.precision - s.pt);
  const initial = 1 << (s.precision - s.pt - 1);
  const rowsPerInterval = s.restart === 0 ? t.rows : s.restart / columns;
  // the unshifted samples of the row above and of this one, per scan component
  let above = Array.from({ length: ns }, () => new Int32Array(columns));
  let row = Array.from({ length: ns }, () => new Int32Array(columns));
  const bits = new BitReader(f, pos);
  const where = (r: number, c: number, i: number) => `row ${r}, column ${c}${samples > 1 ? ` of component ${s.ids[s.components[i]]}` : ''}`;
  for (let r = 0; r < t.rows; r++) {
    const first = r % rowsPerInterval === 0;
    if (first && r > 0) {
      const expected = ((r / rowsPerInterval - 1) & 7);
      bits.toMarker();
      let q = bits.pos;
      while (q < f.length && f[q] === 0xff) q++;
      if (q >= f.length) throw corrupt(`is truncated: its data stops before row ${r}'s restart marker RST${expected}`);
      if (f[q] !== 0xd0 + expected) {
        throw corrupt(`has a restart marker out of order at byte ${bits.pos}: RST${expected} expected before row ${r}, ${f[q] >= 0xd0 && f[q] <= 0xd7 ? `RST${f[q] - 0xd0}` : `marker ff${hex2(f[q])}`} found`);
      }
      bits.pos = q + 1;
    }
    for (let c = 0; c < columns; c++) {
      for (let i = 0; i < ns; i++) {
        const e = s.lookups[i][bits.peek16()];
        if (e === 0) {
          if (!bits.has(16)) throw corrupt(`scan data stops short at ${where(r, c, i)}`);
          throw corrupt(`has no code in its Huffman table for the difference at ${where(r, c, i)}`);
        }
        const length = e >> 8;
        const category = e & 0xff;
        if (!bits.has(length)) throw corrupt(`scan data stops short at ${where(r, c, i)}`);
        bits.take(length);
        if (category > 16) throw corrupt(`has difference category ${category} at ${where(r, c, i)}; at most 16`);
        let diff = 0;
        if (category === 16) {
          diff = 32768;
        } else if (category > 0) {
          if (!bits.has(category)) throw corrupt(`scan data stops short at ${where(r, c, i)}`);
          const v = bits.take(category);
          diff = v < 1 << (category - 1) ? v - (1 << category) + 1 : v;
        }
        const cur = row[i];
        const up = above[i];
        let px: number;
        if (first) px = c === 0 ? initial : cur[c - 1];
        else if (c === 0) px = up[0];
        else {
          const ra = cur[c - 1];
          const rb = up[c];
          const rc = up[c - 1];
          switch (s.predictor) {
            case 1: px = ra; break;
            case 2: px = rb; break;
            case 3: px = rc; break;
            case 4: px = ra + rb - rc; break;
            case 5: px = ra + ((rb - rc) >> 1); break;
            case 6: px = rb + ((ra - rc) >> 1); break;
            default: px = (ra + rb) >> 1;
          }
        }
        const v = (px + diff) & 0xffff;
        if (v >= limit) throw corrupt(`decodes the sample at ${where(r, c, i)} to ${v}, outside its ${s.precision - s.pt} bits`);
        cur[c] = v;
        const w = v << s.pt;
        const o = ((r * columns + c) * samples + s.components[i]) * bytes;
        out[o] = w & 0xff;
        if (bytes === 2) out[o + 1] = w >> 8;
      }
    }
    [above, row] = [row, above];
  }
  bits.toMarker();
  return bits.pos;
}
