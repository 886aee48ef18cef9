// Reader for the ../shared/data layout (see its README): `images.tar` (plain, uncompressed) read
// in place by member offset, and `manifest.csv` (path,label,split,md5). One reader for the
// evaluation scripts, the tests and the CLI, so they all take the very bytes Python reads.
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCsvLine } from '../cli/sources.ts';

export interface ManifestRow {
  path: string;
  label: string;
  split: string;
  md5: string;
}

export interface TarMember {
  offset: number;
  size: number;
}

const BLOCK = 512;

function cstr(b: Buffer, start: number, len: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end < 0 || end > start + len ? start + len : end);
}

function octal(b: Buffer, start: number, len: number): number {
  const s = cstr(b, start, len).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

/** pax extended header records "LEN key=value\n"; only `path` matters here. */
function paxPath(b: Buffer): string | null {
  let pos = 0;
  while (pos < b.length) {
    const sp = b.indexOf(0x20, pos);
    if (sp < 0) break;
    const len = parseInt(b.toString('utf8', pos, sp), 10);
    if (!(len > 0)) break;
    const rec = b.toString('utf8', sp + 1, pos + len - 1);
    if (rec.startsWith('path=')) return rec.slice(5);
    pos += len;
  }
  return null;
}

/** An uncompressed tar opened for random access: the member index is built once on open. */
export class TarReader {
  private constructor(
    private readonly fh: FileHandle,
    readonly members: ReadonlyMap<string, TarMember>,
  ) {}

  static async open(path: string): Promise<TarReader> {
    const fh = await open(path, 'r');
    const members = new Map<string, TarMember>();
    const header = Buffer.alloc(BLOCK);
    let pos = 0;
    let longName: string | null = null;
    for (;;) {
      const { bytesRead } = await fh.read(header, 0, BLOCK, pos);
      if (bytesRead < BLOCK || header.every((x: number) => x === 0)) break;
      const size = octal(header, 124, 12);
      const type = String.fromCharCode(header[156] || 0x30);
      const dataAt = pos + BLOCK;
      if (type === 'L' || type === 'x') {
        const ext = Buffer.alloc(size);
        await fh.read(ext, 0, size, dataAt);
        longName = type === 'L' ? cstr(ext, 0, size) : paxPath(ext);
      } else if (type === '0' || type === '7') {
        const prefix = header.toString('utf8', 257, 262) === 'ustar' ? cstr(header, 345, 155) : '';
        const name = longName ?? (prefix ? `${prefix}/${cstr(header, 0, 100)}` : cstr(header, 0, 100));
        members.set(name, { offset: dataAt, size });
        longName = null;
      } else {
        longName = null;
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
    }
    return new TarReader(fh, members);
  }

  async read(name: string): Promise<Uint8Array> {
    const m = this.members.get(name);
    if (!m) throw new Error(`no member ${JSON.stringify(name)} in the tar`);
    const out = new Uint8Array(m.size);
    await this.fh.read(out, 0, m.size, m.offset);
    return out;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

export async function readManifest(dataDir: string): Promise<ManifestRow[]> {
  const lines = (await readFile(join(dataDir, 'manifest.csv'), 'utf8')).split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = parseCsvLine(lines[0]);
  const col = (k: string) => {
    const i = header.indexOf(k);
    if (i < 0) throw new Error(`${dataDir}/manifest.csv: no "${k}" column`);
    return i;
  };
  const [p, l, s, m] = [col('path'), col('label'), col('split'), col('md5')];
  return lines.slice(1).map((line) => {
    const c = parseCsvLine(line);
    return { path: c[p], label: c[l], split: c[s], md5: c[m] };
  });
}

/** Default data root: `../shared/data` from the repository root, or MEDHASH_DATA. */
export function sharedDataRoot(): string {
  return process.env.MEDHASH_DATA ?? join(process.cwd(), '..', 'shared', 'data');
}
