// The OOD sets manifest (`medhash-oodset` v1, docs/OOD.md) as `npm run eval:ood` reads it: the
// shipped manifests pass, and one it does not understand is refused by name, not replayed as
// an empty or another model's set.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseOodsetManifest } from '../../scripts/eval/oodset.ts';

const DIR = join(import.meta.dirname, '../../models/oodsets/mednist-darf-b64');
const WHERE = `${DIR}/manifest.json`;
const shipped = JSON.parse(readFileSync(WHERE, 'utf8'));
const parse = (m: unknown) => parseOodsetManifest(m, WHERE, 'mednist-darf-b64');

describe('OOD sets manifest', () => {
  it('reads the shipped manifest: tar sets with their count, source sets with their ids', () => {
    const m = parse(shipped);
    expect(m.data).toBe('mednist');
    expect(m.sets.find((s) => s.set === 'far:fashion_mnist_test')).toMatchObject({ file: 'far-fashion_mnist_test.tar', count: 500 });
    expect(m.sets.find((s) => s.set === 'near:brain_tumor_mri')?.ids?.length).toBeGreaterThan(0);
  });

  it.each(['brain_tumor_mri-darf-b64', 'kather_crc_2016-darf-b64', 'mednist-darf-b64'])('reads the shipped %s manifest', (name) => {
    const where = join(DIR, '..', name, 'manifest.json');
    expect(parseOodsetManifest(JSON.parse(readFileSync(where, 'utf8')), where, name).sets.length).toBeGreaterThan(0);
  });

  it.each([
    ['another format', { format: 'x' }, /manifest.json: format "x" version 1 is not medhash-oodset v1/],
    ['a newer version', { version: 2 }, /version 2 is not medhash-oodset v1/],
    ['another model', { model: 'kather_crc_2016-darf-b64' }, /manifest.json: model "kather_crc_2016-darf-b64" is not mednist-darf-b64/],
    ['no data', { data: undefined }, /manifest.json: data must be a non-empty string/],
    ['no sets', { sets: {} }, /manifest.json: sets must be a non-empty list/],
  ])('refuses %s', (_, change, message) => {
    expect(() => parse({ ...shipped, ...change })).toThrow(message);
  });

  it('refuses a tar set without its count, and a source set without ids', () => {
    const far = shipped.sets[0];
    expect(() => parse({ ...shipped, sets: [{ ...far, count: undefined }] })).toThrow(/manifest.json: sets\[0\].count must be a positive integer/);
    expect(() => parse({ ...shipped, sets: [{ ...far, count: '500' }] })).toThrow(/sets\[0\].count/);
    expect(() => parse({ ...shipped, sets: [{ set: 'near:x', source: 'x' }] })).toThrow(/sets\[0\].ids must be a non-empty list of strings/);
  });
});
