// A published manifest with one bit flipped in a shard's first_id, for the tests that an item
// lookup through it is refused (test/api.node.test.ts, test/workers/manifest.test.ts). Item ids
// all end in '0', so the flip ('0' to '1') moves the second shard's start past its first item
// and into no other shard's range: without a checksum the manifest passes every other check,
// and that item is looked for in the first shard, a silent 404. And a writer state whose manifest
// has a damaged byte, for the tests that it is refused (test/store.test.ts) and that one such
// collection leaves the others served and swept (test/node-entry.test.ts, test/orphans.test.ts).

/** Items spanning at least three shards of `perShard` items, 16-bit codes. */
export const damageItems = (perShard: number) =>
  Array.from({ length: 2 * perShard + 2 }, (_, i) => ({ id: `i${String(i).padStart(4, '0')}0`, code: '0001' }));

/** `stored` with its second shard's first_id damaged, and the id of that shard's first item. */
export function flipFirstId(stored: Uint8Array): { damaged: Uint8Array; id: string } {
  const [, second] = [...new TextDecoder().decode(stored).matchAll(/"first_id":"([^"]*)"/g)];
  const damaged = stored.slice();
  damaged[second.index + second[0].length - 2] ^= 0x01; // ASCII: the text's index is the byte's
  return { damaged, id: second[1] };
}

/** A stored writer state (head.ts, encodeHead) of generation 1, its manifest's generation read as 3: its checksum no longer matches. */
export function damageHead(stored: string): string {
  const head = JSON.parse(stored) as { manifest: string };
  return JSON.stringify({ ...head, manifest: head.manifest.replace('"generation":1', '"generation":3') });
}
