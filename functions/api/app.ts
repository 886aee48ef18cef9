// The one Hono app both runtimes serve: routes, validation, errors and the OpenAPI document.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { metering } from '../billing/meter.ts';
import { requestLog } from './access-log.ts';
import type { Backend } from './backend.ts';
import { renderDocs } from './docs.ts';
import { limitBody, notFoundRoute, onError, validationError } from './errors.ts';
import { json } from './openapi.ts';
import { adminRoutes } from './routes/admin.ts';
import { billingRoutes } from './routes/billing.ts';
import { collectionRoutes } from './routes/collections.ts';
import { encodeRoutes } from './routes/encode.ts';
import { imageSearchRoutes } from './routes/image-search.ts';
import { itemRoutes } from './routes/items.ts';
import { modelRoutes } from './routes/models.ts';
import { searchRoutes } from './routes/search.ts';
import { MAX_BODY_BYTES } from './schemas.ts';

const DOC_INFO = {
  openapi: '3.1.0',
  info: {
    title: 'medhash',
    version: '1',
    description: 'Medical image retrieval by hash code: tenants own collections of coded images; search returns the nearest items by Hamming distance. Every answer carries an X-Request-Id header (the caller\'s own when it sent a plain one of up to 128 characters).',
  },
};

export function createApp(backend: Backend): OpenAPIHono {
  const app = new OpenAPIHono({
    defaultHook: (result) => {
      if (!result.success) throw validationError(result.error, result.target);
    },
  });
  app.onError(onError);
  app.notFound(notFoundRoute);
  // First, so that every answer (413s, 404s for unknown routes, errors) gets an id and a line.
  app.use('*', requestLog(backend.accessLog));
  app.use('/v1/*', limitBody(MAX_BODY_BYTES));
  app.use('/v1/*', metering(backend));

  app.openapi(
    createRoute({
      method: 'get', path: '/healthz', tags: ['service'], summary: 'Liveness',
      responses: { 200: json(z.object({ status: z.literal('ok'), runtime: z.enum(['node', 'workers']) }), 'Up.') },
    }),
    (c) => c.json({ status: 'ok' as const, runtime: backend.runtime }, 200),
  );

  adminRoutes(app, backend);
  collectionRoutes(app, backend);
  itemRoutes(app, backend);
  searchRoutes(app, backend);
  imageSearchRoutes(app, backend);
  encodeRoutes(app, backend);
  billingRoutes(app, backend);
  if (backend.models) modelRoutes(app, backend, backend.models);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'A tenant API key (mh_...) or, for /v1/admin, the operator key.',
  });
  app.doc31('/openapi.json', DOC_INFO);
  app.get('/docs', (c) => c.html(renderDocs(app.getOpenAPI31Document(DOC_INFO) as unknown as Record<string, unknown>)));
  return app;
}
