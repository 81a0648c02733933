// Credentials as middleware. `authenticate(svc, scope)`: a tenant's API key (or, when configured,
// a tenant JWT) with the scope the route needs; the caller goes on as c.get('principal').
// `adminAuth(token)`: the operator's admin token. Failures are thrown GatewayErrors (401/403/404),
// answered by the app's one onError in the API's shape.
import type { MiddlewareHandler } from 'hono';
import { INVALID_KEY, looksLikeApiKey, verifyKey, verifyKeyCached } from '../auth/api-keys.ts';
import { JwtError } from '../auth/jwt.ts';
import { GatewayError } from '../errors.ts';
import { secretEquals } from '../lib/crypto.ts';
import type { GatewayEnv, Principal, Services } from '../services.ts';
import { inSpan } from '../telemetry.ts';

const BEARER = /^Bearer\s+(\S+)\s*$/i;

export function unauthorized(msg: string): GatewayError {
  return new GatewayError(401, msg, { code: 'invalid_api_key', loraxType: 'unauthorized', headers: { 'www-authenticate': 'Bearer' } });
}

/**
 * `opts.reserves`: the route reserves quota for every request it serves (the inference routes,
 * /tokenize): its key records may come from the per-instance cache, since the reservation re-checks
 * revocation atomically and every other answer confirms the key first (Services.confirmKey).
 */
export function authenticate(svc: Services, scope: string, opts: { reserves?: boolean } = {}): MiddlewareHandler<GatewayEnv> {
  const jwt = svc.deps.jwt ?? null;
  const principalOf = async (header: string | undefined): Promise<Principal> => {
    const m = BEARER.exec(header ?? '');
    if (!m) throw unauthorized('missing credentials: send "Authorization: Bearer <API key>"');
    const token = m[1]!;
    if (looksLikeApiKey(token)) {
      if (opts.reserves) {
        const v = await verifyKeyCached(svc.store, token, svc.keyCache);
        if (!v) throw unauthorized(INVALID_KEY);
        const rec = v.record;
        return { tenant: rec.tenant, keyId: rec.id, keyHash: v.hash, keyCached: v.cached, subject: `key:${rec.id}`, via: 'api_key', scopes: rec.scopes ? new Set(rec.scopes) : null, keyLimits: rec.limits };
      }
      const rec = await verifyKey(svc.store, token);
      if (!rec) throw unauthorized(INVALID_KEY);
      return { tenant: rec.tenant, keyId: rec.id, subject: `key:${rec.id}`, via: 'api_key', scopes: rec.scopes ? new Set(rec.scopes) : null, keyLimits: rec.limits };
    }
    if (jwt && token.split('.').length === 3) {
      try {
        const v = await jwt.verify(token);
        return { tenant: v.tenant, keyId: null, subject: `jwt:${v.subject}`, via: 'jwt', scopes: v.scopes ? new Set(v.scopes) : null, keyLimits: null };
      } catch (err) {
        if (err instanceof JwtError) throw unauthorized(`invalid token: ${err.message}`);
        throw err;
      }
    }
    throw unauthorized('invalid API key');
  };
  return async (c, next) => {
    const p = await inSpan('gateway.auth', c.get('otel'), async (s) => {
      const p = await principalOf(c.req.header('authorization'));
      s.span.setAttributes({ 'switchboard.tenant': p.tenant, 'switchboard.auth': p.via });
      return p;
    });
    if (p.scopes && !p.scopes.has(scope)) {
      await svc.confirmKey(p);
      throw new GatewayError(403, `this credential lacks the "${scope}" scope`, { code: 'insufficient_scope', loraxType: 'forbidden' });
    }
    c.set('principal', p);
    await next();
  };
}

/** The admin API's bearer token (none configured: the admin API answers 404 as if absent). */
export function adminAuth(adminToken: string | null): MiddlewareHandler {
  return async (c, next) => {
    if (!adminToken) throw new GatewayError(404, 'the admin API is disabled (no admin token configured)');
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    if (!m || !(await secretEquals(m[1]!, adminToken))) {
      throw new GatewayError(401, 'admin token required', { code: 'invalid_admin_token', headers: { 'www-authenticate': 'Bearer' } });
    }
    await next();
  };
}
