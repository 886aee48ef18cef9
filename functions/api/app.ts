// The one Hono app both runtimes serve: routes, validation, errors and the OpenAPI document.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { accessTable, guard, OPERATOR_SCHEME, TENANT_SCHEME } from '../auth/guard.ts';
import { metering } from '../billing/meter.ts';
import { REQUEST_ID_HEADER, requestLog } from './access-log.ts';
import type { Backend } from './backend.ts';
import { bodyLimits, declaredBodyLimit, routeBody } from './body.ts';
import { docsHeaders, renderDocs } from './docs.ts';
import { checkUrlEncoding, jsonMediaType, nosniff, notFoundRoute, onError, validationError } from './errors.ts';
import { declareRetryAfter, json } from './openapi.ts';
import { adminRoutes } from './routes/admin.ts';
import { billingRoutes } from './routes/billing.ts';
import { collectionRoutes } from './routes/collections.ts';
import { encodeRoutes } from './routes/encode.ts';
import { imageSearchRoutes } from './routes/image-search.ts';
import { itemRoutes } from './routes/items.ts';
import { modelRoutes } from './routes/models.ts';
import { searchRoutes } from './routes/search.ts';
import { DEFAULT_BODY_BYTES, JSON_BUDGET, MAX_BODY_BYTES } from './schemas.ts';

const DOC_INFO = {
  openapi: '3.1.0',
  info: {
    title: 'medhash',
    version: '1',
    description: 'Medical image retrieval by hash code: tenants own collections of coded images; search returns the nearest items by Hamming distance. Every answer carries an X-Request-Id header: quote it when reporting a problem. ' +
      "Every /v1 request is checked in one order: the body's declared size (413), the key (401), what the key may do (403: each operation's security states its scope), then the request's shape (413 over the route's body limit or JSON budget, 415, 400 naming the field), then what it names (404), then metering (402, 429).",
  },
};

export function createApp(backend: Backend): OpenAPIHono {
  const app = new OpenAPIHono({
    defaultHook: (result) => {
      // zod-validator hands the hook the input too (zod-openapi's type leaves it out): it tells a missing field.
      if (!result.success) throw validationError(result.error, result.target, (result as { data?: unknown }).data);
    },
  });
  app.onError(onError);
  app.notFound(notFoundRoute);
  // First, so that every answer (413s, 404s for unknown routes, errors) gets an id and a line.
  app.use('*', requestLog(backend.accessLog));
  app.use('*', nosniff());
  // The order of checks on /v1 (docs/API.md): the body limit, then the key, then the request.
  // A body declared over the limit is refused unread, before the key is looked up: it protects
  // the server and tells nothing of what a route takes. (A body sent without Content-Length is
  // cut off when read, which is after the key.)
  app.use('/v1/*', declaredBodyLimit(MAX_BODY_BYTES));
  app.use('/v1/*', jsonMediaType());
  app.use('/v1/*', metering(backend));
  // The key, its kind, scope and collection limit (then the form of an Idempotency-Key, which any
  // /v1 request may carry), before any route's validators: a caller
  // without a valid key never learns what a route takes (not even from a 415: a wrong Content-Type
  // is a mistake in the request like any other), and one with a key that may not use the route
  // gets its 403 whatever the request says. `access` is read from the routes' declared security
  // once they are all registered (below).
  // Once the key passes, what the body may cost the route that reads it, before its validators
  // parse it: the route's own limit (x-max-body-bytes in the document, or DEFAULT_BODY_BYTES) and
  // a JSON body's shape (api/body.ts).
  const checkBody = routeBody((route) => bodyBytes.get(route), JSON_BUDGET);
  app.use('/v1/*', guard(backend, (route) => access.get(route), (c, route, next) => {
    checkUrlEncoding(c, route);
    return checkBody(c, route, next);
  }));

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
  if (backend.models) modelRoutes(app, backend.models);
  declareRetryAfter(app);

  app.openAPIRegistry.registerComponent('securitySchemes', TENANT_SCHEME, {
    type: 'http',
    scheme: 'bearer',
    description: "A tenant API key (mh_...). An operation's requirement lists the scope it needs (search, ingest or admin); of several requirements, any one is enough.",
  });
  app.openAPIRegistry.registerComponent('securitySchemes', OPERATOR_SCHEME, {
    type: 'http',
    scheme: 'bearer',
    description: 'The operator key (MEDHASH_OPERATOR_KEY), for /v1/admin alone.',
  });
  // What each /v1 route needs of the key, enforced by the guard above; a /v1 route that states
  // nothing the guard can enforce fails here, at start.
  const access = accessTable(app.openAPIRegistry.definitions);
  const bodyBytes = bodyLimits(app.openAPIRegistry.definitions, DEFAULT_BODY_BYTES, MAX_BODY_BYTES);
  // Built once, on first use: the routes are fixed by then.
  let doc: Record<string, unknown> | undefined;
  const document = () => (doc ??= withRequestIdHeader(app.getOpenAPI31Document(DOC_INFO) as unknown as OpenApiDoc));
  app.get('/openapi.json', (c) => c.json(document()));
  app.get('/docs', async (c) => c.html(renderDocs(document()), 200, await docsHeaders()));
  return app;
}

type OpenApiDoc = Record<string, unknown> & {
  paths?: Record<string, Record<string, { responses?: Record<string, { headers?: Record<string, unknown> }> }>>;
  components?: Record<string, Record<string, unknown>>;
};

/** Every answer carries X-Request-Id (api/access-log.ts): declared once, referenced by every response. */
function withRequestIdHeader(doc: OpenApiDoc): OpenApiDoc {
  const components = (doc.components ??= {});
  (components.headers ??= {}).RequestId = {
    description: "The request's id, a UUID the service assigns (a caller's own X-Request-Id is not taken). Quote it when reporting a problem.",
    schema: { type: 'string' },
  };
  for (const ops of Object.values(doc.paths ?? {})) {
    for (const op of Object.values(ops)) {
      for (const response of Object.values(op.responses ?? {})) (response.headers ??= {})[REQUEST_ID_HEADER] = { $ref: '#/components/headers/RequestId' };
    }
  }
  return doc;
}

