// The medhash command line: serve the Node entry, index codes through the HTTP API, search,
// manage collections, and the operator's tenant/key helpers. Talks to MEDHASH_URL with
// MEDHASH_API_KEY (tenant commands) or MEDHASH_OPERATOR_KEY (admin commands).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import cliProgress from 'cli-progress';
import { startNodeServer } from '../../functions/entries/node.ts';
import { ApiError, Client } from './client.ts';
import { indexRecords } from './indexer.ts';
import { fileSource } from './sources.ts';

const USAGE = `medhash <command> [options]

  serve [--port 8787] [--host 127.0.0.1] [--data-dir .medhash]
        Run the API on Node (data in MEDHASH_DATA_DIR, admin API keyed by MEDHASH_OPERATOR_KEY).

  index --collection C --codes FILE [--format jsonl|csv] [--batch 1000]
        Upsert items from a JSONL/CSV file of codes, in batches; safe to re-run.
  search --collection C --code CODE [--k 10] [--radius R] [--json]
  collection create --name C --bits 16|32|64|128|256 [--descriptor-dims N] [--model-id M]
  collection list | get --name C | delete --name C

  admin create-tenant --name N
  admin create-key --tenant ID --scopes search,ingest,admin [--collections a,b] [--name N]
  admin list-keys --tenant ID
  admin rotate-key --id KEY_ID
  admin revoke-key --id KEY_ID

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
  const n = Number(v);
  if (!Number.isInteger(n)) throw new UsageError(`--${flag} must be an integer`);
  return n;
}

const client = (v: { url?: string | boolean; key?: string | boolean }, envKey: string) =>
  new Client(
    (typeof v.url === 'string' && v.url) || process.env.MEDHASH_URL || 'http://127.0.0.1:8787',
    (typeof v.key === 'string' && v.key) || process.env[envKey],
  );

const print = (v: unknown) => console.log(JSON.stringify(v, null, 2));
const col = (name: string) => `/v1/collections/${encodeURIComponent(name)}`;

async function serve(args: string[]) {
  const v = parse(args, { port: { type: 'string' }, host: { type: 'string' }, 'data-dir': { type: 'string' } });
  await startNodeServer({
    port: int(v.port as string | undefined, 'port', Number(process.env.PORT ?? 8787))!,
    hostname: (v.host as string | undefined) ?? process.env.HOST ?? '127.0.0.1',
    dataDir: (v['data-dir'] as string | undefined) ?? process.env.MEDHASH_DATA_DIR ?? '.medhash',
    operatorKey: process.env.MEDHASH_OPERATOR_KEY,
  });
}

async function index(args: string[]) {
  const v = parse(args, { collection: { type: 'string' }, codes: { type: 'string' }, format: { type: 'string' }, batch: { type: 'string' } });
  const collection = need(v.collection, 'collection');
  const format = v.format as string | undefined;
  if (format !== undefined && format !== 'jsonl' && format !== 'csv') throw new UsageError('--format must be jsonl or csv');
  const batchSize = int(v.batch as string | undefined, 'batch', 1000)!;
  if (batchSize < 1 || batchSize > 1000) throw new UsageError('--batch must be between 1 and 1000');
  const source = fileSource(need(v.codes, 'codes'), format);
  const api = client(v, 'MEDHASH_API_KEY');
  await api.request('GET', col(collection)); // fail fast on a wrong name or key, before reading the file
  const total = await source.count();
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: 'indexing |{bar}| {value}/{total} items | {eta_formatted} left', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  try {
    const out = await indexRecords(api, collection, source, { batchSize, onBatch: (sent) => bar.update(sent) });
    bar.stop();
    console.error(`indexed ${out.sent} items in ${out.batches} batches; ${collection} is at generation ${out.generation}`);
  } catch (e) {
    bar.stop();
    throw e;
  }
}

async function search(args: string[]) {
  const v = parse(args, { collection: { type: 'string' }, code: { type: 'string' }, k: { type: 'string' }, radius: { type: 'string' }, json: { type: 'boolean' } });
  const body = {
    code: need(v.code, 'code'),
    k: int(v.k as string | undefined, 'k', 10),
    ...(v.radius !== undefined ? { radius: int(v.radius as string, 'radius') } : {}),
  };
  const r = await client(v, 'MEDHASH_API_KEY').request<{ generation: number; truncated: boolean; results: Array<{ id: string; distance: number; metadata: Record<string, string> }> }>(
    'POST', `${col(need(v.collection, 'collection'))}/search`, body,
  );
  if (v.json) return print(r);
  r.results.forEach((x, i) => console.log(`${String(i + 1).padStart(4)}  d=${String(x.distance).padStart(3)}  ${x.id}${x.metadata.label ? `  [${x.metadata.label}]` : ''}`));
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
  if (sub === 'list') return print(await client(parse(args, {}), 'MEDHASH_API_KEY').request('GET', '/v1/collections'));
  if (sub === 'get' || sub === 'delete') {
    const v = parse(args, { name: { type: 'string' } });
    const r = await client(v, 'MEDHASH_API_KEY').request(sub === 'get' ? 'GET' : 'DELETE', col(need(v.name, 'name')));
    return sub === 'get' ? print(r) : console.error(`deleted ${v.name}`);
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
    case 'list-keys': {
      const v = parse(args, { tenant: { type: 'string' } });
      return print(await op(v).request('GET', `/v1/admin/tenants/${encodeURIComponent(need(v.tenant, 'tenant'))}/keys`));
    }
    case 'rotate-key':
    case 'revoke-key': {
      const v = parse(args, { id: { type: 'string' } });
      const id = encodeURIComponent(need(v.id, 'id'));
      return print(await (sub === 'rotate-key' ? op(v).request('POST', `/v1/admin/keys/${id}/rotate`) : op(v).request('DELETE', `/v1/admin/keys/${id}`)));
    }
    default:
      throw new UsageError(`unknown admin command ${sub ?? ''}`);
  }
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = { serve, index, search, collection, admin };

async function main(argv: string[]) {
  const [command, ...args] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return;
  }
  const run = COMMANDS[command];
  if (!run) throw new UsageError(`unknown command ${command}`);
  await run(args);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof UsageError) console.error(`medhash: ${e.message}\n\n${USAGE}`);
  else if (e instanceof ApiError) console.error(`medhash: ${e.message}`);
  else console.error(`medhash: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
