// The inference backend as a separate process (`medhash backend`), for the tests and the
// end-to-end bench: a real process that can be killed, paused (SIGSTOP: a backend that accepts
// connections and never answers) and resumed.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export interface BackendProcess {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

const CLI = join(import.meta.dirname, '..', '..', 'scripts', 'medhash.mjs');

/** Starts `medhash backend --model <model> --port 0` and resolves once it serves. */
export function spawnBackend(model: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = process.env): Promise<BackendProcess> {
  const child = spawn(process.execPath, [CLI, 'backend', '--model', model, '--port', '0', ...extraArgs], { env, stdio: ['ignore', 'inherit', 'pipe'] });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  return new Promise((resolve, reject) => {
    let log = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      log += d;
      const m = log.match(/medhash backend on (http:\/\/\S+):/);
      if (m) {
        child.stderr!.removeAllListeners('data');
        child.stderr!.on('data', (x: string) => process.stderr.write(x));
        resolve({
          url: m[1],
          child,
          async stop() {
            if (child.exitCode === null && child.signalCode === null) {
              child.kill('SIGCONT');
              child.kill('SIGTERM');
            }
            await exited;
          },
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`medhash backend exited (${code}) before serving:\n${log}`)));
  });
}
