// A real service for tests of the `medhash` CLI's image commands (test/cli-frames.test.ts,
// test/cli-dicom.test.ts): the inference backend on its own port, the Node app on local stores
// with one tenant key, and the CLI run as a child process against both, as an operator runs it.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { serve, type ServerType } from '@hono/node-server';
import { createApp } from '../../functions/api/app.ts';
import { startBackend } from '../../functions/backend/node.ts';
import { loadCard } from '../../functions/encode/card.ts';
import { createNodeBackend } from '../../functions/entries/node.ts';
import { createNodeImageEncoder } from '../../functions/inference/node.ts';
import { Client } from '../../scripts/cli/client.ts';
import { TEST_OPERATOR_KEY } from './constants.ts';

export const ROOT = join(import.meta.dirname, '..', '..');
export const MODEL = join(ROOT, 'models', 'mednist-darf-b64.onnx');

export interface CliWorld {
  /** A temporary folder for the test's files; removed by close(). */
  dir: string;
  url: string;
  key: string;
  /** The tenant's client. */
  api: Client;
  modelId: string;
  backend: Awaited<ReturnType<typeof startBackend>>;
  /** `medhash ARGS` against the app (in-process encoding unless `env` names the backend: `viaBackend`). */
  cli(args: string[], env?: Record<string, string>): Promise<{ stdout: string; stderr: string }>;
  /** The environment that has the CLI encode through the backend. */
  viaBackend(): Record<string, string>;
  /** A new collection of the model's 64-bit codes and descriptors, named `<name>-<n>`. */
  collection(): Promise<string>;
  close(): Promise<void>;
}

/** The world, its temporary folder named after `name`. */
export async function startCliWorld(name: string): Promise<CliWorld> {
  const dir = mkdtempSync(join(tmpdir(), `medhash-${name}-`));
  const backend = await startBackend({ model: MODEL, port: 0, hostname: '127.0.0.1', cuda: false, threads: 1 });
  const images = await createNodeImageEncoder({ model: MODEL, backendUrl: backend.url });
  const node = await createNodeBackend({ dataDir: join(dir, 'data'), operatorKey: TEST_OPERATOR_KEY, images });
  const server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: createApp(node.backend).fetch, port: 0, hostname: '127.0.0.1' }, () => ok(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const op = new Client(url, TEST_OPERATOR_KEY);
  const tenant = await op.request<{ id: string }>('POST', '/v1/admin/tenants', { name: `${name}-test` });
  const key = (await op.request<{ secret: string }>('POST', `/v1/admin/tenants/${tenant.id}/keys`, { scopes: ['search', 'ingest', 'admin'] })).secret;
  const api = new Client(url, key);
  const modelId = (await loadCard(MODEL)).card.model_id;
  let collections = 0;
  return {
    dir, url, key, api, modelId, backend,
    cli: (args, env = {}) =>
      promisify(execFile)(process.execPath, [join(ROOT, 'scripts', 'medhash.mjs'), ...args], {
        env: { ...process.env, MEDHASH_URL: url, MEDHASH_API_KEY: key, MEDHASH_DATA_DIR: join(dir, 'cli'), MEDHASH_BACKEND_URL: '', ...env },
        cwd: ROOT,
      }),
    viaBackend: () => ({ MEDHASH_BACKEND_URL: backend.url }),
    async collection() {
      const c = `${name}-${++collections}`;
      await api.request('POST', '/v1/collections', { name: c, bits: 64, descriptor_dims: 64, model_id: modelId });
      return c;
    },
    async close() {
      await new Promise((ok) => server.close(ok));
      node.close();
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What a command that must fail threw: its exit code and stderr. */
export const failure = (p: Promise<unknown>) => p.then(() => { throw new Error('the command succeeded'); }, (e: { code: number; stderr: string }) => e);
