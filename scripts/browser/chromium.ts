// The headless Chromium that the SDK's page tests and bench:sdk drive (playwright-core, the
// system's browser): no GPU, so onnxruntime-web takes its wasm path, and no background requests
// beside the page's own. With `webgpu`, --enable-unsafe-webgpu exposes Dawn's CPU (SwiftShader)
// adapter where there is no GPU: WebGPU runs, emulated (correct, not fast).
import { chromium, type Browser } from 'playwright-core';

export function launchChromium(opts: { webgpu?: boolean } = {}): Promise<Browser> {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: opts.webgpu ? [...args, '--enable-unsafe-webgpu'] : args });
}
