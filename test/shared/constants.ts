// Values shared by the test projects and vitest.config.ts (which hands them to workerd).
export const TEST_OPERATOR_KEY = 'test-operator-key';
/** Small shards in tests, so a few dozen items already span several of them. */
export const TEST_SHARD_MAX_ITEMS = 64;
