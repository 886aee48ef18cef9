// Values shared by the test projects and vitest.config.ts (which hands them to workerd).
/** As long as the admin API asks of an operator key (MIN_OPERATOR_KEY_LENGTH). */
export const TEST_OPERATOR_KEY = 'test-operator-key-0123456789abcdef';
/** Small shards in tests, so a few dozen items already span several of them. */
export const TEST_SHARD_MAX_ITEMS = 64;
