// The backend's Hono app: the route modules over one Runtime, plus the catch-all error shape
// (OpenAI's under /v1, LoRAX's elsewhere) so nothing ever answers with a bare 500 page.
import type { KeyObject } from 'node:crypto';
import { Hono } from 'hono';
import { matchedRoutes } from 'hono/route';
import { loraxError, openaiError } from '../protocol/index.ts';
import { serviceAuth, type AuthEnv } from './auth.ts';
import { adapterRoutes } from './routes/adapters.ts';
import { httpTracing } from './tracing.ts';
import { infoRoutes } from './routes/info.ts';
import { loraxRoutes } from './routes/lorax.ts';
import { openaiRoutes } from './routes/openai.ts';
import type { Runtime } from './runtime.ts';

/** `serviceKey`: verify gateway tokens (null: no gateway, a single trusted tenant). */
export function createApp(rt: Runtime, serviceKey: KeyObject | CryptoKey | null = null): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();
  app.use('*', httpTracing());
  app.use('*', async (c, next) => {
    await next();
    const route = matchedRoutes(c).map((r) => r.path).filter((p) => p !== '/*').pop() ?? 'unmatched';
    rt.metrics.httpRequests.inc({ route, method: c.req.method, status: String(c.res.status) });
  });
  app.use('*', serviceAuth(serviceKey));
  app.route('/', infoRoutes(rt));
  app.route('/', adapterRoutes(rt));
  app.route('/', loraxRoutes(rt));
  app.route('/', openaiRoutes(rt));
  app.notFound((c) =>
    c.req.path.startsWith('/v1/')
      ? c.json(openaiError(`no route ${c.req.method} ${c.req.path}`, 'not_found_error'), 404)
      : c.json(loraxError(`no route ${c.req.method} ${c.req.path}`, 'not_found'), 404),
  );
  app.onError((err, c) => {
    console.error(`unhandled error on ${c.req.method} ${c.req.path}:`, err);
    return c.req.path.startsWith('/v1/')
      ? c.json(openaiError('internal error', 'server_error'), 500)
      : c.json(loraxError('internal error', 'generation'), 500);
  });
  return app;
}
