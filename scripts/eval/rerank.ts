// What content-guided re-ranking (functions/search/rerank.ts) does to retrieval: encodes the
// val, query and db splits of a ../shared/data set through the service's path, then ranks each
// query against db exactly as a search does (pool = nearest max(4k, 100) by (distance, id),
// re-ranked by the final score) for a grid of content weights, and prints mAP@100 per split
// and weight. The default weight is the best one on `val`; `query` only reports.
//   npm run eval:rerank -- --model models/NAME.onnx --data ../shared/data/SET [--json]
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compareIdBytes } from '../../wasm/hamming.ts';
import { loadCard } from '../../functions/encode/card.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { descriptor, loadNodeEncoder, packCode, row } from '../../functions/encode/model.ts';
import { rerank } from '../../functions/search/rerank.ts';
import { poolSize } from '../../functions/search/search.ts';
import { encodeMembers } from '../data/encode-set.ts';
import { ofClasses, readManifest, TarReader, type ManifestRow } from '../data/shared-data.ts';
import { hammingMatrix, tieAwareApAtK } from './metrics.ts';

const K = 100;
const WEIGHTS = [0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1];

interface Split {
  rows: ManifestRow[];
  codes: Uint8Array;
  descs: Int8Array[];
}

/** AP@k of one ranked list, normalised by min(R, k) as the tie-aware metric is. */
function apAtK(rel: boolean[], R: number, k: number): number {
  if (R === 0) return 0;
  let hits = 0, sum = 0;
  for (let i = 0; i < Math.min(k, rel.length); i++) {
    if (rel[i]) sum += ++hits / (i + 1);
  }
  return sum / Math.min(R, k);
}

async function main() {
  const { values: v } = parseArgs({ options: { model: { type: 'string' }, data: { type: 'string' }, json: { type: 'boolean', default: false } }, strict: true });
  if (!v.model || !v.data) throw new Error('usage: npm run eval:rerank -- --model models/NAME.onnx --data ../shared/data/SET [--json]');
  const { card, onnx } = await loadCard(resolve(v.model));
  await initNodeImageCodecs();
  const encoder = await loadNodeEncoder(onnx, card);
  const dataDir = resolve(v.data);
  const manifest = ofClasses(await readManifest(dataDir), card.classes);
  const tar = await TarReader.open(`${dataDir}/images.tar`);
  const bytes = card.bits / 8;
  const encodeSplit = async (name: string): Promise<Split> => {
    const rows = manifest.filter((r) => r.split === name);
    const codes = new Uint8Array(rows.length * bytes);
    const descs: Int8Array[] = [];
    await encodeMembers(tar, rows.map((r) => r.path), encoder, 64, (_p, out, done) => {
      for (let i = 0; i < out.n; i++) {
        const u = row(out.u, card.bits, i);
        codes.set(packCode(u), (done - out.n + i) * bytes);
        descs.push(descriptor(u));
      }
      process.stderr.write(`\r${name}: ${done}/${rows.length}`);
    });
    process.stderr.write('\n');
    return { rows, codes, descs };
  };
  let db: Split, splits: Record<string, Split>;
  try {
    db = await encodeSplit('db');
    splits = { val: await encodeSplit('val'), query: await encodeSplit('query') };
  } finally {
    await tar.close();
    await encoder.close();
  }
  // db rows in id order: a counting pass over distances then yields (distance, id) order.
  const byId = db.rows.map((_, j) => j).sort((a, b) => compareIdBytes(db.rows[a].path, db.rows[b].path));
  const R = new Map<string, number>();
  for (const r of db.rows) R.set(r.label, (R.get(r.label) ?? 0) + 1);
  const pool = poolSize(K);
  const results: Record<string, unknown>[] = [];
  for (const [name, s] of Object.entries(splits)) {
    const D = hammingMatrix(s.codes, db.codes, bytes);
    const nd = db.rows.length;
    const sums = { tie_aware: 0, id_ties: 0, ...Object.fromEntries(WEIGHTS.map((w) => [`w${w}`, 0])) } as Record<string, number>;
    s.rows.forEach((q, i) => {
      const d = D.subarray(i * nd, (i + 1) * nd);
      const rel = db.rows.map((r) => r.label === q.label);
      sums.tie_aware += tieAwareApAtK(d, rel, K);
      const buckets: number[][] = Array.from({ length: card.bits + 1 }, () => []);
      for (const j of byId) buckets[d[j]].push(j);
      const cands = buckets.flat().slice(0, pool);
      const Rq = R.get(q.label) ?? 0;
      sums.id_ties += apAtK(cands.slice(0, K).map((j) => rel[j]), Rq, K);
      for (const w of WEIGHTS) {
        const ranked = rerank(cands.map((j) => ({ id: db.rows[j].path, distance: d[j], descriptor: db.descs[j] })), card.bits, s.descs[i], w);
        sums[`w${w}`] += apAtK(ranked.slice(0, K).map((r) => rel[cands[r.index]]), Rq, K);
      }
    });
    const n = s.rows.length;
    const row = { eval: 'rerank', model: card.name, split: name, n_query: n, n_db: nd, pool,
      map100_hamming_tie_aware: sums.tie_aware / n, map100_hamming_id_ties: sums.id_ties / n,
      map100_by_weight: WEIGHTS.map((w) => ({ w, map100: sums[`w${w}`] / n })) };
    results.push(row);
    if (v.json) console.log(JSON.stringify(row));
    else console.log(name, JSON.stringify(row));
  }
  const val = results.find((r) => r.split === 'val')!.map100_by_weight as { w: number; map100: number }[];
  // The smallest weight among the best on val: ties go to the plainer ranking.
  const best = val.reduce((b, x) => (x.map100 > b.map100 ? x : b)).w;
  console.log(JSON.stringify({ eval: 'rerank', model: card.name, best_weight_on_val: best }));
}

main().catch((e: unknown) => {
  console.error(`eval:rerank: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
