// Content-Type as RFC 9110 (8.3.1) reads it: `type/subtype` (case-insensitive), then parameters
// after optional whitespace and ";", which nothing here reads (JSON is UTF-8 whatever the charset).

/** The lower-case type/subtype of a Content-Type value ('' for none), its parameters dropped. */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

/**
 * The weight an Accept header (RFC 9110, 12.5.1) gives `type` (lower-case `type/subtype`): the
 * highest `q` of the entries that name it (or, with `wildcards`, its major type's wildcard or the
 * wildcard of every type); 0 when none does. Types compare case-insensitively, and `q=0` means "not acceptable".
 */
export function acceptWeight(header: string | undefined, type: string, wildcards = true): number {
  const [major] = type.split('/');
  let best = 0;
  for (const entry of (header ?? '').split(',')) {
    const [range, ...params] = entry.split(';');
    const name = range.trim().toLowerCase();
    if (name !== type && !(wildcards && (name === `${major}/*` || name === '*/*'))) continue;
    const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    if (Number.isFinite(weight)) best = Math.max(best, Math.min(weight, 1));
  }
  return best;
}
