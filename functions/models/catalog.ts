// The models the service hands out for client-side encoding (GET /v1/models...): each model is
// a verified card + .onnx pair, looked up by the card's model_id, which collections name.
import { loadCard, type ModelCard } from '../encode/card.ts';

export interface CatalogModel {
  card: ModelCard;
  /** The card file as shipped, so clients see every field, not only the ones this reader keeps. */
  cardJson: string;
  /** sha256-verified against the card on load. */
  onnx: Uint8Array;
}

export interface ModelCatalog {
  list(): Promise<ModelCard[]>;
  get(modelId: string): Promise<CatalogModel | null>;
}

/**
 * Node: every `*.card.json` in `dir` (models/ by default). Cards and models are read and
 * verified once, on first use; a card whose model fails its sha256 fails the catalog loudly.
 */
export function dirCatalog(dir: string): ModelCatalog {
  let loaded: Promise<Map<string, CatalogModel>> | null = null;
  const load = async () => {
    const { readdir, readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const byId = new Map<string, CatalogModel>();
    for (const f of (await readdir(dir)).filter((n) => n.endsWith('.card.json')).sort()) {
      const path = join(dir, f);
      const { card, onnx } = await loadCard(path);
      byId.set(card.model_id, { card, onnx, cardJson: await readFile(path, 'utf8') });
    }
    return byId;
  };
  const models = () => (loaded ??= load());
  return {
    list: async () => [...(await models()).values()].map((m) => m.card),
    get: async (id) => (await models()).get(id) ?? null,
  };
}
