// Shard and manifest codecs: round trips, determinism, and rejection of anything corrupt,
// foreign or from a future version.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Bits } from '../wasm/hamming.ts';
import { compareIdBytes } from '../wasm/hamming.ts';
import { crc32 } from '../functions/shards/crc32.ts';
import { encodeShard, Shard, ShardFormatError, type ShardRecord } from '../functions/shards/codec.ts';
import { decodeManifest, emptyManifest, encodeManifest, ManifestFormatError, routeId, shardKey, type Manifest } from '../functions/shards/manifest.ts';
import { canonicalMetadata } from '../functions/shards/metadata.ts';

const BITS: Bits[] = [16, 32, 64, 128, 256];

function arbRecords(bits: Bits, dims: number) {
  const record = fc.record({
    id: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }),
    code: fc.uint8Array({ minLength: bits / 8, maxLength: bits / 8 }),
    descriptor: fc.int8Array({ minLength: dims, maxLength: dims }),
    metadata: fc.option(fc.record({ label: fc.string(), modality: fc.constantFrom('CT', 'MR', 'CR') }, { requiredKeys: [] }), { nil: undefined }),
  });
  return fc.uniqueArray(record, { selector: (r) => r.id, maxLength: 40 }).map((rs) =>
    rs.map((r): ShardRecord => ({ id: r.id, code: r.code, descriptor: r.descriptor, metadata: canonicalMetadata(r.metadata) })),
  );
}

/** Re-seals a tampered blob so that only the check under test can catch it. */
function reseal(blob: Uint8Array): Uint8Array {
  const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  dv.setUint32(blob.length - 4, crc32(blob.subarray(0, blob.length - 4)), true);
  return blob;
}

const sample = (): Uint8Array =>
  encodeShard(
    [
      { id: 'b', code: new Uint8Array([1, 2]), descriptor: new Int8Array([-1]), metadata: '{"label":"x"}' },
      { id: 'a', code: new Uint8Array([3, 4]), descriptor: new Int8Array([7]), metadata: '{}' },
    ],
    16,
    1,
  );

describe('shard codec', () => {
  it('round-trips any records, rows sorted by UTF-8 bytes', () => {
    for (const bits of BITS) {
      fc.assert(
        fc.property(arbRecords(bits, 3), (records) => {
          const shard = Shard.decode(encodeShard(records, bits, 3));
          const sorted = [...records].sort((a, b) => compareIdBytes(a.id, b.id));
          expect(shard.count).toBe(records.length);
          expect(shard.bits).toBe(bits);
          sorted.forEach((r, row) => {
            expect(shard.ids[row]).toBe(r.id);
            expect(Array.from(shard.code(row))).toEqual(Array.from(r.code));
            expect(Array.from(shard.descriptor(row))).toEqual(Array.from(r.descriptor));
            expect(shard.metadataJson(row)).toBe(r.metadata);
            expect(shard.indexOf(r.id)).toBe(row);
          });
          expect(shard.indexOf('\u{10ffff}missing')).toBe(-1);
        }),
        { numRuns: 30 },
      );
    }
  });

  it('finds the rows whose metadata holds some bytes, each once, as a search of every row would', () => {
    const text = new TextEncoder();
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ id: fc.string({ minLength: 1, maxLength: 4 }), metadata: fc.stringMatching(/^[ab"é]{0,12}$/) }), { selector: (r) => r.id, maxLength: 40 }),
        fc.stringMatching(/^[ab"é]{1,3}$/),
        (rows, needle) => {
          const shard = Shard.decode(encodeShard(rows.map((r) => ({ ...r, code: new Uint8Array(2), descriptor: new Int8Array(0) })), 16, 0));
          const expected = shard.ids.map((_, row) => row).filter((row) => shard.metadataJson(row).includes(needle));
          expect(shard.rowsWithMetadata(text.encode(needle))).toEqual(expected);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('is deterministic: input order does not change the bytes', () => {
    fc.assert(
      fc.property(arbRecords(64, 0), (records) => {
        const a = encodeShard(records, 64, 0);
        const b = encodeShard([...records].reverse(), 64, 0);
        expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
      }),
      { numRuns: 30 },
    );
  });

  it('orders ids by bytes, not UTF-16 units (astral vs U+FFxx)', () => {
    const ids = ['\u{1F600}', '\uFF21', 'z'];
    const shard = Shard.decode(encodeShard(ids.map((id) => ({ id, code: new Uint8Array(2), descriptor: new Int8Array(0), metadata: '{}' })), 16, 0));
    expect(shard.ids).toEqual(['z', '\uFF21', '\u{1F600}']);
  });

  it('decodes an id that starts with U+FEFF as written, not stripped to another id', () => {
    const ids = ['x', '\ufeffx'];
    const shard = Shard.decode(encodeShard(ids.map((id) => ({ id, code: new Uint8Array(2), descriptor: new Int8Array(0), metadata: '{}' })), 16, 0));
    expect(shard.ids).toEqual(ids);
  });

  it('refuses to encode duplicate ids or wrong code lengths', () => {
    const r = { id: 'a', code: new Uint8Array(2), descriptor: new Int8Array(0), metadata: '{}' };
    expect(() => encodeShard([r, r], 16, 0)).toThrow(/duplicate/);
    expect(() => encodeShard([{ ...r, code: new Uint8Array(3) }], 16, 0)).toThrow(/3 bytes/);
  });

  it('decodes an empty shard', () => {
    expect(Shard.decode(encodeShard([], 256, 8)).count).toBe(0);
  });

  const rejects: Array<[string, (b: Uint8Array) => Uint8Array, RegExp]> = [
    ['unknown magic', (b) => reseal((b.set([0x50, 0x4b, 3, 4], 0), b)), /bad magic/],
    ['a future version', (b) => reseal((new DataView(b.buffer).setUint16(4, 2, true), b)), /unsupported format version 2/],
    ['a flipped bit', (b) => ((b[60] ^= 1), b), /checksum mismatch/],
    ['a truncated blob', (b) => b.slice(0, b.length - 9), /checksum mismatch|out of bounds/],
    ['a blob shorter than the header', (b) => b.slice(0, 20), /shorter than the header/],
    ['unknown flags', (b) => reseal((new DataView(b.buffer).setUint16(10, 1, true), b)), /unknown flags/],
    ['unsupported bits', (b) => reseal((new DataView(b.buffer).setUint16(6, 48, true), b)), /unsupported code length 48/],
    ['a section out of bounds', (b) => reseal((new DataView(b.buffer).setUint32(24, 1 << 20, true), b)), /out of bounds/],
    ['a count that does not match the sections', (b) => reseal((new DataView(b.buffer).setUint32(12, 3, true), b)), /too short|holds/],
  ];
  for (const [what, tamper, message] of rejects) {
    it(`rejects ${what}`, () => {
      expect(() => Shard.decode(tamper(sample()))).toThrow(ShardFormatError);
      expect(() => Shard.decode(tamper(sample()))).toThrow(message);
    });
  }

  it('rejects ids out of order even with a valid checksum', () => {
    const blob = sample(); // ids "a", "b": swap their bytes in place
    const idsOffset = new DataView(blob.buffer).getUint32(16, true);
    const bytesAt = idsOffset + 4 * 3;
    [blob[bytesAt], blob[bytesAt + 1]] = [blob[bytesAt + 1], blob[bytesAt]];
    expect(() => Shard.decode(reseal(blob))).toThrow(/not strictly increasing/);
  });
});

describe('manifest codec', () => {
  const sha = (c: string) => c.repeat(64);
  const manifest = (): Manifest => ({
    ...emptyManifest('col_x', 64, 0),
    generation: 3,
    count: 5,
    shards: [
      { key: shardKey('col_x', sha('a')), sha256: sha('a'), first_id: 'a', last_id: 'f', count: 2, bytes: 100 },
      { key: shardKey('col_x', sha('b')), sha256: sha('b'), first_id: 'g', last_id: 'p', count: 3, bytes: 120 },
    ],
  });

  it('round-trips as version 2, its CRC-32 last', () => {
    const text = encodeManifest(manifest());
    expect(text).toMatch(/^\{"format":"medhash.manifest","version":2,.*,"crc32":"[0-9a-f]{8}"\}$/);
    expect(decodeManifest(text)).toEqual(manifest());
  });

  it('refuses a version 2 manifest with any byte damaged, or without its checksum', () => {
    const bytes = new TextEncoder().encode(encodeManifest(manifest()));
    for (let i = 0; i < bytes.length; i++) {
      for (const flip of [0x01, 0x20, 0x80]) {
        const damaged = bytes.slice();
        damaged[i] ^= flip;
        expect(() => decodeManifest(damaged), `byte ${i} ^ ${flip}`).toThrow(ManifestFormatError);
      }
    }
    const text = encodeManifest(manifest());
    expect(() => decodeManifest(text.replace(/,"crc32":"[0-9a-f]{8}"\}$/, '}'))).toThrow(/version 2 without its crc32/);
    // The routing field a flipped bit would silently change (ids route to the wrong shard):
    expect(() => decodeManifest(text.replace('"first_id":"g"', '"first_id":"o"'))).toThrow(/checksum mismatch/);
  });

  it('reads a version 1 manifest (no checksum), as an older writer stored it, as version 2', () => {
    const v1 = JSON.stringify({ ...manifest(), version: 1 });
    expect(decodeManifest(v1)).toEqual(manifest());
    expect(encodeManifest(decodeManifest(v1))).toBe(encodeManifest(manifest()));
  });

  const bad: Array<[string, (m: any) => void, RegExp]> = [
    ['an unknown version', (m) => (m.version = 3), /unsupported version 3 \(this reader knows 1 and 2\)/],
    ['an unknown format', (m) => (m.format = 'other'), /unknown format/],
    ['overlapping ranges', (m) => (m.shards[1].first_id = 'c'), /overlaps/],
    ['a count mismatch', (m) => (m.count = 6), /differs/],
    ['a key that is not the content address', (m) => (m.shards[0].key = 'c/col_x/s/zz'), /key does not match/],
    ['bad bits', (m) => (m.bits = 12), /bad bits/],
  ];
  for (const [what, mutate, message] of bad) {
    it(`rejects ${what}`, () => {
      const m = manifest();
      mutate(m);
      expect(() => decodeManifest(encodeManifest(m))).toThrow(message);
    });
  }

  it('rejects non-JSON', () => {
    expect(() => decodeManifest('{')).toThrow(/not JSON/);
  });

  it('reads the bytes KV holds, and rejects a damaged byte that is not UTF-8 instead of reading it as U+FFFD', () => {
    const bytes = new TextEncoder().encode(encodeManifest(manifest()));
    expect(decodeManifest(bytes)).toEqual(manifest());
    const text = encodeManifest(manifest());
    const damaged = bytes.slice();
    damaged[text.indexOf('"first_id":"g"') + '"first_id":"'.length] = 0xe7; // 'g' (0x67) with its top bit flipped: a lone lead byte
    expect(() => decodeManifest(damaged)).toThrow(/not UTF-8/);
  });

  it('routes ids to the last shard starting at or below them', () => {
    const { shards } = manifest();
    expect(routeId(shards, '0')).toBe(0);
    expect(routeId(shards, 'a')).toBe(0);
    expect(routeId(shards, 'fz')).toBe(0);
    expect(routeId(shards, 'g')).toBe(1);
    expect(routeId(shards, 'zzz')).toBe(1);
  });
});
