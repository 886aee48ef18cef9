// Paged lists (`limit`, `after`, answering `next_after`; operator lists by id, collections by
// name): the largest page the API serves, and reading a list to its end, for the CLI and the SDK.

export const MAX_PAGE = 1000;

/**
 * Every item of the paged list at `path`: the pages one after another, as one list. `get` fetches
 * one page (path and query) as parsed JSON. Items created meanwhile may or may not be in it; none is lost.
 */
export async function allPages<T>(path: string, field: string, get: (pathAndQuery: string) => Promise<Record<string, unknown>>): Promise<T[]> {
  const items: T[] = [];
  let after: string | null = null;
  do {
    const query = new URLSearchParams({ limit: String(MAX_PAGE), ...(after === null ? {} : { after }) });
    const page = await get(`${path}?${query}`);
    items.push(...(page[field] as T[]));
    const next = (page.next_after ?? null) as string | null;
    // cursors grow from page to page: one that does not would have the loop read the same page forever
    if (next !== null && after !== null && next <= after) throw new Error(`${path}: next_after ${next} does not follow ${after}`);
    after = next;
  } while (after !== null);
  return items;
}
