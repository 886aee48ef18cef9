// Where the encoding tests find real data (../shared/data from the repository root, or
// MEDHASH_DATA, as for worktrees that live elsewhere), the models, and a known brain MRI JPEG.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sharedDataRoot } from '../../scripts/data/shared-data.ts';

export function dataDir(set: string): string {
  const dir = join(sharedDataRoot(), set);
  if (!existsSync(dir)) throw new Error(`data set ${dir} not found: set MEDHASH_DATA to the shared data folder`);
  return dir;
}

export const MODELS = join(import.meta.dirname, '..', '..', 'models');
export const BRAIN_JPEG = 'Testing/notumor/Te-no_0137.jpg';
