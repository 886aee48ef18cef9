// The Node entry's static SDK routes (functions/sdk/serve-node.ts) on their own, without a
// server or a browser: what the /ui page, which handles an API key, is served as.
import { expect, it } from 'vitest';
import { sdkRoutes } from '../../functions/sdk/serve-node.ts';

const app = sdkRoutes();

it("/ui's forms never submit themselves: sent before ui.js runs (or when it failed), the key or the file name would land in the URL", async () => {
  const html = await (await app.request('/ui')).text();
  const forms = html.match(/<form\b[^>]*>/g) ?? [];
  expect(forms.map((f) => /\bid="(\w+)"/.exec(f)?.[1])).toEqual(['connect', 'search']);
  // method="dialog" outside a <dialog>: a submit only fires the event the page script handles.
  for (const form of forms) expect(form).toMatch(/\bmethod="dialog"/);
});
