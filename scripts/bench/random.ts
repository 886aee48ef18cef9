// The benchmarks' synthetic codes (splitmix32): the same seed gives the same index on every
// machine and every run, so runs compare like with like.
export function* randomWords(seed: number): Generator<number> {
  let s = seed >>> 0;
  for (;;) {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    yield (z ^ (z >>> 16)) >>> 0;
  }
}

/** Fills `out` (a multiple of 4 bytes) with the words of `seed`, little-endian. */
export function fillRandom(out: Uint8Array, seed: number): void {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length >> 2);
  const gen = randomWords(seed);
  for (let i = 0; i < words.length; i++) words[i] = gen.next().value as number;
}
