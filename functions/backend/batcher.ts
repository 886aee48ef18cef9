// Dynamic micro-batching for the inference backend: requests queue up, and one batch at a time
// runs as soon as `maxBatch` inputs are waiting or the oldest has waited `maxWaitMs`. The queue
// is bounded: past `maxQueue` waiting inputs a request is refused at once (the HTTP layer turns
// that into 503 + Retry-After) instead of letting latency and memory grow without limit.
// A request whose inputs cost something to make (the backend decodes images) is admitted before
// they are made (submitMade), its places held meanwhile: a burst past the bound is refused
// before any of it is decoded.
// A request whose client hangs up (its AbortSignal fires) leaves the queue at once, so that the
// model's time goes to live clients; what of it already runs just ends. A maker checks
// throwIfAborted between inputs, so that the backend decodes no more of such a request's images.
// close() refuses what waits and lets the running batch end, so that the model can be released.

export interface BatcherOptions {
  maxBatch: number;
  maxWaitMs: number;
  maxQueue: number;
}

export class QueueFullError extends Error {
  override name = 'QueueFullError';
  constructor(readonly retryAfterS: number) {
    super('the inference queue is full');
  }
}

/** Refused because the backend is stopping; a QueueFullError, so that HTTP answers it 503 + Retry-After. */
export class BatcherClosedError extends QueueFullError {
  override name = 'BatcherClosedError';
  override message = 'the backend is stopping';
  constructor() {
    super(1);
  }
}

/** The request's signal fired (its client hung up) before its inputs ran; none of them was run. */
export class RequestAbortedError extends Error {
  override name = 'RequestAbortedError';
  constructor() {
    super('the request was aborted');
  }
}

/** Throws RequestAbortedError once `signal` has fired: what a hung-up request still has to do is not done. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new RequestAbortedError();
}

interface Pending<I, O> {
  input: I;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
  /** Every input of the request this one came in. */
  request: Pending<I, O>[];
}

export class MicroBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** The batch being run, if any: close() waits for it. */
  private running: Promise<void> | null = null;
  private closed = false;
  /** Places held by admitted requests whose inputs are still being made (submitMade). */
  private held = 0;
  /** Mean time per input of the batches run so far: the Retry-After estimate. */
  private msPerInput = 5;

  constructor(
    private readonly runBatch: (inputs: I[]) => Promise<O[]>,
    private readonly opts: BatcherOptions,
  ) {}

  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Queues a request of several inputs; all or none are admitted. Once `signal` fires, its inputs
   * still waiting are dropped (their places freed) and the request fails with RequestAbortedError.
   */
  submit(inputs: I[], signal?: AbortSignal): Promise<O[]> {
    this.admit(inputs.length, signal);
    const mine: Pending<I, O>[] = [];
    const all = inputs.map((input) => new Promise<O>((resolve, reject) => mine.push({ input, resolve, reject, request: mine })));
    this.queue.push(...mine);
    if (signal) {
      const drop = () => {
        const waiting = new Set(mine.filter((p) => this.queue.includes(p)));
        this.queue = this.queue.filter((p) => !waiting.has(p));
        for (const p of waiting) p.reject(new RequestAbortedError());
      };
      signal.addEventListener('abort', drop, { once: true });
      // A signal may outlive the request (one shared by several): once every input has run or
      // been dropped, it must not hold them.
      void Promise.allSettled(all).then(() => signal.removeEventListener('abort', drop));
    }
    this.schedule();
    return Promise.all(all);
  }

  /**
   * submit for a request of `n` inputs that `make` makes: admitted (or refused, as submit refuses)
   * before `make` runs, its `n` places held until they are queued, so that what making costs (the
   * backend's decode of a request's images) is spent on admitted requests only.
   */
  async submitMade(n: number, make: () => Promise<I[]>, signal?: AbortSignal): Promise<O[]> {
    this.admit(n, signal);
    this.held += n;
    let inputs: I[];
    try {
      inputs = await make();
    } finally {
      this.held -= n;
    }
    // checked again: the batcher may have closed, or the client hung up, while they were made
    return this.submit(inputs, signal);
  }

  /** Throws unless `n` more inputs may wait now. */
  private admit(n: number, signal?: AbortSignal): void {
    if (this.closed) throw new BatcherClosedError();
    throwIfAborted(signal);
    const taken = this.queue.length + this.held;
    if (taken + n > this.opts.maxQueue) throw new QueueFullError(Math.max(1, Math.ceil((taken * this.msPerInput) / 1000)));
  }

  private schedule(): void {
    if (this.running) return; // the running batch schedules the next when it ends
    if (this.queue.length >= this.opts.maxBatch) {
      this.clearTimer();
      this.drain();
    } else if (this.queue.length > 0 && !this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.drain();
      }, this.opts.maxWaitMs);
    }
  }

  /**
   * Refuses what waits and new requests, and resolves once the running batch has ended. Called
   * after the HTTP server has closed, when whoever still waits has hung up: its work is dropped,
   * and the model is not released under (or before) a batch about to run.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.clearTimer();
    for (const p of this.queue.splice(0)) p.reject(new BatcherClosedError());
    await this.running;
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private drain(): void {
    if (this.running || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxBatch);
    this.running = this.run(batch).finally(() => {
      this.running = null;
      // Whatever queued while the model ran is already older than maxWaitMs: run it now.
      this.drain();
    });
  }

  private async run(batch: Pending<I, O>[]): Promise<void> {
    const t0 = performance.now();
    try {
      const out = await this.runBatch(batch.map((p) => p.input));
      batch.forEach((p, i) => p.resolve(out[i]));
      this.msPerInput = 0.8 * this.msPerInput + (0.2 * (performance.now() - t0)) / batch.length;
    } catch (e) {
      batch.forEach((p) => p.reject(e));
      // One failed input fails its whole request: what of it still waits would be answers nobody reads.
      const failed = new Set(batch.map((p) => p.request));
      const unread = this.queue.filter((p) => failed.has(p.request));
      this.queue = this.queue.filter((p) => !failed.has(p.request));
      unread.forEach((p) => p.reject(e));
    }
  }
}
