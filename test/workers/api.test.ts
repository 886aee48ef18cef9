// The shared API suite against the Worker in workerd, with local KV and Durable Objects.
import { exports } from 'cloudflare:workers';
import { apiSuite } from '../shared/api-suite.ts';
import { TEST_OPERATOR_KEY, TEST_SHARD_MAX_ITEMS } from '../shared/constants.ts';

apiSuite('workers', () => ({
  fetch: (req) => exports.default.fetch(req),
  operatorKey: TEST_OPERATOR_KEY,
  shardMaxItems: TEST_SHARD_MAX_ITEMS,
}));
