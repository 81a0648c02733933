// What a tenant may ask about the model, behind the auth middleware: GET /v1/models (the base
// model, the tenant's ready adapters, the shared ones), GET /info and POST /tokenize (forwarded to
// a replica; /tokenize counts against rpm like any request, reserving no tokens).
import type { Handler } from 'hono';
import { parseLoraxRequest, TokenizeRequest, type ModelList } from '../../protocol/index.ts';
import { isBaseName } from '../adapters.ts';
import { GatewayError } from '../errors.ts';
import { callUpstream } from '../forward.ts';
import { reserve } from '../quota.ts';
import type { GatewayEnv, Services } from '../services.ts';

export function listModels(svc: Services): Handler<GatewayEnv> {
  return async (c) => {
    const p = c.get('principal');
    const bi = await svc.backendInfo.get(p.tenant, c.get('otel'));
    const [own, shared] = await Promise.all([svc.store.listAdapters(p.tenant), svc.store.listShared()]);
    const ts = (iso: string) => Math.floor((Date.parse(iso) || 0) / 1000);
    const data: ModelList['data'] = [{ id: bi.modelName, object: 'model', created: 0, owned_by: 'switchboard' }];
    const seen = new Set([bi.modelName]);
    for (const a of own) {
      if (a.status !== 'ready' || seen.has(a.name) || isBaseName(a.name, bi)) continue;
      seen.add(a.name);
      data.push({ id: a.name, object: 'model', created: ts(a.created_at), owned_by: p.tenant });
    }
    for (const s of shared) {
      if (seen.has(s.name) || isBaseName(s.name, bi)) continue;
      seen.add(s.name);
      data.push({ id: s.name, object: 'model', created: ts(s.created_at), owned_by: 'switchboard' });
    }
    return c.json({ object: 'list', data } satisfies ModelList);
  };
}

export function info(svc: Services): Handler<GatewayEnv> {
  return async (c) => {
    const p = c.get('principal');
    const up = await callUpstream(svc.router, { path: '/info', method: 'GET', headers: await svc.serviceHeaders(p.tenant, c.get('otel')), affinity: null, signal: svc.clientSignal(c), waitFirstByte: false }, svc.fetch);
    const text = await up.res.text().finally(() => up.end());
    if (up.res.status === 401 || up.res.status === 403) throw new GatewayError(502, 'the backend refused the gateway (service key mismatch)', { type: 'server_error' });
    return new Response(text, { status: up.res.status, headers: { 'content-type': up.res.headers.get('content-type') ?? 'application/json' } });
  };
}

export function tokenize(svc: Services): Handler<GatewayEnv> {
  return async (c) => {
    const p = c.get('principal');
    // Until the reservation (which re-checks the key atomically), any answer confirms a cached key first.
    let raw: Record<string, unknown>;
    let reservation: Awaited<ReturnType<typeof reserve>>;
    try {
      raw = await svc.readBody(c);
      const r = parseLoraxRequest(TokenizeRequest, raw);
      if (!r.success) {
        await svc.confirmKey(p);
        return c.json(r.error, 422);
      }
      reservation = await reserve(svc, c, p, await svc.quota.of(p), 0, { leaseId: null });
    } catch (err) {
      await svc.confirmKey(p);
      throw err;
    }
    reservation.settle({ promptTokens: 0, completionTokens: 0 });
    const up = await callUpstream(svc.router, { path: '/tokenize', method: 'POST', body: await svc.encodeBody(c, raw), headers: await svc.serviceHeaders(p.tenant, c.get('otel'), { 'content-type': 'application/json' }), affinity: null, signal: svc.clientSignal(c), waitFirstByte: false }, svc.fetch);
    const text = await up.res.text().finally(() => up.end());
    return new Response(text, { status: up.res.status, headers: { 'content-type': up.res.headers.get('content-type') ?? 'application/json', ...reservation.headers } });
  };
}
