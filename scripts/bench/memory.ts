// Peak memory of one operation, for the memory benches (spread-write.ts, search-memory.ts): what
// the process holds (V8's heap plus array buffers, after a full GC, so garbage is not counted),
// sampled around the KV calls the operation makes. Needs node --expose-gc.
import type { KV } from '../../functions/store/kv.ts';

const gc = (globalThis as { gc?: () => void }).gc;

export class MemoryProbe {
  private base = 0;
  private peak = 0;

  constructor() {
    if (!gc) throw new Error('run with node --expose-gc (see the header)');
  }

  private held(): number {
    gc!();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  }

  /** From now on the peak is counted over what the process holds now. */
  start(): void {
    this.base = this.held();
    this.peak = this.base;
  }

  /** MB held at the peak since start(), over what was held then. */
  peakExtraMb(): number {
    return (this.peak - this.base) / 2 ** 20;
  }

  /** `kv`, sampling before and after each read and before each write. */
  wrap(kv: KV): KV {
    const sample = () => {
      this.peak = Math.max(this.peak, this.held());
    };
    return {
      async get(key) {
        sample();
        const v = await kv.get(key);
        sample();
        return v;
      },
      async put(key, value) {
        sample();
        await kv.put(key, value);
      },
      delete: (key) => kv.delete(key),
      list: (prefix) => kv.list(prefix),
    };
  }
}
