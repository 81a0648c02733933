// The gateway as one Hono app, runtime-agnostic (Web APIs, hono, jose, zod, @cfworker/json-schema,
// @opentelemetry/api only): gateway/node.ts serves it on Node, gateway/worker.ts on Workers.
//
// Per inference request: authenticate (API key or tenant JWT) -> read and validate the body
// (protocol/ schemas, JSON Schema checks) -> resolve the tenant's adapter names -> reserve
// quota (rpm, token budget, stream slot) -> forward to a replica by adapter affinity -> relay
// the answer, counting tokens -> settle the quota with the real count, however the request ends.
import { Hono, type Context } from 'hono';
import { matchedRoutes } from 'hono/route';
import { TokenizeRequest, loraxError, openaiError, parseLoraxRequest, type ModelList } from '../protocol/index.ts';
import { AdapterResolver, isBaseName, replicasOf, scrubIds, type AdapterSelection, type BackendInfo } from './adapters.ts';
import { adminRoutes, HubAdapterInput, parseInput } from './admin.ts';
import { looksLikeApiKey, verifyKey } from './auth/api-keys.ts';
import { JwtError, type JwtVerifier } from './auth/jwt.ts';
import { readJsonObject, type NativeBody } from './body.ts';
import { parseChat, parseCompletion, parseLorax, type LoraxRoute, type ParseOutcome, type TokenUsage } from './endpoints.ts';
import { apiKindOf, errorResponseFor, GatewayError, jsonResponse, ShapedError, type ApiKind } from './errors.ts';
import { callUpstream, relayStream, type StreamOutcome, type Upstream } from './forward.ts';
import { checkJsonSchema, DEFAULT_SCHEMA_LIMITS, type SchemaLimits } from './json-schema.ts';
import { limitMessage, limitValue, mergeLimits, oversizedFor, rateLimitHeaders } from './limits.ts';
import type { Router } from './routing.ts';
import type { ServiceTokenSigner } from './service-token.ts';
import type { GatewayStore, LimitScope, Limits } from './store/types.ts';
import { extractContext, injectContext, SpanKind, SpanStatusCode, startServerSpan, startSpan, type ActiveSpan } from './telemetry.ts';
import { AdapterManager } from './tenant-adapters.ts';
import { randomId, SecretBox, TtlCache, utcDay } from './util.ts';
import type { Context as OtelContext } from '@opentelemetry/api';

export interface GatewayOptions {
  /** JSON request bodies (inference, admin). */
  maxBodyBytes: number;
  /** One adapter file upload. */
  maxAdapterBytes: number;
  /** Adapter uploads one tenant may have in flight through this instance (429 past it). */
  maxUploadsPerTenant: number;
  schemaLimits: SchemaLimits;
  /** Prompt bytes per token for the reservation bound (1: never underestimates). */
  promptBytesPerToken: number;
  /** Limits of tenants without their own (null: unlimited). */
  defaultTenantLimits: Limits | null;
  /** Limits of each API key / JWT subject on top of its tenant's (a key's own limits override). */
  defaultKeyLimits: Limits | null;
  /** Stream slot lease; renewed every third of it while the stream runs. */
  leaseTtlMs: number;
  /** How long tenant records (limits) are cached per instance. */
  tenantCacheTtlMs: number;
  /** Replicas tried per request (before the first byte). */
  maxAttempts: number;
  /** Adds x-switchboard-backend (the replica's index) to answers: for tests and debugging. */
  exposeBackend: boolean;
}

export const DEFAULT_OPTIONS: GatewayOptions = {
  maxBodyBytes: 1024 * 1024,
  maxAdapterBytes: 512 * 1024 * 1024,
  maxUploadsPerTenant: 2,
  schemaLimits: DEFAULT_SCHEMA_LIMITS,
  promptBytesPerToken: 1,
  defaultTenantLimits: null,
  defaultKeyLimits: null,
  leaseTtlMs: 60_000,
  tenantCacheTtlMs: 2000,
  maxAttempts: 3,
  exposeBackend: false,
};

export interface GatewayDeps {
  store: GatewayStore;
  router: Router;
  signer: ServiceTokenSigner;
  secretBox: SecretBox;
  adminToken?: string | null;
  jwt?: JwtVerifier | null;
  options?: Partial<GatewayOptions>;
  fetch?: typeof fetch;
  log?: (msg: string) => void;
  /** Workers: background work (settlements, health checks) is handed to waitUntil. */
  runtime?: 'node' | 'workers';
  /** Told about every answer (the Node gateway's Prometheus metrics, gateway/metrics.ts). */
  metrics?: RequestObserver | null;
  /** Told what each generation used, once, when it is settled (the Node gateway's access log). */
  onUsage?: ((req: Request, usage: RequestUsage) => void) | null;
}

export interface RequestUsage {
  tenant: string;
  /** The adapter name as the tenant wrote it (merges: names joined by "+"), null for the base model. */
  adapter: string | null;
  promptTokens: number;
  completionTokens: number;
}

export interface RequestObserver {
  /** route: the matched route pattern, or "unmatched"; seconds: to the response head. */
  observe(route: string, method: string, status: number, seconds: number): void;
}

export interface Principal {
  tenant: string;
  /** API key id, or null for a JWT. */
  keyId: string | null;
  /** Who to count per-key limits against: the key id, or jwt:<sub>. */
  subject: string;
  via: 'api_key' | 'jwt';
  /** null: every scope. */
  scopes: Set<string> | null;
  keyLimits: Limits | null;
}

type Env = { Variables: { otel: OtelContext; clientSignal: AbortSignal } };

function ctxOf(c: Context<Env>): OtelContext {
  return c.get('otel');
}

// On Node, @hono/node-server hands over the raw IncomingMessage / ServerResponse as env. Reading
// the body and watching the connection there avoids materialising a full web Request (and its
// body stream) per request; duck-typed so this module stays free of node: imports.
interface NodeEnv {
  incoming?: NativeBody;
  outgoing?: { once(ev: 'close', fn: () => void): void; writableFinished: boolean };
}

export function createGateway(deps: GatewayDeps): Hono<Env> {
  const opts: GatewayOptions = { ...DEFAULT_OPTIONS, ...deps.options };
  const log = deps.log ?? (() => {});
  const f = deps.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
  const { store, router, signer } = deps;
  const resolver = new AdapterResolver(store, deps.secretBox);
  const adapters = new AdapterManager({ store, router, signer, box: deps.secretBox, fetch: f, maxUploadsPerTenant: opts.maxUploadsPerTenant });
  const tenantCache = new TtlCache<Limits | null>(opts.tenantCacheTtlMs);
  let info: BackendInfo | null = null;
  let infoPending: Promise<BackendInfo> | null = null;
  const onNode = deps.runtime !== 'workers';

  const nativeBody = (c: Context<Env>): NativeBody | null => {
    const inc = onNode ? (c.env as NodeEnv | undefined)?.incoming : undefined;
    return inc && typeof (inc as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function' ? inc : null;
  };
  /** Aborts when the client goes away before the answer is complete. */
  const clientSignal = (c: Context<Env>): AbortSignal => {
    const known = c.get('clientSignal');
    if (known) return known;
    const out = onNode ? (c.env as NodeEnv | undefined)?.outgoing : undefined;
    let signal: AbortSignal;
    if (out && typeof out.once === 'function') {
      const ac = new AbortController();
      out.once('close', () => {
        if (!out.writableFinished) ac.abort(new Error('client closed the connection'));
      });
      signal = ac.signal;
    } else {
      signal = c.req.raw.signal;
    }
    c.set('clientSignal', signal);
    return signal;
  };
  const readBody = (c: Context<Env>) => readJsonObject(c.req.raw, opts.maxBodyBytes, nativeBody(c));

  /** Runs in the background after the answer (Workers: waitUntil keeps the isolate for it). */
  const background = (c: Context, p: Promise<unknown>) => {
    const guarded = p.catch((err) => log(`background task failed: ${(err as Error)?.message ?? err}`));
    if (deps.runtime !== 'workers') return; // Node: the process outlives the request anyway
    try {
      c.executionCtx.waitUntil(guarded);
    } catch {
      // no execution context (e.g. app.request in a test)
    }
  };

  // ---------------------------------------------------------------------------------------------
  // Authentication, limits, backend info
  // ---------------------------------------------------------------------------------------------

  async function authenticate(c: Context<Env>): Promise<Principal> {
    const s = startSpan('gateway.auth', ctxOf(c));
    try {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
      const unauthorized = (msg: string) =>
        new GatewayError(401, msg, { code: 'invalid_api_key', loraxType: 'unauthorized', headers: { 'www-authenticate': 'Bearer' } });
      if (!m) throw unauthorized('missing credentials: send "Authorization: Bearer <API key>"');
      const token = m[1]!;
      if (looksLikeApiKey(token)) {
        const rec = await verifyKey(store, token);
        if (!rec) throw unauthorized('invalid API key (unknown, revoked or expired)');
        s.span.setAttributes({ 'switchboard.tenant': rec.tenant, 'switchboard.auth': 'api_key' });
        return { tenant: rec.tenant, keyId: rec.id, subject: `key:${rec.id}`, via: 'api_key', scopes: rec.scopes ? new Set(rec.scopes) : null, keyLimits: rec.limits };
      }
      if (deps.jwt && token.split('.').length === 3) {
        try {
          const v = await deps.jwt.verify(token);
          s.span.setAttributes({ 'switchboard.tenant': v.tenant, 'switchboard.auth': 'jwt' });
          return { tenant: v.tenant, keyId: null, subject: `jwt:${v.subject}`, via: 'jwt', scopes: v.scopes ? new Set(v.scopes) : null, keyLimits: null };
        } catch (err) {
          if (err instanceof JwtError) throw unauthorized(`invalid token: ${err.message}`);
          throw err;
        }
      }
      throw unauthorized('invalid API key');
    } catch (err) {
      s.span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      s.span.end();
    }
  }

  function requireScope(p: Principal, scope: string): void {
    if (p.scopes && !p.scopes.has(scope)) {
      throw new GatewayError(403, `this credential lacks the "${scope}" scope`, { code: 'insufficient_scope', loraxType: 'forbidden' });
    }
  }

  async function tenantLimits(tenant: string): Promise<Limits | null> {
    const hit = tenantCache.get(tenant);
    if (hit !== undefined) return hit;
    const rec = await store.getTenant(tenant);
    const limits = rec?.limits ?? null;
    tenantCache.set(tenant, limits);
    return limits;
  }

  async function scopesOf(p: Principal): Promise<LimitScope[]> {
    const has = (l: Limits) => limitValue(l.rpm) > 0 || limitValue(l.tpm) > 0 || limitValue(l.concurrent_streams) > 0;
    const out: LimitScope[] = [];
    const key = mergeLimits(opts.defaultKeyLimits, p.keyLimits);
    if (has(key)) out.push({ id: p.subject, limits: key });
    const tenant = mergeLimits(opts.defaultTenantLimits, await tenantLimits(p.tenant));
    if (has(tenant)) out.push({ id: 'tenant', limits: tenant });
    return out;
  }

  async function serviceHeaders(tenant: string, ctx: OtelContext, extra: Record<string, string> = {}): Promise<Record<string, string>> {
    const h: Record<string, string> = { authorization: `Bearer ${await signer.token(tenant)}`, ...extra };
    injectContext(ctx, h);
    return h;
  }

  /** The backends' model and limits (the same on every replica), fetched once. */
  async function backendInfo(tenant: string, ctx: OtelContext): Promise<BackendInfo> {
    if (info) return info;
    infoPending ??= (async () => {
      try {
        const up = await callUpstream(router, { path: '/info', method: 'GET', headers: await serviceHeaders(tenant, ctx), affinity: null, waitFirstByte: false, maxAttempts: router.backends.length }, f);
        try {
          if (!up.res.ok) throw new GatewayError(502, `backend /info answered ${up.res.status}`, { type: 'server_error', code: 'backend_error' });
          const j = (await up.res.json()) as { model_id?: string; max_total_tokens?: number; max_input_length?: number };
          const modelId = String(j.model_id ?? '');
          info = {
            modelId,
            modelName: modelId.split('/').filter(Boolean).pop() ?? modelId,
            maxTotalTokens: Number(j.max_total_tokens ?? 4096),
            maxInputLength: Number(j.max_input_length ?? Number(j.max_total_tokens ?? 4096) - 1),
          };
          return info;
        } finally {
          up.end();
        }
      } finally {
        infoPending = null;
      }
    })();
    return infoPending;
  }

  // ---------------------------------------------------------------------------------------------
  // Inference
  // ---------------------------------------------------------------------------------------------

  function schemaError(api: ApiKind, path: string, message: string): ShapedError {
    return api === 'lorax'
      ? new ShapedError(422, loraxError(`Input validation error: ${path}: ${message}`, 'validation'))
      : new ShapedError(400, openaiError(`${path}: ${message}`, 'invalid_request_error', path, 'invalid_value'));
  }

  async function inference(c: Context<Env>, api: ApiKind, path: string, parse: (raw: unknown) => ParseOutcome): Promise<Response> {
    const root = ctxOf(c);
    const principal = await authenticate(c);
    requireScope(principal, 'inference');
    const raw = await readBody(c);
    const parsed = parse(raw);
    if (!parsed.ok) return jsonResponse(parsed.error, parsed.status);
    const req = parsed.req;
    for (const s of req.schemas) {
      const problem = checkJsonSchema(s.schema, opts.schemaLimits);
      if (problem) throw schemaError(api, s.path, problem);
    }
    const bi = await backendInfo(principal.tenant, root);
    const sel = await resolver.select(principal.tenant, bi, req.single, req.merged);
    const budget = req.budget(bi, { promptBytesPerToken: opts.promptBytesPerToken });
    const scopes = await scopesOf(principal);
    const big = oversizedFor(scopes, budget.reserve);
    if (big) {
      const msg = `this request may use up to ${budget.reserve} tokens (prompt + max tokens for every sequence), more than the ${big.limit} tokens per minute allowed; lower ${api === 'lorax' ? 'parameters.max_new_tokens' : 'max_tokens'}`;
      throw api === 'lorax' ? new ShapedError(422, loraxError(`Input validation error: ${msg}`, 'validation')) : new GatewayError(400, msg, { code: 'tokens_exceed_limit' });
    }
    const leaseId = req.stream ? randomId('lease') : null;
    const lim = startSpan('gateway.limit', root, { 'switchboard.tokens_reserved': budget.reserve });
    let acquired;
    try {
      acquired = await store.acquire({ tenant: principal.tenant, scopes, tokens: budget.reserve, leaseId, leaseTtlMs: opts.leaseTtlMs });
    } catch (err) {
      lim.span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      lim.span.end();
    }
    if (!acquired.ok) {
      throw new GatewayError(429, limitMessage(acquired), { code: `rate_limit_${acquired.reason}`, loraxType: 'overloaded', headers: rateLimitHeaders(acquired) });
    }
    const rlHeaders = rateLimitHeaders(acquired);

    // From here on the reservation is settled exactly once, however the request ends.
    let settled = false;
    let renew: ReturnType<typeof setInterval> | null = null;
    const settle = (usage: TokenUsage) => {
      if (settled) return;
      settled = true;
      if (renew) clearInterval(renew);
      const used = usage.promptTokens + usage.completionTokens;
      deps.onUsage?.(c.req.raw, {
        tenant: principal.tenant,
        adapter: sel.kind === 'single' ? sel.target.name : sel.kind === 'merged' ? sel.targets.map((t) => t.name).join('+') : null,
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens,
      });
      background(
        c,
        store.settle({
          tenant: principal.tenant,
          scopes,
          reserved: budget.reserve,
          used,
          leaseId,
          usage: { keyId: principal.keyId, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens },
          day: utcDay(),
        }),
      );
    };
    if (leaseId && scopes.some((s) => limitValue(s.limits.concurrent_streams) > 0)) {
      renew = setInterval(() => {
        store.renewLease(principal.tenant, scopes, leaseId, opts.leaseTtlMs).catch(() => {});
      }, Math.max(1000, opts.leaseTtlMs / 3));
    }

    const fwd: ActiveSpan = startSpan('gateway.forward', root, { 'switchboard.route': path, 'switchboard.stream': req.stream }, SpanKind.CLIENT);
    let up: Upstream;
    try {
      const body = JSON.stringify(req.forwardBody(sel));
      up = await callUpstream(
        router,
        {
          path,
          method: 'POST',
          body,
          headers: await serviceHeaders(principal.tenant, fwd.ctx, { 'content-type': 'application/json', accept: req.stream ? 'text/event-stream' : 'application/json' }),
          affinity: sel.kind === 'base' ? null : sel.affinity,
          only: replicasOf(sel),
          signal: clientSignal(c),
          waitFirstByte: req.stream,
          maxAttempts: opts.maxAttempts,
          onAttempt: (b, i) => fwd.span.addEvent('attempt', { 'switchboard.backend': b.index, 'switchboard.attempt': i }),
        },
        f,
      );
    } catch (err) {
      fwd.span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      fwd.span.end();
      settle({ promptTokens: 0, completionTokens: 0 });
      throw err;
    }
    fwd.span.setAttributes({ 'switchboard.backend': up.backend.index, 'http.response.status_code': up.res.status });
    const headers: Record<string, string> = { ...rlHeaders };
    if (opts.exposeBackend) headers['x-switchboard-backend'] = String(up.backend.index);

    if (!up.res.ok) return upstreamError(up, sel, headers, fwd, settle);

    if (req.stream && up.reader) {
      const base = req.inspector(sel);
      const inspector = {
        event: (d: string) => base.event(d.startsWith('{"error"') ? scrubIds(d, sel) : d),
        end: (failure: string | null) => base.end(failure),
      };
      const body = relayStream(up, inspector, {
        onFinish: (outcome: StreamOutcome) => {
          // Exact counts from the backend when the stream finished; otherwise what was seen.
          settle(base.usage() ?? { promptTokens: budget.promptGuess, completionTokens: base.events });
          fwd.span.setAttribute('switchboard.stream_outcome', outcome);
          if (outcome === 'failed') fwd.span.setStatus({ code: SpanStatusCode.ERROR, message: 'stream failed' });
          fwd.span.end();
        },
      });
      return new Response(body, {
        status: up.res.status,
        headers: {
          'content-type': up.res.headers.get('content-type') ?? 'text/event-stream',
          'cache-control': 'no-cache',
          'x-accel-buffering': 'no',
          ...headers,
        },
      });
    }

    let text: string;
    try {
      text = await up.res.text();
    } catch (err) {
      up.end();
      fwd.span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      fwd.span.end();
      settle({ promptTokens: budget.promptGuess, completionTokens: 0 });
      if (clientSignal(c).aborted) throw new GatewayError(499, 'client closed the request');
      throw new GatewayError(502, `the backend connection failed before the answer was complete (${(err as Error).message})`, { type: 'server_error', code: 'backend_error', loraxType: 'generation' });
    }
    up.end();
    fwd.span.end();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      settle({ promptTokens: budget.promptGuess, completionTokens: 0 });
      throw new GatewayError(502, 'the backend answered something that is not JSON', { type: 'server_error', code: 'backend_error', loraxType: 'generation' });
    }
    const done = req.finishJson(json, sel);
    settle(done.usage ?? { promptTokens: budget.promptGuess, completionTokens: 0 });
    return jsonResponse(done.body, up.res.status, headers);
  }

  async function upstreamError(up: Upstream, sel: AdapterSelection, headers: Record<string, string>, fwd: ActiveSpan, settle: (u: TokenUsage) => void): Promise<Response> {
    let text = '';
    try {
      text = await up.res.text();
    } catch {
      // keep the status
    }
    up.end();
    settle({ promptTokens: 0, completionTokens: 0 });
    if (up.res.status >= 500) fwd.span.setStatus({ code: SpanStatusCode.ERROR, message: `backend answered ${up.res.status}` });
    fwd.span.end();
    if (up.res.status === 401) {
      // The backend refused the gateway itself (it refuses service tokens with 401 only): a
      // service key mismatch, not the client's fault. A 403 is the hub refusing the tenant's own
      // hub token for its adapter: passed on below as the client's 4xx, naming the adapter.
      log(`backend ${up.backend.url} refused the service token (401): ${text.slice(0, 200)}`);
      throw new GatewayError(502, 'the backend refused the gateway (service key mismatch)', { type: 'server_error', code: 'backend_auth', loraxType: 'generation' });
    }
    const isJson = (up.res.headers.get('content-type') ?? '').includes('json');
    if (!isJson) {
      throw new GatewayError(up.res.status >= 500 ? 502 : up.res.status, `backend error ${up.res.status}`, { type: up.res.status >= 500 ? 'server_error' : undefined });
    }
    return new Response(scrubIds(text, sel), { status: up.res.status, headers: { 'content-type': 'application/json', ...headers } });
  }

  // ---------------------------------------------------------------------------------------------
  // Routes
  // ---------------------------------------------------------------------------------------------

  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const t0 = performance.now();
    const parent = extractContext(c.req.raw.headers);
    const s = startServerSpan(`${c.req.method} ${c.req.routePath === '/*' ? c.req.path : c.req.routePath}`, parent, {
      'http.request.method': c.req.method,
      'url.path': c.req.path,
    });
    c.set('otel', s.ctx);
    const check = router.maybeCheck();
    if (check) background(c, check);
    try {
      await next();
    } finally {
      s.span.setAttribute('http.response.status_code', c.res.status);
      if (c.res.status >= 500) s.span.setStatus({ code: SpanStatusCode.ERROR });
      s.span.end();
      if (deps.metrics) {
        const route = matchedRoutes(c).map((r) => r.path).filter((p) => p !== '/*').pop() ?? 'unmatched';
        deps.metrics.observe(route, c.req.method, c.res.status, (performance.now() - t0) / 1000);
      }
    }
  });

  app.onError((err, c) => {
    if (!(err instanceof GatewayError) && !(err instanceof ShapedError)) log(`error on ${c.req.method} ${c.req.path}: ${(err as Error)?.stack ?? err}`);
    return errorResponseFor(apiKindOf(c.req.path), err);
  });
  app.notFound((c) => {
    const kind = apiKindOf(c.req.path);
    return new GatewayError(404, `no route ${c.req.method} ${c.req.path}`, { loraxType: 'not_found' }).response(kind);
  });

  for (const route of ['/generate', '/generate_stream', '/'] as LoraxRoute[]) {
    app.post(route, (c) => inference(c, 'lorax', route, (raw) => parseLorax(route, raw)));
  }
  app.post('/v1/chat/completions', (c) => inference(c, 'openai', '/v1/chat/completions', parseChat));
  app.post('/v1/completions', (c) => inference(c, 'openai', '/v1/completions', parseCompletion));

  app.get('/v1/models', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'inference');
    const bi = await backendInfo(p.tenant, ctxOf(c));
    const [own, shared] = await Promise.all([store.listAdapters(p.tenant), store.listShared()]);
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
  });

  app.post('/tokenize', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'inference');
    const raw = await readBody(c);
    const r = parseLoraxRequest(TokenizeRequest, raw);
    if (!r.success) return c.json(r.error, 422);
    const scopes = await scopesOf(p);
    const acquired = await store.acquire({ tenant: p.tenant, scopes, tokens: 0, leaseId: null, leaseTtlMs: 0 });
    if (!acquired.ok) throw new GatewayError(429, limitMessage(acquired), { code: `rate_limit_${acquired.reason}`, headers: rateLimitHeaders(acquired) });
    background(c, store.settle({ tenant: p.tenant, scopes, reserved: 0, used: 0, leaseId: null, usage: { keyId: p.keyId, promptTokens: 0, completionTokens: 0 }, day: utcDay() }));
    const up = await callUpstream(router, { path: '/tokenize', method: 'POST', body: JSON.stringify(raw), headers: await serviceHeaders(p.tenant, ctxOf(c), { 'content-type': 'application/json' }), affinity: null, signal: clientSignal(c), waitFirstByte: false }, f);
    const text = await up.res.text().finally(() => up.end());
    return new Response(text, { status: up.res.status, headers: { 'content-type': up.res.headers.get('content-type') ?? 'application/json', ...rateLimitHeaders(acquired) } });
  });

  app.get('/info', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'inference');
    const up = await callUpstream(router, { path: '/info', method: 'GET', headers: await serviceHeaders(p.tenant, ctxOf(c)), affinity: null, signal: clientSignal(c), waitFirstByte: false }, f);
    const text = await up.res.text().finally(() => up.end());
    if (up.res.status === 401 || up.res.status === 403) throw new GatewayError(502, 'the backend refused the gateway (service key mismatch)', { type: 'server_error' });
    return new Response(text, { status: up.res.status, headers: { 'content-type': up.res.headers.get('content-type') ?? 'application/json' } });
  });

  // The gateway's own health: a replica to send to, and a store to count with.
  app.get('/health', async (c) => {
    const storeOk = await store.ping();
    const healthy = router.healthyCount;
    const ok = storeOk && healthy > 0;
    return c.json(
      { status: ok ? 'ok' : 'degraded', backends: { healthy, total: router.backends.length }, store: { kind: store.kind, ok: storeOk } },
      ok ? 200 : 503,
    );
  });

  // --- a tenant's own adapters ---
  const tenantApi = new Hono<Env>();
  tenantApi.get('/', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'adapters:read');
    return c.json({ object: 'list', data: await adapters.list(p.tenant) });
  });
  tenantApi.post('/', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'adapters:write');
    const input = parseInput(HubAdapterInput, await readBody(c));
    return c.json(await adapters.registerHub(p.tenant, input), 201);
  });
  tenantApi.get('/:name', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'adapters:read');
    return c.json(await adapters.get(p.tenant, c.req.param('name')));
  });
  tenantApi.delete('/:name', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'adapters:write');
    return c.json(await adapters.remove(p.tenant, c.req.param('name')));
  });
  tenantApi.put('/:name/:file', async (c) => {
    const p = await authenticate(c);
    requireScope(p, 'adapters:write');
    return c.json(await adapters.uploadFile(p.tenant, c.req.param('name'), c.req.param('file'), c.req.raw, opts.maxAdapterBytes));
  });
  app.route('/v1/adapters', tenantApi);

  app.route(
    '/admin',
    adminRoutes({
      store,
      adminToken: deps.adminToken ?? null,
      adapters,
      resolver,
      box: deps.secretBox,
      maxBodyBytes: opts.maxBodyBytes,
      maxAdapterBytes: opts.maxAdapterBytes,
      invalidateTenant: (t) => tenantCache.delete(t),
    }),
  );

  return app;
}

