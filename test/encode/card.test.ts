// Model card reading (docs/MODEL_CARD.md v1): shipped cards parse; unknown format or version,
// missing fields and a wrong .onnx hash are refused with an error naming the problem. Plus the
// two output forms of `u`: the packed code and the int8 descriptor.
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CardError, loadCard, parseCard } from '../../functions/encode/card.ts';
import { descriptor, packCode } from '../../functions/encode/model.ts';
import { MODELS } from './fixtures.ts';

const NAME = 'brain_tumor_mri-darf-b64';
const raw = () => JSON.parse(readFileSync(join(MODELS, `${NAME}.card.json`), 'utf8'));

describe('parseCard', () => {
  it('reads a shipped card', () => {
    const card = parseCard(raw());
    expect(card).toMatchObject({ name: NAME, bits: 64, input: { name: 'image', size: 64, channels: 1 } });
    expect(card.outputs).toEqual(expect.arrayContaining(['u', 'logits', 'features', 'ood_score', 'ood_recon', 'ood_maha']));
    expect(card.input.preprocess.grey.weights).toEqual([0.299, 0.587, 0.114]);
  });

  it.each([
    ['an unknown format', (c: any) => (c.format = 'other-card'), /format must be "medhash-model-card"/],
    ['an unknown version', (c: any) => (c.version = 2), /version 2 is not supported/],
    ['an unknown preprocessing version', (c: any) => (c.input.preprocess.version = 2), /preprocess\.version 2 is not supported/],
    ['a missing input', (c: any) => delete c.input, /input must be an object/],
    ['a missing sha256', (c: any) => delete c.sha256, /sha256 must be a non-empty string/],
    ['bits not a multiple of 8', (c: any) => (c.bits = 12), /multiple of 8/],
    ['a missing output', (c: any) => delete c.outputs.ood_score, /outputs lacks ood_score/],
    ['channels 2', (c: any) => (c.input.channels = 2), /channels must be 1 or 3/],
    ['a resize that is not the input size', (c: any) => (c.input.preprocess.resize.to = [32, 32]), /resize\.to must be \[64, 64\]/],
    ['a normalisation step', (c: any) => (c.input.preprocess.normalize = { mean: [0.5] }), /normalize is not supported/],
    ['a code output of another length than bits', (c: any) => (c.outputs.u.shape = ['N', 32]), /outputs\.u\.shape must be \["N", 64\]/],
    ['logits of another width than the classes', (c: any) => c.classes.pop(), /outputs\.logits\.shape must be \["N", \d+\] \(one per class\)/],
    ['a descriptor of another size than bits', (c: any) => (c.descriptor.dims = 32), /descriptor\.dims must be 64/],
  ])('refuses %s', (_what, mutate, message) => {
    const c = raw();
    mutate(c);
    expect(() => parseCard(c)).toThrow(CardError);
    expect(() => parseCard(c)).toThrow(message);
  });

  it('refuses what is not an object', () => {
    expect(() => parseCard(null)).toThrow(CardError);
    expect(() => parseCard([1])).toThrow(CardError);
  });
});

describe('loadCard', () => {
  it('loads the card and verified model bytes, from the .onnx path too', async () => {
    const a = await loadCard(join(MODELS, `${NAME}.card.json`));
    const b = await loadCard(join(MODELS, `${NAME}.onnx`));
    expect(a.card.model_id).toBe(b.card.model_id);
    expect(a.onnx.length).toBeGreaterThan(1000);
  });

  it('refuses model bytes that do not match the sha256', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medhash-card-'));
    copyFileSync(join(MODELS, `${NAME}.card.json`), join(dir, `${NAME}.card.json`));
    const bytes = readFileSync(join(MODELS, `${NAME}.onnx`));
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(join(dir, `${NAME}.onnx`), bytes);
    await expect(loadCard(join(dir, `${NAME}.card.json`))).rejects.toThrow(/does not match the card's/);
  });

  it('names the card file in every failure: unreadable, not JSON, a field refused, its model missing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medhash-card-'));
    const path = join(dir, `${NAME}.card.json`);
    const refused = (p = path) => loadCard(p).then(() => expect.unreachable('loaded'), (e: unknown) => e as CardError);
    expect((await refused()).message).toMatch(new RegExp(`^model card ${path}: ENOENT`));
    writeFileSync(path, '{"format":');
    expect((await refused()).message).toMatch(new RegExp(`^model card ${path}: .*JSON`));
    const card = raw();
    delete card.input;
    writeFileSync(path, JSON.stringify(card));
    const field = await refused(join(dir, `${NAME}.onnx`));
    expect(field).toBeInstanceOf(CardError);
    expect(field.message).toBe(`model card ${path}: input must be an object`);
    writeFileSync(path, JSON.stringify(raw()));
    expect((await refused()).message).toMatch(new RegExp(`^model card ${path}: its model ${join(dir, `${NAME}.onnx`)} cannot be read: ENOENT`));
  });
});

describe('code and descriptor', () => {
  it('packCode: bit i is bit (7 - i % 8) of byte i / 8, set where u > 0', () => {
    const u = new Float32Array(16);
    u[0] = 0.5; // byte 0, top bit
    u[7] = 1; // byte 0, low bit
    u[9] = 0.1; // byte 1, 0x40
    u[10] = 0; // zero is not positive
    u[11] = -3;
    expect([...packCode(u)]).toEqual([0x81, 0x40]);
  });

  it('descriptor: round(127 u / max|u|), symmetric, zero vector stays zero', () => {
    expect([...descriptor([0.5, -1, 0.25, -0.25, 0])]).toEqual([64, -127, 32, -32, 0]);
    expect([...descriptor([2, -2])]).toEqual([127, -127]);
    expect([...descriptor([0, 0])]).toEqual([0, 0]);
  });
});
