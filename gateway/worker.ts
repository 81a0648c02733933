// The gateway as a Cloudflare Worker (wrangler.toml at the repo root; `npx wrangler dev` serves it
// locally in workerd). Same Hono app as on Node; configuration from env vars/secrets:
//   BACKENDS            comma-separated backend URLs (required)
//   SERVICE_KEY         service-token key: shared secret or PEM PKCS#8 private key (secret, required)
//   ADMIN_TOKEN         admin API bearer token (secret; absent: admin API off)
//   JWT_ISSUER, JWT_AUDIENCE and one of JWT_JWKS_URL / JWT_PUBLIC_KEY / JWT_SECRET: tenant JWTs
//   REDIS_REST_URL, REDIS_REST_TOKEN: a shared Redis over HTTP (Upstash REST dialect); without
//                       them the store is in-isolate memory (one isolate, lost on eviction: dev only)
//   DEFAULT_RPM, DEFAULT_TPM, DEFAULT_CONCURRENT_STREAMS, MAX_BODY_BYTES, HEALTH_INTERVAL_MS,
//   LOAD_FACTOR, MIN_LOAD (adapter affinity's bounded load)
//   SECRET              seals tenants' hub tokens (default: derived from SERVICE_KEY)
// Health checks run lazily (no timers between requests): a request that finds the last check
// older than HEALTH_INTERVAL_MS triggers one in the background (waitUntil).
import type { Hono } from 'hono';
import { createGateway, type GatewayOptions } from './app.ts';
import { JwtVerifier } from './auth/jwt.ts';
import { Router } from './routing.ts';
import { ServiceTokenSigner } from './service-token.ts';
import { MemoryStore } from './store/memory-store.ts';
import { RedisStore } from './store/redis-store.ts';
import { RestRedisClient } from './store/rest-client.ts';
import type { Limits } from './store/types.ts';
import { SecretBox } from './lib/crypto.ts';

export interface WorkerEnv {
  BACKENDS?: string;
  SERVICE_KEY?: string;
  ADMIN_TOKEN?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
  JWT_JWKS_URL?: string;
  JWT_PUBLIC_KEY?: string;
  JWT_SECRET?: string;
  JWT_TENANT_CLAIM?: string;
  REDIS_REST_URL?: string;
  REDIS_REST_TOKEN?: string;
  DEFAULT_RPM?: string;
  DEFAULT_TPM?: string;
  DEFAULT_CONCURRENT_STREAMS?: string;
  MAX_BODY_BYTES?: string;
  HEALTH_INTERVAL_MS?: string;
  LOAD_FACTOR?: string;
  MIN_LOAD?: string;
  SECRET?: string;
  EXPOSE_BACKEND?: string;
}

interface ExecutionContextLike {
  waitUntil(p: Promise<unknown>): void;
  passThroughOnException(): void;
}

let built: { fingerprint: string; app: Promise<Hono<any>> } | null = null;

function num(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

async function build(env: WorkerEnv): Promise<Hono<any>> {
  const backends = (env.BACKENDS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (backends.length === 0) throw new Error('BACKENDS is not set');
  if (!env.SERVICE_KEY) throw new Error('SERVICE_KEY is not set');
  const store = env.REDIS_REST_URL
    ? new RedisStore(new RestRedisClient({ url: env.REDIS_REST_URL, ...(env.REDIS_REST_TOKEN ? { token: env.REDIS_REST_TOKEN } : {}) }))
    : new MemoryStore();
  const jwt = env.JWT_ISSUER
    ? await JwtVerifier.create({
        issuer: env.JWT_ISSUER,
        audience: env.JWT_AUDIENCE ?? '',
        ...(env.JWT_JWKS_URL ? { jwksUrl: env.JWT_JWKS_URL } : {}),
        ...(env.JWT_PUBLIC_KEY ? { publicKey: env.JWT_PUBLIC_KEY } : {}),
        ...(env.JWT_SECRET ? { secret: env.JWT_SECRET } : {}),
        ...(env.JWT_TENANT_CLAIM ? { tenantClaim: env.JWT_TENANT_CLAIM } : {}),
      })
    : null;
  const defaults: Limits = {};
  if (num(env.DEFAULT_RPM)) defaults.rpm = num(env.DEFAULT_RPM)!;
  if (num(env.DEFAULT_TPM)) defaults.tpm = num(env.DEFAULT_TPM)!;
  if (num(env.DEFAULT_CONCURRENT_STREAMS)) defaults.concurrent_streams = num(env.DEFAULT_CONCURRENT_STREAMS)!;
  const options: Partial<GatewayOptions> = { exposeBackend: env.EXPOSE_BACKEND === 'true' };
  if (Object.keys(defaults).length) options.defaultTenantLimits = defaults;
  if (num(env.MAX_BODY_BYTES)) options.maxBodyBytes = num(env.MAX_BODY_BYTES)!;
  return createGateway({
    store,
    router: new Router(backends, {
      healthIntervalMs: num(env.HEALTH_INTERVAL_MS) ?? 5000,
      ...(num(env.LOAD_FACTOR) ? { loadFactor: num(env.LOAD_FACTOR)! } : {}),
      ...(env.MIN_LOAD !== undefined && Number.isFinite(Number(env.MIN_LOAD)) ? { minLoad: Number(env.MIN_LOAD) } : {}),
    }),
    signer: await ServiceTokenSigner.create(env.SERVICE_KEY),
    secretBox: await SecretBox.fromSecret(env.SECRET ?? env.SERVICE_KEY),
    adminToken: env.ADMIN_TOKEN ?? null,
    jwt,
    options,
    log: (msg) => console.log(`[gateway] ${msg}`),
    runtime: 'workers',
  });
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: ExecutionContextLike): Promise<Response> {
    const fingerprint = JSON.stringify(env);
    if (!built || built.fingerprint !== fingerprint) built = { fingerprint, app: build(env) };
    let app: Hono<any>;
    try {
      app = await built.app;
    } catch (err) {
      built = null;
      return new Response(JSON.stringify({ error: `gateway misconfigured: ${(err as Error).message}`, error_type: 'configuration' }), {
        status: 500,
        headers: { 'content-type': 'application/json' },
      });
    }
    return app.fetch(request, env, ctx as never);
  },
};
