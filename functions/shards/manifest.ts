// Manifest codec and KV key layout. The manifest is the one small mutable value per
// collection: it names the live shards (content-addressed, immutable) with their id ranges,
// so swapping it is the single atomic step that makes a new index visible.
import type { Bits } from '../../wasm/hamming.ts';
import { compareIdBytes } from '../../wasm/hamming.ts';
import { strictUtf8 } from '../util/bytes.ts';
import { CODE_BITS, MAX_DESCRIPTOR_DIMS, ShardFormatError } from './codec.ts';
import { crc32 } from './crc32.ts';

export const MANIFEST_FORMAT = 'medhash.manifest';
/** Version 1 (before 2026-11-29) is still read: the same fields, without the checksum. */
export const MANIFEST_VERSION = 2;

// Version 2 ends with this field: the CRC-32 of the manifest's UTF-8 bytes without it. It is
// verified on the bytes as stored, never on a re-serialisation, so any damaged byte is refused.
const CRC_FIELD = /,"crc32":"([0-9a-f]{8})"\}$/;
const utf8 = new TextEncoder();
const crcHex = (text: string): string => crc32(utf8.encode(text)).toString(16).padStart(8, '0');

export interface ManifestShard {
  /** KV key of the blob: shardKey(collection, sha256). */
  key: string;
  /** SHA-256 of the blob bytes, lowercase hex. */
  sha256: string;
  first_id: string;
  last_id: string;
  count: number;
  bytes: number;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  collection: string;
  bits: Bits;
  descriptor_dims: number;
  /** Increases by one with every swap that changes the index. */
  generation: number;
  count: number;
  /** Sorted by id range, non-overlapping. */
  shards: ManifestShard[];
  updated_at: string;
}

/** Every collection's keys start with this, then its id and a slash. */
export const COLLECTIONS_PREFIX = 'c/';
export const collectionPrefix = (collection: string): string => `${COLLECTIONS_PREFIX}${collection}/`;
export const manifestKey = (collection: string): string => `${collectionPrefix(collection)}manifest`;
/** What every shard key of the collection starts with. */
export const shardPrefix = (collection: string): string => `${collectionPrefix(collection)}s/`;
export const shardKey = (collection: string, sha256: string): string => `${shardPrefix(collection)}${sha256}`;
/** The collection id a KV key belongs to (`c/{id}/...`), or null for a key of no collection. */
export function collectionOfKey(key: string): string | null {
  if (!key.startsWith(COLLECTIONS_PREFIX)) return null;
  const end = key.indexOf('/', COLLECTIONS_PREFIX.length);
  return end > COLLECTIONS_PREFIX.length ? key.slice(COLLECTIONS_PREFIX.length, end) : null;
}

export class ManifestFormatError extends Error {
  override name = 'ManifestFormatError';
}

export function emptyManifest(collection: string, bits: Bits, dims: number): Manifest {
  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    collection,
    bits,
    descriptor_dims: dims,
    generation: 0,
    count: 0,
    shards: [],
    updated_at: new Date(0).toISOString(),
  };
}

/** The one serialisation of a manifest (KV, writer state, backups): version 2, checksum last. */
export function encodeManifest(m: Manifest): string {
  const body = JSON.stringify(m);
  return `${body.slice(0, -1)},"crc32":"${crcHex(body)}"}`;
}

/**
 * Parses, verifies the checksum (version 2) and validates; every invariant the search and the
 * writer rely on is checked here. A version 1 manifest comes back as version 2, which it re-encodes to.
 */
export function decodeManifest(raw: Uint8Array | string): Manifest {
  const fail = (msg: string): never => {
    throw new ManifestFormatError(`invalid manifest: ${msg}`);
  };
  let text: string;
  try {
    text = typeof raw === 'string' ? raw : strictUtf8.decode(raw);
  } catch {
    return fail('not UTF-8');
  }
  const field = CRC_FIELD.exec(text);
  const body = field ? `${text.slice(0, field.index)}}` : text;
  const crc = field && crcHex(body);
  if (field && crc !== field[1]) fail(`checksum mismatch (crc32 ${crc}, stored ${field[1]})`);
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(body);
  } catch {
    return fail('not JSON');
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) fail('not an object');
  if (m.format !== MANIFEST_FORMAT) fail(`unknown format ${JSON.stringify(m.format)}`);
  if (m.version === 1) m.version = MANIFEST_VERSION;
  else if (m.version !== MANIFEST_VERSION) fail(`unsupported version ${JSON.stringify(m.version)} (this reader knows 1 and ${MANIFEST_VERSION})`);
  else if (!field) fail(`version ${MANIFEST_VERSION} without its crc32`);
  const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof m.collection !== 'string' || m.collection === '') fail('missing collection');
  if (!CODE_BITS.includes(m.bits as Bits)) fail(`bad bits ${JSON.stringify(m.bits)}`);
  if (!isCount(m.descriptor_dims) || m.descriptor_dims > MAX_DESCRIPTOR_DIMS) fail('bad descriptor_dims');
  if (!isCount(m.generation)) fail('bad generation');
  if (!isCount(m.count)) fail('bad count');
  if (typeof m.updated_at !== 'string') fail('bad updated_at');
  if (!Array.isArray(m.shards)) fail('shards is not an array');
  const collection = m.collection as string;
  let total = 0;
  let prevLast: string | null = null;
  (m.shards as unknown[]).forEach((raw, i) => {
    const s = raw as Record<string, unknown>;
    if (typeof s !== 'object' || s === null) fail(`shard ${i} is not an object`);
    if (typeof s.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(s.sha256)) fail(`shard ${i}: bad sha256`);
    if (s.key !== shardKey(collection, s.sha256 as string)) fail(`shard ${i}: key does not match its sha256`);
    if (typeof s.first_id !== 'string' || typeof s.last_id !== 'string') fail(`shard ${i}: bad id range`);
    if (!isCount(s.count) || s.count === 0) fail(`shard ${i}: bad count`);
    if (!isCount(s.bytes)) fail(`shard ${i}: bad bytes`);
    const first = s.first_id as string;
    const last = s.last_id as string;
    if (compareIdBytes(first, last) > 0) fail(`shard ${i}: first_id after last_id`);
    if (prevLast !== null && compareIdBytes(prevLast, first) >= 0) fail(`shard ${i}: id range overlaps the previous shard`);
    prevLast = last;
    total += s.count as number;
  });
  if (total !== m.count) fail(`count ${m.count} differs from the shards' sum ${total}`);
  return m as unknown as Manifest;
}

/** `blob` if it is as long as `entry` records: a cheap check before a shard is decoded. */
export function checkShardBytes(entry: ManifestShard, blob: Uint8Array): Uint8Array {
  if (blob.length !== entry.bytes) throw new ShardFormatError(`invalid shard: ${entry.key} is ${blob.length} bytes, manifest says ${entry.bytes}`);
  return blob;
}

/**
 * Index of the shard responsible for `id`: the last shard whose first_id <= id, or shard 0 for
 * ids below every range. Gaps between ranges thus belong to the shard on their left.
 */
export function routeId(shards: readonly ManifestShard[], id: string): number {
  let lo = 0;
  let hi = shards.length - 1;
  let ans = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (compareIdBytes(shards[mid].first_id, id) <= 0) {
      ans = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return ans;
}
