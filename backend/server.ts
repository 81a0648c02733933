// The backend's Hono app: the route modules over one Runtime, and the one place errors become
// answers (errors.ts: OpenAI's shape under /v1, LoRAX's elsewhere), so routes just throw and
// nothing ever answers with a bare 500 page.
import type { KeyObject } from 'node:crypto';
import { Hono } from 'hono';
import { cors } from 'hono/cors';
import { matchedRoutes } from 'hono/route';
import { serviceAuth, type AuthEnv } from './auth.ts';
import { errorResponse, RequestError } from './errors.ts';
import { adapterRoutes } from './routes/adapters.ts';
import { httpTracing } from './tracing.ts';
import { infoRoutes } from './routes/info.ts';
import { loraxRoutes } from './routes/lorax.ts';
import { openaiRoutes } from './routes/openai.ts';
import type { Runtime } from './runtime.ts';
import { withUsageNote, type AccessEntry } from './access-log.ts';

export interface AppOptions {
  /** Told once per request when its answer is complete (a stream: when it ends or the client left). */
  accessLog?: ((e: AccessEntry) => void) | null;
}

/** `serviceKey`: verify gateway tokens (null: no gateway, a single trusted tenant). */
export function createApp(rt: Runtime, serviceKey: KeyObject | CryptoKey | null = null, opts: AppOptions = {}): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();
  const accessLog = opts.accessLog ?? null;
  app.use('*', httpTracing());
  app.use('*', async (c, next) => {
    const t0 = performance.now();
    const { note, result } = withUsageNote(next);
    await result;
    const route = matchedRoutes(c).map((r) => r.path).filter((p) => p !== '/*').pop() ?? 'unmatched';
    rt.metrics.httpRequests.inc({ route, method: c.req.method, status: String(c.res.status) });
    if (!accessLog) return;
    const stream = c.res.headers.get('content-type')?.startsWith('text/event-stream') === true && c.res.body !== null;
    let logged = false;
    const write = () => {
      if (logged) return;
      logged = true;
      accessLog({ method: c.req.method, route, status: c.res.status, ...note, ms: performance.now() - t0, stream });
    };
    if (!stream) return write();
    // A stream's line waits for its end (its tokens are known then), or for the client to leave.
    c.req.raw.signal.addEventListener('abort', write, { once: true });
    c.res = new Response(c.res.body!.pipeThrough(new TransformStream({ flush: write })), c.res);
  });
  // LoRAX's --cors-* flags; before auth, so a browser's preflight (which carries no token) is answered.
  const cfg = rt.config;
  if (cfg.corsAllowOrigin.length > 0) {
    app.use(
      '*',
      cors({
        origin: cfg.corsAllowOrigin.includes('*') ? '*' : cfg.corsAllowOrigin,
        ...(cfg.corsAllowMethod.length ? { allowMethods: cfg.corsAllowMethod.map((m) => m.toUpperCase()) } : {}),
        ...(cfg.corsAllowHeader.length ? { allowHeaders: cfg.corsAllowHeader } : {}),
        ...(cfg.corsExposeHeader.length ? { exposeHeaders: cfg.corsExposeHeader } : {}),
        credentials: cfg.corsAllowCredentials,
      }),
    );
  }
  app.use('*', serviceAuth(serviceKey));
  app.route('/', infoRoutes(rt));
  app.route('/', adapterRoutes(rt));
  app.route('/', loraxRoutes(rt));
  app.route('/', openaiRoutes(rt));
  app.notFound((c) => errorResponse(c, new RequestError(`no route ${c.req.method} ${c.req.path}`, 404, 'not_found')));
  app.onError((err, c) => errorResponse(c, err));
  return app;
}
