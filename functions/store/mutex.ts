// Async mutex: serialises the writes to one collection inside one process (Node) or one
// Durable Object instance (Workers, where KV awaits would otherwise let requests interleave),
// and a Durable Object's read-then-set of its alarm.

export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every previously queued call has settled; a failure does not poison the queue. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
