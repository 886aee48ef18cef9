// Where `medhash index` gets its items: the RecordSource interface and its file source, a JSONL
// or CSV file of precomputed codes. The image path (encode.ts, `encodedSource`) is another
// RecordSource producing the same records, so `index` itself does not depend on the source.
import { createReadStream } from 'node:fs';
import { extname } from 'node:path';
import { createInterface } from 'node:readline';

export interface IndexRecord {
  id: string;
  /** Hex or padded base64, as the API takes it. */
  code: string;
  descriptor?: number[];
  metadata?: Record<string, string>;
  /** Where the record came from, for error messages (e.g. "codes.csv:17"). */
  origin: string;
}

export interface RecordSource {
  /** Number of records, when known up front (drives the progress bar). */
  count(): Promise<number>;
  records(): AsyncIterable<IndexRecord>;
}

const METADATA_COLUMNS = ['label', 'modality', 'body_part', 'source_uri', 'study_uid', 'series_uid', 'sop_uid', 'patient_ref'];

async function* lines(path: string): AsyncGenerator<{ line: string; n: number }> {
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (line.trim() !== '') yield { line, n };
  }
}

/** One CSV record on one line (RFC 4180 quoting; quoted newlines are not supported). */
export function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new Error('unterminated quoted field');
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += line[i++];
      }
      if (i < line.length && line[i] !== ',') throw new Error('text after a closing quote');
    } else {
      const end = line.indexOf(',', i);
      field = line.slice(i, end < 0 ? line.length : end);
      i = end < 0 ? line.length : end;
    }
    out.push(field);
    if (i >= line.length) return out;
    i++; // the comma
  }
}

function jsonlRecord(line: string, origin: string): IndexRecord {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(line);
  } catch {
    throw new Error(`${origin}: not a JSON object`);
  }
  if (typeof v.id !== 'string' || typeof v.code !== 'string') throw new Error(`${origin}: "id" and "code" must be strings`);
  return {
    id: v.id,
    code: v.code,
    ...(v.descriptor !== undefined ? { descriptor: v.descriptor as number[] } : {}),
    ...(v.metadata !== undefined ? { metadata: v.metadata as Record<string, string> } : {}),
    origin,
  };
}

/**
 * A codes file: `.jsonl`/`.ndjson` lines like {"id","code","descriptor"?,"metadata"?}, or a
 * `.csv` with a header naming `id`, `code`, optionally `descriptor` (space-separated int8) and
 * any of the metadata columns.
 */
export function fileSource(path: string, format?: 'jsonl' | 'csv'): RecordSource {
  const ext = extname(path).toLowerCase();
  const fmt = format ?? (ext === '.csv' ? 'csv' : ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : null);
  if (!fmt) throw new Error(`cannot tell the format of ${path}: use a .jsonl or .csv file, or --format`);
  return {
    async count() {
      let n = 0;
      for await (const _ of lines(path)) n++;
      return fmt === 'csv' ? Math.max(0, n - 1) : n;
    },
    async *records() {
      let header: string[] | null = null;
      for await (const { line, n } of lines(path)) {
        const origin = `${path}:${n}`;
        if (fmt === 'jsonl') {
          yield jsonlRecord(line, origin);
          continue;
        }
        const cells = parseCsvLine(line);
        if (!header) {
          header = cells.map((c) => c.trim());
          const unknown = header.filter((h) => !['id', 'code', 'descriptor', ...METADATA_COLUMNS].includes(h));
          if (!header.includes('id') || !header.includes('code')) throw new Error(`${origin}: the CSV header must name "id" and "code"`);
          if (unknown.length) throw new Error(`${origin}: unknown CSV columns ${unknown.join(', ')}`);
          continue;
        }
        if (cells.length !== header.length) throw new Error(`${origin}: ${cells.length} fields, the header has ${header.length}`);
        const row = Object.fromEntries(header.map((h, i) => [h, cells[i]]));
        const metadata = Object.fromEntries(METADATA_COLUMNS.filter((c) => row[c]).map((c) => [c, row[c]]));
        yield {
          id: row.id,
          code: row.code,
          ...(row.descriptor ? { descriptor: row.descriptor.trim().split(/\s+/).map(Number) } : {}),
          ...(Object.keys(metadata).length ? { metadata } : {}),
          origin,
        };
      }
    },
  };
}
