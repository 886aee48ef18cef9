// CRC-32 (IEEE 802.3, the zlib/PNG polynomial) used as the shard checksum. Chosen over a
// cryptographic hash because it is synchronous on every runtime and matches zlib.crc32, so a
// shard can be checked with stock tools; integrity against tampering is the content address's job.

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
