// Service tokens from the gateway (docs/gateway-backend-contract.md). With --service-key set,
// every request but /health must carry a JWT the gateway signed; its `tenant` claim decides which
// tenant adapters the request may use. Without a key the backend serves a single trusted tenant.
import type { MiddlewareHandler } from 'hono';
import { createSecretKey, type KeyObject } from 'node:crypto';
import { importSPKI, jwtVerify, type JWTPayload } from 'jose';
import type { Context as TraceContext } from '@opentelemetry/api';
import { isTenantId, SERVICE_AUDIENCE, SERVICE_ISSUER, tenantOfAdapter } from '../protocol/index.ts';
import { RequestError } from './errors.ts';

export interface Caller {
  /** null when the backend runs without a service key (single trusted tenant). */
  tenant: string | null;
  scopes: Set<string>;
  /** Whether a gateway vouched for the caller (then api_token never comes from Authorization). */
  viaGateway: boolean;
}

/** Per-request values every backend route may read: who is calling, and the trace to join. */
export type AuthEnv = { Variables: { caller: Caller; traceContext?: TraceContext } };

/** The verification key: PEM public key (asymmetric) or a shared HS256 secret. */
export async function serviceKeyFrom(text: string): Promise<KeyObject | CryptoKey> {
  if (text.includes('-----BEGIN PUBLIC KEY-----')) {
    for (const alg of ['EdDSA', 'ES256', 'RS256']) {
      try {
        return await importSPKI(text, alg);
      } catch {
        // try the next algorithm family
      }
    }
    throw new Error('--service-key: a PEM public key, but not Ed25519, P-256 or RSA');
  }
  if (Buffer.byteLength(text) < 32) throw new Error('--service-key: a shared secret must be at least 32 bytes');
  return createSecretKey(Buffer.from(text, 'utf-8'));
}

/** LoRAX's probe paths: /health, and / (GET), /ping and /startup answering the same. */
const PROBES = new Set(['/health', '/', '/ping', '/startup']);

export function serviceAuth(key: KeyObject | CryptoKey | null): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    if (!key) {
      c.set('caller', { tenant: null, scopes: new Set(), viaGateway: false });
      return next();
    }
    // Liveness probes (Kubernetes, SageMaker) carry no token; POST / is a generation and does.
    if (c.req.method === 'GET' && PROBES.has(c.req.path)) return next();
    const refuse = (why: string): never => {
      throw new RequestError(`unauthorized: ${why}`, 401, 'unauthorized');
    };
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    if (!m) return refuse('a gateway service token is required');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(m[1]!, key, { issuer: SERVICE_ISSUER, audience: SERVICE_AUDIENCE, requiredClaims: ['exp'] }));
    } catch (err) {
      return refuse(`invalid service token (${(err as Error).message})`);
    }
    const tenant = payload.tenant;
    if (!isTenantId(tenant)) return refuse('service token names no valid tenant');
    const scopes = new Set(typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : []);
    c.set('caller', { tenant, scopes, viaGateway: true });
    return next();
  };
}

/** Whether the caller may use an adapter id; callers without a tenant (no gateway) may use all. */
export function mayUseAdapter(caller: Caller, id: string): boolean {
  const owner = tenantOfAdapter(id);
  return owner === null || caller.tenant === null || owner === caller.tenant;
}
