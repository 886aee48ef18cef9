// `medhash index`: streams records from a source into the API in batches. Re-running after
// an interruption is safe: ingest is idempotent by id, so batches already stored change nothing
// (a codes file is sent, and metered, again; images resume from their checkpoint). Within the
// file a later line for the same id wins, as across batches.
import { ApiError, type Client } from './client.ts';
import type { IndexRecord, RecordSource } from './sources.ts';

export interface IndexOptions {
  batchSize: number;
  /** Stay well under the API's 8 MiB body limit even with large metadata. */
  maxBatchBytes?: number;
  onBatch?: (sent: number) => void;
  /** The ids of each batch once the API has stored it (the image indexer's checkpoint). */
  onPublished?: (ids: string[]) => void;
}

export interface IndexOutcome {
  sent: number;
  batches: number;
  generation: number;
}

export async function indexRecords(client: Client, collection: string, source: RecordSource, opts: IndexOptions): Promise<IndexOutcome> {
  const maxBytes = opts.maxBatchBytes ?? 4 << 20;
  const path = `/v1/collections/${encodeURIComponent(collection)}/items`;
  const out: IndexOutcome = { sent: 0, batches: 0, generation: 0 };
  let batch: IndexRecord[] = [];
  let ids = new Set<string>();
  let bytes = 0;

  const flush = async () => {
    if (batch.length === 0) return;
    const items = batch.map(({ origin: _, ...item }) => item);
    try {
      const r = await client.request<{ ingested: number; generation: number }>('POST', path, { items });
      out.generation = r.generation;
    } catch (e) {
      // Point at the offending line rather than at a position inside the batch.
      const m = e instanceof ApiError ? e.field?.match(/^items\.(\d+)/) : null;
      if (m && batch[Number(m[1])]) throw new Error(`${batch[Number(m[1])].origin}: ${(e as ApiError).message} (${(e as ApiError).field})`);
      throw e;
    }
    out.sent += batch.length;
    out.batches++;
    opts.onPublished?.(batch.map((r) => r.id));
    opts.onBatch?.(out.sent);
    batch = [];
    ids = new Set();
    bytes = 0;
  };

  for await (const rec of source.records()) {
    const size = JSON.stringify(rec).length;
    if (ids.has(rec.id) || batch.length >= opts.batchSize || bytes + size > maxBytes) await flush();
    batch.push(rec);
    ids.add(rec.id);
    bytes += size;
  }
  await flush();
  return out;
}
