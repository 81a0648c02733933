// The gateway as one Hono app, runtime-agnostic (Web APIs, hono, jose, zod, @cfworker/json-schema,
// @opentelemetry/api only): gateway/node.ts serves it on Node, gateway/worker.ts on Workers.
//
// This file is the wiring, read top to bottom: the shared services (services.ts), the middleware
// every request goes through (middleware/), then the routing table, one line per route, each
// naming the credential scope it needs and its handler (routes/, one module per route family).
// Whatever a middleware or handler throws is answered once, by onError, in the API's own shape.
import { Hono } from 'hono';
import { parseChat, parseCompletion } from './endpoints/openai.ts';
import { parseLorax } from './endpoints/lorax.ts';
import { authenticate } from './middleware/auth.ts';
import { notFound, onError } from './middleware/errors.ts';
import { observe } from './middleware/observe.ts';
import { tenantAdapterRoutes } from './routes/adapters.ts';
import { adminRoutes } from './routes/admin.ts';
import { health } from './routes/health.ts';
import { inference, type LoraxRoute } from './routes/inference.ts';
import { info, listModels, tokenize } from './routes/models.ts';
import { Services, type GatewayDeps, type GatewayEnv } from './services.ts';

export { DEFAULT_OPTIONS, type GatewayDeps, type GatewayOptions, type Principal, type RequestObserver, type RequestUsage } from './services.ts';

export function createGateway(deps: GatewayDeps): Hono<GatewayEnv> {
  const svc = new Services(deps);
  const app = new Hono<GatewayEnv>();
  app.use('*', observe(svc));
  app.onError(onError(svc.log));
  app.notFound(notFound);

  const inferenceScope = authenticate(svc, 'inference');
  // Routes that reserve quota for every request: key records may come from the instance's cache
  // (the reservation re-checks revocation atomically; see middleware/auth.ts).
  const reservingInference = authenticate(svc, 'inference', { reserves: true });
  // JSON routes refuse a declared oversize body before the credential is even looked up.
  const sized = svc.declaredSize;
  const readAdapters = authenticate(svc, 'adapters:read');
  const writeAdapters = authenticate(svc, 'adapters:write');

  // Inference (forwarded, counted against quotas).
  for (const route of ['/generate', '/generate_stream', '/'] as LoraxRoute[]) {
    const schema = route === '/generate' ? 'lorax.generate' : route === '/generate_stream' ? 'lorax.generate_stream' : 'lorax.compat';
    app.post(route, sized, reservingInference, inference(svc, 'lorax', route, schema, (raw, valid) => parseLorax(route, raw, valid)));
  }
  app.post('/v1/chat/completions', sized, reservingInference, inference(svc, 'openai', '/v1/chat/completions', 'openai.chat', parseChat));
  app.post('/v1/completions', sized, reservingInference, inference(svc, 'openai', '/v1/completions', 'openai.completion', parseCompletion));

  // About the model.
  app.get('/v1/models', inferenceScope, listModels(svc));
  app.get('/info', inferenceScope, info(svc));
  app.post('/tokenize', sized, reservingInference, tokenize(svc));
  app.get('/health', health(svc));

  // A tenant's own adapters.
  const adapters = tenantAdapterRoutes(svc);
  app.get('/v1/adapters', readAdapters, adapters.list);
  app.post('/v1/adapters', writeAdapters, adapters.register);
  app.get('/v1/adapters/:name', readAdapters, adapters.get);
  app.delete('/v1/adapters/:name', writeAdapters, adapters.remove);
  app.put('/v1/adapters/:name/:file', writeAdapters, adapters.upload);

  // The operator's admin API (its own token).
  app.route('/admin', adminRoutes(svc));
  return app;
}
