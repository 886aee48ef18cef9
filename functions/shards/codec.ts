// Binary shard codec (layout in docs/SHARD_FORMAT.md): one immutable blob holding the ids,
// packed codes, int8 descriptors and JSON metadata of a run of items sorted by id. Readers
// reject anything they do not fully understand, so a corrupt or future blob never becomes a
// silently wrong search answer.
import type { Bits } from '../../wasm/hamming.ts';
import { compareIdBytes } from '../../wasm/hamming.ts';
import { strictUtf8 } from '../util/bytes.ts';
import { crc32 } from './crc32.ts';

export const SHARD_MAGIC = 0x4853484d; // "MHSH" read as little-endian u32
export const SHARD_VERSION = 1;
export const HEADER_BYTES = 48;
const TRAILER_BYTES = 4;
const SECTIONS = ['ids', 'codes', 'descriptors', 'metadata'] as const;
export const CODE_BITS: readonly Bits[] = [16, 32, 64, 128, 256];
export const MAX_DESCRIPTOR_DIMS = 4096;

/** One item as stored: metadata is canonical JSON text ("{}" when nothing is known). */
export interface ShardRecord {
  id: string;
  code: Uint8Array;
  descriptor: Int8Array;
  metadata: string;
}

export class ShardFormatError extends Error {
  override name = 'ShardFormatError';
}

const utf8 = new TextEncoder();

const align8 = (n: number): number => (n + 7) & ~7;

/** Bytes an item adds to a shard; the writer uses it to keep shards under their byte cap. */
export function recordBytes(r: { id: string; metadata: string }, bits: Bits, dims: number): number {
  return 8 + utf8.encode(r.id).length + utf8.encode(r.metadata).length + bits / 8 + dims;
}

/** Bytes of a shard holding nothing: header, padding slack, offset-table sentinels, trailer. */
export const EMPTY_SHARD_BYTES = HEADER_BYTES + 4 * 7 + 8 + TRAILER_BYTES;

function stringTable(strings: Uint8Array[]): { size: number; write(dst: Uint8Array, at: number): void } {
  const bytes = strings.reduce((n, s) => n + s.length, 0);
  return {
    size: 4 * (strings.length + 1) + bytes,
    write(dst, at) {
      const dv = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
      let data = at + 4 * (strings.length + 1);
      let off = 0;
      strings.forEach((s, i) => {
        dv.setUint32(at + 4 * i, off, true);
        dst.set(s, data);
        data += s.length;
        off += s.length;
      });
      dv.setUint32(at + 4 * strings.length, off, true);
    },
  };
}

/**
 * Encodes records into one shard. Rows are written sorted by id (UTF-8 bytes) whatever the
 * input order, so equal contents always give identical bytes and thus the same content address.
 */
export function encodeShard(records: readonly ShardRecord[], bits: Bits, dims: number): Uint8Array {
  if (!CODE_BITS.includes(bits)) throw new RangeError(`unsupported code length ${bits}`);
  if (!Number.isInteger(dims) || dims < 0 || dims > MAX_DESCRIPTOR_DIMS) throw new RangeError(`bad descriptor dims ${dims}`);
  const rowBytes = bits / 8;
  const rows = [...records].sort((a, b) => compareIdBytes(a.id, b.id));
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (r.id.length === 0) throw new RangeError('empty item id');
    if (i > 0 && rows[i - 1].id === r.id) throw new RangeError(`duplicate item id ${JSON.stringify(r.id)}`);
    if (r.code.length !== rowBytes) throw new RangeError(`item ${r.id}: code has ${r.code.length} bytes, expected ${rowBytes}`);
    if (r.descriptor.length !== dims) throw new RangeError(`item ${r.id}: descriptor has ${r.descriptor.length} dims, expected ${dims}`);
  }
  const ids = stringTable(rows.map((r) => utf8.encode(r.id)));
  const meta = stringTable(rows.map((r) => utf8.encode(r.metadata)));
  const sizes = [ids.size, rows.length * rowBytes, rows.length * dims, meta.size];
  const offsets: number[] = [];
  let end = HEADER_BYTES;
  for (const size of sizes) {
    offsets.push(end);
    end = align8(end + size);
  }
  const total = end + TRAILER_BYTES;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SHARD_MAGIC, true);
  dv.setUint16(4, SHARD_VERSION, true);
  dv.setUint16(6, bits, true);
  dv.setUint16(8, dims, true);
  dv.setUint16(10, 0, true);
  dv.setUint32(12, rows.length, true);
  SECTIONS.forEach((_, s) => {
    dv.setUint32(16 + 8 * s, offsets[s], true);
    dv.setUint32(20 + 8 * s, sizes[s], true);
  });
  ids.write(out, offsets[0]);
  rows.forEach((r, i) => {
    out.set(r.code, offsets[1] + i * rowBytes);
    out.set(new Uint8Array(r.descriptor.buffer, r.descriptor.byteOffset, dims), offsets[2] + i * dims);
  });
  meta.write(out, offsets[3]);
  dv.setUint32(total - TRAILER_BYTES, crc32(out.subarray(0, total - TRAILER_BYTES)), true);
  return out;
}

/** A decoded shard: views into the blob, ids decoded eagerly (routing and merging need them). */
export class Shard {
  private constructor(
    readonly bits: Bits,
    readonly dims: number,
    readonly ids: readonly string[],
    /** count * bits/8 bytes, row i = item ids[i]: the table handed to the kernel. */
    readonly codes: Uint8Array,
    readonly descriptors: Int8Array,
    private readonly metaOffsets: DataView,
    private readonly metaBytes: Uint8Array,
    readonly byteLength: number,
  ) {}

  get count(): number {
    return this.ids.length;
  }

  code(row: number): Uint8Array {
    const n = this.bits / 8;
    return this.codes.subarray(row * n, (row + 1) * n);
  }

  descriptor(row: number): Int8Array {
    return this.descriptors.subarray(row * this.dims, (row + 1) * this.dims);
  }

  metadataJson(row: number): string {
    const a = this.metaOffsets.getUint32(4 * row, true);
    const b = this.metaOffsets.getUint32(4 * row + 4, true);
    return strictUtf8.decode(this.metaBytes.subarray(a, b));
  }

  /**
   * Rows whose metadata JSON holds `needle` (UTF-8 bytes), ascending: a search of the metadata
   * section's bytes, with no row decoded, for a caller that confirms each hit.
   */
  rowsWithMetadata(needle: Uint8Array): number[] {
    const bytes = this.metaBytes;
    const rows: number[] = [];
    if (needle.length === 0) return rows;
    let row = 0;
    for (let at = bytes.indexOf(needle[0]); at >= 0 && at + needle.length <= bytes.length; at = bytes.indexOf(needle[0], at + 1)) {
      let j = 1;
      while (j < needle.length && bytes[at + j] === needle[j]) j++;
      if (j < needle.length) continue;
      while (this.metaOffsets.getUint32(4 * row + 4, true) <= at) row++;
      // within one row's record, and each row once
      if (at + needle.length <= this.metaOffsets.getUint32(4 * row + 4, true) && rows[rows.length - 1] !== row) rows.push(row);
    }
    return rows;
  }

  record(row: number): ShardRecord {
    return { id: this.ids[row], code: this.code(row), descriptor: this.descriptor(row), metadata: this.metadataJson(row) };
  }

  /** Row of `id`, or -1. */
  indexOf(id: string): number {
    let lo = 0;
    let hi = this.ids.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareIdBytes(this.ids[mid], id);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Validates everything the layout promises before anything is trusted. */
  static decode(blob: Uint8Array): Shard {
    const fail = (msg: string): never => {
      throw new ShardFormatError(`invalid shard: ${msg}`);
    };
    if (blob.length < HEADER_BYTES + TRAILER_BYTES) fail(`${blob.length} bytes is shorter than the header`);
    const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const magic = dv.getUint32(0, true);
    if (magic !== SHARD_MAGIC) fail(`bad magic 0x${magic.toString(16).padStart(8, '0')} (expected "MHSH")`);
    const version = dv.getUint16(4, true);
    if (version !== SHARD_VERSION) fail(`unsupported format version ${version} (this reader knows ${SHARD_VERSION})`);
    const body = blob.length - TRAILER_BYTES;
    const stored = dv.getUint32(body, true);
    const actual = crc32(blob.subarray(0, body));
    if (stored !== actual) fail(`checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`);
    const bits = dv.getUint16(6, true) as Bits;
    if (!CODE_BITS.includes(bits)) fail(`unsupported code length ${bits}`);
    const dims = dv.getUint16(8, true);
    if (dims > MAX_DESCRIPTOR_DIMS) fail(`descriptor dims ${dims} over ${MAX_DESCRIPTOR_DIMS}`);
    if (dv.getUint16(10, true) !== 0) fail('unknown flags set');
    const count = dv.getUint32(12, true);
    const section = (s: number): Uint8Array => {
      const off = dv.getUint32(16 + 8 * s, true);
      const len = dv.getUint32(20 + 8 * s, true);
      if (off < HEADER_BYTES || off + len > body) fail(`${SECTIONS[s]} section [${off}, ${off + len}) out of bounds`);
      return blob.subarray(off, off + len);
    };
    const table = (s: number): { offsets: DataView; bytes: Uint8Array } => {
      const sec = section(s);
      const head = 4 * (count + 1);
      if (sec.length < head) fail(`${SECTIONS[s]} section too short for ${count} items`);
      const offsets = new DataView(sec.buffer, sec.byteOffset, head);
      const bytes = sec.subarray(head);
      let prev = 0;
      if (offsets.getUint32(0, true) !== 0) fail(`${SECTIONS[s]} offsets do not start at 0`);
      for (let i = 1; i <= count; i++) {
        const o = offsets.getUint32(4 * i, true);
        if (o < prev) fail(`${SECTIONS[s]} offsets decrease at item ${i}`);
        prev = o;
      }
      if (prev !== bytes.length) fail(`${SECTIONS[s]} offsets end at ${prev}, section holds ${bytes.length} bytes`);
      return { offsets, bytes };
    };
    const idTable = table(0);
    const codes = section(1);
    if (codes.length !== count * (bits / 8)) fail(`codes section holds ${codes.length} bytes, expected ${count * (bits / 8)}`);
    const desc = section(2);
    if (desc.length !== count * dims) fail(`descriptor section holds ${desc.length} bytes, expected ${count * dims}`);
    const meta = table(3);
    const ids: string[] = new Array(count);
    let prevBytes: Uint8Array | null = null;
    for (let i = 0; i < count; i++) {
      const a = idTable.offsets.getUint32(4 * i, true);
      const b = idTable.offsets.getUint32(4 * i + 4, true);
      const bytes = idTable.bytes.subarray(a, b);
      if (bytes.length === 0) fail(`empty id at row ${i}`);
      if (prevBytes && compareBytes(prevBytes, bytes) >= 0) fail(`ids not strictly increasing at row ${i}`);
      try {
        ids[i] = strictUtf8.decode(bytes);
      } catch {
        fail(`id at row ${i} is not valid UTF-8`);
      }
      prevBytes = bytes;
    }
    const descriptors = new Int8Array(desc.buffer, desc.byteOffset, desc.length);
    return new Shard(bits, dims, ids, codes, descriptors, meta.offsets, meta.bytes, blob.length);
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
