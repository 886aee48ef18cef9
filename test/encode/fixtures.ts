// Where the encoding tests find real data: ../shared/data from the repository root, or
// MEDHASH_DATA (worktrees live elsewhere), and a known brain MRI query JPEG.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

export function dataDir(set: string): string {
  const base = process.env.MEDHASH_DATA ?? join(ROOT, '..', 'shared', 'data');
  const dir = join(base, set);
  if (!existsSync(dir)) throw new Error(`data set ${dir} not found: set MEDHASH_DATA to the shared data folder`);
  return dir;
}

export const MODELS = join(ROOT, 'models');
export const BRAIN_JPEG = 'Testing/notumor/Te-no_0137.jpg';
