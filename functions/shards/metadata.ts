// Item metadata as stored in a shard's metadata section: a fixed set of optional string
// fields, serialised in one canonical order so that equal metadata gives equal bytes (this is
// what makes re-ingesting an unchanged item a no-op).

export const METADATA_FIELDS = [
  'label',
  'modality',
  'body_part',
  'source_uri',
  'study_uid',
  'series_uid',
  'sop_uid',
  'patient_ref',
] as const;

export type MetadataField = (typeof METADATA_FIELDS)[number];
export type ItemMetadata = Partial<Record<MetadataField, string>>;

export function canonicalMetadata(m: ItemMetadata | undefined): string {
  const out: ItemMetadata = {};
  for (const f of METADATA_FIELDS) if (m?.[f] !== undefined) out[f] = m[f];
  return JSON.stringify(out);
}

/** Parses stored metadata; fields this version does not know are kept out of responses. */
export function parseMetadata(json: string): ItemMetadata {
  const raw = JSON.parse(json) as Record<string, unknown>;
  const out: ItemMetadata = {};
  for (const f of METADATA_FIELDS) if (typeof raw[f] === 'string') out[f] = raw[f] as string;
  return out;
}
