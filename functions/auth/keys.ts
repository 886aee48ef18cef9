// API key material: format, generation and hashing. A secret is shown once at creation or
// rotation; only its SHA-256 is stored, so a leaked control store yields no usable keys.
import { randomBytes, sha256Hex, toBase64Url } from '../util/bytes.ts';

export const SCOPES = ['search', 'ingest', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export const KEY_PREFIX = 'mh_';

/** `mh_` + 32 random bytes as base64url (43 characters). */
export function generateSecret(): string {
  return KEY_PREFIX + toBase64Url(randomBytes(32));
}

export function hashSecret(secret: string): Promise<string> {
  return sha256Hex(secret);
}

/** The bearer token of an Authorization header, or null when absent or not a Bearer header. */
export function bearerToken(header: string | undefined): string | null {
  const m = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return m ? m[1] : null;
}
