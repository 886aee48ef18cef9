// The shared API suite against the Worker in workerd, with local KV and Durable Objects.
// Requests go straight to the Worker's fetch handler with the test's bindings: the same code
// path as `exports.default.fetch`, without its per-request hop through the test runner, which
// turns the suite's 1,000 concurrent searches into minutes.
import { createExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import worker from '../../functions/entries/worker.ts';
import { apiSuite } from '../shared/api-suite.ts';
import { TEST_OPERATOR_KEY, TEST_SHARD_MAX_ITEMS } from '../shared/constants.ts';

apiSuite('workers', () => ({
  fetch: (req) => worker.fetch(req as Request<unknown, IncomingRequestCfProperties>, env, createExecutionContext()),
  operatorKey: TEST_OPERATOR_KEY,
  shardMaxItems: TEST_SHARD_MAX_ITEMS,
}));
