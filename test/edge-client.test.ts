// The edge's client of the inference backend (functions/inference/) against backends that answer
// but must not be believed: one serving another model, which refuses the edge's own tensor with a
// 4xx, and one answering 200 with a body that parses but holds no usable code. Either is the
// backend being unavailable (fallback, breaker), never the caller's error.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { createBackendApp } from '../functions/backend/app.ts';
import { parseCard, type ModelCard } from '../functions/encode/card.ts';
import { initNodeImageCodecs } from '../functions/encode/image-node.ts';
import type { Encoder } from '../functions/encode/model.ts';
import { nodeEdgeEncoder } from '../functions/inference/edge.ts';
import { png, scanlines } from './encode/png-fixtures.ts';

const card = parseCard(JSON.parse(readFileSync(join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.card.json'), 'utf8')));

/** Zeros of the right shapes, but u > 0 everywhere: the code of every image is all ones. */
const stub = (c: ModelCard, runtime: string): Encoder => ({
  card: c,
  runtime,
  run: async (_x, n) => {
    const zeros = (k: number) => new Float32Array(n * k);
    return { n, bits: c.bits, u: zeros(c.bits).fill(1), logits: zeros(c.classes.length), features: zeros(1), oodScore: zeros(1), oodRecon: zeros(1), oodMaha: zeros(1), oodStats: null };
  },
  close: async () => {},
});

const image = png({ width: 2, height: 2, colorType: 0, bitDepth: 8, raw: scanlines(2, 2, 1, 8, Uint8Array.of(0, 64, 128, 255)) });

/** The edge with `fetchFn` as its backend and the stub as its in-process fallback. */
const edge = (fetchFn: typeof fetch) => nodeEdgeEncoder(card, async () => stub(card, 'onnxruntime-web/wasm'), { backendUrl: 'http://backend.test', timeoutMs: 1000, breaker: { failures: 3, cooldownMs: 5000 }, fetchFn });

beforeAll(initNodeImageCodecs);

describe('edge client: a backend that must not be believed', () => {
  it('a backend of another model, which refuses the edge\'s tensor as the wrong size: the fallback answers, not a 400 about a field the caller never sent', async () => {
    const other: ModelCard = { ...card, model_id: 'other-model@000000000000', input: { ...card.input, size: 32 } };
    const { app } = createBackendApp(stub(other, 'onnxruntime-node/cpu'));
    const e = edge(async (url, init) => app.request(String(url), init));
    const log = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const r = await e.encodeImage(image, 'image/png');
      expect([r.path, r.model_id]).toEqual(['ort-web-wasm', card.model_id]);
      expect(log.mock.calls.join('\n')).toMatch(/inputs\.0\.tensor.*falling back/);
    } finally {
      log.mockRestore();
    }
    await e.encodeImage(image, 'image/png');
    await e.encodeImage(image, 'image/png');
    expect(e.breaker.state).toBe('open'); // three in a row: it counts as down
  });
});

describe('edge client: a 200 that parses but holds no usable code', () => {
  it('is a malformed answer: the fallback answers, not a 400 invalid_code blaming the caller', async () => {
    const good = { code: 'ff'.repeat(card.bits / 8), descriptor: Array(card.bits).fill(127), classes: card.classes.map((name) => ({ name, p: 1 / card.classes.length })), ood: { score: 0, recon: 0, maha: 0, stats: null, threshold: 1 } };
    const bodies = [
      { ...good, code: 'zz'.repeat(card.bits / 8) }, // not hex
      { ...good, code: 'fff' }, // not whole bytes
      { ...good, descriptor: good.descriptor.slice(1) }, // not one value per bit
      { ...good, descriptor: good.descriptor.map(() => 300) }, // not int8
    ];
    const log = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      for (const result of [good, ...bodies]) {
        const answer = { version: 1, model_id: card.model_id, runtime: 'cpu', results: [result] };
        const r = await edge(async () => Response.json(answer)).encodeImage(image, 'image/png');
        expect(r.path, JSON.stringify(result).slice(0, 80)).toBe(result === good ? 'backend' : 'ort-web-wasm');
      }
    } finally {
      log.mockRestore();
    }
  });
});
