// `npm run build:sdk [-- --out DIR]`: writes into DIR (default dist/sdk/) what the Node app serves
// under /sdk/ (the browser SDK medhash-sdk.js, the search page's ui.js and ui.css, the WebAssembly
// files they fetch) and the page of /ui as index.html: the SDK for a page of one's own, or the
// search page for a host in front of the Node service (docs/SDK.md says what the page needs).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeSdk } from '../functions/sdk/build.ts';

const { values } = parseArgs({ options: { out: { type: 'string', default: join('dist', 'sdk') } } });
const out = values.out!;
console.log(JSON.stringify({ built: out, files: await writeSdk(out) }));
