// Node entry point for the Hamming kernel: reads hamming.wasm with fs (workerd can't, and
// hamming.ts must stay runtime-agnostic).
import { readFile } from 'node:fs/promises';
import { HammingKernel } from './hamming.ts';

export const HAMMING_WASM_URL = new URL('./hamming.wasm', import.meta.url);

export async function loadHammingKernel(path: string | URL = HAMMING_WASM_URL): Promise<HammingKernel> {
  return HammingKernel.fromBytes(await readFile(path));
}
