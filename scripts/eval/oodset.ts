// The OOD sets manifest that `ood-eval` (models/medhash_model/ood_eval.py) writes under
// models/oodsets/NAME/ (format `medhash-oodset` v1, docs/OOD.md), checked before any set is
// replayed: a tar set without its count would be scored as an empty set, and a manifest of
// another model as this one's.
const OODSET_FORMAT = 'medhash-oodset';
const OODSET_VERSION = 1;

export interface OodSet {
  set: string;
  /** A tar of PNGs beside the manifest, members 000000.png... in order; or members of a shared data set. */
  file?: string;
  source: string;
  ids?: string[];
  count?: number;
}

export interface OodsetManifest {
  model: string;
  /** The shared data set whose `query` split is the in-distribution side. */
  data: string;
  sets: OodSet[];
}

/** `where` names the file in errors; `model` is the card's name the sets must be for. */
export function parseOodsetManifest(json: unknown, where: string, model: string): OodsetManifest {
  const m = (json ?? {}) as Record<string, unknown>;
  if (m.format !== OODSET_FORMAT || m.version !== OODSET_VERSION) {
    throw new Error(`${where}: format ${JSON.stringify(m.format)} version ${JSON.stringify(m.version)} is not ${OODSET_FORMAT} v${OODSET_VERSION}`);
  }
  if (m.model !== model) throw new Error(`${where}: model ${JSON.stringify(m.model)} is not ${model}`);
  const str = (v: unknown, field: string): string => {
    if (typeof v !== 'string' || v === '') throw new Error(`${where}: ${field} must be a non-empty string`);
    return v;
  };
  const data = str(m.data, 'data');
  if (!Array.isArray(m.sets) || m.sets.length === 0) throw new Error(`${where}: sets must be a non-empty list`);
  const sets = m.sets.map((raw: Record<string, unknown>, i): OodSet => {
    const at = `sets[${i}]`;
    const s = { set: str(raw?.set, `${at}.set`), source: str(raw.source, `${at}.source`) };
    if (raw.file !== undefined) {
      if (!Number.isInteger(raw.count) || (raw.count as number) <= 0) throw new Error(`${where}: ${at}.count must be a positive integer`);
      return { ...s, file: str(raw.file, `${at}.file`), count: raw.count as number };
    }
    const ids = raw.ids;
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => typeof x === 'string')) {
      throw new Error(`${where}: ${at}.ids must be a non-empty list of strings`);
    }
    return { ...s, ids: ids as string[] };
  });
  return { model, data, sets };
}
