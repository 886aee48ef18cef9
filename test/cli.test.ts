// The CLI's indexing path end to end: files of codes -> batches over real HTTP -> the Node app.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import { Client } from '../scripts/cli/client.ts';
import { indexRecords } from '../scripts/cli/indexer.ts';
import { fileSource, parseCsvLine } from '../scripts/cli/sources.ts';
import { TEST_OPERATOR_KEY } from './shared/constants.ts';

let dir: string;
let node: NodeBackend;
let server: ServerType;
let url: string;
let api: Client;
let secret: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-cli-'));
  node = await createNodeBackend({ dataDir: join(dir, 'data'), operatorKey: TEST_OPERATOR_KEY });
  server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: createApp(node.backend).fetch, port: 0, hostname: '127.0.0.1' }, () => ok(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const op = new Client(url, TEST_OPERATOR_KEY);
  const tenant = await op.request<{ id: string }>('POST', '/v1/admin/tenants', { name: 'cli-test' });
  const key = await op.request<{ secret: string }>('POST', `/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search', 'ingest', 'admin'] });
  secret = key.secret;
  api = new Client(url, secret);
  await api.request('POST', '/v1/collections', { name: 'docs', bits: 32, descriptor_dims: 2 });
});

afterAll(async () => {
  await new Promise((ok) => server.close(ok));
  node.close();
  rmSync(dir, { recursive: true, force: true });
});

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('CSV lines', () => {
  it('parses quoted fields with commas and doubled quotes', () => {
    expect(parseCsvLine('a,"b, c","say ""hi""",')).toEqual(['a', 'b, c', 'say "hi"', '']);
    expect(() => parseCsvLine('"open')).toThrow(/unterminated/);
  });
});

describe('medhash index', () => {
  it('indexes JSONL and CSV in batches; re-running changes nothing', async () => {
    const jsonl = file(
      'codes.jsonl',
      Array.from({ length: 25 }, (_, i) => JSON.stringify({ id: `j${i}`, code: (i * 2654435761 >>> 0).toString(16).padStart(8, '0'), descriptor: [i, -i], metadata: { label: `L${i % 2}` } })).join('\n') + '\n',
    );
    const csv = file('codes.csv', 'id,code,descriptor,label,source_uri\nc1,0000ffff,1 2,"chest, PA",file:///a.png\nc2,ffff0000,-3 4,,\n');
    const batches: number[] = [];
    const first = await indexRecords(api, 'docs', fileSource(jsonl), { batchSize: 10, onBatch: (n) => batches.push(n) });
    expect(first).toMatchObject({ sent: 25, batches: 3 });
    expect(batches).toEqual([10, 20, 25]);
    expect(await fileSource(jsonl).count()).toBe(25);
    const again = await indexRecords(api, 'docs', fileSource(jsonl), { batchSize: 10 });
    expect(again.generation).toBe(first.generation);
    await indexRecords(api, 'docs', fileSource(csv), { batchSize: 10 });
    expect(await fileSource(csv).count()).toBe(2);
    const c1 = await api.request<{ metadata: unknown; descriptor: number[] }>('GET', '/v1/collections/docs/items/c1');
    expect(c1).toMatchObject({ descriptor: [1, 2], metadata: { label: 'chest, PA', source_uri: 'file:///a.png' } });
    const info = await api.request<{ count: number }>('GET', '/v1/collections/docs');
    expect(info.count).toBe(27);
  });

  it('lets a later line for the same id win, within a batch as across batches', async () => {
    const p = file('dups.jsonl', ['{"id":"d","code":"00000001","descriptor":[0,0]}', '{"id":"d","code":"00000002","descriptor":[0,0]}'].join('\n'));
    const out = await indexRecords(api, 'docs', fileSource(p), { batchSize: 10 });
    expect(out.batches).toBe(2);
    expect((await api.request<{ code: string }>('GET', '/v1/collections/docs/items/d')).code).toBe('00000002');
  });

  it('reports a rejected item by file and line', async () => {
    const p = file('bad.csv', 'id,code,descriptor\nok,00000000,0 0\nbad,123,0 0\n');
    await expect(indexRecords(api, 'docs', fileSource(p), { batchSize: 10 })).rejects.toThrow(/bad\.csv:3: .*8 hex characters.*items\.1\.code/);
  });

  it('refuses files it cannot read as codes', async () => {
    expect(() => fileSource(join(dir, 'codes.txt'))).toThrow(/format/);
    const p = file('extra.csv', 'id,code,colour\na,00000000,red\n');
    await expect(indexRecords(api, 'docs', fileSource(p), { batchSize: 10 })).rejects.toThrow(/unknown CSV columns colour/);
  });
});

describe('medhash collection erase', () => {
  const cli = (...args: string[]) =>
    promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'collection', 'erase', ...args], {
      env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: secret },
    });

  it("erases one patient's items from every collection the key may use", async () => {
    await api.request('POST', '/v1/collections', { name: 'erase-a', bits: 16 });
    await api.request('POST', '/v1/collections', { name: 'erase-b', bits: 16 });
    const items = (p: string) => ['1', '2', '3'].map((i) => ({ id: `${p}-${i}`, code: 'abcd', metadata: { patient_ref: i === '2' ? 'keep' : 'gone' } }));
    await api.request('POST', '/v1/collections/erase-a/items', { items: items('a') });
    await api.request('POST', '/v1/collections/erase-b/items', { items: items('b') });
    const { stdout } = await cli('--all', '--patient-ref', 'gone');
    const out = JSON.parse(stdout) as { erased: number; collections: { name: string; erased: number }[] };
    expect(out.erased).toBe(4);
    expect(out.collections.filter((c) => c.name.startsWith('erase-')).map((c) => [c.name, c.erased])).toEqual([['erase-a', 2], ['erase-b', 2]]);
    expect((await api.request<{ count: number }>('GET', '/v1/collections/erase-a')).count).toBe(1);
    await expect(cli('--patient-ref', 'gone')).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/needs --name C or --all/) });
    await expect(cli('--name', 'erase-a')).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/needs --patient-ref R or --study-uid U/) });
  });
  it('goes on past a collection that fails, reports it, and exits 1 so the erasure is re-run', async () => {
    await api.request('POST', '/v1/collections', { name: 'erase-c', bits: 16 });
    await api.request('POST', '/v1/collections', { name: 'erase-d', bits: 16 });
    const items = (p: string) => ['1', '2'].map((i) => ({ id: `${p}-${i}`, code: 'abcd', metadata: { patient_ref: 'late' } }));
    await api.request('POST', '/v1/collections/erase-c/items', { items: items('c') });
    await api.request('POST', '/v1/collections/erase-d/items', { items: items('d') });
    // A front that fails every erasure of erase-c (as a collection deleted meanwhile would), so
    // the collections after it in the list are only erased if the CLI goes on.
    const app = createApp(node.backend);
    const front = await new Promise<ServerType>((ok) => {
      const s = serve(
        {
          fetch: (req) =>
            new URL(req.url).pathname === '/v1/collections/erase-c/erase'
              ? Response.json({ error: { code: 'not_found', message: 'collection erase-c not found' } }, { status: 404 })
              : app.fetch(req),
          port: 0,
          hostname: '127.0.0.1',
        },
        () => ok(s),
      );
    });
    try {
      const run = promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'collection', 'erase', '--all', '--patient-ref', 'late'], {
        env: { ...process.env, MEDHASH_URL: `http://127.0.0.1:${(front.address() as AddressInfo).port}`, MEDHASH_API_KEY: secret },
      });
      const e = (await run.then(() => expect.fail('the CLI exited 0'), (x: unknown) => x)) as { code: number; stdout: string; stderr: string };
      expect(e.code).toBe(1);
      expect(e.stderr).toMatch(/erasure incomplete in erase-c/);
      const out = JSON.parse(e.stdout) as { collections: { name: string; erased: number; error?: string }[] };
      expect(out.collections.find((c) => c.name === 'erase-c')).toMatchObject({ erased: 0, error: expect.stringContaining('collection erase-c not found') });
      expect(out.collections.find((c) => c.name === 'erase-d')).toMatchObject({ erased: 2 });
      expect((await api.request<{ count: number }>('GET', '/v1/collections/erase-d')).count).toBe(0);
    } finally {
      await new Promise((ok) => front.close(ok));
    }
  });
});

describe('medhash search by code', () => {
  const search = (...args: string[]) =>
    promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'search', '--collection', 'ctl', '--code', 'abcd', '--json', ...args], {
      env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: secret },
    });
  const ids = async (...args: string[]) => (JSON.parse((await search(...args)).stdout) as { results: { id: string }[] }).results.map((r) => r.id).sort();

  it("takes the clinician's filters and exclusions, as the API names them", async () => {
    await api.request('POST', '/v1/collections', { name: 'ctl', bits: 16 });
    await api.request('POST', '/v1/collections/ctl/items', {
      items: [
        { id: 'ct-1', code: 'abcd', metadata: { modality: 'CT', study_uid: '1.2.3', patient_ref: 'p1' } },
        { id: 'mr-1', code: 'abcd', metadata: { modality: 'MR', study_uid: '1.2.4', patient_ref: 'p2' } },
        { id: 'cr-1', code: 'abcd', metadata: { modality: 'CR', study_uid: '1.2.5', patient_ref: 'p1' } },
      ],
    });
    expect(await ids()).toEqual(['cr-1', 'ct-1', 'mr-1']);
    expect(await ids('--modality', 'CT', '--modality', 'MR')).toEqual(['ct-1', 'mr-1']);
    expect(await ids('--exclude-study-uid', '1.2.4')).toEqual(['cr-1', 'ct-1']);
    expect(await ids('--exclude-patient-ref', 'p1')).toEqual(['mr-1']);
    await expect(search('--exclude-own-study')).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/need --image/) });
    // without --json, an empty answer says so rather than printing nothing
    const plain = await promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'search', '--collection', 'ctl', '--code', 'abcd', '--modality', 'US'], {
      env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: secret },
    });
    expect(plain.stdout).toMatch(/^no results/m);
  });
});

describe('medhash admin lists', () => {
  it('follows the pages to print the whole list, as one answer printed it before', async () => {
    const op = new Client(url, TEST_OPERATOR_KEY);
    const tenant = await op.request<{ id: string }>('POST', '/v1/admin/tenants', { name: 'cli-pages' });
    await op.request('POST', '/v1/admin/tenants', { name: 'cli-pages-2' });
    for (let i = 0; i < 4; i++) await op.request('POST', `/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search'], name: `k${i}` });
    // A front that serves pages of 2 whatever the CLI asks for, so that a handful of keys and
    // tenants spans several pages; it records what the CLI asked.
    const app = createApp(node.backend);
    const asked: string[] = [];
    const front = await new Promise<ServerType>((ok) => {
      const s = serve(
        {
          fetch: (req) => {
            const u = new URL(req.url);
            asked.push(`${u.pathname}${u.search}`);
            if (u.searchParams.has('limit')) u.searchParams.set('limit', '2');
            return app.fetch(new Request(u, req));
          },
          port: 0,
          hostname: '127.0.0.1',
        },
        () => ok(s),
      );
    });
    try {
      const admin = (...args: string[]) =>
        promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'admin', ...args], {
          env: { ...process.env, MEDHASH_URL: `http://127.0.0.1:${(front.address() as AddressInfo).port}`, MEDHASH_OPERATOR_KEY: TEST_OPERATOR_KEY },
        });
      const keys = await op.request<{ keys: unknown[] }>('GET', `/v1/admin/tenants/${tenant.id}/keys?limit=1000`);
      const listed = JSON.parse((await admin('list-keys', '--tenant', tenant.id)).stdout) as unknown;
      expect(listed).toEqual({ keys: keys.keys });
      expect(keys.keys).toHaveLength(4);
      expect(asked.filter((a) => a.includes('/keys'))).toHaveLength(2);
      expect(asked.filter((a) => a.includes('/keys')).every((a) => /[?&]limit=1000(&|$)/.test(a))).toBe(true);

      const tenants = await op.request<{ tenants: unknown[] }>('GET', '/v1/admin/tenants?limit=1000');
      expect(tenants.tenants.length).toBeGreaterThan(2);
      asked.length = 0;
      expect(JSON.parse((await admin('list-tenants')).stdout)).toEqual({ tenants: tenants.tenants });
      expect(asked).toHaveLength(Math.ceil(tenants.tenants.length / 2));
    } finally {
      await new Promise((ok) => front.close(ok));
    }
  });

  it('stops with an error, rather than read the same page forever, when a cursor does not advance', async () => {
    const stuck = 'key_000000000000000000000001';
    const front = await new Promise<ServerType>((ok) => {
      const s = serve({ fetch: () => Response.json({ keys: [], next_after: stuck }), port: 0, hostname: '127.0.0.1' }, () => ok(s));
    });
    try {
      const run = promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), 'admin', 'list-keys', '--tenant', 'tn_x'], {
        env: { ...process.env, MEDHASH_URL: `http://127.0.0.1:${(front.address() as AddressInfo).port}`, MEDHASH_OPERATOR_KEY: TEST_OPERATOR_KEY },
      });
      await expect(run).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining(`next_after ${stuck} does not follow ${stuck}`) });
    } finally {
      await new Promise((ok) => front.close(ok));
    }
  });
});

it('prints an error message with its control characters escaped: an escape sequence in a name is shown, not acted on', async () => {
  const run = promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), '\u001b[2Jwipe\u0007']);
  await expect(run).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('medhash: unknown command \\u001b[2Jwipe\\u0007\n') });
  expect(((await run.catch((e: { stderr: string }) => e)) as { stderr: string }).stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
});

describe('medhash command lines', () => {
  const run = (...args: string[]) =>
    promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'scripts', 'medhash.mjs'), ...args], {
      env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: secret, MEDHASH_DATA_DIR: join(dir, 'cli-lines') },
    });
  const usage = (p: Promise<unknown>) => p.then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr.split('\n')[0] }));

  it('refuses a number that is not one, and options that the run would ignore, as a wrong command line (exit 2)', async () => {
    const codes = file('lines.jsonl', '{"id":"x","code":"00000000","descriptor":[0,0]}\n');
    expect(await Promise.all([
      usage(run('search', '--collection', 'docs', '--code', '00000000', '--k', '')),
      usage(run('search', '--collection', 'docs', '--code', '00000000', '--k', '1e1')),
      usage(run('index', '--collection', 'docs', '--codes', codes, '--batch', '0x10')),
      usage(run('index', '--collection', 'docs', '--codes', codes, '--max-items', '1', '--checkpoint', join(dir, 'cp'))),
      usage(run('index', '--collection', 'docs', '--images', dir, '--format', 'csv')),
      usage(run('index', '--collection', 'docs', '--images', dir, '--split', 'query')),
      usage(run('orphans', '--data-dir', join(dir, 'data'), '--force')),
      usage(run('admin', 'orphans', '--force')),
    ])).toEqual([
      { code: 2, stderr: 'medhash: --k must be an integer' },
      { code: 2, stderr: 'medhash: --k must be an integer' },
      { code: 2, stderr: 'medhash: --batch must be an integer' },
      { code: 2, stderr: 'medhash: --max-items, --checkpoint need --images, --dicom or --data (a codes file is neither encoded nor checkpointed)' },
      { code: 2, stderr: 'medhash: --format needs --codes' },
      { code: 2, stderr: 'medhash: --split needs --data' },
      { code: 2, stderr: 'medhash: --force needs --delete' },
      { code: 2, stderr: 'medhash: --force needs --delete' },
    ]);
  });

  it('says the generation the collection is at when there was nothing to send, not 0', async () => {
    const at = (await api.request<{ generation: number }>('POST', '/v1/collections/docs/items', { items: [{ id: 'gen', code: '00000000', descriptor: [0, 0] }] })).generation;
    const { stderr } = await run('index', '--collection', 'docs', '--codes', file('none.jsonl', ''));
    expect(stderr).toContain(`indexed 0 items in 0 batches; docs is at generation ${at}`);
  });

  it("prints the usage for --help after a command, exit 0; parseArgs' advice keeps its lines", async () => {
    const help = await run('index', '--collection', 'docs', '--help');
    expect(help.stdout).toMatch(/^medhash <command> \[options\]/);
    const e = await run('search', '--collection', 'docs', '--code', '00000000', '--k', '-3').then(() => expect.fail('exit 0'), (x: { code: number; stderr: string }) => x);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/^medhash: Option '--k' argument is ambiguous\.\nDid you forget/);
  });
});
