// Prometheus metrics of the Node gateway (prom-client), served on their own port (--metrics-port)
// so the public edge never exposes them. The Worker has no scrape endpoint and records nothing.
// Route labels are Hono's route patterns (or "unmatched"), never raw paths: cardinality stays
// bounded whatever clients send.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestObserver } from './app.ts';

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class GatewayMetrics implements RequestObserver {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'switchboard_gateway_requests_total',
    help: 'Requests answered by the gateway, by route pattern, method and HTTP status (429: a quota; 502-504: no replica answered)',
    labelNames: ['route', 'method', 'status'],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'switchboard_gateway_request_duration_seconds',
    help: 'Time to the response head, by route pattern (streams: to their first byte)',
    labelNames: ['route'],
    buckets: latencyBuckets,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  observe(route: string, method: string, status: number, seconds: number): void {
    this.requests.inc({ route, method, status: String(status) });
    this.duration.observe({ route }, seconds);
  }
}
