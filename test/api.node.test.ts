// The shared API suite against the Node app (node:sqlite stores in a temporary data dir).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { createApp } from '../functions/api/app.ts';
import { createNodeBackend, type NodeBackend } from '../functions/entries/node.ts';
import { DEFAULT_WRITER_LIMITS } from '../functions/store/writer.ts';
import { apiSuite, type ApiHarness } from './shared/api-suite.ts';
import { TEST_OPERATOR_KEY, TEST_SHARD_MAX_ITEMS } from './shared/constants.ts';

let dir: string;
let node: NodeBackend;
let harness: ApiHarness;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medhash-api-'));
  node = await createNodeBackend({
    dataDir: dir,
    operatorKey: TEST_OPERATOR_KEY,
    limits: { ...DEFAULT_WRITER_LIMITS, maxShardItems: TEST_SHARD_MAX_ITEMS },
  });
  const app = createApp(node.backend);
  harness = { fetch: async (req) => app.fetch(req), operatorKey: TEST_OPERATOR_KEY, shardMaxItems: TEST_SHARD_MAX_ITEMS };
});

afterAll(() => {
  node.close();
  rmSync(dir, { recursive: true, force: true });
});

apiSuite('node', () => harness);
