// `npm run build:sdk [-- --out DIR]`: writes the browser SDK (medhash-sdk.js), the search page's
// script (ui.js) and the WebAssembly files they fetch into DIR (default dist/sdk/), for hosting
// the SDK elsewhere than the Node app, which builds the same files in memory.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { assetFiles, buildBundles } from '../functions/sdk/build.ts';

const { values } = parseArgs({ options: { out: { type: 'string', default: join('dist', 'sdk') } } });
const out = values.out!;
await mkdir(out, { recursive: true });
for (const [name, js] of await buildBundles()) await writeFile(join(out, name), js);
for (const [name, path] of Object.entries(assetFiles())) await copyFile(path, join(out, name));
console.log(JSON.stringify({ built: out }));
