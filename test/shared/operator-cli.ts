// The `medhash` CLI as an operator runs it, for tests of the operator commands (test/orphans.test.ts,
// test/adopt-manifest.test.ts): a child process against the service at `url` with the operator key,
// its exit code kept beside its output, since those commands say what failed by exiting 1.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TEST_OPERATOR_KEY } from './constants.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `medhash ARGS` against `url`; `dataDir` keeps the CLI off any data dir of the test's own. */
export function operatorCli(url: string, dataDir: string): (...args: string[]) => Promise<CliRun> {
  return (...args) =>
    promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', '..', 'scripts', 'medhash.mjs'), ...args], {
      env: { ...process.env, MEDHASH_URL: url, MEDHASH_OPERATOR_KEY: TEST_OPERATOR_KEY, MEDHASH_DATA_DIR: dataDir },
    }).then(
      (r) => ({ code: 0, ...r }),
      (e: CliRun) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
}
