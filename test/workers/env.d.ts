// Types of the `cloudflare:test` module for the workerd tests.
/// <reference types="@cloudflare/vitest-pool-workers/types" />
