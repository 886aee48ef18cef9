// What decoding and preprocessing keep after a request: images of every side the limits allow
// (each a PNG of a few dozen bytes) must not grow the process for good.
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { beforeAll, expect, it } from 'vitest';
import { loadCard } from '../../functions/encode/card.ts';
import { decodeImage } from '../../functions/encode/image.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { preprocess } from '../../functions/encode/preprocess.ts';
import { png } from './png-fixtures.ts';
import { MODELS } from './fixtures.ts';

beforeAll(() => initNodeImageCodecs());

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
// Several collections with turns of the event loop between them: an ArrayBuffer's memory is
// given back by a finalizer after the collection that found it dead, so one gc() leaves tens of
// MB of garbage counted in either direction.
const retained = async () => {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

it('images of a thousand different sizes leave no more than a few MB behind', async () => {
  const { card } = await loadCard(join(MODELS, 'mednist-darf-b64.onnx'));
  const run = async (from: number, to: number) => {
    for (let w = from; w <= to; w++) {
      const t = preprocess(await decodeImage(png({ width: w, height: 1, colorType: 0, bitDepth: 1 }), 'image/png'), card.input);
      expect(t).toHaveLength(card.input.channels * card.input.size ** 2);
    }
  };
  // The first sizes fill the cache and grow the decoder's wasm memory to its working size; only
  // what the others leave is counted.
  await run(3073, 3200);
  const before = await retained();
  await run(3201, 4096);
  // unbounded, the resize weights of these 896 sides alone would hold about 50 MB
  const kept = ((await retained()) - before) / 2 ** 20;
  expect(kept).toBeLessThan(16);
});
