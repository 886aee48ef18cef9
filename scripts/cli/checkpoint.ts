// Resumability of `medhash index` by image: a local file of the ids already published, so a
// restart skips them without re-encoding. Local rather than asking the service, because the
// API can only look ids up one request at a time, and encoding (not ingest) is the cost to
// save. Ids are appended only after the API has stored their batch, so the file never claims
// an unpublished id; a lost file only costs re-encoding (ingest is idempotent). The header
// binds it to one server, collection (by creation time, so a re-created collection starts
// over) and model: any change and the file is started afresh.
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

const FORMAT = 'medhash-index-checkpoint';
const VERSION = 1;

export class Checkpoint {
  private constructor(
    readonly path: string,
    private readonly ids: Set<string>,
  ) {}

  /** Opens `path` for `key`; a file of another key or of an unknown version is replaced. */
  static open(path: string, key: string): Checkpoint {
    const ids = new Set<string>();
    if (existsSync(path)) {
      const [head, ...lines] = readFileSync(path, 'utf8').split('\n');
      let h: { format?: string; version?: number; key?: string } = {};
      try {
        h = JSON.parse(head);
      } catch {
        // an unreadable header: start over below
      }
      if (h.format === FORMAT && h.version === VERSION && h.key === key) {
        for (const l of lines) if (l) ids.add(JSON.parse(l) as string);
        return new Checkpoint(path, ids);
      }
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify({ format: FORMAT, version: VERSION, key }) + '\n');
    return new Checkpoint(path, ids);
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
