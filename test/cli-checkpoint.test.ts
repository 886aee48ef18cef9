// `medhash index`'s checkpoint file: what a restart makes of a file left by a crash.
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Checkpoint } from '../scripts/cli/checkpoint.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-checkpoint-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('index checkpoint', () => {
  it('keeps the ids of a previous run of the same key, and only those', () => {
    const path = join(dir, 'c.ids');
    Checkpoint.open(path, 'k1').add(['a', 'b']);
    expect(Checkpoint.open(path, 'k1').size).toBe(2);
    expect(Checkpoint.open(path, 'k2').size).toBe(0);
    expect(Checkpoint.open(path, 'k1').size).toBe(0);
  });

  it('survives an append cut short by a crash: the partial id is dropped, later appends stay whole', () => {
    const path = join(dir, 'c.ids');
    Checkpoint.open(path, 'k').add(['a', 'b']);
    appendFileSync(path, '"c"\n"d'); // the process died inside the write of "d"
    const cp = Checkpoint.open(path, 'k');
    expect([cp.has('a'), cp.has('b'), cp.has('c'), cp.has('d')]).toEqual([true, true, true, false]);
    cp.add(['d', 'e']);
    const again = Checkpoint.open(path, 'k');
    expect(again.size).toBe(5);
    expect(readFileSync(path, 'utf8').split('\n').slice(1)).toEqual(['"a"', '"b"', '"c"', '"d"', '"e"', '']);
  });

  it('starts over from a file it cannot read rather than failing the run', () => {
    const path = join(dir, 'c.ids');
    Checkpoint.open(path, 'k').add(['a']);
    appendFileSync(path, 'not json\n"b"\n');
    expect(Checkpoint.open(path, 'k').size).toBe(0);
    writeFileSync(path, '{"format":"medhash-index-chec');
    const cp = Checkpoint.open(path, 'k');
    expect(cp.size).toBe(0);
    cp.add(['x']);
    expect(Checkpoint.open(path, 'k').has('x')).toBe(true);
  });
});

describe('index checkpoint given the wrong file', () => {
  it('refuses a file that is no checkpoint, naming it, and leaves it as it was', () => {
    const notes = join(dir, 'notes.txt');
    writeFileSync(notes, 'not mine\nno newline at the end');
    expect(() => Checkpoint.open(notes, 'k')).toThrow(`checkpoint ${notes}: not a medhash index checkpoint, left as it is`);
    expect(readFileSync(notes, 'utf8')).toBe('not mine\nno newline at the end');
  });

  it('names the path when it cannot be read', () => {
    expect(() => Checkpoint.open(dir, 'k')).toThrow(`checkpoint ${dir}: EISDIR`);
  });

  it('takes an empty file as a new checkpoint', () => {
    const path = join(dir, 'empty.ids');
    writeFileSync(path, '');
    Checkpoint.open(path, 'k').add(['a']);
    expect(Checkpoint.open(path, 'k').has('a')).toBe(true);
  });
});
