// The legit worst case behind codec-thread.ts's decode deadline: the largest JPEG-LS and JPEG 2000
// frames the default limits let through (4096 x 4096, 16-bit grey, noise enough that the file
// is near the 8 MiB limit, which is what makes a codec slow), made by DCMTK's dcmcjpls and
// OpenJPEG's opj_compress, each decoded in this thread by dicom-codecs.ts (what the codec
// thread runs) several times; prints the slowest run of each. Nothing is kept (files in a temp folder).
//   apt-get install dcmtk libopenjp2-tools && npx tsx scripts/bench/frame-deadline.ts
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { DEFAULT_LIMITS } from '../../functions/encode/image.ts';
import { decodeJpeg2000, decodeJpegLs, DicomCodecs, type CodecTarget } from '../../functions/encode/dicom-codecs.ts';

const require = createRequire(import.meta.url);
const SIDE = 4096;
const RUNS = 3;

/** 16-bit samples (little endian): a ramp plus `noiseBits` bits of noise, so that the codestream is big. */
function samples(noiseBits: number): Uint8Array {
  const out = new Uint16Array(SIDE * SIDE);
  let x = 0x9e3779b9;
  for (let r = 0; r < SIDE; r++) {
    for (let c = 0; c < SIDE; c++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      out[r * SIDE + c] = (r * 8 + c * 4 + ((x >>> 0) & ((1 << noiseBits) - 1))) & 0xffff;
    }
  }
  return new Uint8Array(out.buffer);
}

/** The JPEG-LS codestream dcmcjpls (lossless) makes of an uncompressed DICOM of `raw`: from its SOI to its EOI. */
function jpegLs(dir: string, raw: Uint8Array): Uint8Array {
  writeFileSync(join(dir, 'in.raw'), raw);
  const lines = ['(0008,0016) UI =SecondaryCaptureImageStorage', '(0008,0018) UI [1.2.3.4]', '(0028,0002) US 1', '(0028,0004) CS [MONOCHROME2]',
    `(0028,0010) US ${SIDE}`, `(0028,0011) US ${SIDE}`, '(0028,0100) US 16', '(0028,0101) US 16', '(0028,0102) US 15', '(0028,0103) US 0', `(7fe0,0010) OW =${join(dir, 'in.raw')}`];
  writeFileSync(join(dir, 'in.txt'), lines.join('\n') + '\n');
  execFileSync('dump2dcm', ['+te', join(dir, 'in.txt'), join(dir, 'in.dcm')], { stdio: 'inherit' });
  execFileSync('dcmcjpls', ['+el', join(dir, 'in.dcm'), join(dir, 'ls.dcm')], { stdio: 'inherit' });
  const b = new Uint8Array(readFileSync(join(dir, 'ls.dcm')));
  const start = Buffer.from(b).indexOf(Buffer.from([0xff, 0xd8, 0xff]));
  const end = Buffer.from(b).lastIndexOf(Buffer.from([0xff, 0xd9]));
  return b.subarray(start, end + 2);
}

function j2k(dir: string, raw: Uint8Array, options: string[]): Uint8Array {
  writeFileSync(join(dir, 'in.rawl'), raw);
  execFileSync('opj_compress', ['-i', join(dir, 'in.rawl'), '-F', `${SIDE},${SIDE},1,16,u`, ...options, '-o', join(dir, 'out.j2k')], { stdio: 'ignore' });
  return new Uint8Array(readFileSync(join(dir, 'out.j2k')));
}

async function main() {
  const compile = async (name: string) => WebAssembly.compile(readFileSync(require.resolve(name)));
  const codecs = new DicomCodecs({ charls: await compile('@cornerstonejs/codec-charls/decodewasm'), openjpeg: await compile('@cornerstonejs/codec-openjpeg/decodewasm') });
  const target = (syntax: string): CodecTarget => ({ rows: SIDE, columns: SIDE, samples: 1, bitsAllocated: 16, bitsStored: 16, signed: false, syntax });
  const dir = mkdtempSync(join(tmpdir(), 'frame-deadline-'));
  try {
    // 3 bits of noise: the codestreams are near the 8 MiB limit (4 bits: 10 MiB, over it)
    const raw = samples(3);
    const cases: [string, Uint8Array, (f: Uint8Array) => Promise<unknown>][] = [
      ['JPEG-LS lossless', jpegLs(dir, raw), (f) => decodeJpegLs(codecs, f, target('JPEG-LS'))],
      ['JPEG 2000 lossless', j2k(dir, raw, []), (f) => decodeJpeg2000(codecs, f, target('JPEG 2000'))],
      ['JPEG 2000 lossy (9/7, 1:4)', j2k(dir, raw, ['-I', '-r', '4']), (f) => decodeJpeg2000(codecs, f, target('JPEG 2000'))],
    ];
    for (const [name, frame, decode] of cases) {
      if (frame.length > DEFAULT_LIMITS.maxBytes) throw new Error(`${name}: ${frame.length} bytes, over the ${DEFAULT_LIMITS.maxBytes} limit: fewer noise bits`);
      let worst = 0;
      for (let i = 0; i < RUNS; i++) {
        const t0 = performance.now();
        await decode(frame);
        worst = Math.max(worst, performance.now() - t0);
      }
      console.log(`${name}: ${SIDE}x${SIDE} 16-bit, ${(frame.length / 2 ** 20).toFixed(2)} MiB, slowest of ${RUNS}: ${Math.round(worst)} ms`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
