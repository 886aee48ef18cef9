// The headless Chromium the SDK's page tests drive (playwright-core, the system's browser): no GPU,
// so onnxruntime-web takes its wasm path, and no background requests beside the page's own.
import { chromium, type Browser } from 'playwright-core';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}
