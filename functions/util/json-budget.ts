// The shape of a JSON request body, counted before anything parses it, and its encoding, for the
// edge API (api/body.ts) and the inference backend (backend/app.ts) alike. JSON.parse builds every
// object, array and value a body holds: 8 MiB of `{},{},...` is 2.8 million objects, well over
// 100 MB of heap (a Worker has 128 MB) for a request that then fails validation.
import { strictUtf8 } from './bytes.ts';
import { MedhashError } from './errors.ts';
import { mediaType } from './media-type.ts';

export interface JsonBudget {
  /** Objects and arrays. */
  containers: number;
  /** Strings, numbers, literals, objects and arrays, object keys included. */
  values: number;
}

/** What checkJsonBody reads of a request (a HonoRequest is one). */
interface BodyRequest {
  raw: Request;
  header(name: string): string | undefined;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/**
 * The media types Hono's JSON validator parses: application/json and every `application/*+json`.
 * zod-openapi lets each of them through to a route that declares application/json, so each is counted.
 */
const PARSED_AS_JSON = /^application\/([\w.-]+\+)?json$/;

/**
 * 413 `json_too_complex` when `req` has a JSON body over `budget`, then 400 `invalid_json` when it
 * is not UTF-8 or starts with a byte order mark (RFC 8259). Reads the body through `req.arrayBuffer()`, which Hono caches for the
 * validator that parses it next.
 */
export async function checkJsonBody(req: BodyRequest, budget: JsonBudget): Promise<void> {
  if (!req.raw.body || !PARSED_AS_JSON.test(mediaType(req.header('content-type')))) return;
  const bytes = new Uint8Array(await req.arrayBuffer());
  const over = overBudget(bytes, budget);
  if (over) {
    throw new MedhashError(413, 'json_too_complex', `a JSON body holds at most ${budget.containers} objects and arrays and ${budget.values} values (object keys included); this one holds more ${over}`);
  }
  // The validator decodes leniently, each bad byte as U+FFFD: ids \xff and \xfe would be one
  // id, the second batch replacing the first one's item.
  try {
    strictUtf8.decode(bytes);
  } catch {
    throw new MedhashError(400, 'invalid_json', 'request body is not valid JSON: it is not UTF-8');
  }
  // RFC 8259 lets a parser skip one or refuse it: Node's parsed it, workerd's refused it, so both refuse it here
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    throw new MedhashError(400, 'invalid_json', 'request body is not valid JSON: it starts with a byte order mark (send UTF-8 without one)');
  }
}

const QUOTE = 0x22, BACKSLASH = 0x5c, OPEN_OBJECT = 0x7b, OPEN_ARRAY = 0x5b, CLOSE_OBJECT = 0x7d, CLOSE_ARRAY = 0x5d, COMMA = 0x2c, COLON = 0x3a;

/**
 * Which part of `budget` the JSON text `bytes` exceeds ('objects and arrays' or 'values'), or
 * null. A value starts at the first byte after `[`, `{`, `,`, `:` or the start that is not
 * white space or a closing bracket; string contents are skipped (no structural byte occurs
 * inside a UTF-8 sequence). The text need not be valid: JSON.parse judges that afterwards.
 */
export function overBudget(bytes: Uint8Array, budget: JsonBudget): string | null {
  let containers = 0, values = 0;
  let expectValue = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
    if (b === COMMA || b === COLON || b === OPEN_OBJECT || b === OPEN_ARRAY) {
      if (b === OPEN_OBJECT || b === OPEN_ARRAY) {
        if (expectValue && ++values > budget.values) return 'values';
        if (++containers > budget.containers) return 'objects and arrays';
      }
      expectValue = true;
      continue;
    }
    if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
      expectValue = false;
      continue;
    }
    if (expectValue && ++values > budget.values) return 'values';
    expectValue = false;
    if (b === QUOTE) {
      for (i++; i < bytes.length && bytes[i] !== QUOTE; i++) if (bytes[i] === BACKSLASH) i++;
    }
  }
  return null;
}
