// DICOM's JPEG-LS and JPEG 2000 frames, decoded by maintained codecs rather than written here:
// CharLS (@cornerstonejs/codec-charls) and OpenJPEG (@cornerstonejs/codec-openjpeg), both
// Emscripten builds. Owns the one loader of those builds (`EmscriptenCodec`), the reading of each
// codestream's own header (JPEG-LS SOF55, JPEG 2000 SIZ) and its agreement with the DICOM header,
// and the frame -> samples step, which gives what an uncompressed file stores, as
// jpeg-lossless.ts does, for dicom.ts's one path to pixels. Mirrored by
// models/medhash_model/dicom_codecs.py (libcharls and Pillow's OpenJPEG).
//
// The glue is handed the WebAssembly module its caller compiled (Node from node_modules, workerd
// by a build-time import, the browser SDK by a download) through Emscripten's `instantiateWasm`
// hook: workerd refuses to compile WebAssembly from bytes at run time, and the glue's own loader
// would fetch or read a file. Each codec is instantiated once per isolate, on its first frame,
// and its glue imported then too: a static import of the glue (CommonJS) would be kept by a
// bundler in every bundle that reaches this file, the Worker's included, which decodes nothing.
// The caller may hand over a loader of the module instead (`WasmSource`), called on that first
// frame too: the browser SDK downloads a codec only for a page that meets one of its frames.
//
// The codestream header must match the DICOM header (size, components, precision, sign) before
// the codec sees the frame, so the codec allocates no more than the image the caller's limits
// passed; a JPEG 2000 codestream must also run whole to its EOC, its tile-parts in order, as the
// codecs' leniencies with one cut short or out of order differ. A codec failure is a 422 naming
// the syntax; a C++ exception leaves the instance usable, and a trap (an abort, an out-of-bounds
// access) drops it, so the next frame gets a fresh one.
import { leadingHex } from '../util/bytes.ts';
import { MedhashError } from '../util/errors.ts';

/** What the DICOM header says a frame holds; `syntax` names it in messages. */
export interface CodecTarget {
  rows: number;
  columns: number;
  samples: number;
  bitsAllocated: number;
  bitsStored: number;
  signed: boolean;
  syntax: string;
}

/** The stored samples, little endian, Bits Allocated each, and whether they are planar (1) or interleaved (0). */
export interface CodecFrame {
  raw: Uint8Array;
  planar: 0 | 1;
}

/** What a codestream header declares. `signed` is absent where the format does not say (JPEG-LS). */
export interface CodestreamHeader {
  width: number;
  height: number;
  components: number;
  precision: number;
  signed?: boolean;
}

/**
 * A codec's compiled WebAssembly, or a loader of it called on the codec's first frame; its module
 * is kept, and a failed load is not: the next frame calls the loader again.
 */
export type WasmSource = WebAssembly.Module | (() => Promise<WebAssembly.Module>);

/** The compiled WebAssembly of both codecs (their `*_decode.wasm`), or loaders of it. */
export interface DicomCodecModules {
  charls: WasmSource;
  openjpeg: WasmSource;
}

const corruptFrame = (t: CodecTarget, message: string) => new MedhashError(422, 'corrupt_image', `DICOM ${t.syntax} frame ${message}`, 'image');
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const startHex = (f: Uint8Array) => leadingHex(f, 4) || 'nothing';
const be16 = (f: Uint8Array, i: number) => (f[i] << 8) | f[i + 1];
const be32 = (f: Uint8Array, i: number) => ((f[i] << 24) | (f[i + 1] << 16) | (f[i + 2] << 8) | f[i + 3]) >>> 0;
/** Far above a real tiling (a 4096 x 4096 image in 64 x 64 tiles), far below what a codec's per-tile state costs. */
export const MAX_TILES = 4096;
/** The largest XTsiz or YTsiz read: every OpenJPEG reads it (one more is 2^31, which some take for negative). */
export const MAX_TILE_SIDE = 0x7fffffff;

/** The length of the marker segment at `pos` (its marker inside `f`), which must end inside `f`. */
function segmentLength(f: Uint8Array, pos: number, t: CodecTarget): number {
  if (pos + 4 > f.length) throw corruptFrame(t, `is truncated: the segment at byte ${pos} runs past its end`);
  const length = be16(f, pos + 2);
  if (length < 2) throw corruptFrame(t, `is corrupt: segment length ${length} at byte ${pos + 2}`);
  if (pos + 2 + length > f.length) throw corruptFrame(t, `is truncated: the segment at byte ${pos} runs past its end`);
  return length;
}

/**
 * JPEG-LS (T.87): the marker segments from SOI up to the frame header SOF55 (ff f7), which gives
 * the precision, Y (rows), X (columns) and the component count.
 */
export function jpegLsHeader(f: Uint8Array, t: CodecTarget): CodestreamHeader {
  if (!(f.length >= 2 && f[0] === 0xff && f[1] === 0xd8)) throw corruptFrame(t, `is not a JPEG-LS stream (starts with ${startHex(f)})`);
  let pos = 2;
  for (;;) {
    if (pos + 4 > f.length) throw corruptFrame(t, `is truncated: no frame header (SOF55) before its end (byte ${f.length})`);
    if (f[pos] !== 0xff) throw corruptFrame(t, `is corrupt: a marker belongs at byte ${pos}, which is ${hex2(f[pos])}`);
    const m = f[pos + 1];
    if (m === 0xda || m === 0xd9) throw corruptFrame(t, `has no frame header (SOF55) before marker ff${hex2(m)} at byte ${pos}`);
    const length = segmentLength(f, pos, t);
    if (m === 0xf7) {
      const count = length >= 8 ? f[pos + 9] : 0;
      if (length < 8 || length !== 8 + 3 * count) throw corruptFrame(t, `has a frame header (SOF55) of ${length} bytes; ${count} component(s) need ${8 + 3 * count}`);
      return { precision: f[pos + 4], height: be16(f, pos + 5), width: be16(f, pos + 7), components: count };
    }
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) throw corruptFrame(t, `has a JPEG frame header (ff${hex2(m)}), not JPEG-LS's SOF55`);
    pos += 2 + length;
  }
}

/**
 * JPEG 2000 (T.800): the codestream starts with SOC (ff 4f) and the image and tile size segment
 * SIZ (ff 51): the size is Xsiz - XOsiz by Ysiz - YOsiz, each component's Ssiz its sign (bit 7)
 * and precision (bits 0-6, plus one), XRsiz/YRsiz its subsampling; and the number of tiles, for
 * the walk of the tile-parts.
 */
export function j2kHeader(f: Uint8Array, t: CodecTarget): CodestreamHeader & { tiles: number } {
  if (!(f.length >= 4 && f[0] === 0xff && f[1] === 0x4f && f[2] === 0xff && f[3] === 0x51)) {
    throw corruptFrame(t, `is not a JPEG 2000 codestream: no SOC and SIZ markers (ff 4f ff 51) at its start (starts with ${startHex(f)})`);
  }
  if (f.length < 42) throw corruptFrame(t, `is truncated: its SIZ segment runs past its end (byte ${f.length})`);
  const length = be16(f, 4);
  const count = be16(f, 40);
  if (length !== 38 + 3 * count) throw corruptFrame(t, `has a SIZ segment of ${length} bytes; ${count} component(s) need ${38 + 3 * count}`);
  if (4 + length > f.length) throw corruptFrame(t, `is truncated: its SIZ segment runs past its end (byte ${f.length})`);
  const [x, y, x0, y0, tileX, tileY, tileX0, tileY0] = [8, 12, 16, 20, 24, 28, 32, 36].map((i) => be32(f, i));
  if (tileX === 0 || tileY === 0) throw corruptFrame(t, `declares tiles of ${tileX}x${tileY}`);
  // Debian's OpenJPEG (Pillow's) refuses a side from 2^31, this build reads it: refused on both sides alike
  if (tileX > MAX_TILE_SIDE || tileY > MAX_TILE_SIDE) throw corruptFrame(t, `declares tiles of ${tileX}x${tileY}; a side may be at most ${MAX_TILE_SIDE}`);
  const tiles = Math.ceil(Math.max(0, x - tileX0) / tileX) * Math.ceil(Math.max(0, y - tileY0) / tileY);
  if (tiles > MAX_TILES) throw corruptFrame(t, `declares ${tiles} tiles of ${tileX}x${tileY}; at most ${MAX_TILES}`);
  const ssiz = f[42];
  for (let c = 0; c < count; c++) {
    const at = 42 + 3 * c;
    if (f[at] !== ssiz) throw corruptFrame(t, `component ${c + 1} has Ssiz ${f[at]}, component 1 ${ssiz}: their precision and sign differ`);
    if (f[at + 1] !== 1 || f[at + 2] !== 1) throw corruptFrame(t, `subsamples component ${c + 1} at ${f[at + 1]}x${f[at + 2]}; only 1x1 is supported`);
  }
  return { width: x - x0, height: y - y0, components: count, precision: (ssiz & 0x7f) + 1, signed: (ssiz & 0x80) !== 0, tiles };
}

/**
 * JPEG 2000 (T.800 A.4): the codestream after SIZ walked by its lengths alone, the main header's
 * marker segments up to the first SOT (ff 90), then the tile-parts, each SOT's Psot giving the
 * next (Psot 0: the last, running to the EOC), to the EOC (ff d9) -> the codestream's length
 * through its EOC, all the codec is given. The codecs read a codestream cut short each their own
 * way (the service's OpenJPEG decodes one whose EOC is a lone SOT, Pillow's one cut right after
 * its first SOT, to zeros), so an incomplete one is refused here, alike on both sides. So is a
 * tile-part out of its tile's order (A.4.2): of a tile past the `tiles` SIZ declares, a TPsot
 * other than the count of its tile's earlier tile-parts, or one at or past the TNsot its tile
 * last declared (not 0: unknown), as OpenJPEG checks them: one after the tile-part that makes
 * its tile whole, the service's OpenJPEG decoded the image regardless and Pillow's refused it.
 */
export function j2kCodestreamLength(f: Uint8Array, tiles: number, t: CodecTarget): number {
  let pos = 4 + be16(f, 4);
  for (;;) {
    if (pos + 2 > f.length) throw corruptFrame(t, `is truncated: no tile-part (SOT, ff 90) before its end (byte ${f.length})`);
    if (f[pos] !== 0xff) throw corruptFrame(t, `is corrupt: a marker belongs at byte ${pos}, which is ${hex2(f[pos])}`);
    if (f[pos + 1] === 0x90) break;
    if (f[pos + 1] === 0xd9) throw corruptFrame(t, `has no tile-part (SOT, ff 90) before its EOC (ff d9) at byte ${pos}`);
    pos += 2 + segmentLength(f, pos, t);
  }
  // each tile's tile-parts so far, and the TNsot it last declared (0: none)
  const parts = new Uint16Array(tiles);
  const declared = new Uint8Array(tiles);
  for (;;) {
    // SOT: ff 90, Lsot (10), Isot, Psot (the tile-part's bytes from this marker on), TPsot, TNsot
    if (pos + 12 > f.length) throw corruptFrame(t, `is truncated: its tile-part at byte ${pos} runs past its end (byte ${f.length})`);
    const lsot = be16(f, pos + 2);
    if (lsot !== 10) throw corruptFrame(t, `has a SOT segment of ${lsot} bytes at byte ${pos}; SOT takes 10`);
    const [tile, part, total] = [be16(f, pos + 4), f[pos + 10], f[pos + 11]];
    if (tile >= tiles) throw corruptFrame(t, `has a tile-part of tile ${tile} at byte ${pos}; its SIZ declares ${tiles} tile(s)`);
    if (part !== parts[tile]) throw corruptFrame(t, `has tile-part ${part} of tile ${tile} at byte ${pos}; the tile's next is tile-part ${parts[tile]}`);
    for (const n of [declared[tile], total]) {
      if (n !== 0 && part >= n) throw corruptFrame(t, `has tile-part ${part} of tile ${tile} at byte ${pos}; its tile has only ${n} (TNsot)`);
    }
    parts[tile]++;
    if (total !== 0) declared[tile] = total;
    const psot = be32(f, pos + 6);
    if (psot === 0) {
      // a tile's data never holds ff d9 (its coders stuff a bit after each ff; its only markers
      // are SOP and EPH, ff 91 and ff 92): the first ff d9 is the EOC
      let eoc = pos + 12;
      while (eoc + 1 < f.length && !(f[eoc] === 0xff && f[eoc + 1] === 0xd9)) eoc++;
      if (eoc + 1 >= f.length) throw corruptFrame(t, `is truncated: no EOC (ff d9) after its tile-part at byte ${pos}`);
      return eoc + 2;
    }
    if (psot < 12) throw corruptFrame(t, `has a tile-part of ${psot} bytes at byte ${pos}; its SOT segment alone takes 12`);
    const next = pos + psot;
    if (next > f.length) throw corruptFrame(t, `is truncated: its tile-part at byte ${pos} runs past its end (byte ${f.length})`);
    if (next + 2 > f.length) throw corruptFrame(t, `is truncated: no EOC (ff d9) after its tile-part at byte ${pos}`);
    if (f[next] !== 0xff || (f[next + 1] !== 0x90 && f[next + 1] !== 0xd9)) {
      throw corruptFrame(t, `is corrupt: ${hex2(f[next])} ${hex2(f[next + 1])} at byte ${next}, after the tile-part at byte ${pos}, where SOT (ff 90) or EOC (ff d9) belongs`);
    }
    if (f[next + 1] === 0xd9) return next + 2;
    pos = next;
  }
}

/**
 * The codestream header against the DICOM header, as for a JPEG Lossless frame (jpeg-lossless.ts):
 * the same size and one component per sample; a precision of 2 to 16 and at most Bits Allocated
 * (above Bits Stored, the samples are masked to it as uncompressed ones are; below, taken for
 * unsigned samples and refused for signed ones, whose sign bit it would move); and where the
 * codestream says, the same sign as Pixel Representation.
 */
export function checkCodestream(h: CodestreamHeader, t: CodecTarget): void {
  if (h.width !== t.columns || h.height !== t.rows) throw corruptFrame(t, `is ${h.width}x${h.height}; the header says ${t.columns}x${t.rows}`);
  if (h.components !== t.samples) throw corruptFrame(t, `has ${h.components} component(s); the header says ${t.samples} sample(s) per pixel`);
  if (h.precision < 2 || h.precision > 16) throw corruptFrame(t, `has precision ${h.precision}; 2 to 16 bits are read`);
  if (h.precision > t.bitsAllocated) throw corruptFrame(t, `has precision ${h.precision}; the header says ${t.bitsAllocated} bits allocated`);
  if (h.precision < t.bitsStored && t.signed) throw corruptFrame(t, `has precision ${h.precision}, below the ${t.bitsStored} bits stored of signed samples, whose sign bit it would move`);
  if (h.signed !== undefined && h.signed !== t.signed) {
    throw corruptFrame(t, `has ${h.signed ? 'signed' : 'unsigned'} samples; the header's Pixel Representation (0028,0103) says ${t.signed ? 'signed' : 'unsigned'}`);
  }
}

/** Samples of `bytes` bytes each (1 or 2, as a codec gives them) -> Bits Allocated bytes each, little endian. */
function widen(samples: Uint8Array, bytes: number, t: CodecTarget): Uint8Array {
  if (bytes === t.bitsAllocated / 8) return samples;
  const out = new Uint8Array(samples.length * 2);
  for (let i = 0; i < samples.length; i++) out[2 * i] = samples[i];
  return out;
}

/** An Emscripten module factory (the glue's default export). */
type Factory<T> = (overrides: Record<string, unknown>) => Promise<T>;

interface EmscriptenModule {
  /** The message of a C++ exception the glue threw as a pointer. */
  getExceptionMessage?: (e: number) => string | [string, string];
}

/** What a codec's run throws: the codec's own words, for the caller's 422. */
class CodecFailure extends Error {}

/**
 * One Emscripten build, instantiated from its compiled module (or its loader's) on first use. `run` gives
 * the codec's own words on failure (a C++ exception's message, or the last line it printed) as a
 * CodecFailure; after a trap the instance is dropped, as its memory may be in any state.
 */
export class EmscriptenCodec<T extends EmscriptenModule> {
  private instance: Promise<T> | null = null;
  /** The loader's module, kept past a dropped instance so that a trap loads nothing again. */
  private compiled: Promise<WebAssembly.Module> | null = null;
  /** What the codec printed during the current run (OpenJPEG reports errors only so). */
  private printed: string[] = [];

  /** `glue`: the build's Emscripten glue (its module factory), imported when first needed. */
  constructor(private readonly glue: () => Promise<Factory<T>>, private readonly wasm: WasmSource) {}

  private wasmModule(): Promise<WebAssembly.Module> {
    const wasm = this.wasm;
    if (typeof wasm !== 'function') return Promise.resolve(wasm);
    // the cast: WebAssembly.Module's type is an empty interface, which `typeof` cannot tell from a function
    this.compiled ??= (wasm as () => Promise<WebAssembly.Module>)().catch((e: unknown) => {
      this.compiled = null;
      throw e;
    });
    return this.compiled;
  }

  private module(): Promise<T> {
    this.instance ??= Promise.all([this.glue(), this.wasmModule()]).then(([factory, wasm]) => new Promise<T>((resolve, reject) => {
      const print = (line: string) => this.printed.push(String(line));
      const instantiateWasm = (imports: WebAssembly.Imports, receive: (instance: WebAssembly.Instance) => void) => {
        WebAssembly.instantiate(wasm, imports).then(receive, reject);
        return {};
      };
      factory({ instantiateWasm, print, printErr: print }).then(resolve, reject);
    })).catch((e: unknown) => {
      this.instance = null;
      throw e;
    });
    return this.instance;
  }

  async run<R>(f: (m: T, printed: readonly string[]) => R): Promise<R> {
    const m = await this.module();
    this.printed = [];
    try {
      return f(m, this.printed);
    } catch (e) {
      if (e instanceof CodecFailure) throw e;
      if (typeof e === 'number') {
        const message = m.getExceptionMessage?.(e);
        throw new CodecFailure(Array.isArray(message) ? message[1] || message[0] : (message ?? `C++ exception ${e}`));
      }
      this.instance = null;
      throw new CodecFailure(e instanceof Error ? e.message : String(e));
    }
  }
}

interface FrameInfo {
  width: number;
  height: number;
  bitsPerSample: number;
  componentCount: number;
}

/** The embind decoder classes both builds share the shape of. */
interface EmscriptenDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  decode(): void;
  getDecodedBuffer(): Uint8Array;
  getFrameInfo(): FrameInfo;
  delete(): void;
}

interface CharLSModule extends EmscriptenModule {
  JpegLSDecoder: new () => EmscriptenDecoder & { getInterleaveMode(): number };
}

interface OpenJpegModule extends EmscriptenModule {
  J2KDecoder: new () => EmscriptenDecoder;
}

/**
 * One JPEG-LS or JPEG 2000 frame -> its samples: what dicom.ts asks of its caller. DicomCodecs
 * decodes in this thread (workerd, the browser SDK); on Node, codec-thread.ts posts the frame to a
 * worker thread running DicomCodecs, under a deadline.
 */
export interface FrameDecoders {
  jpegLs(f: Uint8Array, t: CodecTarget): Promise<CodecFrame>;
  jpeg2000(f: Uint8Array, t: CodecTarget): Promise<CodecFrame>;
}

/** Both codecs of one isolate, decoding in its thread. */
export class DicomCodecs implements FrameDecoders {
  readonly charls: EmscriptenCodec<CharLSModule>;
  readonly openjpeg: EmscriptenCodec<OpenJpegModule>;

  constructor(modules: DicomCodecModules) {
    this.charls = new EmscriptenCodec(async () => (await import('@cornerstonejs/codec-charls/decodewasmjs')).default as Factory<CharLSModule>, modules.charls);
    this.openjpeg = new EmscriptenCodec(async () => (await import('@cornerstonejs/codec-openjpeg/decodewasmjs')).default as Factory<OpenJpegModule>, modules.openjpeg);
  }

  jpegLs(f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
    return decodeJpegLs(this, f, t);
  }

  jpeg2000(f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
    return decodeJpeg2000(this, f, t);
  }
}

/**
 * Decodes `f` with a decoder of `codec`, freed afterwards, and checks what it reports against the
 * header read before; the samples are copied out of the codec's memory.
 */
async function decodeWith<T extends EmscriptenModule>(
  codec: EmscriptenCodec<T>, make: (m: T) => EmscriptenDecoder, f: Uint8Array, h: CodestreamHeader, t: CodecTarget,
  failed: (d: EmscriptenDecoder, printed: readonly string[]) => string | null, planar: (d: EmscriptenDecoder) => 0 | 1,
  offset = 0,
): Promise<CodecFrame> {
  try {
    return await codec.run((m, printed) => {
      const d = make(m);
      try {
        d.getEncodedBuffer(f.length).set(f);
        d.decode();
        const fault = failed(d, printed);
        if (fault !== null) throw new CodecFailure(fault);
        const info = d.getFrameInfo();
        if (info.width !== h.width || info.height !== h.height || info.componentCount !== h.components || info.bitsPerSample !== h.precision) {
          throw new CodecFailure(`it decoded to ${info.width}x${info.height}, ${info.componentCount} component(s) of ${info.bitsPerSample} bits, not what its header says`);
        }
        const bytes = h.precision > 8 ? 2 : 1;
        const decoded = d.getDecodedBuffer();
        const want = h.width * h.height * h.components * bytes;
        if (decoded.length !== want) throw new CodecFailure(`it decoded to ${decoded.length} bytes, not ${want}`);
        // a plain copy (OpenJPEG's view is a Uint8ClampedArray), `offset` taken off each sample modulo 256
        const samples = new Uint8Array(decoded);
        if (offset !== 0) for (let i = 0; i < samples.length; i++) samples[i] -= offset;
        return { raw: widen(samples, bytes, t), planar: planar(d) };
      } finally {
        d.delete();
      }
    });
  } catch (e) {
    if (e instanceof CodecFailure) throw corruptFrame(t, `could not be decoded: ${e.message}`);
    throw e;
  }
}

/** A JPEG-LS frame (1.2.840.10008.1.2.4.80 and .81): interleaved unless its scan is not (ILV 0: planes). */
export async function decodeJpegLs(codecs: DicomCodecs, f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
  const h = jpegLsHeader(f, t);
  checkCodestream(h, t);
  return decodeWith(codecs.charls, (m) => new m.JpegLSDecoder(), f, h, t, () => null,
    (d) => (t.samples > 1 && (d as InstanceType<CharLSModule['JpegLSDecoder']>).getInterleaveMode() === 0 ? 1 : 0));
}

/** A JPEG 2000 codestream frame (1.2.840.10008.1.2.4.90 and .91): OpenJPEG gives the components interleaved. */
export async function decodeJpeg2000(codecs: DicomCodecs, f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
  const h = j2kHeader(f, t);
  checkCodestream(h, t);
  const codestream = f.subarray(0, j2kCodestreamLength(f, h.tiles, t));
  // OpenJPEG reports a failure by an empty image and an [ERROR] line, not by throwing
  const failed = (d: EmscriptenDecoder, printed: readonly string[]) =>
    d.getFrameInfo().width !== 0 ? null : (printed.find((l) => l.startsWith('[ERROR]'))?.slice(7).trim() ?? 'OpenJPEG gave no image');
  // the build clamps one component of 8 bits or fewer to 0..255, which zeroes a signed one's
  // negative samples: such a codestream is decoded as unsigned (Ssiz's sign bit cleared), which
  // only adds OpenJPEG's level shift of 2^(P-1) to every sample, taken off again
  if (h.signed && h.components === 1 && h.precision <= 8) {
    const unsigned = codestream.slice();
    unsigned[42] &= 0x7f;
    return decodeWith(codecs.openjpeg, (m) => new m.J2KDecoder(), unsigned, h, t, failed, () => 0, 1 << (h.precision - 1));
  }
  return decodeWith(codecs.openjpeg, (m) => new m.J2KDecoder(), codestream, h, t, failed, () => 0);
}
