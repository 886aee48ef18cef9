// Runs scripts/deno/golden-encode.ts under Deno (node_modules/.bin/deno, a devDependency): bundles
// it for browsers (so onnxruntime-web's WebGPU build is loaded, not its Node build) and returns
// the script's JSON line for one model and path. Shared by test/sdk/deno.test.ts and bench:sdk.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assetFiles, bundle } from '../../functions/sdk/build.ts';
import { ASSETS } from '../../functions/sdk/index.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const DENO = join(ROOT, 'node_modules', '.bin', 'deno');

export interface GoldenRun {
  model: string;
  runtime: string;
  n: number;
  /** Images timed one at a time. */
  timed: number;
  encode_ms_per_image: number;
  items: { id: string; bits_match: boolean; max_abs_du: number }[];
}

export interface DenoRunner {
  /** `passes`: timed passes over the golden images (the timing is for benchmarks only). */
  run(model: string, path: 'webgpu' | 'wasm', passes?: number): Promise<GoldenRun>;
  close(): void;
}

export async function denoRunner(): Promise<DenoRunner> {
  const dir = mkdtempSync(join(tmpdir(), 'medhash-deno-'));
  const script = join(dir, 'golden-encode.mjs');
  writeFileSync(script, await bundle(join(import.meta.dirname, 'golden-encode.ts')));
  const models = join(ROOT, 'models');
  return {
    async run(model, path, passes = 1) {
      const { stdout } = await promisify(execFile)(
        DENO,
        ['run', '--allow-read', script, join(models, `${model}.card.json`), join(models, `${model}.onnx`), join(models, 'golden', `${model}.json`), assetFiles()[ASSETS.ort], path, String(passes)],
        // Deno's WebGPU needs a runtime dir; the cwd keeps it away from this repo's package.json
        { cwd: dir, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir(), NO_COLOR: '1' }, maxBuffer: 16 << 20 },
      );
      const line = stdout.trim().split('\n').pop()!;
      return JSON.parse(line) as GoldenRun;
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
