// Graceful stop of the Node processes (`medhash serve`, `medhash backend`): on SIGTERM or SIGINT
// the server stops taking connections, lets the requests in flight finish, releases its files
// and exits 0. The stores are crash-safe without it (a write commits or never happened); it
// spares clients a cut answer when systemd, Kubernetes or Ctrl-C stops the process. A second
// signal, or a stop longer than the grace period, exits at once with 1.
import type { ServerType } from '@hono/node-server';

/** Stops taking connections; resolves once the requests in flight have been answered. */
export function closeServer(server: ServerType): Promise<void> {
  return new Promise((ok, fail) => {
    // A busy keep-alive connection (the edge's pool to the backend) would otherwise take request
    // after request and hold close() open until the grace period cuts one off mid-answer.
    server.prependListener('request', (_req, res) => res.setHeader('connection', 'close'));
    server.close((e) => (e ? fail(e) : ok()));
    // Idle keep-alive connections would hold close() open until the client drops them.
    if ('closeIdleConnections' in server) server.closeIdleConnections();
  });
}

export function stopOnSignals(what: string, stop: () => Promise<void>, graceMs = 10_000): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    console.error(`${what}: ${signal}, stopping (requests in flight get up to ${graceMs / 1000} s)`);
    setTimeout(() => {
      console.error(`${what}: not stopped after ${graceMs / 1000} s, exiting`);
      process.exit(1);
    }, graceMs).unref();
    stop().then(
      () => {
        console.error(`${what}: stopped`);
        process.exit(0);
      },
      (e: unknown) => {
        console.error(`${what}: stop failed: ${String(e)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
