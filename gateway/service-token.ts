// Service tokens for the backend (docs/gateway-backend-contract.md): a JWT signed by the gateway,
// `iss: switchboard-gateway`, `aud: switchboard-backend`, 60 s of life, naming the tenant (and
// `scope` when the call needs one, e.g. adapters:write). HS256 with a shared secret, or
// EdDSA / ES256 / RS256 with a PEM (PKCS#8) private key whose public half the backend holds.
// Tokens are cached per tenant+scope for a part of their life: signing per request is wasted work.
import { importPKCS8, SignJWT, type CryptoKey as JoseKey } from 'jose';
import { SERVICE_AUDIENCE, SERVICE_ISSUER, SERVICE_TOKEN_TTL_S } from '../protocol/index.ts';
import { utf8 } from './lib/bytes.ts';

export class ServiceTokenSigner {
  private readonly cache = new Map<string, { token: string; until: number }>();

  private constructor(
    private readonly key: JoseKey | Uint8Array,
    readonly alg: string,
    private readonly ttlS: number,
  ) {}

  /** `key`: a shared secret (>= 32 bytes) or a PEM PKCS#8 private key (Ed25519, P-256, RSA). */
  static async create(key: string, opts: { ttlS?: number; alg?: string } = {}): Promise<ServiceTokenSigner> {
    const ttl = opts.ttlS ?? SERVICE_TOKEN_TTL_S;
    if (key.includes('-----BEGIN')) {
      if (!key.includes('PRIVATE KEY-----')) throw new Error('service key: a PEM key must be a PKCS#8 private key (the backend gets the public half)');
      for (const alg of opts.alg ? [opts.alg] : ['EdDSA', 'ES256', 'RS256']) {
        try {
          return new ServiceTokenSigner(await importPKCS8(key, alg), alg, ttl);
        } catch {
          // next algorithm family
        }
      }
      throw new Error('service key: PEM private key is not Ed25519, P-256 or RSA');
    }
    if (utf8(key).length < 32) throw new Error('service key: a shared secret must be at least 32 bytes');
    return new ServiceTokenSigner(utf8(key), 'HS256', ttl);
  }

  async token(tenant: string, scope?: string): Promise<string> {
    const cacheKey = `${tenant} ${scope ?? ''}`;
    const now = Date.now();
    const hit = this.cache.get(cacheKey);
    if (hit && hit.until > now) return hit.token;
    const claims: Record<string, unknown> = { tenant };
    if (scope) claims.scope = scope;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: this.alg, typ: 'JWT' })
      .setIssuer(SERVICE_ISSUER)
      .setAudience(SERVICE_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(Math.floor(now / 1000) + this.ttlS)
      .sign(this.key);
    // Reuse while at least half the lifetime remains.
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(cacheKey, { token, until: now + (this.ttlS * 1000) / 2 });
    return token;
  }
}
