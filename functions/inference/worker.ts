// The edge encoder in workerd. onnxruntime-web cannot run there (docs/RUNTIMES.md), so the
// image bytes go to the inference backend as they are, and when it is unavailable the answer is
// a 503 that names the client-side path.
import { MedhashError } from '../util/errors.ts';
import { GuardedRemote, type EdgeEncoderOptions, type ImageEncoderApi } from './remote.ts';

const NO_CLIENT_SIDE =
  'search by image needs the inference backend, which is unreachable, and this runtime cannot run the model in-process; ' +
  'encode the image on the client with onnxruntime-web (docs/RUNTIMES.md, client-side path) and send the code to POST /v1/collections/{collection}/search';

/** workerd: the backend or a 503 that points at client-side encoding. */
export function workerEdgeEncoder(opts: EdgeEncoderOptions): ImageEncoderApi {
  const guarded = new GuardedRemote(opts);
  return {
    async encodeImage(bytes, contentType, frame) {
      const remote = await guarded.tryEncode({ image: bytes, contentType, frame });
      if (remote) return remote;
      throw new MedhashError(503, 'encoder_unavailable', NO_CLIENT_SIDE);
    },
  };
}
