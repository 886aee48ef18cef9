#!/usr/bin/env node
// `medhash` command: runs the TypeScript CLI (scripts/cli/main.ts) through tsx, no build step.
import { register } from 'tsx/esm/api';

// node:sqlite prints an ExperimentalWarning on load; keep every other warning.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name === 'ExperimentalWarning' && /SQLite/.test(w.message)) return;
  console.error(`${w.name}: ${w.message}`);
});

register();
await import('./cli/main.ts');
