// The search page's script (bundled to /sdk/ui.js): connects with an API key, lists the key's
// collections, loads the chosen collection's model (and onnxruntime-web's runtime) with a progress
// bar and a Retry after a failed load, checks the chosen image's size before reading it, encodes it
// through the SDK and shows the ranked results, each with its explanation, and the OOD verdict.
import { isDicom } from '../../encode/dicom.ts';
import { checkImageBytes, decodeImage, DEFAULT_LIMITS } from '../../encode/image.ts';
import { loadImageCodecs, MedhashApiError, MedhashClient, type BrowserEncoder, type CollectionSummary, type Download, type OodAssessment, type SearchAnswer } from '../index.ts';

const $ = <T = HTMLElement>(id: string) => document.getElementById(id) as unknown as T;

const keyInput = $<HTMLInputElement>('key');
const select = $<HTMLSelectElement>('collection');
const progress = $<HTMLProgressElement>('model-progress');
const progressBytes = $('model-bytes');
const modelStatus = $('model-status');
const retryModel = $<HTMLButtonElement>('retry-model');
const fileInput = $<HTMLInputElement>('image');
const drop = $('drop');
const preview = $<HTMLImageElement>('preview');
const frameInput = $<HTMLInputElement>('frame');
const weight = $<HTMLInputElement>('content-weight');
const weightOut = $<HTMLOutputElement>('content-weight-value');
const go = $<HTMLButtonElement>('go');
const errorBox = $('error');
const encodedBox = $('encoded');
const oodBox = $('ood');
const list = $<HTMLOListElement>('results');
const allowOod = $<HTMLInputElement>('allow-ood');
const allowOodLabel = allowOod.labels?.[0]?.textContent?.trim() ?? '';

let client: MedhashClient | null = null;
let collections: CollectionSummary[] = [];
let image: File | null = null;
/** The file last chosen, checked or not: a new frame number checks it again. */
let lastFile: File | undefined;
/** The preview's object URL, revoked when replaced: it keeps its blob alive. */
let previewHref: string | null = null;
/** Bumped by each choice of image: a preview still being made for an older one is dropped. */
let picked = 0;
/** Bumped by each search and each change of image or collection: an answer to an older one is dropped. */
let asked = 0;
/** The chosen collection's model, once loaded: with an image, Search may be pressed. */
let ready: BrowserEncoder | null = null;

/**
 * The error line, by what each error is about: each is cleared when that thing changes, so a new
 * image does not erase why the model failed to load, and another collection takes a search's
 * refusal away with its answer.
 */
type About = 'key' | 'model' | 'image' | 'search';
const errors = new Map<About, string>();
const renderErrors = () => {
  errorBox.textContent = [...errors.values()].join(' ');
};
const showError = (about: About, e: unknown) => {
  errors.set(about, e instanceof Error ? e.message : String(e));
  renderErrors();
};
const clearError = (about: About) => {
  if (errors.delete(about)) renderErrors();
};

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

const chosen = (): CollectionSummary | undefined => collections.find((c) => c.name === select.value);

/** Forgets the shown answer and any search still running: it was for another image or collection. */
function clearAnswer(): number {
  clearError('search');
  list.replaceChildren();
  oodBox.hidden = true;
  encodedBox.textContent = '';
  delete encodedBox.dataset.code;
  return ++asked;
}

/** The model line with an empty bar and no byte count. */
function resetModel(status: string): void {
  ready = null;
  clearError('model');
  retryModel.hidden = true;
  progress.max = 1;
  progress.value = 0;
  progressBytes.textContent = '';
  modelStatus.textContent = status;
}

async function loadModel(): Promise<void> {
  const col = chosen();
  clearAnswer();
  go.disabled = true;
  if (!client || !col) return;
  if (!col.model_id) {
    resetModel(`collection ${col.name} names no model`);
    return;
  }
  resetModel(`loading ${col.model_id}...`);
  progress.removeAttribute('value');
  // Another collection (or key) may be chosen while this model loads: then this load keeps quiet.
  const c = client;
  const current = () => client === c && chosen()?.model_id === col.model_id;
  let downloading: Download | null = null;
  try {
    const enc = await client.encoder(col.model_id, (loaded, total, what) => {
      if (!current()) return;
      // the status (announced) changes once per download, the bytes with every chunk
      if (what !== downloading) {
        downloading = what;
        modelStatus.textContent = what === 'model' ? `downloading ${col.model_id}...` : 'downloading the onnxruntime-web runtime...';
      }
      if (total) {
        progress.max = total;
        progress.value = loaded;
      } else progress.removeAttribute('value');
      progressBytes.textContent = total ? `${mb(loaded)} of ${mb(total)} MB` : `${mb(loaded)} MB`;
    });
    if (!current()) return;
    progress.max = 1;
    progress.value = 1;
    progressBytes.textContent = '';
    ready = enc;
    showReady();
    go.disabled = image === null;
  } catch (e) {
    if (!current()) return;
    progressBytes.textContent = '';
    modelStatus.textContent = 'model failed to load';
    // choosing the same collection again is no change event: the way to try again, short of reconnecting
    retryModel.hidden = false;
    showError('model', e);
  }
}

/**
 * "ready" with the runtime the model runs on now: a search may change it (a failed WebGPU run
 * hands the model over to wasm, docs/SDK.md), so each search ends by calling this again. The
 * status is a live region: it is rewritten only when it changes.
 */
function showReady(): void {
  if (!ready) return;
  const runtime = ready.runtime;
  // "none (...)": a GPU run failed and its fallback has not loaded yet; the next search loads it
  const text = runtime.startsWith('none') ? `${ready.card.model_id}: ${runtime}` : `${ready.card.model_id} ready (${runtime}, sha256 checked)`;
  if (modelStatus.textContent !== text) modelStatus.textContent = text;
}

$('connect').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errors.clear();
  renderErrors();
  // Nothing of the previous key's stays on show or can be chosen while this one is asked, nor
  // after it fails: its collections, their model, the answer.
  // the previous key's client keeps its model in memory until it is closed
  void client?.close();
  const c = (client = new MedhashClient({ apiKey: keyInput.value.trim() }));
  collections = [];
  select.replaceChildren();
  select.disabled = true;
  clearAnswer();
  go.disabled = true;
  resetModel('not loaded');
  let list: CollectionSummary[];
  try {
    list = await c.collections();
  } catch (e) {
    if (client !== c) return;
    client = null;
    showError('key', e);
    return;
  }
  // a later connect shows its own answer
  if (client !== c) return;
  collections = list;
  select.replaceChildren(...collections.map((c) => new Option(`${c.name} (${c.bits} bits, ${c.model_id ?? 'no model'})`, c.name)));
  select.disabled = collections.length === 0;
  if (collections.length === 0) showError('key', 'this key sees no collections');
  else await loadModel();
});

select.addEventListener('change', () => void loadModel());
retryModel.addEventListener('click', () => void loadModel());

/**
 * What the preview shows: the file itself, unread; a DICOM, which a browser cannot show, is read
 * and its pixels, decoded as the search will decode them, are drawn as a PNG.
 */
async function previewBlob(f: File): Promise<Blob> {
  // isDicom looks at the 128-byte preamble and the "DICM" after it
  if (!isDicom(new Uint8Array(await f.slice(0, 132).arrayBuffer()))) return f;
  // a JPEG Baseline or Extended, JPEG-LS or JPEG 2000 DICOM's frame goes through a codec, which no model load may have started yet
  await loadImageCodecs();
  const img = await decodeImage(new Uint8Array(await f.arrayBuffer()), 'application/dicom', DEFAULT_LIMITS, { frame: frame() });
  const canvas = Object.assign(document.createElement('canvas'), { width: img.width, height: img.height });
  const ctx = canvas.getContext('2d')!;
  const out = ctx.createImageData(img.width, img.height);
  for (let p = 0; p < img.width * img.height; p++) {
    for (let c = 0; c < 3; c++) out.data[p * 4 + c] = img.data[p * img.channels + (img.channels === 1 ? 0 : c)];
    out.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the DICOM preview could not be drawn'))), 'image/png'));
}

function showPreview(href: string | null): void {
  if (previewHref) URL.revokeObjectURL(previewHref);
  previewHref = href;
  if (href) preview.src = href;
  else preview.removeAttribute('src');
  preview.hidden = href === null;
}

/** The frame the form names (empty: none); a bad number is the decoder's 400, naming `frame`. */
const frame = (): number | undefined => (frameInput.value === '' ? undefined : Number(frameInput.value));

async function setImage(f: File | undefined): Promise<void> {
  if (!f) return;
  lastFile = f;
  clearError('image');
  clearAnswer();
  // no search until this file is checked: neither of it nor of the one it replaces
  const mine = ++picked;
  image = null;
  go.disabled = true;
  let href: string;
  try {
    // by its size, before any of it is read: a file of gigabytes would otherwise be read into memory
    checkImageBytes(f.size);
    href = URL.createObjectURL(await previewBlob(f));
  } catch (e) {
    if (mine !== picked) return;
    // too large, or a DICOM this service cannot read (compressed, multi-frame...): say so now, not at search time
    showPreview(null);
    showError('image', e);
    return;
  }
  if (mine !== picked) {
    URL.revokeObjectURL(href);
    return;
  }
  showPreview(href);
  image = f;
  go.disabled = !chosen() || !ready;
}

fileInput.addEventListener('change', () => void setImage(fileInput.files?.[0]));
// a multi-frame DICOM's preview (and its check) is of the frame named
frameInput.addEventListener('change', () => void setImage(lastFile));
drop.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  void setImage(ev.dataTransfer?.files[0]);
});
weight.addEventListener('input', () => {
  weightOut.value = weight.value;
});

function showOod(ood: OodAssessment): void {
  const words = { in_distribution: 'In distribution', out_of_distribution: 'OUT OF DISTRIBUTION: results may not be reliable', not_assessed: 'Not assessed' };
  oodBox.hidden = false;
  oodBox.className = ood.verdict;
  oodBox.dataset.verdict = ood.verdict;
  const score = ood.score === null ? '' : ` (score ${ood.score.toFixed(3)}, threshold ${ood.threshold?.toFixed(3) ?? '-'})`;
  oodBox.textContent = `${words[ood.verdict]}${score}. ${ood.reasons.join(' ')}`;
}

function showResults(answer: SearchAnswer): void {
  list.replaceChildren(
    ...answer.results.map((r) => {
      const li = document.createElement('li');
      li.dataset.id = r.id;
      li.dataset.label = r.metadata.label ?? '';
      const title = document.createElement('strong');
      title.textContent = `${r.metadata.label ?? '(no label)'}: ${r.id}`;
      const why = document.createElement('div');
      why.className = 'why';
      const meta = Object.entries(r.metadata).map(([k, v]) => `${k}=${v}`).join(', ');
      why.textContent = `Hamming distance ${r.distance}; content similarity ${r.similarity === null ? 'n/a' : r.similarity.toFixed(3)}; score ${r.score.toFixed(3)}${meta ? `; ${meta}` : ''}`;
      li.appendChild(title);
      li.appendChild(why);
      return li;
    }),
  );
  if (answer.results.length === 0) list.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'No results.' }));
}

$('search').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const col = chosen();
  if (!client || !col || !image) return;
  const mine = clearAnswer();
  // disabling the focused button drops keyboard focus to the page: it comes back with the answer
  const hadFocus = document.activeElement === go;
  go.disabled = true;
  // announced (a polite live region) and shown, so a slow search is not taken for no answer
  encodedBox.textContent = 'Encoding the image here, then searching...';
  const radius = $<HTMLInputElement>('radius').value;
  try {
    const { encoded, answer } = await client.searchImage(col, image, {
      k: Number($<HTMLInputElement>('k').value),
      radius: radius === '' ? undefined : Number(radius),
      contentWeight: Number(weight.value),
      allowOod: allowOod.checked,
      excludeOwnStudy: $<HTMLInputElement>('exclude-own-study').checked,
      frame: frame(),
    });
    if (mine !== asked) return;
    encodedBox.dataset.code = encoded.code;
    encodedBox.textContent = `Encoded here in ${encoded.encodeMs.toFixed(0)} ms (${encoded.runtime}): code ${encoded.code}.`;
    showOod(answer.ood);
    showResults(answer);
  } catch (e) {
    if (mine !== asked) return;
    encodedBox.textContent = '';
    if (e instanceof MedhashApiError && e.ood) showOod(e.ood);
    // the refusal's own message tells an API caller to send allow_ood; here that is a checkbox
    if (e instanceof MedhashApiError && e.code === 'out_of_distribution') showError('search', `Results withheld: this image looks out of distribution for this collection's model (${e.ood?.reasons[0]}), so they would not be reliable. To see them anyway, marked as such, tick "${allowOodLabel}".`);
    else showError('search', e);
  } finally {
    showReady();
    // a newer search, image or collection has set the button
    if (mine === asked) {
      go.disabled = false;
      if (hadFocus) go.focus();
    }
  }
});
