// `medhash index --frames all` of one deflated multi-frame DICOM (docs/ENCODING.md, "Multi-frame
// files"): a Deflated Explicit VR Little Endian file of `--frames` 16-bit 512 x 512 frames (12
// bits stored: a ramp that moves frame to frame plus 4 bits of noise; it deflates 1.7 times, 100
// MiB to 60 MiB at 200 frames), indexed by the real CLI as a child process with the in-process
// encoder, against the Node app served on a free port. Prints one JSON line: the CLI's wall time
// and peak RSS (GNU time's %e and %M). Nothing is kept (files in a temp folder).
//   npx tsx scripts/bench/index-frames.ts [--frames 200] [--model models/mednist-darf-b64.onnx]
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { serve, type ServerType } from '@hono/node-server';
import { createApp } from '../../functions/api/app.ts';
import { generateSecret, hashSecret } from '../../functions/auth/keys.ts';
import { loadCard } from '../../functions/encode/card.ts';
import { createNodeBackend } from '../../functions/entries/node.ts';
import { concatBytes } from '../../functions/util/bytes.ts';
import { cs, element, part10, pixelModule } from '../../test/encode/fixtures.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const SIDE = 512;
const { values: o } = parseArgs({ options: { frames: { type: 'string', default: '200' }, model: { type: 'string', default: join(ROOT, 'models', 'mednist-darf-b64.onnx') } } });
const frames = Number(o.frames);

/** The deflated file: `frames` frames of SIDE x SIDE 12-bit samples in 16 bits, little endian. */
function deflatedFile(): Uint8Array {
  const raw = new Uint16Array(frames * SIDE * SIDE);
  let x = 0x9e3779b9;
  for (let k = 0; k < frames; k++) {
    for (let r = 0; r < SIDE; r++) {
      for (let c = 0; c < SIDE; c++) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        raw[(k * SIDE + r) * SIDE + c] = ((r * 3 + c * 2 + k * 5) & 0xff0) + ((x >>> 0) & 0xf);
      }
    }
  }
  const dataSet = concatBytes([
    pixelModule(SIDE, SIDE, { bits: 16, stored: 12, extra: [element(0x0028, 0x0008, 'IS', cs(String(frames)))] }),
    element(0x7fe0, 0x0010, 'OW', new Uint8Array(raw.buffer)),
  ]);
  return part10(new Uint8Array(deflateRawSync(dataSet)), '1.2.840.10008.1.2.1.99');
}

const dir = mkdtempSync(join(tmpdir(), 'medhash-index-frames-'));
let server: ServerType | undefined;
try {
  const file = join(dir, 'study', 'CT', 'volume.dcm');
  mkdirSync(join(dir, 'study', 'CT'), { recursive: true });
  writeFileSync(file, deflatedFile());
  const node = await createNodeBackend({ dataDir: join(dir, 'data') });
  const { card } = await loadCard(o.model);
  const tenant = await node.backend.control.createTenant('bench');
  await node.backend.ledger(tenant.id).setPlan(tenant.id, { rate_per_second: 1e6, burst: 1e6, monthly_quota: null }, { key_id: 'operator', action: 'plan.update' });
  await node.backend.control.createCollection(tenant.id, { name: 'frames', bits: card.bits as 64, descriptor_dims: card.bits, model_id: card.model_id });
  const secret = generateSecret();
  await node.backend.control.createKey(tenant.id, { scopes: ['ingest'] }, await hashSecret(secret));
  server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: createApp(node.backend).fetch, port: 0, hostname: '127.0.0.1' }, () => ok(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const run = await promisify(execFile)('/usr/bin/time', ['-f', 'TIME %e %M', process.execPath, join(ROOT, 'scripts', 'medhash.mjs'),
    'index', '--collection', 'frames', '--images', join(dir, 'study'), '--frames', 'all', '--model', o.model], {
    env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: secret, MEDHASH_DATA_DIR: join(dir, 'cli'), MEDHASH_BACKEND_URL: '' },
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (!new RegExp(`indexed ${frames} items`).test(run.stderr)) throw new Error(`the index did not index ${frames} items:\n${run.stderr.slice(-2000)}`);
  const [, seconds, kib] = /TIME ([\d.]+) (\d+)/.exec(run.stderr)!;
  console.log(JSON.stringify({ frames, side: SIDE, file_mib: +(statSync(file).size / 2 ** 20).toFixed(1), data_set_mib: +((frames * SIDE * SIDE * 2) / 2 ** 20).toFixed(1), wall_s: Number(seconds), peak_rss_mib: Math.round(Number(kib) / 1024) }));
  node.close();
} finally {
  await new Promise((ok) => (server ? server.close(ok) : ok(undefined)));
  rmSync(dir, { recursive: true, force: true });
}
