// GET /health: the gateway's own health (no credential): a replica to send to, and a store to count with.
import type { Handler } from 'hono';
import type { GatewayEnv, Services } from '../services.ts';

export function health(svc: Services): Handler<GatewayEnv> {
  return async (c) => {
    const storeOk = await svc.store.ping();
    const healthy = svc.router.healthyCount;
    const ok = storeOk && healthy > 0;
    return c.json({ status: ok ? 'ok' : 'degraded', backends: { healthy, total: svc.router.backends.length }, store: { kind: svc.store.kind, ok: storeOk } }, ok ? 200 : 503);
  };
}
