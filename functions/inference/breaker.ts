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
  private probing = false;
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
    if (s === 'open' || this.probing) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.openedAt = null;
    this.probing = false;
  }

  failure(): void {
    this.consecutive++;
    if (this.probing || this.consecutive >= this.opts.failures) this.openedAt = this.now();
    this.probing = false;
  }
}
