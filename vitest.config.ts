// Vitest projects. `node`: plain Node tests; `workers`: test/workers inside real workerd with
// the bindings of wrangler.toml (local KV and Durable Objects).
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';
import { TEST_OPERATOR_KEY, TEST_SHARD_MAX_ITEMS } from './test/shared/constants.ts';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'node',
          environment: 'node',
          // Hang guards, not timing checks: a 2-core CI machine under load is slow. A suite's
          // set-up (loading a model, ingesting an index) is as slow as its tests.
          testTimeout: 60_000,
          hookTimeout: 60_000,
          include: ['test/**/*.test.ts'],
          exclude: ['test/workers/**'],
        },
      },
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: { bindings: { MEDHASH_OPERATOR_KEY: TEST_OPERATOR_KEY, MEDHASH_SHARD_MAX_ITEMS: String(TEST_SHARD_MAX_ITEMS), MEDHASH_ACCESS_LOG: 'off' } },
          }),
        ],
        test: {
          name: 'workers',
          testTimeout: 60_000,
          hookTimeout: 60_000,
          include: ['test/workers/**/*.test.ts'],
        },
      },
    ],
  },
});
