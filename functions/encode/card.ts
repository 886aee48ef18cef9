// The model card (docs/MODEL_CARD.md, format `medhash-model-card` version 1) as the TypeScript
// side reads it: only the fields encoding needs, checked on load so that an unknown version or
// a card missing a field fails loudly instead of silently misreading the model. `loadCard` is
// the Node path (file system); other runtimes fetch the bytes themselves and call `parseCard`
// and `checkOnnx`.
import { sha256Hex } from '../util/bytes.ts';

export const CARD_FORMAT = 'medhash-model-card';
export const CARD_VERSION = 1;
export const PREPROCESS_VERSION = 1;

export interface PreprocessSpec {
  version: number;
  /** Luma weights applied before resizing when `channels` is 1. */
  grey: { applies: boolean; weights: [number, number, number] };
  /** Output size [height, width]. */
  resize: { to: [number, number] };
}

export interface ModelInput {
  name: string;
  size: number;
  channels: 1 | 3;
  layout: 'NCHW';
  dtype: 'float32';
  preprocess: PreprocessSpec;
}

export interface ModelCard {
  format: typeof CARD_FORMAT;
  version: typeof CARD_VERSION;
  name: string;
  model_id: string;
  onnx: string;
  sha256: string;
  bits: number;
  input: ModelInput;
  /** Output names present in the graph (u, logits, features, ood_*). */
  outputs: string[];
  descriptor: { source: 'u'; dims: number };
  classes: string[];
  metrics: { map100: number; map1000: number; p10: number } & Record<string, unknown>;
  ood: { threshold: number } & Record<string, unknown>;
}

export class CardError extends Error {
  override name = 'CardError';
  constructor(
    /** What is wrong, without the card's name: a reader that knows the card's file names it. */
    readonly problem: string,
    where = 'model card',
  ) {
    super(`${where}: ${problem}`);
  }
}

type Obj = Record<string, unknown>;

function obj(v: unknown, path: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CardError(`${path} must be an object`);
  return v as Obj;
}

function str(o: Obj, key: string, path: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw new CardError(`${path}${key} must be a non-empty string`);
  return v;
}

function num(o: Obj, key: string, path: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CardError(`${path}${key} must be a number`);
  return v;
}

function posInt(o: Obj, key: string, path: string): number {
  const v = num(o, key, path);
  if (!Number.isInteger(v) || v <= 0) throw new CardError(`${path}${key} must be a positive integer`);
  return v;
}

const REQUIRED_OUTPUTS = ['u', 'logits', 'features', 'ood_score', 'ood_recon', 'ood_maha'];

/**
 * Validates a card's `input` (what the model takes and how an image is preprocessed for it);
 * throws CardError naming the first problem. Also how a client reads the input an inference
 * backend reports for its model (GET /healthz), to preprocess for it.
 */
export function parseModelInput(json: unknown): ModelInput {
  const inp = obj(json, 'input');
  const size = posInt(inp, 'size', 'input.');
  const channels = num(inp, 'channels', 'input.');
  if (channels !== 1 && channels !== 3) throw new CardError(`input.channels must be 1 or 3, got ${channels}`);
  if (inp.layout !== 'NCHW') throw new CardError(`input.layout must be "NCHW", got ${JSON.stringify(inp.layout)}`);
  if (inp.dtype !== 'float32') throw new CardError(`input.dtype must be "float32", got ${JSON.stringify(inp.dtype)}`);
  const pre = obj(inp.preprocess, 'input.preprocess');
  if (pre.version !== PREPROCESS_VERSION) {
    throw new CardError(`input.preprocess.version ${JSON.stringify(pre.version)} is not supported (this reader knows ${PREPROCESS_VERSION})`);
  }
  const grey = obj(pre.grey, 'input.preprocess.grey');
  const weights = grey.weights;
  if (!Array.isArray(weights) || weights.length !== 3 || !weights.every((w) => typeof w === 'number')) {
    throw new CardError('input.preprocess.grey.weights must be three numbers');
  }
  if (typeof grey.applies !== 'boolean' || grey.applies !== (channels === 1)) {
    throw new CardError(`input.preprocess.grey.applies must be ${channels === 1} for ${channels} channel(s)`);
  }
  const resize = obj(pre.resize, 'input.preprocess.resize');
  const to = resize.to;
  if (!Array.isArray(to) || to.length !== 2 || to[0] !== size || to[1] !== size) {
    throw new CardError(`input.preprocess.resize.to must be [${size}, ${size}]`);
  }
  if (pre.normalize !== null && pre.normalize !== undefined) throw new CardError('input.preprocess.normalize is not supported (version 1 has none)');

  return {
    name: str(inp, 'name', 'input.'),
    size,
    channels,
    layout: 'NCHW',
    dtype: 'float32',
    preprocess: { version: PREPROCESS_VERSION, grey: { applies: grey.applies, weights: weights as [number, number, number] }, resize: { to: [size, size] } },
  };
}

/** Validates a parsed card JSON; throws CardError naming the first problem. */
export function parseCard(json: unknown): ModelCard {
  const c = obj(json, 'the card');
  if (c.format !== CARD_FORMAT) throw new CardError(`format must be "${CARD_FORMAT}", got ${JSON.stringify(c.format)}`);
  if (c.version !== CARD_VERSION) throw new CardError(`version ${JSON.stringify(c.version)} is not supported (this reader knows ${CARD_VERSION})`);
  const bits = posInt(c, 'bits', '');
  if (bits % 8 !== 0) throw new CardError(`bits must be a multiple of 8, got ${bits}`);

  const input = parseModelInput(c.input);
  const outputs = obj(c.outputs, 'outputs');
  const missing = REQUIRED_OUTPUTS.filter((k) => !(k in outputs));
  if (missing.length) throw new CardError(`outputs lacks ${missing.join(', ')}`);
  const desc = obj(c.descriptor, 'descriptor');
  if (desc.source !== 'u') throw new CardError(`descriptor.source must be "u", got ${JSON.stringify(desc.source)}`);
  const classes = c.classes;
  if (!Array.isArray(classes) || classes.length === 0 || !classes.every((x) => typeof x === 'string')) {
    throw new CardError('classes must be a non-empty list of strings');
  }
  // The service splits and packs the outputs by these sizes: a card that disagrees with itself
  // would give codes of another length or class names off by one.
  const width = (name: string): unknown => (obj(outputs[name], `outputs.${name}`).shape as unknown[] | undefined)?.[1];
  if (width('u') !== bits) throw new CardError(`outputs.u.shape must be ["N", ${bits}] (bits), got ${JSON.stringify(obj(outputs.u, 'outputs.u').shape)}`);
  if (width('logits') !== classes.length) {
    throw new CardError(`outputs.logits.shape must be ["N", ${classes.length}] (one per class), got ${JSON.stringify(obj(outputs.logits, 'outputs.logits').shape)}`);
  }
  const dims = posInt(desc, 'dims', 'descriptor.');
  if (dims !== bits) throw new CardError(`descriptor.dims must be ${bits}: the descriptor is u quantized, one value per bit`);
  const metrics = obj(c.metrics, 'metrics');
  const ood = obj(c.ood, 'ood');
  const sha256 = str(c, 'sha256', '');
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new CardError('sha256 must be 64 lowercase hex digits');

  return {
    format: CARD_FORMAT,
    version: CARD_VERSION,
    name: str(c, 'name', ''),
    model_id: str(c, 'model_id', ''),
    onnx: str(c, 'onnx', ''),
    sha256,
    bits,
    input,
    outputs: Object.keys(outputs),
    descriptor: { source: 'u', dims },
    classes: classes as string[],
    metrics: { ...metrics, map100: num(metrics, 'map100', 'metrics.'), map1000: num(metrics, 'map1000', 'metrics.'), p10: num(metrics, 'p10', 'metrics.') },
    ood: { ...ood, threshold: num(ood, 'threshold', 'ood.') },
  };
}

/** Refuses model bytes whose sha256 is not the card's: a card must never describe another model. */
export async function checkOnnx(card: ModelCard, onnx: Uint8Array, where = card.onnx): Promise<void> {
  const sha = await sha256Hex(onnx);
  if (sha !== card.sha256) throw new CardError(`sha256 ${sha} does not match the card's ${card.sha256}`, `model ${where}`);
}

export interface LoadedCard {
  card: ModelCard;
  /** The verified bytes of the .onnx the card names. */
  onnx: Uint8Array;
  onnxPath: string;
}

/**
 * Node: `path` is a `.card.json`, or a `.onnx` whose card lies beside it. Reads the card and the
 * model, and checks the model's sha256; a failure names the card's file. node:fs is imported lazily so that this module stays
 * loadable in workerd and browsers, which only use `parseCard`.
 */
export async function loadCard(path: string): Promise<LoadedCard> {
  const { readFile } = await import('node:fs/promises');
  const { dirname, join } = await import('node:path');
  const cardPath = path.endsWith('.onnx') ? path.replace(/\.onnx$/, '.card.json') : path;
  const where = `model card ${cardPath}`;
  let card: ModelCard;
  try {
    card = parseCard(JSON.parse(await readFile(cardPath, 'utf8')));
  } catch (e) {
    // a process may load several cards (the catalog, eval runs): say which one is wrong
    throw new CardError(e instanceof CardError ? e.problem : (e as Error).message, where);
  }
  const onnxPath = join(dirname(cardPath), card.onnx);
  let onnx: Uint8Array;
  try {
    onnx = new Uint8Array(await readFile(onnxPath));
  } catch (e) {
    throw new CardError(`its model ${onnxPath} cannot be read: ${(e as Error).message}`, where);
  }
  await checkOnnx(card, onnx, onnxPath);
  return { card, onnx, onnxPath };
}
