// The inference backend's HTTP face with a stand-in model (functions/backend/app.ts): what it
// refuses before parsing (body size, JSON shape), what it refuses before decoding (a request past
// the queue's bound), what it stops decoding (a request whose client hung up), the headers every answer carries, the model input /healthz reports and the
// errors its OpenAPI document describes. The real model behind it is tested in image-search.test.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorSchema } from '../functions/api/schemas.ts';
import { createBackendApp } from '../functions/backend/app.ts';
import { EncodeRequest, JSON_BUDGET, MAX_INPUTS, tensorToBase64 } from '../functions/backend/protocol.ts';
import { loadCard, parseCard, parseModelInput } from '../functions/encode/card.ts';
import { initNodeImageCodecs } from '../functions/encode/image-node.ts';
import { loadNodeEncoder, type Encoder } from '../functions/encode/model.ts';
import { overBudget } from '../functions/util/json-budget.ts';
import { DICOM_FIXTURES } from './encode/fixtures.ts';
import { png, scanlines } from './encode/png-fixtures.ts';

// decodeImage as the app calls it, counted (what a request refused for the queue, or whose client
// hung up, must not cost) and with a hook that runs as each decode starts
const decodes = vi.hoisted(() => ({ count: 0, onDecode: undefined as (() => void) | undefined }));
vi.mock('../functions/encode/image.ts', async (importOriginal) => {
  const image = await importOriginal<typeof import('../functions/encode/image.ts')>();
  return { ...image, decodeImage: (...args: Parameters<typeof image.decodeImage>) => (decodes.count++, decodes.onDecode?.(), image.decodeImage(...args)) };
});

const card = parseCard(JSON.parse(readFileSync(join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.card.json'), 'utf8')));

/** Zeros of the right shapes: the HTTP layer's tests need no model. */
const stub: Encoder = {
  card,
  runtime: 'onnxruntime-node/cpu',
  run: async (_x, n) => {
    const zeros = (k: number) => new Float32Array(n * k);
    return { n, bits: card.bits, u: zeros(card.bits), logits: zeros(card.classes.length), features: zeros(1), oodScore: zeros(1), oodRecon: zeros(1), oodMaha: zeros(1), oodStats: null };
  },
  close: async () => {},
};

const { app } = createBackendApp(stub);
const post = (body: string, type = 'application/json') => app.request('/v1/encode', { method: 'POST', headers: { 'content-type': type }, body });
const errorOf = async (r: Response) => [r.status, ((await r.json()) as { error: { code: string } }).error.code];
/** A 2x2 grey PNG, base64. */
const image = Buffer.from(png({ width: 2, height: 2, colorType: 0, bitDepth: 8, raw: scanlines(2, 2, 1, 8, Uint8Array.of(0, 64, 128, 255)) })).toString('base64');

/** The largest valid request: every input an image with every key an image input may have, `frame` included (three keys and their values, where a tensor has one). */
const largest = () => JSON.stringify({ version: 1, inputs: Array.from({ length: MAX_INPUTS }, () => ({ image, content_type: 'image/png', frame: 0 })) });

beforeAll(initNodeImageCodecs);

describe('inference backend: JSON budget', () => {
  it('fits the largest valid batch with room, and answers it', async () => {
    const body = largest();
    expect(EncodeRequest.safeParse(JSON.parse(body)).success).toBe(true);
    const bytes = new TextEncoder().encode(body);
    // twice what it holds, no less
    expect(overBudget(bytes, { containers: JSON_BUDGET.containers / 2, values: JSON_BUDGET.values / 2 })).toBeNull();
    expect(overBudget(bytes, { ...JSON_BUDGET, values: JSON_BUDGET.values / 2 - 1 })).toBe('values');
    expect(overBudget(bytes, { ...JSON_BUDGET, containers: JSON_BUDGET.containers / 2 - 1 })).toBe('objects and arrays');
    const r = await post(body);
    expect(r.status).toBe(200);
    expect(((await r.json()) as { results: unknown[] }).results).toHaveLength(MAX_INPUTS);
  });

  it('answers a nearly valid full batch with the 400 naming its problem, not 413 json_too_complex', async () => {
    const full = JSON.parse(largest()) as { version: number; inputs: Record<string, unknown>[] };
    const fieldOf = async (body: unknown) => {
      const r = await post(JSON.stringify(body));
      const { error } = (await r.json()) as { error: { code: string; message: string; field?: string } };
      return [r.status, error.code, error.field ?? error.message];
    };
    expect(await fieldOf({ ...full, priority: 'high' })).toEqual([400, 'unknown_field', 'priority']);
    expect(await fieldOf({ ...full, inputs: full.inputs.map((x) => ({ ...x, name: 'a.png' })) })).toEqual([400, 'unknown_field', 'inputs.0.name']);
    expect(await fieldOf({ ...full, inputs: [...full.inputs, full.inputs[0]] })).toEqual([400, 'invalid_field', 'inputs']);
  });

  it('refuses a body of more objects or values with 413 json_too_complex, before parsing it', async () => {
    // well under the body limit, but millions of objects once parsed
    expect(await errorOf(await post(`{"inputs":[${'{},'.repeat(1 << 20)}{}]}`))).toEqual([413, 'json_too_complex']);
    expect(await errorOf(await post('['.repeat(200)))).toEqual([413, 'json_too_complex']);
    const values = await post(`{"inputs":[${'1,'.repeat(JSON_BUDGET.values)}1]}`);
    expect(values.status).toBe(413);
    expect(((await values.json()) as { error: { message: string } }).error.message).toMatch(
      new RegExp(`at most ${JSON_BUDGET.containers} objects and arrays and ${JSON_BUDGET.values} values .*holds more values$`),
    );
    // application/json with parameters is counted too
    expect(await errorOf(await post('['.repeat(200), 'application/json; charset=utf-8'))).toEqual([413, 'json_too_complex']);
    // and any application/*+json, which the validator parses as JSON too
    expect(await errorOf(await post(`{"inputs":[${'{},'.repeat(1 << 20)}{}]}`, 'application/vnd.medhash+json'))).toEqual([413, 'json_too_complex']);
  });
});

describe('inference backend: admission before decoding', () => {
  it('refuses requests past the queue\'s bound with 503 and Retry-After before decoding any of their images', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const runs: number[] = [];
    const held: Encoder = { ...stub, run: async (x, n) => (runs.push(n), await gate, stub.run(x, n)) };
    const { app: small } = createBackendApp(held, { maxBatch: 2, maxWaitMs: 1, maxQueue: 4 });
    const send = () => small.request('/v1/encode', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [0, 1].map(() => ({ image, content_type: 'image/png' })) }) });
    decodes.count = 0;
    const first = send();
    await vi.waitFor(() => expect(runs).toEqual([2]), { timeout: 10_000, interval: 5 });
    // 5 requests of 2 images for a queue of 4 places, while the model is busy: 2 fit, 3 do not
    const refused: unknown[] = [];
    const burst = Array.from({ length: 5 }, async () => {
      const r = await send();
      if (r.status === 503) refused.push([r.headers.get('retry-after'), ((await r.json()) as { error: { code: string } }).error.code]);
      return r.status;
    });
    // refused at once, while the admitted ones wait for the model
    await vi.waitFor(() => expect(refused).toHaveLength(3), { timeout: 10_000, interval: 5 });
    release();
    expect([(await first).status, ...(await Promise.all(burst)).sort()]).toEqual([200, 200, 200, 503, 503, 503]);
    expect(refused).toEqual(Array(3).fill(['1', 'overloaded']));
    // the first request's 2 images and the 2 admitted requests' 4: none of the refused ones'
    expect(decodes.count).toBe(6);
  });
});

describe('inference backend: a client that hangs up', () => {
  it('stops decoding its request\'s images: those after the hang-up are never decoded, and it is answered 499', async () => {
    const hangUp = new AbortController();
    decodes.count = 0;
    // the client hangs up while its first image is being decoded
    decodes.onDecode = () => hangUp.abort();
    try {
      const body = JSON.stringify({ inputs: [0, 1, 2].map(() => ({ image, content_type: 'image/png' })) });
      const r = await app.request('/v1/encode', { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: hangUp.signal });
      expect(r.status).toBe(499);
    } finally {
      decodes.onDecode = undefined;
    }
    expect(decodes.count).toBe(1);
  });
});

describe('inference backend: /healthz', () => {
  it('reports the model card\'s input, which a client preprocesses a tensor by, and it parses as the card\'s', async () => {
    const health = (await (await app.request('/healthz')).json()) as { model_id: string; input: unknown };
    expect(health.model_id).toBe(card.model_id);
    expect(parseModelInput(health.input)).toEqual(card.input);
  });
});

describe('inference backend: headers', () => {
  it('says nosniff on every answer, of every type', async () => {
    const answers: [string, Response][] = [
      ['healthz', await app.request('/healthz')],
      ['openapi', await app.request('/openapi.json')],
      ['404', await app.request('/nope')],
      ['400', await post('{"inputs":[]}')],
      ['413', await post('['.repeat(200))],
      ['415', await post('{}', 'text/plain')],
      ['200', await post(JSON.stringify({ inputs: [{ tensor: Buffer.from(new Float32Array(card.input.channels * card.input.size ** 2).buffer).toString('base64') }] }))],
    ];
    expect(answers.map(([what, r]) => [what, r.status, r.headers.get('x-content-type-options')])).toEqual([
      ['healthz', 200, 'nosniff'], ['openapi', 200, 'nosniff'], ['404', 404, 'nosniff'], ['400', 400, 'nosniff'], ['413', 413, 'nosniff'], ['415', 415, 'nosniff'], ['200', 200, 'nosniff'],
    ]);
  });
});

describe('inference backend: OpenAPI document', () => {
  it('describes its own 400, with no word of API keys, which the backend has none of', async () => {
    const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>> };
    const text = JSON.stringify(doc);
    expect(text).not.toMatch(/API key|the key\b|\b40[13]\b/i);
    expect(doc.paths['/v1/encode'].post.responses['400'].description).toMatch(/^Malformed request: .*`inputs\.N\.tensor`/);
    // what it says of `field` is what a 400 answers
    const r = await post(JSON.stringify({ inputs: [{ tensor: 'AAAA' }] }));
    expect([r.status, ((await r.json()) as { error: { field: string } }).error.field]).toEqual([400, 'inputs.0.tensor']);
  });

  it('declares what a bad image answers: 422 for a damaged one, a frame past the last or a decode past its deadline, 413 for one over the size limits', async () => {
    const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>> };
    const responses = doc.paths['/v1/encode'].post.responses;
    const image = (b: Uint8Array) => post(JSON.stringify({ inputs: [{ image: Buffer.from(b).toString('base64'), content_type: 'image/png' }] }));
    const whole = png({ width: 2, height: 2, colorType: 0, bitDepth: 8, raw: scanlines(2, 2, 1, 8, Uint8Array.of(0, 64, 128, 255)) });
    const huge = png({ width: 1, height: 100_000, colorType: 0, bitDepth: 8, raw: scanlines(1, 100_000, 1, 8, new Uint8Array(100_000)) });
    const dicom = (name: string, frame?: number) => post(JSON.stringify({ inputs: [{ image: readFileSync(join(DICOM_FIXTURES, name)).toString('base64'), content_type: 'application/dicom', frame }] }));
    const answers = [
      await errorOf(await image(whole.subarray(0, whole.length - 20))), await errorOf(await image(huge)),
      // a frame past the last; a JPEG-LS frame on which CharLS spins past its deadline (codec-thread.ts)
      await errorOf(await dicom('grey8-frames3.dcm', 3)), await errorOf(await dicom('hostile/jpeg-ls-cut-scan-spins-charls.dcm')),
    ];
    expect(answers).toEqual([[422, 'corrupt_image'], [413, 'image_too_large'], [422, 'frame_out_of_range'], [422, 'decode_timeout']]);
    for (const [status, code] of answers) expect(responses[String(status)]?.description, `${status}`).toContain(`\`${code}\``);
  });

  it('declares the 503 a full queue or a stop answers as the edge declares its own: the Error shape, and Retry-After a header component', async () => {
    const { app: stopped, batcher } = createBackendApp(stub);
    await batcher.close();
    const r = await stopped.request('/v1/encode', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [{ image, content_type: 'image/png' }] }) });
    const body: unknown = await r.json();
    expect([r.status, r.headers.get('retry-after'), ErrorSchema.parse(body).error.code]).toEqual([503, '1', 'overloaded']);
    type Declared = { description: string; headers?: Record<string, unknown>; content: Record<string, { schema: unknown }> };
    const doc = (await (await stopped.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { responses: Record<string, Declared> }>>; components: { headers: Record<string, { schema: unknown }> } };
    const declared = doc.paths['/v1/encode'].post.responses['503'];
    expect(declared.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });
    expect(declared.headers?.['Retry-After']).toEqual({ $ref: '#/components/headers/RetryAfter' });
    expect(doc.components.headers.RetryAfter.schema).toEqual({ type: 'integer', minimum: 0 });
    expect(declared.description).toContain('`overloaded`');
  });
});

describe('inference backend: a batch with an input the model overflows on', () => {
  it('answers the other requests of the batch and refuses that one, naming the input, never a 200 with nulls', async () => {
    const { onnx } = await loadCard(join(import.meta.dirname, '..', 'models', 'mednist-darf-b64.onnx'));
    const real = await loadNodeEncoder(onnx, card, { threads: 1 });
    const runs: number[] = [];
    const model: Encoder = { ...real, run: (x, n) => (runs.push(n), real.run(x, n)) };
    // a long wait, so that the two requests share one batch
    const { app: live } = createBackendApp(model, { maxBatch: 8, maxWaitMs: 50, maxQueue: 16 });
    const n = card.input.channels * card.input.size ** 2;
    const good = tensorToBase64(new Float32Array(n).fill(0.5));
    // finite, so it passes the input check, but the model's arithmetic overflows on it
    const huge = tensorToBase64(new Float32Array(n).fill(1e30));
    const send = (tensors: string[]) => live.request('/v1/encode', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: tensors.map((tensor) => ({ tensor })) }) });
    const [ok, bad] = await Promise.all([send([good]), send([good, huge])]);
    expect(runs).toEqual([3]);
    expect(ok.status).toBe(200);
    const { results } = (await ok.json()) as { results: { code: string; ood: { score: number } }[] };
    expect(results[0].code).toMatch(/^[0-9a-f]{16}$/);
    expect(typeof results[0].ood.score).toBe('number');
    const { error } = (await bad.json()) as { error: { code: string; field: string } };
    expect([bad.status, error.code, error.field]).toEqual([400, 'invalid_tensor', 'inputs.1.tensor']);
    await real.close();
  });
});
