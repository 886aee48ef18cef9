// `npm run build:sdk` (scripts/build-sdk.ts, functions/sdk/build.ts writeSdk): the folder it writes
// holds exactly what the Node app serves for the search page and the SDK, byte for byte.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { writeSdk } from '../../functions/sdk/build.ts';
import { ASSETS } from '../../functions/sdk/index.ts';
import { sdkRoutes } from '../../functions/sdk/serve-node.ts';

const dir = mkdtempSync(join(tmpdir(), 'medhash-build-sdk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('writes the page of /ui as index.html and every file it and the SDK load from /sdk/, as served', async () => {
  const names = await writeSdk(dir);
  expect(readdirSync(dir).sort()).toEqual([...names].sort());
  expect([...names].sort()).toEqual(['index.html', 'medhash-sdk.js', 'ui.css', 'ui.js', ...Object.values(ASSETS)].sort());
  const app = sdkRoutes();
  const page = await (await app.request('/ui')).text();
  expect(readFileSync(join(dir, 'index.html'), 'utf8')).toBe(page);
  // what the page links is in the folder, which is meant to be served as /sdk/
  const linked = [...page.matchAll(/(?:src|href)="\/sdk\/([^"]+)"/g)].map((m) => m[1]).sort();
  expect(linked).toEqual(['ui.css', 'ui.js']);
  for (const name of names.filter((n) => n !== 'index.html')) {
    const served = await app.request(`/sdk/${name}`);
    expect([name, served.status]).toEqual([name, 200]);
    expect(Buffer.compare(Buffer.from(await served.arrayBuffer()), readFileSync(join(dir, name))), name).toBe(0);
  }
}, 120_000);
