// OOD evaluation of a shipped model through the TypeScript path (issue 5): encodes the model's
// in-distribution `query` split and each OOD set that `ood-eval` (models/medhash_model/
// ood_eval.py) wrote under models/oodsets/NAME/ with the service's decoding, preprocessing and
// onnxruntime-node, then scores the graph's ood_score against the card's threshold.
//   npm run eval:ood -- --model models/NAME.onnx [--json] [--oodsets models/oodsets] [--batch 64]
// Prints one JSON line per OOD set (OOD = positive class); progress goes to stderr.
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadCard } from '../../functions/encode/card.ts';
import { initNodeImageCodecs } from '../../functions/encode/image-node.ts';
import { loadNodeEncoder, type Encoder } from '../../functions/encode/model.ts';
import { encodeMembers } from '../data/encode-set.ts';
import { ofClasses, readManifest, sharedDataRoot, TarReader } from '../data/shared-data.ts';
import { auroc, flagged, fpr95 } from './ood-metrics.ts';
import { parseOodsetManifest } from './oodset.ts';

async function scores(tar: TarReader, members: string[], encoder: Encoder, batch: number, what: string): Promise<Float32Array> {
  const out = new Float32Array(members.length);
  await encodeMembers(tar, members, encoder, batch, (_p, o, done) => {
    out.set(o.oodScore, done - o.n);
    process.stderr.write(`\r${what}: ${done}/${members.length}`);
  });
  process.stderr.write('\n');
  return out;
}

async function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      json: { type: 'boolean', default: false },
      oodsets: { type: 'string', default: 'models/oodsets' },
      data: { type: 'string' },
      batch: { type: 'string', default: '64' },
    },
    strict: true,
  });
  if (!v.model) throw new Error('usage: npm run eval:ood -- --model models/NAME.onnx [--json] [--oodsets DIR] [--data ../shared/data] [--batch N]');
  const batch = Number(v.batch);
  if (!Number.isInteger(batch) || batch < 1 || batch > 1024) throw new Error('--batch must be an integer from 1 to 1024');
  const dataRoot = resolve(v.data ?? sharedDataRoot());
  const { card, onnx } = await loadCard(resolve(v.model));
  const dir = resolve(v.oodsets, card.name);
  const manifestPath = join(dir, 'manifest.json');
  const manifest = parseOodsetManifest(JSON.parse(await readFile(manifestPath, 'utf8')), manifestPath, card.name);
  await initNodeImageCodecs();
  const encoder = await loadNodeEncoder(onnx, card);
  const threshold = card.ood.threshold;
  const tars = new Map<string, TarReader>();
  const tarOf = async (path: string) => {
    let t = tars.get(path);
    if (!t) tars.set(path, (t = await TarReader.open(path)));
    return t;
  };
  try {
    // in distribution: query images of the model's classes (held-out classes are a near OOD set)
    const query = ofClasses(await readManifest(join(dataRoot, manifest.data)), card.classes).filter((r) => r.split === 'query').map((r) => r.path);
    const id = await scores(await tarOf(join(dataRoot, manifest.data, 'images.tar')), query, encoder, batch, `${manifest.data} query (in-distribution)`);
    for (const s of manifest.sets) {
      const ood = s.file
        ? await scores(await tarOf(join(dir, s.file)), Array.from({ length: s.count! }, (_, i) => `${String(i).padStart(6, '0')}.png`), encoder, batch, s.set)
        : await scores(await tarOf(join(dataRoot, s.source, 'images.tar')), s.ids!, encoder, batch, s.set);
      const row = {
        eval: 'ood',
        model: card.name,
        ood_set: s.set,
        auroc: auroc(id, ood),
        fpr95: fpr95(id, ood),
        flagged_at_threshold: flagged(ood, threshold),
        id_false_alarm: flagged(id, threshold),
        threshold,
        n_id: id.length,
        n_ood: ood.length,
      };
      if (v.json) console.log(JSON.stringify(row));
      else console.log(`${card.name} vs ${s.set}: AUROC ${row.auroc.toFixed(4)}  FPR95 ${row.fpr95.toFixed(4)}  flagged ${(100 * row.flagged_at_threshold).toFixed(1)} %  ID false alarms ${(100 * row.id_false_alarm).toFixed(1)} %`);
    }
  } finally {
    for (const t of tars.values()) await t.close();
    await encoder.close();
  }
}

main().catch((e: unknown) => {
  console.error(`eval:ood: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
