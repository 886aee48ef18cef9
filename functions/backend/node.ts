// Node entry of the inference backend: loads the model card beside the .onnx, opens the model
// once with onnxruntime-node (CUDA when asked for and present, CPU otherwise), warms it up at
// the sizes the batcher will use, then serves createBackendApp.
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { loadCard } from '../encode/card.ts';
import { closeServer } from '../entries/signals.ts';
import { initNodeImageCodecs } from '../encode/image-node.ts';
import { loadNodeEncoder, type Encoder } from '../encode/model.ts';
import { createBackendApp, DEFAULT_BATCHER, type BackendService } from './app.ts';
import type { BatcherOptions } from './batcher.ts';

export interface BackendOptions {
  /** Path of NAME.onnx (its card beside it) or of NAME.card.json. */
  model: string;
  port: number;
  hostname: string;
  cuda: boolean;
  /** onnxruntime's intra-op threads; unset: its default. */
  threads?: number;
  batcher?: BatcherOptions;
}

export interface RunningBackend {
  server: ServerType;
  url: string;
  service: BackendService;
  encoder: Encoder;
  close(): Promise<void>;
}

/** One batch of 1 and one full batch: the first runs allocate, later ones are steady. */
export async function warmUp(encoder: Encoder, maxBatch: number): Promise<void> {
  const { channels, size } = encoder.card.input;
  for (const n of [1, maxBatch]) await encoder.run(new Float32Array(n * channels * size * size), n);
}

export async function startBackend(opts: BackendOptions): Promise<RunningBackend> {
  const { card, onnx } = await loadCard(opts.model);
  await initNodeImageCodecs();
  const encoder = await loadNodeEncoder(onnx, card, { cuda: opts.cuda, threads: opts.threads });
  const batcher = opts.batcher ?? DEFAULT_BATCHER;
  await warmUp(encoder, batcher.maxBatch);
  const service = createBackendApp(encoder, batcher);
  const server = await new Promise<ServerType>((ok) => {
    const s = serve({ fetch: service.app.fetch, port: opts.port, hostname: opts.hostname }, () => ok(s));
  });
  const url = `http://${opts.hostname}:${(server.address() as AddressInfo).port}`;
  return {
    server,
    url,
    service,
    encoder,
    async close() {
      await closeServer(server);
      // The server has answered everyone still connected, but a batch of clients that hung up
      // may still run (what of theirs waited left the queue when they did): releasing the
      // session under it would fail it with "Session already disposed".
      await service.batcher.close();
      await encoder.close();
    },
  };
}
