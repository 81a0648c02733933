// Observability around every request: the server span (continuing an incoming traceparent; its
// context goes on as c.get('otel') for child spans), the request metric by matched route pattern,
// and the lazy replica health check (no timers between requests, so it works on Workers too).
import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { GatewayEnv, Services } from '../services.ts';
import { endSpan, extractContext, startServerSpan } from '../telemetry.ts';

export function observe(svc: Services): MiddlewareHandler<GatewayEnv> {
  const metrics = svc.deps.metrics;
  return async (c, next) => {
    const t0 = performance.now();
    const s = startServerSpan(`${c.req.method} ${c.req.routePath === '/*' ? c.req.path : c.req.routePath}`, extractContext(svc.headers(c)), {
      'http.request.method': c.req.method,
      'url.path': c.req.path,
    });
    c.set('otel', s.ctx);
    const check = svc.router.maybeCheck();
    if (check) svc.background(c, check);
    try {
      await next();
    } finally {
      s.span.setAttribute('http.response.status_code', c.res.status);
      endSpan(s, c.res.status >= 500 ? `answered ${c.res.status}` : undefined);
      if (metrics) {
        const route = matchedRoutes(c).map((r) => r.path).filter((p) => p !== '/*').pop() ?? 'unmatched';
        metrics.observe(route, c.req.method, c.res.status, (performance.now() - t0) / 1000);
      }
    }
  };
}
