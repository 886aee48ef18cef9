// `medhash index` through the backend with real-sized images: a batch of 64 files of a
// megabyte each is past the backend's body limit, so the CLI must split by bytes, not only by count.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startBackend } from '../functions/backend/node.ts';
import { openBatchEncoder } from '../scripts/cli/encode.ts';
import { folderImages } from '../scripts/cli/images.ts';
import { png, scanlines } from './encode/png-fixtures.ts';

it('encodes a folder whose images together exceed the backend body limit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'medhash-body-'));
  mkdirSync(join(dir, 'Hand'));
  const side = 1000; // ~1 MB of incompressible grey: 40 of them are ~53 MB of base64
  let seed = 1;
  for (let k = 0; k < 40; k++) {
    const px = Uint8Array.from({ length: side * side }, () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24);
    writeFileSync(join(dir, 'Hand', `${String(k).padStart(3, '0')}.png`), png({ width: side, height: side, colorType: 0, bitDepth: 8, raw: scanlines(side, side, 1, 8, px) }));
  }
  const be = await startBackend({ model: join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'), port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  try {
    const enc = await openBatchEncoder({ backendUrl: be.url });
    const out = await enc.encode(folderImages(dir));
    expect(out).toHaveLength(40);
  } finally {
    await be.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
