// The codec thread's own code (started by codec-thread.ts): decodes the JPEG-LS and JPEG 2000
// frames posted to it with dicom-codecs.ts, the code every other runtime runs in its own thread,
// from the compiled modules handed over in workerData, and posts back the samples (their buffer
// moved, not copied) or the error, a MedhashError as its fields.
import { parentPort, workerData } from 'node:worker_threads';
import { MedhashError } from '../util/errors.ts';
import { DicomCodecs, type CodecTarget, type DicomCodecModules } from './dicom-codecs.ts';

export interface FrameJob {
  id: number;
  kind: 'jpegLs' | 'jpeg2000';
  frame: Uint8Array<ArrayBuffer>;
  target: CodecTarget;
}

export type FrameReply =
  | { id: number; raw: Uint8Array; planar: 0 | 1 }
  | { id: number; error: { status: MedhashError['status']; code: string; message: string; field?: string } }
  | { id: number; failure: string };

const port = parentPort;
if (port) {
  const codecs = new DicomCodecs(workerData as DicomCodecModules);
  port.on('message', async (job: FrameJob) => {
    let reply: FrameReply;
    try {
      const { raw, planar } = await codecs[job.kind](job.frame, job.target);
      // the samples are a copy out of the codec's memory, in a buffer of their own
      port.postMessage({ id: job.id, raw, planar } satisfies FrameReply, [raw.buffer as ArrayBuffer]);
      return;
    } catch (e) {
      reply = e instanceof MedhashError
        ? { id: job.id, error: { status: e.status, code: e.code, message: e.message, field: e.field } }
        : { id: job.id, failure: e instanceof Error ? e.message : String(e) };
    }
    port.postMessage(reply);
  });
  // what the deadline of the first frame must not pay for: the thread's start
  port.postMessage('ready');
}
