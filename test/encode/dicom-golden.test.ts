// The service's DICOM decoder still gives what test/fixtures/dicom/decoded.json records, which the
// Python mirror (models/medhash_model/dicom.py, test/python/test_dicom.py) is held to: the pixels
// (shape, channels, sha256) of every file it reads and the status, code and message of every file
// it refuses, for the DCMTK fixtures, the files made for each branch and the seeded mutations. A
// change to dicom.ts fails here until the golden file is written again
// (npx tsx scripts/fixtures/make-dicom-golden.ts), and then the Python test until dicom.py follows.
import { readdirSync, readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildDicomGolden, CODEC_OWN, fromParts, GOLDEN_VERSION, goldenText, LOSSY, mutated, outcome, type DicomGolden } from '../../scripts/fixtures/dicom-golden.ts';
import { DICOM_FIXTURES, DICOM_GOLDEN, DICOM_MULTI_FRAME } from './fixtures.ts';

const committed = JSON.parse(readFileSync(DICOM_GOLDEN, 'utf8')) as DicomGolden;
let now: DicomGolden;
beforeAll(async () => {
  now = await buildDicomGolden();
});

describe('test/fixtures/dicom/decoded.json is what dicom.ts decodes', () => {
  it('names every fixture (each multi-frame one also frame by frame), in format version 2, and the limits are the decoder\'s', () => {
    expect(committed.version).toBe(GOLDEN_VERSION);
    expect(GOLDEN_VERSION).toBe(2);
    expect(committed.fixtures.filter((f) => f.frame === undefined).map((f) => f.file)).toEqual(readdirSync(DICOM_FIXTURES).filter((f) => f.endsWith('.dcm')).sort());
    expect(committed.limits).toEqual(now.limits);
  });

  it('the DCMTK fixtures: the same pixels, the same refusals', () => {
    expect(now.fixtures).toEqual(committed.fixtures);
    // both kinds are there: what the parity covers
    expect(committed.fixtures.filter((f) => 'sha256' in f).length).toBeGreaterThanOrEqual(10);
    // without a frame, a multi-frame file is refused (it names the parameter)
    expect(committed.fixtures.filter((f) => 'refused' in f && f.frame === undefined).map((f) => f.file))
      .toEqual(['ct12-garbage-nowindow-jpeg-extended.dcm', 'ct16-enhanced-frames3-items2.dcm', 'grey8-bigendian.dcm', ...Object.keys(DICOM_MULTI_FRAME)].sort());
    expect(committed.fixtures.filter((f) => f.frame !== undefined).length).toBe(Object.values(DICOM_MULTI_FRAME).reduce((n, k) => n + k + 1, 0));
  });

  it('the compressed fixtures: RLE and JPEG Baseline hold the very pixels of the uncompressed ones they were made from', () => {
    const sha = new Map(committed.fixtures.filter((f) => f.frame === undefined).map((f) => [f.file, 'sha256' in f ? f.sha256 : undefined]));
    // DCMTK's dcmcrle of 8-bit grey, 16-bit signed grey (through its window) and RGB; img2dcm of the grey JPEG itself
    // and dcmcjpeg's JPEG Lossless (SV1, predictor 7, the test encoder's restart intervals): 8-bit, 16-bit signed, MONOCHROME1, 12 of 16 bits, RGB
    const lossless = [['grey8-jpeg-lossless-sv1.dcm', 'grey8-explicit.dcm'], ['ct16-window-jpeg-lossless-sv1.dcm', 'ct16-window.dcm'],
      ['ct16-window-jpeg-lossless-sv7.dcm', 'ct16-window.dcm'], ['ct16-window-jpeg-lossless-sv7-restart.dcm', 'ct16-window.dcm'],
      ['ct16-window-monochrome1-jpeg-lossless-sv1.dcm', 'ct16-window-monochrome1.dcm'], ['ct12-garbage-nowindow-jpeg-lossless-sv1.dcm', 'ct12-garbage-nowindow.dcm'],
      ['rgb8-corner-jpeg-lossless-sv1.dcm', 'rgb8-corner-explicit.dcm'],
      // dcmcjpls's JPEG-LS lossless, decoded by CharLS: 8-bit, 16-bit signed, 12 of 16 bits, RGB line-interleaved and in planes
      ['grey8-jpeg-ls.dcm', 'grey8-explicit.dcm'], ['ct16-window-jpeg-ls.dcm', 'ct16-window.dcm'], ['ct12-garbage-nowindow-jpeg-ls.dcm', 'ct12-garbage-nowindow.dcm'],
      ['rgb8-corner-jpeg-ls.dcm', 'rgb8-corner-explicit.dcm'], ['rgb8-corner-jpeg-ls-planes.dcm', 'rgb8-corner-explicit.dcm'],
      // opj_compress's reversible JPEG 2000, decoded by OpenJPEG: 8-bit, 16-bit signed, 12 bits signed, RGB without and with its colour transform (RCT)
      ['grey8-jpeg2000-lossless.dcm', 'grey8-explicit.dcm'], ['ct16-window-jpeg2000-lossless.dcm', 'ct16-window.dcm'],
      ['ct12-garbage-nowindow-jpeg2000-lossless.dcm', 'ct12-garbage-nowindow.dcm'], ['rgb8-corner-jpeg2000-lossless.dcm', 'rgb8-corner-explicit.dcm'],
      ['rgb8-corner-jpeg2000-lossless-rct.dcm', 'rgb8-corner-explicit.dcm'],
      // dcmconv +td's deflated data set, inflated
      ['grey8-deflated.dcm', 'grey8-explicit.dcm']];
    for (const [compressed, plain] of [['grey8-rle.dcm', 'grey8-explicit.dcm'], ['ct16-window-rle.dcm', 'ct16-window.dcm'], ['rgb8-rle.dcm', 'rgb8-explicit.dcm'], ['grey8-jpeg-baseline.dcm', 'grey8-explicit.dcm'], ...lossless]) {
      expect(sha.get(compressed), compressed).toBeDefined();
      expect(sha.get(compressed), compressed).toBe(sha.get(plain));
    }
    // a JPEG Baseline or lossy JPEG 2000 entry keeps its pixels for Python's tolerance; no other does
    expect([...new Set(committed.fixtures.filter((f) => 'pixels' in f).map((f) => f.file))].sort())
      .toEqual(['grey8-frames3-jpeg-baseline-fs1-nobot.dcm', 'grey8-jpeg-baseline.dcm', 'grey8-jpeg-extended.dcm', 'grey8-jpeg2000-lossy.dcm', 'rgb8-corner-jpeg-extended.dcm', 'rgb8-corner-jpeg2000-lossy-ict.dcm', 'rgb8-jpeg-baseline.dcm']);
    expect(committed.made.filter((m) => 'pixels' in m).every((m) => LOSSY.test(m.name))).toBe(true);
    expect(committed.mutations.cases.some((c) => CODEC_OWN.test(c.file))).toBe(false);
    // JPEG Lossless is decoded here, not by a codec: its fixtures are mutated like the others; so
    // are JPEG-LS ones, whose codec is CharLS on both sides
    expect(committed.mutations.cases.filter((c) => c.file.includes('jpeg-lossless')).length).toBeGreaterThanOrEqual(30);
    expect(committed.mutations.cases.filter((c) => c.file.includes('jpeg-ls')).length).toBeGreaterThanOrEqual(30);
    // and JPEG 2000 ones, walked whole before OpenJPEG on both sides: a lossy one's cases keep their pixels, as its fixture does
    expect(committed.mutations.cases.filter((c) => c.file.includes('jpeg2000')).length).toBe(100);
    expect(committed.mutations.cases.filter((c) => 'pixels' in c).every((c) => LOSSY.test(c.file))).toBe(true);
    expect(committed.mutations.cases.some((c) => 'pixels' in c)).toBe(true);
  });

  it.each(['-rle', '-jpeg-lossless'])('each %s twin made here decodes to the pixels of its uncompressed file, and the limits refuse either alike', (suffix) => {
    const byName = new Map(committed.made.map((m) => [m.name, m]));
    const twins = committed.made.filter((m) => m.name.endsWith(suffix));
    expect(twins.length).toBeGreaterThanOrEqual(12);
    for (const twin of twins) {
      const { name: _n, parts: _p, ...got } = twin;
      const { name: _m, parts: _q, ...want } = byName.get(twin.name.slice(0, -suffix.length))!;
      expect(got, twin.name).toEqual(want);
    }
    expect(twins.filter((m) => 'sha256' in m).length).toBeGreaterThanOrEqual(10);
  });

  it('a deflated data set decodes as the plain one; a stream cut short, none or a bomb is refused before the walk; 12-bit JPEG Extended is a 415', () => {
    const made = (name: string) => committed.made.find((m) => m.name === name)!;
    const { sha256 } = made('syntax-space-padded') as { sha256: string };
    expect(made('deflated-explicit')).toMatchObject({ sha256 });
    for (const name of ['deflated-cut-short', 'deflated-empty', 'deflated-data-set-not-deflated']) expect(made(name), name).toMatchObject({ refused: { status: 422, message: expect.stringContaining('is not a whole DEFLATE stream') } });
    expect(made('deflated-bomb')).toMatchObject({ refused: { status: 413, message: expect.stringContaining(`more than ${committed.limits.max_inflated_bytes} bytes`) } });
    expect(committed.fixtures.find((f) => f.file === 'ct12-garbage-nowindow-jpeg-extended.dcm')).toMatchObject({ refused: { status: 415, message: expect.stringMatching(/^DICOM JPEG Extended with 12-bit samples is not supported: /) } });
  });

  it('the JPEG Lossless frames of each predictor, restart interval, point transform, fragmentation and extra tables decode to the same 16-bit image', () => {
    const sha = (name: string) => {
      const m = committed.made.find((x) => x.name === `jpeg-lossless-${name}`)!;
      return 'sha256' in m ? m.sha256 : m.refused.message;
    };
    for (const name of ['predictor-1', 'predictor-2', 'predictor-3', 'predictor-4', 'predictor-5', 'predictor-6', 'predictor-7', 'predictor-1-sv1',
      'no-restart-interval', 'restart-every-row', 'point-transform-2', 'in-three-fragments', 'extra-tables']) {
      expect(sha(name), name).toBe(sha('16bit-unsigned'));
    }
  });

  it('a JPEG-LS frame under headers of each kind: the frame whole, in the near-lossless syntax or in two fragments decodes to the fixture\'s pixels; the header checks refuse before CharLS runs', () => {
    const made = (name: string) => committed.made.find((m) => m.name === `jpeg-ls-${name}`)!;
    const fixture = committed.fixtures.find((f) => f.file === 'ct12-garbage-nowindow.dcm')!;
    for (const name of ['whole', 'near-lossless-syntax', 'in-two-fragments']) expect(made(name), name).toMatchObject({ sha256: (fixture as { sha256: string }).sha256 });
    const refusal = (name: string) => ('refused' in made(name) ? (made(name) as { refused: { message: string } }).refused.message : name);
    expect(refusal('columns-mismatch')).toBe('DICOM JPEG-LS Lossless frame is 7x1; the header says 6x1');
    expect(refusal('precision-8-below-12-signed')).toContain('whose sign bit it would move');
    expect(refusal('truncated-scan')).toMatch(/^DICOM JPEG-LS Lossless frame could not be decoded: Invalid JPEG-LS stream/);
  });

  it('a JPEG 2000 codestream under headers of each kind: whole, in the lossy syntax, in two fragments or two tile-parts (the second empty or its SOT alone), with Psot 0 or bytes after its EOC it decodes to the fixture\'s pixels; the SIZ checks and the walk to the EOC refuse before OpenJPEG runs', () => {
    const made = (name: string) => committed.made.find((m) => m.name === `jpeg2000-${name}`)!;
    const fixture = committed.fixtures.find((f) => f.file === 'ct12-garbage-nowindow.dcm')!;
    for (const name of ['whole', 'lossy-syntax', 'in-two-fragments', 'two-tile-parts', 'second-tile-part-empty', 'second-tile-part-psot-12', 'psot-0', 'bytes-after-eoc']) {
      expect(made(name), name).toMatchObject({ sha256: (fixture as { sha256: string }).sha256 });
    }
    const refusal = (name: string) => ('refused' in made(name) ? (made(name) as { refused: { message: string } }).refused.message : name);
    expect(refusal('4096-square-in-1x1-tiles')).toBe('DICOM JPEG 2000 Lossless frame declares 16777216 tiles of 1x1; at most 4096');
    expect(refusal('signed-under-unsigned-header')).toBe("DICOM JPEG 2000 Lossless frame has signed samples; the header's Pixel Representation (0028,0103) says unsigned");
    // the two forms the service's OpenJPEG and Pillow's read differently: refused alike, before either
    expect(refusal('cut-after-first-sot')).toBe('DICOM JPEG 2000 Lossless frame is truncated: its tile-part at byte 104 runs past its end (byte 106)');
    expect(refusal('eoc-replaced-by-sot')).toBe('DICOM JPEG 2000 Lossless frame is truncated: its tile-part at byte 131 runs past its end (byte 134)');
    expect(refusal('no-eoc')).toBe('DICOM JPEG 2000 Lossless frame is truncated: no EOC (ff d9) after its tile-part at byte 104');
    // a tile-part after its tile's last, which the service's OpenJPEG decoded past and Pillow's refused: refused alike, by the tile's order
    expect(refusal('tile-part-after-the-last')).toBe('DICOM JPEG 2000 Lossless frame has tile-part 1 of tile 0 at byte 131; its tile has only 1 (TNsot)');
    expect(refusal('tile-part-repeated')).toBe("DICOM JPEG 2000 Lossless frame has tile-part 0 of tile 0 at byte 131; the tile's next is tile-part 1");
    expect(refusal('tile-part-of-tile-1')).toBe('DICOM JPEG 2000 Lossless frame has a tile-part of tile 1 at byte 131; its SIZ declares 1 tile(s)');
    expect(refusal('cod-33-levels')).toMatch(/^DICOM JPEG 2000 Lossless frame could not be decoded: /);
  });

  it('each frame of a multi-frame file is the single-frame decode of its pixels, whatever the syntax, table or fragmentation', () => {
    const fixture = (file: string, frame?: number) => committed.fixtures.find((f) => f.file === file && f.frame === frame)!;
    const sha = (o: object) => ('sha256' in o ? o.sha256 : JSON.stringify(o));
    for (const [family, single] of [['grey8-frames3', 'grey8-explicit.dcm'], ['ct16-window-frames3', 'ct16-window.dcm']]) {
      const files = Object.keys(DICOM_MULTI_FRAME).filter((f) => f.startsWith(family) && !LOSSY.test(f));
      expect(files.length).toBeGreaterThanOrEqual(3);
      expect(sha(fixture(`${family}.dcm`, 0))).toBe(sha(fixture(single)));
      expect(new Set([0, 1, 2].map((k) => sha(fixture(`${family}.dcm`, k)))).size).toBe(3);
      for (const file of files) {
        for (const k of [0, 1, 2]) expect(sha(fixture(file, k)), `${file} frame ${k}`).toBe(sha(fixture(`${family}.dcm`, k)));
        expect(fixture(file, 3)).toMatchObject({ refused: { status: 422, code: 'frame_out_of_range', message: 'frame 3 is out of range: the image has 3 frames (0 to 2)' } });
      }
    }
    // the files made here: each frame equals the same pixels alone in a single-frame file
    const made = (name: string) => sha(committed.made.find((m) => m.name === name)!);
    for (const k of [0, 1, 2]) {
      for (const name of [`frames-3-uncompressed-frame-${k}`, `frames-3-rle-table-frame-${k}`, `frames-3-rle-no-table-frame-${k}`]) expect(made(name), name).toBe(made(`frames-3-alone-${k}`));
      for (const name of [`jpeg-lossless-frames-3-one-fragment-each-frame-${k}`, `jpeg-lossless-frames-3-split-at-eoi-frame-${k}`]) expect(made(name), name).toBe(made(`jpeg-lossless-frames-3-alone-${k}`));
    }
    expect(new Set([0, 1, 2].map((k) => made(`frames-3-alone-${k}`))).size).toBe(3);
  });

  it('each frame of an enhanced multi-frame file decodes as its classic twin: rescale and window from its per-frame item, else the shared one, else the top level, each macro whole', () => {
    const fixture = (file: string, frame?: number) => committed.fixtures.find((f) => f.file === file && f.frame === frame)!;
    const sha = (o: object) => ('sha256' in o ? o.sha256 : JSON.stringify(o));
    for (const family of ['ct16-enhanced-frames3', 'ct16-enhanced-shared-frames3']) {
      for (const k of [0, 1, 2]) expect(sha(fixture(`${family}.dcm`, k)), `${family} frame ${k}`).toBe(sha(fixture(`${family}-twin${k}.dcm`)));
      expect(new Set([0, 1, 2].map((k) => sha(fixture(`${family}.dcm`, k)))).size).toBe(3);
    }
    // the per-frame items change frames 0 and 1; frame 2 takes the shared group's
    expect(sha(fixture('ct16-enhanced-frames3.dcm', 0))).not.toBe(sha(fixture('ct16-enhanced-shared-frames3.dcm', 0)));
    expect(sha(fixture('ct16-enhanced-frames3.dcm', 2))).toBe(sha(fixture('ct16-enhanced-shared-frames3.dcm', 2)));
    expect(fixture('ct16-enhanced-frames3-items2.dcm')).toMatchObject({ refused: { status: 422, code: 'corrupt_image',
      message: "DICOM's Per-frame Functional Groups Sequence (5200,9230) has 2 items; Number of Frames (0028,0008) is 3 (one item a frame)" } });

    const made = (name: string) => sha(committed.made.find((m) => m.name === `enhanced-${name}`)!);
    for (const k of [0, 1, 2]) {
      for (const name of [`frame-${k}`, `undefined-lengths-frame-${k}`, `implicit-frame-${k}`, `implicit-undefined-lengths-frame-${k}`]) expect(made(name), name).toBe(made(`alone-${k}`));
      expect(made(`shared-only-frame-${k}`)).toBe(made(`shared-alone-${k}`));
    }
    expect(new Set([0, 1, 2].map((k) => made(`alone-${k}`))).size).toBe(3);
    for (const [name, twin] of [['shared-rescale-only-frame-2', 'alone-top-window-2'], ['shared-voi-sequence-empty-frame-2', 'alone-top-window-2'],
      ['shared-sequence-empty-frame-2', 'alone-decoys-2'], ['group-of-vr-un', 'alone-decoys-1'], ['per-frame-only-frame-1', 'shared-alone-1'],
      ['one-frame-no-frame-given', 'one-frame-alone'], ['per-frame-window-multi-value', 'alone-0'],
      ['per-frame-slope-not-a-number-other-frame', 'alone-0'], ['per-frame-slope-not-a-number-other-frame-undefined-lengths', 'alone-0']]) {
      expect(made(name), name).toBe(made(twin));
    }
    // the top-level decoys alone give other pixels: the macros did replace them
    expect(made('alone-decoys-2')).not.toBe(made('alone-2'));
  });

  it('the files made for each branch', () => {
    expect(now.made.map((m) => m.name)).toEqual(committed.made.map((m) => m.name));
    for (const [i, m] of committed.made.entries()) expect(now.made[i], m.name).toEqual(m);
  });

  it('the seeded mutations of the fixtures, replayed from the stored bytes', async () => {
    expect(now.mutations).toEqual(committed.mutations);
    // the stored form (length and changed bytes) is enough to rebuild each case, as Python does
    const case0 = committed.mutations.cases[0];
    const original = new Uint8Array(readFileSync(`${DICOM_FIXTURES}/${case0.file}`));
    const { file: _f, length: _l, set: _s, ...expected } = case0;
    expect(await outcome(mutated(original, case0.length, case0.set))).toEqual(expected);
  });

  it('is written as make-dicom-golden.ts writes it (no hand edits)', () => {
    expect(readFileSync(DICOM_GOLDEN, 'utf8')).toBe(goldenText(committed));
    expect(fromParts([['0a0b', 2], ['ff', 1]])).toEqual(new Uint8Array([10, 11, 10, 11, 255]));
  });
});
