// Retrieval evaluation of a shipped model through the TypeScript path (issue 3, item 7):
// encodes the `db` and `query` splits of a ../shared/data set, or of a class folder split by the
// same md5 rule as the training CLI, with the service's decoding, preprocessing and
// onnxruntime-node, then scores query-vs-db Hamming ranking with the same tie-aware mAP@100,
// mAP@1000 and P@10 as models/medhash_model/metrics.py.
//   npm run eval:retrieval -- --model models/NAME.onnx --data ../shared/data/SET|CLASS_FOLDER [--json] [--batch 64] [--cuda]
// Prints one JSON line on stdout; a progress bar goes to stderr.
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { loadCard } from '../../functions/encode/card.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder, packCode, row } from '../../functions/encode/model.ts';
import { encodeMembers } from '../data/encode-set.ts';
import { openDataSet } from '../data/shared-data.ts';
import { evaluateCodes } from './metrics.ts';

async function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      data: { type: 'string' },
      json: { type: 'boolean', default: false },
      batch: { type: 'string', default: '64' },
      cuda: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!v.model || !v.data) throw new Error('usage: npm run eval:retrieval -- --model models/NAME.onnx --data ../shared/data/SET|CLASS_FOLDER [--json] [--batch N] [--cuda]');
  const batch = Number(v.batch);
  if (!Number.isInteger(batch) || batch < 1 || batch > 1024) throw new Error('--batch must be an integer from 1 to 1024');
  const dataDir = resolve(v.data);

  const { card, onnx } = await loadCard(resolve(v.model));
  await initNodeImageCodecs();
  const encoder = await loadNodeEncoder(onnx, card, { cuda: v.cuda });
  const { rows, reader } = await openDataSet(dataDir, card.classes);
  const db = rows.filter((r) => r.split === 'db');
  const query = rows.filter((r) => r.split === 'query');
  if (!db.length || !query.length) {
    await reader.close();
    throw new Error(`${dataDir} has no db or no query images`);
  }

  const bytes = card.bits / 8;
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `encoding (${encoder.runtime}) |{bar}| {value}/{total} images | {eta_formatted} left`, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(db.length + query.length, 0);
  const codesOf = async (split: typeof db, offset: number) => {
    const codes = new Uint8Array(split.length * bytes);
    await encodeMembers(reader, split.map((r) => r.path), encoder, batch, (_paths, out, done) => {
      for (let i = 0; i < out.n; i++) codes.set(packCode(row(out.u, card.bits, i)), (done - out.n + i) * bytes);
      bar.update(offset + done);
    });
    return codes;
  };
  let dbCodes: Uint8Array;
  let qCodes: Uint8Array;
  try {
    dbCodes = await codesOf(db, 0);
    qCodes = await codesOf(query, db.length);
  } finally {
    bar.stop();
    await reader.close();
    await encoder.close();
  }
  const m = evaluateCodes(qCodes, query.map((r) => r.label), dbCodes, db.map((r) => r.label), card.bits);
  const result = {
    eval: 'retrieval',
    model: card.name,
    model_id: card.model_id,
    data: basename(dataDir),
    bits: card.bits,
    runtime: encoder.runtime,
    map100: m.map100,
    map1000: m.map1000,
    p10: m.p10,
    n_db: m.n_db,
    n_query: m.n_query,
    card_map100: card.metrics.map100,
  };
  if (v.json) console.log(JSON.stringify(result));
  else {
    console.log(`${card.name} on ${result.data} (${card.bits} bits, ${m.n_query} queries vs ${m.n_db} db, ${encoder.runtime})`);
    console.log(`  mAP@100 ${m.map100.toFixed(4)} (card ${card.metrics.map100.toFixed(4)})  mAP@1000 ${m.map1000.toFixed(4)}  P@10 ${m.p10.toFixed(4)}`);
  }
}

main().catch((e: unknown) => {
  console.error(`eval:retrieval: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
