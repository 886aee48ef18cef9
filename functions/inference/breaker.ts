// Circuit breaker in front of the inference backend. Closed: calls go through. After
// `failures` consecutive failures it opens: calls skip the backend (the caller falls back at
// once instead of waiting out a timeout per request) for `cooldownMs`; then one probe call is
// let through (half-open), and its outcome closes or re-opens the circuit.

export interface BreakerOptions {
  failures: number;
  cooldownMs: number;
  now?: () => number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export class CircuitBreaker {
  private consecutive = 0;
  private openedAt: number | null = null;
  /** When the half-open probe went out; null when none is out. */
  private probeAt: number | null = null;
  private readonly now: () => number;

  constructor(private readonly opts: BreakerOptions) {
    this.now = opts.now ?? Date.now;
  }

  get state(): BreakerState {
    if (this.openedAt === null) return 'closed';
    return this.now() - this.openedAt >= this.opts.cooldownMs ? 'half-open' : 'open';
  }

  /** Whether this call may go to the backend; in half-open only one call at a time may. */
  allow(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    // A probe may never report back: workerd drops a request's pending code when its client goes
    // away. Once it has been out for a cooldown, another goes, or the circuit would stay shut.
    if (s === 'open' || (this.probeAt !== null && this.now() - this.probeAt < this.opts.cooldownMs)) return false;
    this.probeAt = this.now();
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.openedAt = null;
    this.probeAt = null;
  }

  failure(): void {
    this.consecutive++;
    if (this.probeAt !== null || this.consecutive >= this.opts.failures) this.openedAt = this.now();
    this.probeAt = null;
  }
}
