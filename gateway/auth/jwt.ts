// Tenant JWTs, for stateless authentication at the edge: verified with jose against a shared
// secret, a public key (PEM SPKI or JWK) or a JWKS URL, with issuer, audience and expiry checked.
// The tenant comes from a claim (`tenant` by default), scopes from `scope` (space separated).
import {
  createRemoteJWKSet,
  errors,
  importJWK,
  importSPKI,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type CryptoKey as JoseKey,
} from 'jose';
import { isTenantId } from '../../protocol/index.ts';
import { utf8 } from '../lib/bytes.ts';
import { TtlCache } from '../lib/ttl-cache.ts';

/**
 * How long a verified token is trusted without verifying its signature again (its expiry is still
 * checked on every use). jose verifies through WebCrypto, ~50-100 µs a token on Node (the key
 * import and the HMAC or signature go through the thread pool), which was a fifth of the
 * gateway's CPU per request for a client reusing its token; a minute bounds how long a key removed
 * from an issuer's key set keeps its tokens accepted here.
 */
const VERIFIED_TTL_MS = 60_000;

export interface JwtConfig {
  issuer: string;
  audience: string | string[];
  /** One of: */
  jwksUrl?: string;
  /** PEM SPKI public key, or a JWK (JSON). */
  publicKey?: string;
  /** HS256 shared secret. */
  secret?: string;
  /** Accepted algorithms (default: by key type). */
  algorithms?: string[];
  /** Claim naming the tenant (default "tenant"). */
  tenantClaim?: string;
  clockToleranceSec?: number;
}

export interface VerifiedJwt {
  tenant: string;
  subject: string;
  scopes: string[] | null;
  payload: JWTPayload;
}

export class JwtError extends Error {}

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export class JwtVerifier {
  private readonly verified = new TtlCache<VerifiedJwt>(VERIFIED_TTL_MS);

  private constructor(
    private readonly key: JoseKey | Uint8Array | JWTVerifyGetKey,
    private readonly cfg: JwtConfig,
    private readonly algorithms: string[],
  ) {}

  static async create(cfg: JwtConfig): Promise<JwtVerifier> {
    const sources = [cfg.jwksUrl, cfg.publicKey, cfg.secret].filter(Boolean).length;
    if (sources !== 1) throw new Error('JWT verification needs exactly one of: a JWKS URL, a public key, a secret');
    if (!cfg.issuer || !cfg.audience) throw new Error('JWT verification needs an issuer and an audience');
    if (cfg.secret) {
      if (utf8(cfg.secret).length < 32) throw new Error('JWT secret must be at least 32 bytes');
      return new JwtVerifier(utf8(cfg.secret), cfg, cfg.algorithms ?? ['HS256']);
    }
    if (cfg.jwksUrl) {
      const jwks = createRemoteJWKSet(new URL(cfg.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000, timeoutDuration: 5000 });
      return new JwtVerifier(jwks, cfg, cfg.algorithms ?? ASYMMETRIC);
    }
    const text = cfg.publicKey!.trim();
    if (text.startsWith('{')) {
      const jwk = JSON.parse(text) as Record<string, unknown> & { alg?: string };
      const alg = jwk.alg ?? cfg.algorithms?.[0];
      if (!alg) throw new Error('JWT public key (JWK) needs an "alg" member or an explicit algorithm');
      const key = (await importJWK(jwk, alg)) as JoseKey;
      return new JwtVerifier(key, cfg, cfg.algorithms ?? [alg]);
    }
    for (const alg of cfg.algorithms ?? ['RS256', 'ES256', 'EdDSA', 'PS256', 'ES384', 'ES512']) {
      try {
        const key = await importSPKI(text, alg);
        // RSA keys verify RS* and PS*: accept the family of the key that imported.
        const family = alg.startsWith('RS') || alg.startsWith('PS') ? ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] : [alg];
        return new JwtVerifier(key, cfg, cfg.algorithms ?? family);
      } catch {
        // next algorithm
      }
    }
    throw new Error('JWT public key: not a PEM SPKI key of a supported type (RSA, P-256/384/521, Ed25519)');
  }

  /** Seconds of clock skew allowed on exp/nbf, by jose and by the verified-token cache alike. */
  private get toleranceSec(): number {
    return this.cfg.clockToleranceSec ?? 5;
  }

  async verify(token: string): Promise<VerifiedJwt> {
    const known = this.verified.get(token);
    if (known) {
      // As jose would judge it now: expired once `exp` is past by more than the tolerance.
      if (typeof known.payload.exp === 'number' && known.payload.exp <= Date.now() / 1000 - this.toleranceSec) {
        this.verified.delete(token);
        throw new JwtError('token expired');
      }
      return known;
    }
    let payload: JWTPayload;
    try {
      const opts = {
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        algorithms: this.algorithms,
        clockTolerance: this.toleranceSec,
        requiredClaims: ['exp'],
      };
      ({ payload } =
        typeof this.key === 'function' ? await jwtVerify(token, this.key, opts) : await jwtVerify(token, this.key, opts));
    } catch (err) {
      throw new JwtError(describe(err));
    }
    const claim = this.cfg.tenantClaim ?? 'tenant';
    const tenant = payload[claim];
    if (!isTenantId(tenant)) throw new JwtError(`token has no valid "${claim}" claim`);
    const scope = payload.scope ?? payload.scp;
    const scopes = typeof scope === 'string' ? scope.split(' ').filter(Boolean) : Array.isArray(scope) ? scope.map(String) : null;
    const out = { tenant, subject: typeof payload.sub === 'string' ? payload.sub : tenant, scopes, payload };
    this.verified.set(token, out);
    return out;
  }
}

function describe(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'token expired';
  if (err instanceof errors.JWTClaimValidationFailed) return `token claim "${err.claim}" is not acceptable (${err.reason})`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'token signature is invalid';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'token algorithm is not accepted';
  if (err instanceof errors.JWKSNoMatchingKey) return 'token key id matches no key of the issuer';
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'token is malformed';
  if (err instanceof errors.JWKSTimeout) return 'the issuer key set could not be fetched in time';
  return 'token could not be verified';
}
