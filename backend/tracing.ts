// OpenTelemetry through @opentelemetry/api only: the operator registers an SDK (exporter,
// propagator); without one every call here is a no-op. Each HTTP request gets a server span that
// continues an incoming `traceparent`; generation adds queue, prefill, decode and adapter-load
// spans under it. Contexts are passed explicitly, so no async context manager is needed.
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, propagation, trace, type Context, type Span } from '@opentelemetry/api';
import type { MiddlewareHandler } from 'hono';
import type { AuthEnv } from './auth.ts';

export const tracer = () => trace.getTracer('switchboard-backend', '0.1.0');

export function httpTracing(): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((v, k) => (headers[k] = v));
    const parent = propagation.extract(ROOT_CONTEXT, headers);
    const span = tracer().startSpan(`${c.req.method} ${c.req.path}`, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': c.req.method, 'url.path': c.req.path },
    }, parent);
    const ctx = trace.setSpan(parent, span);
    c.set('traceContext', ctx);
    const out: Record<string, string> = {};
    propagation.inject(ctx, out);
    try {
      await next();
      for (const [k, v] of Object.entries(out)) c.header(k, v);
      span.setAttribute('http.response.status_code', c.res.status);
      if (c.res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    } finally {
      span.end();
    }
  };
}

/** Starts a child span of `parent` (or of the active context). */
export function childSpan(name: string, parent: Context | undefined, attributes: Record<string, string | number | boolean> = {}): Span {
  return tracer().startSpan(name, { attributes }, parent ?? context.active());
}

export function endSpan(span: Span | null, error?: unknown): void {
  if (!span) return;
  if (error) {
    span.recordException(error as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
  }
  span.end();
}

export { trace };
