// What a page in Chromium reports going wrong, for the tests that require nothing to: its
// uncaught errors, and every Content-Security-Policy violation (the DOM event, and the console
// line Chromium also writes for what the event may not carry).
import type { Page } from 'playwright-core';

/** Starts collecting before the page is loaded (call before `goto`); the list fills as it runs. */
export async function watchProblems(page: Page): Promise<string[]> {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  await page.exposeFunction('__medhashViolation', (v: unknown) => void problems.push(JSON.stringify(v)));
  await page.addInitScript(() => {
    const report = (globalThis as unknown as { __medhashViolation(v: unknown): void }).__medhashViolation;
    document.addEventListener('securitypolicyviolation', (e) => report({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample }));
  });
  return problems;
}
