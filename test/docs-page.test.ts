// The /docs page in real Chromium against the Node service: it renders, its one inline <style>
// applies under its CSP (allowed by its hash, no 'unsafe-inline'), and nothing on it is refused.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startNodeServer, type RunningServer } from '../functions/entries/node.ts';
import { launchChromium } from '../scripts/browser/chromium.ts';
import { watchProblems } from './shared/page-problems.ts';

let dir: string;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-docs-'));
  server = await startNodeServer({ port: 0, hostname: '127.0.0.1', dataDir: dir });
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('renders with its own style applied and no CSP violation, under a CSP without unsafe-inline', async () => {
  const page = await browser.newPage();
  const problems = await watchProblems(page);
  const res = await page.goto(`${server.url}/docs`);
  expect(res?.status()).toBe(200);
  expect(res?.headers()['content-security-policy']).not.toContain('unsafe-inline');
  // the document is there: its title and one section per operation
  expect(await page.locator('h1').textContent()).toMatch(/^medhash/);
  expect(await page.locator('section h3', { hasText: '/v1/collections/{collection}/search' }).count()).toBeGreaterThan(0);
  // and styled: the page's <style> applied (Chromium's own would leave these at auto and inline)
  const style = await page.evaluate(() => ({
    maxWidth: getComputedStyle(document.body).maxWidth,
    method: getComputedStyle(document.querySelector('.m')!).display,
  }));
  expect(style).toEqual({ maxWidth: '960px', method: 'inline-block' });
  expect(problems).toEqual([]);
  // the violation listener hears what the CSP refuses: a style the page did not carry
  await page.evaluate(() => document.head.insertAdjacentHTML('beforeend', '<style>body{color:red}</style>'));
  await expect.poll(() => problems.length).toBeGreaterThan(0);
  expect(problems.every((p) => /style-src/.test(p))).toBe(true);
  expect(await page.evaluate(() => getComputedStyle(document.body).color)).toBe('rgb(34, 34, 34)');
});
