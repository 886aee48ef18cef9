// Hash codes on the wire: hex (2 characters per byte) or padded standard base64, told apart
// by length. For 16 and 32 bits both forms have the same length; base64 then always carries
// "=" padding, which hex never does, so trying hex first is unambiguous.
import type { Bits } from '../../wasm/hamming.ts';
import { badRequest } from '../util/errors.ts';
import { fromBase64, fromHex } from '../util/bytes.ts';

export function parseCode(s: string, bits: Bits, field: string): Uint8Array {
  const bytes = bits / 8;
  const hexLen = 2 * bytes;
  const b64Len = 4 * Math.ceil(bytes / 3);
  if (s.length === hexLen) {
    const code = fromHex(s);
    if (code) return code;
  }
  if (s.length === b64Len) {
    const code = fromBase64(s);
    if (code && code.length === bytes) return code;
  }
  if (s.length === hexLen || s.length === b64Len) {
    const form = hexLen === b64Len ? 'neither hex nor padded base64' : s.length === hexLen ? 'not valid hex' : 'not valid padded base64';
    throw badRequest('invalid_code', `code is ${form} (${s.length} characters for a ${bits}-bit collection)`, field);
  }
  throw badRequest(
    'invalid_code',
    `code must be ${hexLen} hex characters or ${b64Len} base64 characters for a ${bits}-bit collection; got ${s.length} characters`,
    field,
  );
}
