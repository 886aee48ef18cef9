// Byte encodings and hashing shared by the shard store (content addresses), the API (codes
// as hex or base64) and auth (key secrets). Web-standard APIs, so every runtime shares it; the
// one exception is Node's synchronous SHA-256, taken where the runtime has it.

type NodeCrypto = typeof import('node:crypto');
const nodeCrypto = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule?.('node:crypto') as NodeCrypto | undefined;

/**
 * UTF-8 that refuses what is not: a lenient decoder reads each bad byte as U+FFFD, so two
 * different ids (\xff, \xfe) would read back as one. ignoreBOM keeps a leading U+FEFF, which
 * would otherwise be dropped and make the id '\ufeffx' read back as 'x'.
 */
export const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  // WebCrypto's digest is a round trip through a worker thread: 40 us against Node's own 0.8 us
  // for the 43 bytes of an API key (scripts/bench/node-store.ts), paid by every request.
  if (nodeCrypto) return nodeCrypto.createHash('sha256').update(data).digest('hex');
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)));
}

/** The parts one after the other, in one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The first `n` bytes in hex, space-separated: what a message says a file or frame starts with. */
export function leadingHex(b: Uint8Array, n: number): string {
  return Array.from(b.subarray(0, n), (x) => x.toString(16).padStart(2, '0')).join(' ');
}

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += bytes[i].toString(16).padStart(2, '0');
  return s;
}

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

/** Strict: even length, hex digits only; null otherwise. */
export function fromHex(s: string): Uint8Array | null {
  if (!HEX.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_LOOKUP[B64.charCodeAt(i)] = i;

/** Standard alphabet, padded; null on any deviation (wrong padding, stray characters, non-zero pad bits). */
export function fromBase64(s: string): Uint8Array | null {
  if (s.length % 4 !== 0) return null;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const n = (s.length / 4) * 3 - pad;
  const out = new Uint8Array(n);
  let acc = 0;
  let bitsHeld = 0;
  let o = 0;
  for (let i = 0; i < s.length - pad; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64_LOOKUP[c] : -1;
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bitsHeld += 6;
    if (bitsHeld >= 8) {
      bitsHeld -= 8;
      out[o++] = (acc >> bitsHeld) & 0xff;
      acc &= (1 << bitsHeld) - 1;
    }
  }
  if (acc !== 0) return null;
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i];
    const b = i + 1 < bytes.length ? bytes[i + 1] : 0;
    const c = i + 2 < bytes.length ? bytes[i + 2] : 0;
    const v = (a << 16) | (b << 8) | c;
    s += B64[(v >> 18) & 63] + B64[(v >> 12) & 63];
    s += i + 1 < bytes.length ? B64[(v >> 6) & 63] : '=';
    s += i + 2 < bytes.length ? B64[v & 63] : '=';
  }
  return s;
}

export function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Constant-time equality of two equal-length byte strings (hex digests here). */
export function timingSafeEqualStr(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

const ID_BYTES = 12;
/** The hex digits after an id's prefix. */
export const ID_HEX_DIGITS = ID_BYTES * 2;

/** Opaque random identifier such as `tn_5f0c...`: unguessable and never reused. */
export function randomId(prefix: string): string {
  return `${prefix}_${toHex(randomBytes(ID_BYTES))}`;
}

/** What randomId(prefix) makes: the shape a request's id (a page cursor) is checked against. */
export function idPattern(prefix: string): RegExp {
  return new RegExp(`^${prefix}_[0-9a-f]{${ID_HEX_DIGITS}}$`);
}
