// The benchmark's "best plain JS loop": exact top-k without wasm, same algorithm as the kernel
// (fused scan, running threshold, bounded max-heap, ties by row). Bench-only; the tested
// reference is wasm/reference.ts.
import type { Bits, TopK } from '../../wasm/hamming.ts';

/** SWAR popcount of a 32-bit value (JS has no popcount intrinsic; BigInt is far slower). */
function pop32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** Keys are dist * 2^32 + row: exact in a double, one compare orders by (dist, row). */
class Heap {
  readonly keys: Float64Array;
  len = 0;
  constructor(readonly cap: number) {
    this.keys = new Float64Array(cap);
  }
  /** Rows arrive in ascending order; returns the new acceptance threshold (dist < thr). */
  insert(d: number, row: number, thr: number): number {
    const h = this.keys;
    if (this.len < this.cap) {
      h[this.len++] = d * 4294967296 + row;
      if (this.len < this.cap) return thr;
      for (let i = (this.cap >> 1) - 1; i >= 0; i--) this.down(i, this.cap);
    } else {
      h[0] = d * 4294967296 + row;
      this.down(0, this.cap);
    }
    return Math.floor(h[0] / 4294967296);
  }
  down(i: number, n: number): void {
    const h = this.keys;
    const x = h[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1] > h[c]) c++;
      if (h[c] <= x) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = x;
  }
  result(): TopK {
    const sorted = this.keys.subarray(0, this.len).sort();
    const rows = new Uint32Array(this.len);
    const dists = new Uint16Array(this.len);
    for (let i = 0; i < this.len; i++) {
      dists[i] = Math.floor(sorted[i] / 4294967296);
      rows[i] = sorted[i] - dists[i] * 4294967296;
    }
    return { rows, dists };
  }
}

/** `table` must start 4-byte aligned (it is read through a Uint32Array / Uint16Array view). */
export function jsTopK(table: Uint8Array, bits: Bits, query: Uint8Array, k: number): TopK {
  const unit = bits === 16 ? 2 : 4;
  const words = bits === 16 ? new Uint16Array(table.buffer, table.byteOffset, table.length / 2)
    : new Uint32Array(table.buffer, table.byteOffset, table.length / 4);
  const q = bits === 16 ? new Uint16Array(query.slice().buffer) : new Uint32Array(query.slice().buffer);
  const w = bits / 8 / unit;
  const n = words.length / w;
  const heap = new Heap(Math.min(k, n));
  if (heap.cap === 0) return heap.result();
  let thr = bits + 1;
  // Specialised loops for the common lengths: a per-row inner loop costs ~2x in V8.
  if (w === 2) {
    const q0 = q[0], q1 = q[1];
    for (let r = 0, i = 0; r < n; r++, i += 2) {
      const d = pop32(words[i] ^ q0) + pop32(words[i + 1] ^ q1);
      if (d < thr) thr = heap.insert(d, r, thr);
    }
  } else if (w === 4) {
    const q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
    for (let r = 0, i = 0; r < n; r++, i += 4) {
      const d = pop32(words[i] ^ q0) + pop32(words[i + 1] ^ q1) + pop32(words[i + 2] ^ q2) + pop32(words[i + 3] ^ q3);
      if (d < thr) thr = heap.insert(d, r, thr);
    }
  } else {
    for (let r = 0, i = 0; r < n; r++, i += w) {
      let d = 0;
      for (let j = 0; j < w; j++) d += pop32(words[i + j] ^ q[j]);
      if (d < thr) thr = heap.insert(d, r, thr);
    }
  }
  return heap.result();
}
