// Content-Type as RFC 9110 (8.3.1) reads it: `type/subtype` (case-insensitive), then parameters
// after optional whitespace and ";", which nothing here reads (JSON is UTF-8 whatever the charset).

/** The lower-case type/subtype of a Content-Type value ('' for none), its parameters dropped. */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}
