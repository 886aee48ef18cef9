// The inference backend's micro-batcher and the edge's circuit breaker, on their own: batches
// form as specified, the queue bound is all-or-none (and counts the places of requests admitted
// before their inputs are made), an aborted request leaves the queue, close
// drops what waits and waits for the running batch, and the breaker opens, probes and closes.
import { describe, expect, it } from 'vitest';
import { BatcherClosedError, MicroBatcher, QueueFullError, RequestAbortedError } from '../functions/backend/batcher.ts';
import { CircuitBreaker } from '../functions/inference/breaker.ts';

/** A batcher whose batches echo their inputs once `release` is called; `runs` lists them as run. */
function heldBatcher(opts: { maxBatch: number; maxWaitMs: number; maxQueue: number }) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const runs: number[][] = [];
  const b = new MicroBatcher<number, number>(async (xs) => {
    runs.push(xs);
    await gate;
    return xs;
  }, opts);
  return { b, runs, release };
}

describe('MicroBatcher', () => {
  it('runs full batches at once, the rest after the wait, one batch at a time, answers in order', async () => {
    const batches: number[][] = [];
    let running = 0;
    const b = new MicroBatcher<number, number>(async (xs) => {
      expect(++running).toBe(1);
      batches.push(xs);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return xs.map((x) => x * 10);
    }, { maxBatch: 4, maxWaitMs: 2, maxQueue: 100 });
    const [a, c] = await Promise.all([b.submit([1, 2, 3, 4, 5]), b.submit([6])]);
    expect(a).toEqual([10, 20, 30, 40, 50]);
    expect(c).toEqual([60]);
    expect(batches).toEqual([[1, 2, 3, 4], [5, 6]]);
  });

  it('refuses a request that would overflow the queue, whole, and fails a batch whose run fails', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = new MicroBatcher<number, number>(async (xs) => {
      await gate;
      if (xs.includes(-1)) throw new Error('model failed');
      return xs;
    }, { maxBatch: 1, maxWaitMs: 1, maxQueue: 3 });
    const first = b.submit([1]);
    await new Promise((r) => setTimeout(r, 5)); // [1] is running, the queue is empty
    const queued = b.submit([2, 3]);
    expect(() => b.submit([4, 5])).toThrow(QueueFullError);
    expect(b.waiting).toBe(2);
    const failing = b.submit([-1]);
    release();
    expect(await first).toEqual([1]);
    expect(await queued).toEqual([2, 3]);
    await expect(failing).rejects.toThrow('model failed');
  });

  it('drops a waiting request once its signal fires: its inputs never run and its places in the queue are free again', async () => {
    const { b, runs, release } = heldBatcher({ maxBatch: 2, maxWaitMs: 1, maxQueue: 3 });
    const running = b.submit([1, 2]);
    const hungUp = new AbortController();
    const gone = b.submit([3, 4], hungUp.signal);
    gone.catch(() => {});
    const live = b.submit([5]);
    expect(() => b.submit([6, 7])).toThrow(QueueFullError); // 3 wait: full
    hungUp.abort();
    expect(b.waiting).toBe(1);
    await expect(gone).rejects.toBeInstanceOf(RequestAbortedError);
    const next = b.submit([6, 7]); // fits now
    release();
    expect(await running).toEqual([1, 2]);
    expect([await live, await next]).toEqual([[5], [6, 7]]);
    expect(runs).toEqual([[1, 2], [5, 6], [7]]);
  });

  it('a request whose batch fails: what of it still waits is dropped, not run', async () => {
    const runs: number[][] = [];
    const b = new MicroBatcher<number, number>(async (xs) => {
      runs.push(xs);
      if (xs.includes(1)) throw new Error('model failed');
      return xs;
    }, { maxBatch: 2, maxWaitMs: 1, maxQueue: 8 });
    const failing = b.submit([1, 2, 3, 4]);
    const other = b.submit([5]);
    await expect(failing).rejects.toThrow('model failed');
    expect(await other).toEqual([5]);
    expect(runs).toEqual([[1, 2], [5]]);
  });

  it('an aborted request: what of it runs ends, what waits is dropped; one aborted before it queues is refused at once', async () => {
    const { b, runs, release } = heldBatcher({ maxBatch: 2, maxWaitMs: 1, maxQueue: 10 });
    const hungUp = new AbortController();
    const split = b.submit([1, 2, 3], hungUp.signal); // [1, 2] run, [3] waits
    split.catch(() => {});
    expect([runs, b.waiting]).toEqual([[[1, 2]], 1]);
    hungUp.abort();
    expect(b.waiting).toBe(0);
    await expect(split).rejects.toBeInstanceOf(RequestAbortedError);
    expect(() => b.submit([4], hungUp.signal)).toThrow(RequestAbortedError);
    expect(b.waiting).toBe(0);
    release();
    expect(await b.submit([5])).toEqual([5]);
    expect(runs).toEqual([[1, 2], [5]]);
  });

  it('submitMade admits before making: places held while inputs are made count against the bound, a refused request makes nothing', async () => {
    const { b, runs, release } = heldBatcher({ maxBatch: 2, maxWaitMs: 1, maxQueue: 3 });
    const running = b.submit([1, 2]);
    let finish!: () => void;
    const making = new Promise<void>((r) => (finish = r));
    const made: number[][] = [];
    const make = (xs: number[]) => async () => {
      made.push(xs);
      await making;
      return xs;
    };
    const slow = b.submitMade(2, make([3, 4]));
    // 2 of 3 places are held though nothing waits yet: a request of 2 is refused, unmade
    await expect(b.submitMade(2, make([5, 6]))).rejects.toBeInstanceOf(QueueFullError);
    expect(() => b.submit([5, 6])).toThrow(QueueFullError);
    // a request whose making fails gives its place back
    await expect(b.submitMade(1, async () => Promise.reject(new Error('bad image')))).rejects.toThrow('bad image');
    const fits = b.submitMade(1, make([7]));
    expect(made).toEqual([[3, 4], [7]]);
    finish();
    release();
    expect([await running, await slow, await fits]).toEqual([[1, 2], [3, 4], [7]]);
    expect(runs).toEqual([[1, 2], [3, 4], [7]]);
  });

  it('close refuses what waits and what comes after, and resolves once the running batch has ended', async () => {
    const { b, runs, release } = heldBatcher({ maxBatch: 2, maxWaitMs: 1, maxQueue: 10 });
    const running = b.submit([1, 2]);
    const queued = b.submit([3]);
    queued.catch(() => {});
    expect(runs).toEqual([[1, 2]]);
    let closed = false;
    const closing = b.close().then(() => (closed = true));
    await expect(queued).rejects.toBeInstanceOf(BatcherClosedError);
    expect(b.waiting).toBe(0);
    expect(() => b.submit([4])).toThrow(BatcherClosedError);
    await new Promise((r) => setTimeout(r, 5));
    expect(closed).toBe(false); // [1, 2] still runs
    release();
    await closing;
    expect(await running).toEqual([1, 2]);
    expect(runs).toEqual([[1, 2]]);
  });
});

describe('CircuitBreaker', () => {
  it('opens after N consecutive failures, lets one probe through after the cooldown, and closes on its success', () => {
    let now = 0;
    const cb = new CircuitBreaker({ failures: 2, cooldownMs: 100, now: () => now });
    cb.failure();
    cb.success(); // not consecutive
    cb.failure();
    expect(cb.allow()).toBe(true);
    cb.failure();
    expect(cb.state).toBe('open');
    expect(cb.allow()).toBe(false);
    now = 100;
    expect(cb.state).toBe('half-open');
    expect(cb.allow()).toBe(true); // the probe
    expect(cb.allow()).toBe(false); // only one at a time
    cb.failure(); // the probe failed: open again, for a full cooldown
    expect(cb.state).toBe('open');
    now = 200;
    expect(cb.allow()).toBe(true);
    cb.success();
    expect(cb.state).toBe('closed');
    expect(cb.allow()).toBe(true);
  });
});

describe('CircuitBreaker probe', () => {
  it('lets another probe through when one never reports back (workerd drops a cancelled request\'s code)', () => {
    let now = 0;
    const cb = new CircuitBreaker({ failures: 1, cooldownMs: 100, now: () => now });
    cb.failure();
    now = 100;
    expect(cb.allow()).toBe(true); // the probe, whose request is then cancelled: no success(), no failure()
    now = 150;
    expect(cb.allow()).toBe(false); // still out
    now = 200;
    expect(cb.allow()).toBe(true); // out for a whole cooldown: the next one probes
    expect(cb.allow()).toBe(false);
    cb.success();
    expect(cb.state).toBe('closed');
  });
});
