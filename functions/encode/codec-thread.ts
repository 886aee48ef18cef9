// Node's JPEG-LS and JPEG 2000 frame decoders: each frame is posted to one worker thread
// (codec-worker.ts, which runs dicom-codecs.ts as every other runtime does in its own thread) and
// decoded there under a deadline, so that the event loop keeps serving while a codec runs. A
// malformed stream can make CharLS spin for seconds before it fails, whatever the image size (fixed
// upstream by CharLS PR #334, in no build available here): past its deadline the thread is
// terminated, the frame is a 422 `decode_timeout`, and the next frame gets a fresh thread. Frames
// wait their turn in a queue; a frame's deadline runs from the start of its own decode, and a
// thread's start (the first frame's wait) is not charged to any: it has a deadline of its own.
// The thread's memory is that of one frame at a time: its JavaScript heap is capped, and each
// codec's WebAssembly memory grows to the largest frame the caller's limits passed and is reused,
// or dropped with the thread.
//
// The project runs its TypeScript through tsx (scripts/medhash.mjs, tests), never compiled: the
// thread registers tsx itself before importing codec-worker.ts, as nothing is inherited from a
// parent that registered it through tsx's API (or from vitest, which transforms in its own way).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { MedhashError } from '../util/errors.ts';
import type { CodecFrame, CodecTarget, FrameDecoders } from './dicom-codecs.ts';
import type { FrameJob, FrameReply } from './codec-worker.ts';

/**
 * A frame's deadline: a base (a thread's first frame instantiates its codec) plus a time per
 * sample, set at over 3x the slowest legit frame measured (docs/ENCODING.md, "Decode deadline").
 */
export const DEADLINE_BASE_MS = 1000;
export const DEADLINE_NS_PER_SAMPLE = 500;

export function frameDeadlineMs(t: CodecTarget): number {
  return DEADLINE_BASE_MS + Math.ceil((t.rows * t.columns * t.samples * DEADLINE_NS_PER_SAMPLE) / 1e6);
}

/**
 * How long a thread may take to start (register tsx, import the codecs' glue, say it is ready):
 * about 0.2 s here, seconds on a loaded machine. A thread that has not started by then hangs,
 * and the frames waiting for it would wait forever; they fail instead, and the next frame tries a
 * fresh thread.
 */
export const START_DEADLINE_MS = 30_000;

/** The compiled CharLS and OpenJPEG, handed to each thread (a module is shared, not recompiled). */
export interface CodecThreadModules {
  charls: WebAssembly.Module;
  openjpeg: WebAssembly.Module;
}

const require = createRequire(import.meta.url);
const BOOT = `import(${JSON.stringify(pathToFileURL(require.resolve('tsx/esm/api')).href)})`
  + `.then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL('./codec-worker.ts', import.meta.url).href)}); })`;
/** The thread's JavaScript heap (its samples' buffers aside): far above what one frame's decode needs. */
const MAX_HEAP_MB = 256;

interface Pending {
  job: FrameJob;
  resolve: (frame: CodecFrame) => void;
  reject: (e: Error) => void;
}

export class CodecThread implements FrameDecoders {
  private worker: Worker | null = null;
  private ready = false;
  private readonly queue: Pending[] = [];
  private running: { pending: Pending; timer: ReturnType<typeof setTimeout> } | null = null;
  private starting: ReturnType<typeof setTimeout> | null = null;
  private nextId = 0;

  constructor(
    private readonly modules: CodecThreadModules,
    private readonly deadlineMs: (t: CodecTarget) => number = frameDeadlineMs,
    private readonly startDeadlineMs = START_DEADLINE_MS,
  ) {}

  jpegLs(f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
    return this.submit('jpegLs', f, t);
  }

  jpeg2000(f: Uint8Array, t: CodecTarget): Promise<CodecFrame> {
    return this.submit('jpeg2000', f, t);
  }

  /** Stops the thread; frames still queued or running fail. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    this.startEnded();
    this.failAll(new Error('the codec thread was closed'));
    await worker?.terminate();
  }

  private submit(kind: FrameJob['kind'], frame: Uint8Array, target: CodecTarget): Promise<CodecFrame> {
    return new Promise((resolve, reject) => {
      // a copy of the frame alone (a view would post its whole buffer, the request's), moved to the
      // thread; not frame.slice(), which on a Node Buffer is a view: its buffer, the caller's or
      // Node's shared pool, would be detached or refused (DataCloneError)
      this.queue.push({ job: { id: this.nextId++, kind, frame: new Uint8Array(frame), target }, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    if (this.running || this.queue.length === 0) return;
    if (!this.worker) return this.start();
    if (!this.ready) return;
    const pending = this.queue.shift() as Pending;
    const limit = this.deadlineMs(pending.job.target);
    this.running = { pending, timer: setTimeout(() => this.timedOut(limit), limit) };
    // while a frame decodes, the thread keeps the process alive (a CLI awaits it); idle, it does not
    this.worker.ref();
    this.worker.postMessage(pending.job, [pending.job.frame.buffer]);
  }

  private start(): void {
    let worker: Worker;
    try {
      worker = new Worker(BOOT, { eval: true, workerData: this.modules, resourceLimits: { maxOldGenerationSizeMb: MAX_HEAP_MB } });
    } catch (e) {
      // no thread could be made (ERR_WORKER_INIT_FAILED, EAGAIN: the process is at its thread or
      // pids limit): the frames waiting fail as for a thread that failed to start, the next frame
      // tries again; thrown on, it would end the process from the deadline's timer
      return this.failAll(new Error(`the codec thread could not start: ${e instanceof Error ? e.message : String(e)}`));
    }
    worker.unref();
    this.worker = worker;
    this.ready = false;
    // frames wait for this thread (start() runs only then): this timer keeps a CLI alive for them
    this.starting = setTimeout(() => {
      this.starting = null;
      this.worker = null;
      void worker.terminate();
      this.failAll(new Error(`the codec thread did not start within ${this.startDeadlineMs / 1000} s`));
    }, this.startDeadlineMs);
    // a thread that was replaced (terminated past a deadline) may still report: only the current one counts
    worker.on('message', (m: 'ready' | FrameReply) => worker === this.worker && this.message(m));
    worker.on('error', (e: Error) => worker === this.worker && this.failed(e));
    worker.on('exit', (code: number) => worker === this.worker && this.failed(new Error(`the codec thread exited with code ${code}`)));
  }

  private message(m: 'ready' | FrameReply): void {
    if (m === 'ready') {
      this.ready = true;
      this.startEnded();
      return this.pump();
    }
    const running = this.finish();
    if (!running || running.job.id !== m.id) return;
    if ('raw' in m) running.resolve({ raw: m.raw, planar: m.planar });
    else if ('error' in m) running.reject(new MedhashError(m.error.status, m.error.code, m.error.message, m.error.field));
    else running.reject(new Error(`the codec thread failed: ${m.failure}`));
    this.pump();
  }

  /** The running frame, no longer running. */
  private finish(): Pending | null {
    const running = this.running;
    if (!running) return null;
    clearTimeout(running.timer);
    this.running = null;
    this.worker?.unref();
    return running.pending;
  }

  private timedOut(limit: number): void {
    const running = this.finish();
    const worker = this.worker;
    this.worker = null;
    void worker?.terminate();
    if (running) {
      const t = running.job.target;
      running.reject(new MedhashError(422, 'decode_timeout',
        `DICOM ${t.syntax} frame took longer than ${(limit / 1000).toFixed(1)} s to decode; a valid frame of ${t.columns}x${t.rows} decodes in well under that: the stream is malformed`, 'image'));
    }
    this.pump();
  }

  /** The thread died: the frame it ran fails; if it never started, so do the queued ones, as a new thread would fail alike. */
  private failed(e: Error): void {
    const started = this.ready;
    this.worker = null;
    this.startEnded();
    const running = this.finish();
    running?.reject(new Error(`the codec thread failed: ${e.message}`));
    if (!started) this.failAll(new Error(`the codec thread could not start: ${e.message}`));
    this.pump();
  }

  private startEnded(): void {
    if (this.starting) clearTimeout(this.starting);
    this.starting = null;
  }

  private failAll(e: Error): void {
    this.finish()?.reject(e);
    for (const p of this.queue.splice(0)) p.reject(e);
  }
}
