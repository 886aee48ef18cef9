// Read-only model routes for client-side encoding (the browser SDK, functions/sdk): the list of
// models, a model's card and its .onnx bytes. Any valid tenant key may read them; a client
// checks the .onnx against the card's sha256 before running it.
import { createRoute, z } from '@hono/zod-openapi';
import { tenantKey } from '../../auth/guard.ts';
import type { ModelCatalog } from '../../models/catalog.ts';
import { notFound } from '../../util/errors.ts';
import { errors, json, type App } from '../openapi.ts';

const tags = ['models'];

const ModelParams = z.object({
  model_id: z.string().min(1).max(128).openapi({ param: { name: 'model_id', in: 'path' }, example: 'mednist-darf-b64@141b2f6f1afd' }),
});

const ModelSummary = z
  .object({
    model_id: z.string(),
    name: z.string(),
    bits: z.number().int(),
    descriptor_dims: z.number().int(),
    input: z.object({ size: z.number().int(), channels: z.number().int() }),
    classes: z.array(z.string()),
    sha256: z.string().openapi({ description: 'Of the .onnx bytes.' }),
  })
  .openapi('ModelSummary');

// The card names the model by content; its bytes never change under the same id.
const CACHE = 'private, max-age=86400';

export function modelRoutes(app: App, catalog: ModelCatalog): void {
  const model = async (id: string) => {
    const m = await catalog.get(id);
    if (!m) throw notFound('model', id);
    return m;
  };

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/models', tags, security: tenantKey(), summary: 'Models served for client-side encoding',
      responses: { 200: json(z.object({ models: z.array(ModelSummary) }), 'The models.'), ...errors(400, 401, 403) },
    }),
    async (c) => {
      const models = (await catalog.list()).map((m) => ({
        model_id: m.model_id, name: m.name, bits: m.bits, descriptor_dims: m.descriptor.dims,
        input: { size: m.input.size, channels: m.input.channels }, classes: m.classes, sha256: m.sha256,
      }));
      return c.json({ models }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/models/{model_id}/card', tags, security: tenantKey(), summary: "A model's card (docs/MODEL_CARD.md)",
      request: { params: ModelParams },
      responses: { 200: json(z.record(z.string(), z.unknown()), 'The card as shipped.'), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const m = await model(c.req.valid('param').model_id);
      return c.body(m.cardJson, 200, { 'content-type': 'application/json', 'cache-control': CACHE }) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/models/{model_id}/onnx', tags, security: tenantKey(), summary: "A model's ONNX graph (sha256 as in its card)",
      request: { params: ModelParams },
      responses: {
        200: { description: 'The .onnx bytes.', content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } } },
        ...errors(400, 401, 403, 404),
      },
    }),
    async (c) => {
      const m = await model(c.req.valid('param').model_id);
      return c.body(m.onnx as Uint8Array<ArrayBuffer>, 200, {
        'content-type': 'application/octet-stream', 'cache-control': CACHE, etag: `"${m.card.sha256}"`,
      }) as never;
    },
  );
}
