// Resumability of `medhash index` by image: a local file of the ids already published, so a
// restart skips them without re-encoding. Local rather than asking the service, because the
// API can only look ids up one request at a time, and encoding (not ingest) is the cost to
// save. Ids are appended only after the API has stored their batch, so the file never claims
// an unpublished id; a lost file only costs re-encoding (ingest is idempotent). The header
// binds it to one server, collection (by creation time, so a re-created collection starts
// over) and model: any change and the file is started afresh.
import { appendFileSync, existsSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

const FORMAT = 'medhash-index-checkpoint';
const VERSION = 1;
const HEADER_START = JSON.stringify({ format: FORMAT }).slice(0, -1);

export class Checkpoint {
  private constructor(
    readonly path: string,
    private readonly ids: Set<string>,
  ) {}

  /**
   * Opens `path` for `key`; a checkpoint of another key, of an unknown version or unreadable is
   * replaced. A file that is no checkpoint at all (a --checkpoint naming the wrong file) is
   * refused, untouched. Failures name the file.
   */
  static open(path: string, key: string): Checkpoint {
    try {
      return Checkpoint.openFile(path, key);
    } catch (e) {
      throw new Error(`checkpoint ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private static openFile(path: string, key: string): Checkpoint {
    if (existsSync(path)) {
      const bytes = readFileSync(path);
      // Ours begins with this header, or, cut short by a crash as it was first written, a part of it.
      const head = bytes.subarray(0, HEADER_START.length).toString('utf8');
      if (!HEADER_START.startsWith(head)) {
        throw new Error('not a medhash index checkpoint, left as it is: give --checkpoint a file of its own (or remove this one)');
      }
      // A crash in the middle of an append leaves the last line cut short. Its batch was stored,
      // so dropping the partial id only costs re-encoding it; cutting the file back to its last
      // whole line lets the next append start a line of its own.
      const end = bytes.lastIndexOf(0x0a) + 1;
      if (end < bytes.length) truncateSync(path, end);
      const ids = Checkpoint.parse(bytes.subarray(0, end).toString('utf8'), key);
      if (ids) return new Checkpoint(path, ids);
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify({ format: FORMAT, version: VERSION, key }) + '\n');
    return new Checkpoint(path, new Set());
  }

  /** The ids of whole lines under a header of this format, version and key; otherwise undefined. */
  private static parse(text: string, key: string): Set<string> | undefined {
    try {
      const [head, ...lines] = text.split('\n');
      const h = JSON.parse(head) as { format?: string; version?: number; key?: string };
      if (h.format !== FORMAT || h.version !== VERSION || h.key !== key) return undefined;
      const ids = new Set<string>();
      for (const l of lines) {
        if (!l) continue;
        const id: unknown = JSON.parse(l);
        if (typeof id !== 'string') return undefined;
        ids.add(id);
      }
      return ids;
    } catch {
      return undefined;
    }
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }

  add(ids: string[]): void {
    appendFileSync(this.path, ids.map((id) => JSON.stringify(id) + '\n').join(''));
    for (const id of ids) this.ids.add(id);
  }
}
