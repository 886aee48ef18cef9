// Codes on the wire: hex vs padded base64 told apart by length, for every code length.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Bits } from '../wasm/hamming.ts';
import { parseCode } from '../functions/api/codes.ts';
import { fromBase64, sha256Hex, toBase64, toHex } from '../functions/util/bytes.ts';

const BITS: Bits[] = [16, 32, 64, 128, 256];

describe('parseCode', () => {
  it('accepts hex (either case) and padded base64 of the right length, for every code length', () => {
    for (const bits of BITS) {
      fc.assert(
        fc.property(fc.uint8Array({ minLength: bits / 8, maxLength: bits / 8 }), (code) => {
          expect(parseCode(toHex(code), bits, 'code')).toEqual(code);
          expect(parseCode(toHex(code).toUpperCase(), bits, 'code')).toEqual(code);
          expect(parseCode(toBase64(code), bits, 'code')).toEqual(code);
        }),
        { numRuns: 50 },
      );
    }
  });

  it('names the expected lengths when the length fits neither form', () => {
    expect(() => parseCode('abc', 64, 'items.2.code')).toThrow(/16 hex characters or 12 base64 characters for a 64-bit collection; got 3/);
    try {
      parseCode('abc', 64, 'items.2.code');
    } catch (e) {
      expect(e).toMatchObject({ status: 400, code: 'invalid_code', field: 'items.2.code' });
    }
  });

  it('rejects malformed hex and base64 of a fitting length', () => {
    expect(() => parseCode('zz'.repeat(8), 64, 'code')).toThrow(/not valid hex/);
    expect(() => parseCode('!'.repeat(12), 64, 'code')).toThrow(/not valid padded base64/);
    expect(() => parseCode('ab!=', 16, 'code')).toThrow(/neither hex nor padded base64/);
  });

  it('base64 decoding is strict about padding and trailing bits', () => {
    expect(fromBase64('q80=')).toEqual(new Uint8Array([0xab, 0xcd]));
    expect(fromBase64('q80')).toBeNull();
    expect(fromBase64('q81=')).toBeNull(); // non-zero pad bits
    expect(fromBase64('q8==')).toBeNull(); // pad bits of a one-byte value
    expect(fromBase64('q=0=')).toBeNull();
  });
});

describe('sha256Hex', () => {
  it("is SHA-256 (FIPS 180-2 vector) and equals WebCrypto's digest for strings and bytes", async () => {
    expect(await sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    const web = async (b: Uint8Array) => toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>)));
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 100 }), async (bytes, text) => {
        expect(await sha256Hex(bytes)).toBe(await web(bytes));
        expect(await sha256Hex(text)).toBe(await web(new TextEncoder().encode(text)));
      }),
    );
  });
});
