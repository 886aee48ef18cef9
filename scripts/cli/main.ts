// The medhash command line: serve the Node entry, run the inference backend, back up a data dir
// and sweep it for orphaned collection data,
// index codes or images through the HTTP API, search, manage collections, and the operator's
// tenant/key helpers. Talks to MEDHASH_URL with
// MEDHASH_API_KEY (tenant commands) or MEDHASH_OPERATOR_KEY (admin commands).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import cliProgress from 'cli-progress';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { startBackend } from '../../functions/backend/node.ts';
import { accessLogToStdout, startNodeServer, sweepDataDir } from '../../functions/entries/node.ts';
import { stopOnSignals } from '../../functions/entries/signals.ts';
import { imageSettingsFromEnv } from '../../functions/inference/node.ts';
import { backupDataDir } from '../../functions/store/backup.ts';
import { orphanProblems, type OrphanReport } from '../../functions/store/orphans.ts';
import { printable } from '../../functions/util/errors.ts';
import { contentTypeOf } from '../data/shared-data.ts';
import { Checkpoint } from './checkpoint.ts';
import { ApiError, Client } from './client.ts';
import { encodedSource, openBatchEncoder } from './encode.ts';
import { imageQuery } from './image-query.ts';
import { dataSetImages, dicomExport, folderImages, FRAME_CHOICES, imageItems, type FrameChoice, type ImageFile } from './images.ts';
import { indexRecords } from './indexer.ts';
import { fileSource, type RecordSource } from './sources.ts';

const USAGE = `medhash <command> [options]

  serve [--port 8787] [--host 127.0.0.1] [--data-dir .medhash] [--model M.onnx] [--backend-url URL]
        Run the API on Node (data in MEDHASH_DATA_DIR, admin API keyed by MEDHASH_OPERATOR_KEY).
        With a model (MEDHASH_MODEL), search by image: through the inference backend
        (MEDHASH_BACKEND_URL), falling back to onnxruntime-web in-process.
  backend --model M.onnx [--port 8788] [--host 127.0.0.1] [--cuda] [--threads N]
        Run the inference backend (POST /v1/encode) on onnxruntime-node (--model or MEDHASH_MODEL;
        --threads: its intra-op threads; default one per core, 1 is faster on a small shared machine).
  backup --out DIR [--data-dir .medhash]
        Copy a Node data dir (default MEDHASH_DATA_DIR, else .medhash) while the service runs: a
        consistent, checked copy that is itself a data dir (restore: serve with --data-dir DIR).
        DIR must be new or empty.
  orphans [--data-dir .medhash] [--delete [--force]]
        List the data of collections no longer in the registry (KV keys, writer state; left by
        versions that deleted the registry row first), and the shards of registered collections
        that their writer state names nowhere (two processes on one data dir leave them), in a Node
        data dir, the service running or not; --delete deletes them. Safe to re-run; exits 1 when a
        deletion (or a search for strays) failed, or when a collection's writer state is damaged
        (fails its check), or missing or older than its published manifest while KV holds its
        shards, naming it: nothing of it is swept, the others are. When every collection
        holding data is missing from the registry, --delete refuses (a wrong or empty registry
        looks like that); --force deletes anyway.

  index --collection C --codes FILE [--format jsonl|csv] [--batch 1000]
        Upsert items from a JSONL/CSV file of codes, in batches; safe to re-run.
  index --collection C (--images DIR | --dicom DIR | --data DIR [--split db]) [--frames all|first|skip]
        [--max-items N] [--model M.onnx] [--batch 256] [--checkpoint FILE]
        Encode images (DIR/<label>/<file>.png|.jpg|.jpeg|.dcm, or a ../shared/data set) and upsert them, through the
        inference backend when MEDHASH_BACKEND_URL is set, else in-process (--model or MEDHASH_MODEL);
        resumable (checkpoint under MEDHASH_DATA_DIR/checkpoints/, default .medhash/checkpoints/).
        --dicom: a PACS or media (DICOMDIR) export as it is: every DICOM file below DIR, whatever its
        name, item id its SOP Instance UID, no label; files not DICOM, DICOM objects without pixel
        data (DICOMDIR, SR, presentation states) and second copies of an instance are skipped, counted.
        A multi-frame DICOM (enhanced CT/MR, cine) per --frames: all, an item per frame (id
        <file id>#frame=<n>, n from 0); first, frame 0 alone (<file id>#frame=0); skip, none. Without
        --frames it is left out too, and the run ends with an error naming it (exit 1).
        --max-items counts items (frames), not files; all takes at most 100000 frames of one file. A DICOM is decoded here in both modes (to the
        backend goes each frame's tensor, not the file), so it may have up to 1 GiB; a PNG or JPEG
        up to 8 MiB.
  search --collection C (--code CODE | --image FILE) [--k 10] [--radius R] [--json]
         [--label L] [--modality M] [--body-part B]   (each repeatable: any of the values)
         [--exclude-study-uid U] [--exclude-patient-ref P] [--allow-ood]
         [--exclude-own-study] [--content-weight W] [--frame N]    (--image only)
        FILE: .png, .jpg/.jpeg or DICOM (.dcm: uncompressed or deflated, RLE Lossless, JPEG
        Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000); --frame picks one frame (from 0) of a multi-frame DICOM,
        which needs it. A PNG or JPEG is sent as it is (up to 8 MiB). A DICOM (up to 1 GiB) is
        decoded here and its frame sent as a lossless PNG of the same pixels, so the answer is the
        one the service gives the file; --exclude-own-study sends the file's Study Instance UID.
  collection create --name C --bits 16|32|64|128|256 [--descriptor-dims N] [--model-id M]
  collection list | get --name C | delete --name C
  collection erase (--name C | --all) (--patient-ref R | --study-uid U)
        Delete every item of one patient or study, in one collection or in all this key may use.

  admin create-tenant --name N
  admin create-key --tenant ID --scopes search,ingest,admin [--collections a,b] [--name N]
  admin list-tenants
  admin list-keys --tenant ID
        The whole list, however many pages the API answers it in.
  admin rotate-key --id KEY_ID
  admin revoke-key --id KEY_ID
  admin orphans [--delete [--force]]
        The same through the operator API (GET/DELETE /v1/admin/orphans), e.g. on Workers.
  admin adopt-manifest --tenant ID --collection C
        Recover a collection whose writer state is damaged, missing or behind KV: its published
        manifest becomes that state (items written after it and never published are lost).

Client options: --url (MEDHASH_URL, default http://127.0.0.1:8787),
                --key (MEDHASH_API_KEY; admin commands: MEDHASH_OPERATOR_KEY)`;

class UsageError extends Error {}

type Options = ParseArgsConfig['options'];

function parse<O extends Options>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { url: { type: 'string' }, key: { type: 'string' }, ...options }, allowPositionals: false, strict: true }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function need(v: string | boolean | undefined, flag: string): string {
  if (typeof v !== 'string' || v === '') throw new UsageError(`missing --${flag}`);
  return v;
}

function int(v: string | undefined, flag: string, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  // digits only: Number() would take "" as 0, and "1e3", "0x10" or " 5 " as numbers
  const n = /^-?\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`--${flag} must be an integer`);
  return n;
}

const client = (v: { url?: string | boolean; key?: string | boolean }, envKey: string) =>
  new Client(
    (typeof v.url === 'string' && v.url) || process.env.MEDHASH_URL || 'http://127.0.0.1:8787',
    (typeof v.key === 'string' && v.key) || process.env[envKey],
  );

const print = (v: unknown) => console.log(JSON.stringify(v, null, 2));
const col = (name: string) => `/v1/collections/${encodeURIComponent(name)}`;

/** A Node data dir: the option, else MEDHASH_DATA_DIR, else .medhash in the current folder. */
const dataDir = (option: string | undefined): string => option ?? process.env.MEDHASH_DATA_DIR ?? '.medhash';

async function serve(args: string[]) {
  const v = parse(args, { port: { type: 'string' }, host: { type: 'string' }, 'data-dir': { type: 'string' }, model: { type: 'string' }, 'backend-url': { type: 'string' } });
  const env = { ...process.env };
  if (v.model) env.MEDHASH_MODEL = v.model as string;
  if (v['backend-url']) env.MEDHASH_BACKEND_URL = v['backend-url'] as string;
  const running = await startNodeServer({
    port: int(v.port as string | undefined, 'port', Number(process.env.PORT ?? 8787))!,
    hostname: (v.host as string | undefined) ?? process.env.HOST ?? '127.0.0.1',
    dataDir: dataDir(v['data-dir'] as string | undefined),
    operatorKey: process.env.MEDHASH_OPERATOR_KEY,
    images: imageSettingsFromEnv(env),
    accessLog: accessLogToStdout(env),
  });
  stopOnSignals('medhash', running.close);
}

async function backend(args: string[]) {
  const v = parse(args, { model: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, cuda: { type: 'boolean' }, threads: { type: 'string' } });
  const threads = int(v.threads as string | undefined, 'threads');
  if (threads !== undefined && threads < 1) throw new UsageError('--threads must be at least 1');
  const b = await startBackend({
    model: need(v.model ?? process.env.MEDHASH_MODEL, 'model'),
    port: int(v.port as string | undefined, 'port', 8788)!,
    hostname: (v.host as string | undefined) ?? '127.0.0.1',
    cuda: v.cuda === true,
    threads,
  });
  console.error(`medhash backend on ${b.url}: ${b.encoder.card.model_id} (${b.encoder.runtime})`);
  stopOnSignals('medhash backend', b.close);
}

async function backup(args: string[]) {
  const v = parse(args, { out: { type: 'string' }, 'data-dir': { type: 'string' } });
  print(await backupDataDir(dataDir(v['data-dir'] as string | undefined), need(v.out, 'out')));
}

/** Prints an orphan sweep's report; throws (exit 1) when a deletion or a search for strays failed, so that it is re-run, or a collection is under damaged. */
function orphanReport(r: OrphanReport) {
  print(r);
  const withStrays = r.strays.filter((s) => s.shards.length > 0).length;
  if (r.dry_run && r.orphans.length + withStrays > 0) {
    console.error(`${r.orphans.length} orphaned collection(s), stray shards in ${withStrays} registered collection(s), nothing deleted: run again with --delete to delete them`);
  }
  const problems = orphanProblems(r, 'run the same command again');
  if (problems.length) throw new Error(problems.join('; '));
}

async function orphans(args: string[]) {
  const v = parse(args, { 'data-dir': { type: 'string' }, delete: { type: 'boolean' }, force: { type: 'boolean' } });
  if (v.force && !v.delete) throw new UsageError('--force needs --delete');
  orphanReport(await sweepDataDir(dataDir(v['data-dir'] as string | undefined), { delete: v.delete === true, force: v.force === true }));
}

async function index(args: string[]) {
  const v = parse(args, {
    collection: { type: 'string' }, codes: { type: 'string' }, format: { type: 'string' }, batch: { type: 'string' },
    images: { type: 'string' }, dicom: { type: 'string' }, data: { type: 'string' }, split: { type: 'string' }, 'max-items': { type: 'string' },
    model: { type: 'string' }, checkpoint: { type: 'string' }, frames: { type: 'string' },
  });
  const collection = need(v.collection, 'collection');
  const sources = [v.codes, v.images, v.dicom, v.data].filter((x) => x !== undefined).length;
  if (sources !== 1) throw new UsageError('give exactly one of --codes, --images, --dicom, --data');
  const frames = v.frames as FrameChoice | undefined;
  if (frames !== undefined && !FRAME_CHOICES.includes(frames)) throw new UsageError(`--frames must be ${FRAME_CHOICES.join(', ')}`);
  if (frames !== undefined && v.codes) throw new UsageError('--frames needs --images, --dicom or --data (a codes file holds no frames)');
  // an option of the other kind of source would be ignored: the run would not do what was asked
  const imageOnly = (['max-items', 'model', 'checkpoint'] as const).filter((o) => v[o] !== undefined);
  if (v.codes && imageOnly.length > 0) throw new UsageError(`--${imageOnly.join(', --')} need --images, --dicom or --data (a codes file is neither encoded nor checkpointed)`);
  if (v.format !== undefined && !v.codes) throw new UsageError('--format needs --codes');
  if (v.format !== undefined && v.format !== 'jsonl' && v.format !== 'csv') throw new UsageError('--format must be jsonl or csv');
  if (v.split !== undefined && !v.data) throw new UsageError('--split needs --data');
  const batchSize = int(v.batch as string | undefined, 'batch', v.codes ? 1000 : 256)!;
  if (batchSize < 1 || batchSize > 1000) throw new UsageError('--batch must be between 1 and 1000');
  const api = client(v, 'MEDHASH_API_KEY');
  // Fail fast on a wrong name or key, before reading or encoding anything.
  const info = await api.request<{ bits: number; descriptor_dims: number; model_id: string | null; created_at: string; generation: number }>('GET', col(collection));
  if (v.codes) {
    const source = fileSource(v.codes as string, v.format as 'jsonl' | 'csv' | undefined);
    return runIndex(api, collection, info.generation, source, batchSize, 0);
  }
  const maxItems = int(v['max-items'] as string | undefined, 'max-items');
  if (maxItems !== undefined && maxItems < 0) throw new UsageError('--max-items must be 0 or more');
  const set = v.images ? { images: await folderImages(v.images as string), close: async () => undefined } : v.dicom ? await dicomSet(v.dicom as string) : await dataSetImages(v.data as string, (v.split as string | undefined) ?? 'db');
  const encoder = await openBatchEncoder({ backendUrl: process.env.MEDHASH_BACKEND_URL || undefined, model: (v.model as string | undefined) ?? process.env.MEDHASH_MODEL });
  try {
    if (info.model_id !== encoder.model_id) {
      throw new UsageError(`collection ${collection} is for model ${info.model_id ?? '(none)'}, the encoder is ${encoder.model_id}: create the collection with --model-id ${encoder.model_id}`);
    }
    const key = JSON.stringify([api.baseUrl, collection, info.created_at, encoder.model_id]);
    const cpPath = (v.checkpoint as string | undefined) ?? join(dataDir(undefined), 'checkpoints', `${collection}.${createHash('sha256').update(key).digest('hex').slice(0, 16)}.ids`);
    const checkpoint = Checkpoint.open(cpPath, key);
    // every item, frames counted, before any is encoded: the progress bar's total
    const { items: images, multiFrame } = await imageItems(set.images, frames, maxItems, (id) => checkpoint.has(id));
    const todo = images.filter((f) => !checkpoint.has(f.id));
    console.error(`encoding with ${encoder.path}; ${images.length - todo.length} of ${images.length} already published (checkpoint ${cpPath})`);
    const source = encodedSource(todo, encoder, { descriptors: info.descriptor_dims === encoder.bits, chunk: Math.min(batchSize, 64) });
    await runIndex(api, collection, info.generation, source, batchSize, images.length - todo.length, (ids) => checkpoint.add(ids), images.length);
    if (multiFrame.length > 0) {
      const named = multiFrame.slice(0, 5).map((f) => f.origin).join(', ') + (multiFrame.length > 5 ? ` and ${multiFrame.length - 5} more` : '');
      const left = `${multiFrame.length} multi-frame DICOM file(s) not indexed: ${named}`;
      // no choice made: the run did not index everything it was given, which the exit status says
      if (frames !== 'skip') throw new Error(`${left}; give --frames all to index each frame as its own item, --frames first for frame 0 alone, or --frames skip to leave them out`);
      console.error(printable(`${left} (--frames skip)`));
    }
  } finally {
    await encoder.close();
    await set.close();
  }
}

/** A DICOM export's images, what it skipped said on stderr; none is an error naming what there was. */
async function dicomSet(dir: string): Promise<{ images: ImageFile[]; close(): Promise<void> }> {
  const e = await dicomExport(dir);
  const copies = e.duplicates.length ? `, ${e.duplicates.length} copies of an instance already listed (${e.duplicates.slice(0, 3).join(', ')}${e.duplicates.length > 3 ? ', ...' : ''})` : '';
  const said = `${dir}: ${e.images.length} DICOM image file(s); skipped ${e.notDicom} file(s) not DICOM, ${e.notImages} DICOM object(s) without pixel data (DICOMDIR, SR, presentation states)${copies}`;
  if (e.images.length === 0) throw new Error(said);
  console.error(printable(said));
  return { images: e.images, close: async () => undefined };
}

/** `generation`: the collection's before the run, which it keeps when there is nothing to send. */
async function runIndex(api: Client, collection: string, generation: number, source: RecordSource, batchSize: number, done: number, onPublished?: (ids: string[]) => void, total?: number) {
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: 'indexing |{bar}| {value}/{total} items | {eta_formatted} left', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total ?? (await source.count()), done);
  let published = done;
  // Ctrl-C or a kill mid-run: the bar hid the cursor and turned line wrapping off, which only its
  // stop() restores. Exiting at once is safe: every stored batch is in the checkpoint already.
  const interrupted = (signal: NodeJS.Signals) => {
    bar.stop();
    console.error(`medhash: ${signal}: stopped with ${published} items published; run the same command again to resume`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  try {
    const out = await indexRecords(api, collection, source, { batchSize, onBatch: (sent) => bar.update((published = done + sent)), onPublished });
    bar.stop();
    console.error(`indexed ${out.sent} items in ${out.batches} batches; ${collection} is at generation ${out.batches > 0 ? out.generation : generation}`);
  } catch (e) {
    bar.stop();
    throw e;
  } finally {
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
  }
}

interface SearchAnswer {
  generation: number;
  truncated: boolean;
  results: Array<{ id: string; distance: number; metadata: Record<string, string> }>;
  path?: string;
  code?: string;
  model_ood?: { score: number; threshold: number };
}

async function search(args: string[]) {
  const v = parse(args, {
    collection: { type: 'string' }, code: { type: 'string' }, image: { type: 'string' }, k: { type: 'string' }, radius: { type: 'string' }, json: { type: 'boolean' },
    label: { type: 'string', multiple: true }, modality: { type: 'string', multiple: true }, 'body-part': { type: 'string', multiple: true },
    'exclude-study-uid': { type: 'string' }, 'exclude-patient-ref': { type: 'string' }, 'exclude-own-study': { type: 'boolean' },
    'content-weight': { type: 'string' }, 'allow-ood': { type: 'boolean' }, frame: { type: 'string' },
  });
  if ((v.code === undefined) === (v.image === undefined)) throw new UsageError('give exactly one of --code, --image');
  if (v.code !== undefined && (v['exclude-own-study'] || v['content-weight'] !== undefined || v.frame !== undefined)) {
    throw new UsageError('--exclude-own-study, --content-weight and --frame need --image (a code carries no study, no descriptor and no frames)');
  }
  const body = {
    k: int(v.k as string | undefined, 'k', 10),
    ...(v.radius !== undefined ? { radius: int(v.radius as string, 'radius') } : {}),
  };
  // the clinician's controls, named as the API names them; the service validates the values
  const filter = Object.fromEntries(([['label', v.label], ['modality', v.modality], ['body_part', v['body-part']]] as [string, string[] | undefined][])
    .filter(([, values]) => values !== undefined));
  const exclusions = {
    ...(v['exclude-study-uid'] !== undefined ? { exclude_study_uid: v['exclude-study-uid'] as string } : {}),
    ...(v['exclude-patient-ref'] !== undefined ? { exclude_patient_ref: v['exclude-patient-ref'] as string } : {}),
  };
  const api = client(v, 'MEDHASH_API_KEY');
  const base = col(need(v.collection, 'collection'));
  let r: SearchAnswer;
  if (v.image) {
    const file = v.image as string;
    const type = contentTypeOf(file);
    if (!type) throw new UsageError('--image must be a .png, .jpg, .jpeg or .dcm file');
    const frame = int(v.frame as string | undefined, 'frame');
    if (frame !== undefined && frame < 0) throw new UsageError('--frame must be 0 or more');
    const ownStudy = v['exclude-own-study'] === true;
    if (ownStudy && v['exclude-study-uid'] !== undefined) throw new UsageError('give one of --exclude-own-study, --exclude-study-uid');
    const query = await imageQuery(file, type, frame, ownStudy);
    const q = new URLSearchParams({ k: String(body.k), ...(body.radius !== undefined ? { radius: String(body.radius) } : {}), ...exclusions });
    for (const [field, values] of Object.entries(filter)) for (const value of values as string[]) q.append(field, value);
    if (v['content-weight'] !== undefined) q.set('content_weight', v['content-weight'] as string);
    // a DICOM's study UID read here (its frame goes as a PNG, which names no study); for a PNG or JPEG the service's 400 says why not
    if (query.studyUid !== undefined) q.set('exclude_study_uid', query.studyUid);
    else if (ownStudy) q.set('exclude_own_study', 'true');
    if (v['allow-ood']) q.set('allow_ood', 'true');
    if (query.frame !== undefined) q.set('frame', String(query.frame));
    r = await api.request<SearchAnswer>('POST', `${base}/search/image?${q}`, query.body);
  } else {
    const controls = { ...(Object.keys(filter).length > 0 ? { filter } : {}), ...exclusions, ...(v['allow-ood'] ? { allow_ood: true } : {}) };
    r = await api.request<SearchAnswer>('POST', `${base}/search`, { code: v.code, ...body, ...controls });
  }
  if (v.json) return print(r);
  if (r.path) console.log(`encoded by ${r.path}: code ${r.code}, model OOD score ${r.model_ood?.score.toFixed(3)} (threshold ${r.model_ood?.threshold.toFixed(3)})`);
  r.results.forEach((x, i) => console.log(`${String(i + 1).padStart(4)}  d=${String(x.distance).padStart(3)}  ${x.id}${x.metadata.label ? `  [${x.metadata.label}]` : ''}`));
  if (r.results.length === 0) console.log('no results (none stored, or none passed the filters and exclusions)');
  if (r.truncated) console.log(`(more than ${body.k} items within radius ${body.radius})`);
}

async function collection([sub, ...args]: string[]) {
  if (sub === 'create') {
    const v = parse(args, { name: { type: 'string' }, bits: { type: 'string' }, 'descriptor-dims': { type: 'string' }, 'model-id': { type: 'string' } });
    const body = {
      name: need(v.name, 'name'),
      bits: int(need(v.bits, 'bits'), 'bits'),
      descriptor_dims: int(v['descriptor-dims'] as string | undefined, 'descriptor-dims', 0),
      ...(v['model-id'] ? { model_id: v['model-id'] } : {}),
    };
    return print(await client(v, 'MEDHASH_API_KEY').request('POST', '/v1/collections', body));
  }
  if (sub === 'list') return print({ collections: await client(parse(args, {}), 'MEDHASH_API_KEY').all('/v1/collections', 'collections') });
  if (sub === 'get' || sub === 'delete') {
    const v = parse(args, { name: { type: 'string' } });
    const r = await client(v, 'MEDHASH_API_KEY').request(sub === 'get' ? 'GET' : 'DELETE', col(need(v.name, 'name')));
    return sub === 'get' ? print(r) : console.error(`deleted ${v.name}`);
  }
  if (sub === 'erase') {
    const v = parse(args, { name: { type: 'string' }, all: { type: 'boolean' }, 'patient-ref': { type: 'string' }, 'study-uid': { type: 'string' } });
    if ((v.name === undefined) === (v.all !== true)) throw new UsageError('collection erase needs --name C or --all');
    if ((v['patient-ref'] === undefined) === (v['study-uid'] === undefined)) throw new UsageError('collection erase needs --patient-ref R or --study-uid U');
    const body = v['patient-ref'] !== undefined ? { patient_ref: v['patient-ref'] } : { study_uid: v['study-uid'] };
    const c = client(v, 'MEDHASH_API_KEY');
    const names = v.all ? (await c.all<{ name: string }>('/v1/collections', 'collections')).map((x) => x.name) : [v.name as string];
    // An erasure request must reach every collection: one that fails (a transient error, a
    // collection deleted meanwhile) is reported and the rest are still erased; the exit status
    // then says the erasure is incomplete, so it can be re-run (erase is idempotent).
    const results: ({ name: string; erased: number; remaining: number; generation: number; visible: boolean } | { name: string; erased: number; error: string })[] = [];
    for (const name of names) {
      // One call erases at most MAX_ERASE_ITEMS; repeat until none remain.
      let erased = 0;
      try {
        let r: { erased: number; remaining: number; generation: number; visible: boolean };
        do {
          r = await c.request('POST', `${col(name)}/erase`, body);
          erased += r.erased;
        } while (r.remaining > 0 && r.erased > 0);
        results.push({ name, erased, remaining: r.remaining, generation: r.generation, visible: r.visible });
      } catch (e) {
        results.push({ name, erased, error: e instanceof Error ? e.message : String(e) });
      }
    }
    print({ erased: results.reduce((n, r) => n + r.erased, 0), collections: results });
    const failed = results.filter((r) => 'error' in r).map((r) => r.name);
    if (failed.length) throw new Error(`erasure incomplete in ${failed.join(', ')}: run the same command again`);
    return;
  }
  throw new UsageError(`unknown collection command ${sub ?? ''}`);
}

async function admin([sub, ...args]: string[]) {
  const op = (v: Parameters<typeof client>[0]) => client(v, 'MEDHASH_OPERATOR_KEY');
  switch (sub) {
    case 'create-tenant': {
      const v = parse(args, { name: { type: 'string' } });
      return print(await op(v).request('POST', '/v1/admin/tenants', { name: need(v.name, 'name') }));
    }
    case 'create-key': {
      const v = parse(args, { tenant: { type: 'string' }, scopes: { type: 'string' }, collections: { type: 'string' }, name: { type: 'string' } });
      const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
      const body = {
        scopes: list(need(v.scopes, 'scopes')),
        ...(v.collections ? { collections: list(v.collections as string) } : {}),
        ...(v.name ? { name: v.name } : {}),
      };
      const key = await op(v).request<{ secret: string }>('POST', `/v1/admin/tenants/${encodeURIComponent(need(v.tenant, 'tenant'))}/keys`, body);
      print(key);
      console.error('The secret is shown only this once: store it now.');
      return;
    }
    case 'list-tenants': {
      const v = parse(args, {});
      return print({ tenants: await op(v).all('/v1/admin/tenants', 'tenants') });
    }
    case 'list-keys': {
      const v = parse(args, { tenant: { type: 'string' } });
      return print({ keys: await op(v).all(`/v1/admin/tenants/${encodeURIComponent(need(v.tenant, 'tenant'))}/keys`, 'keys') });
    }
    case 'rotate-key':
    case 'revoke-key': {
      const v = parse(args, { id: { type: 'string' } });
      const id = encodeURIComponent(need(v.id, 'id'));
      return print(await (sub === 'rotate-key' ? op(v).request('POST', `/v1/admin/keys/${id}/rotate`) : op(v).request('DELETE', `/v1/admin/keys/${id}`)));
    }
    case 'orphans': {
      const v = parse(args, { delete: { type: 'boolean' }, force: { type: 'boolean' } });
      if (v.force && !v.delete) throw new UsageError('--force needs --delete');
      const report = await op(v).request<OrphanReport>(v.delete ? 'DELETE' : 'GET', `/v1/admin/orphans${v.force ? '?force=true' : ''}`).catch((e: unknown) => {
        // a deletion failed (500): the record comes with the error, printed as the data-dir sweep prints it
        if (!(e instanceof ApiError) || e.code !== 'orphans_delete_incomplete') throw e;
        const { error: _, ...record } = e.body as OrphanReport & { error: unknown };
        return record;
      });
      return orphanReport(report);
    }
    case 'adopt-manifest': {
      const v = parse(args, { tenant: { type: 'string' }, collection: { type: 'string' } });
      const path = `/v1/admin/tenants/${encodeURIComponent(need(v.tenant, 'tenant'))}/collections/${encodeURIComponent(need(v.collection, 'collection'))}/adopt-manifest`;
      return print(await op(v).request('POST', path));
    }
    default:
      throw new UsageError(`unknown admin command ${sub ?? ''}`);
  }
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = { serve, backend, backup, orphans, index, search, collection, admin };

async function main(argv: string[]) {
  const [command, ...args] = argv;
  // `medhash index --help` too: asking for help is no wrong command line
  if (!command || command === 'help' || argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return;
  }
  const run = COMMANDS[command];
  if (!run) throw new UsageError(`unknown command ${command}`);
  await run(args);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  // it may quote a file name, a DICOM string or the service's words: shown, never acted on by the terminal
  const message = printable(e instanceof Error ? e.message : String(e));
  // parseArgs says some things on several lines: kept as lines, each made printable
  if (e instanceof UsageError) console.error(`medhash: ${e.message.split('\n').map(printable).join('\n')}\n\n${USAGE}`);
  else console.error(`medhash: ${message}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
