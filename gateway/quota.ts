// Quotas per request: which limits apply to a caller (its key's or JWT subject's, and its
// tenant's, each merged over the gateway's defaults: the scopes the store reserves against in one
// atomic step), and the reservation itself, settled once with what the request really used.
// Tenant records are cached per instance for tenantCacheTtlMs (the admin API invalidates).
import { GatewayError } from './errors.ts';
import { INVALID_KEY } from './auth/api-keys.ts';
import { unauthorized } from './middleware/auth.ts';
import { TtlCache } from './lib/ttl-cache.ts';
import { limitMessage, limitValue, mergeLimits, rateLimitHeaders } from './limits.ts';
import type { GatewayContext, Services } from './services.ts';
import { utcDay, type GatewayStore, type LimitScope, type Limits } from './store/types.ts';
import { inSpan } from './telemetry.ts';

export interface QuotaOptions {
  defaultTenantLimits: Limits | null;
  defaultKeyLimits: Limits | null;
  tenantCacheTtlMs: number;
}

export interface QuotaSubject {
  tenant: string;
  /** key:<id> or jwt:<sub>. */
  subject: string;
  keyLimits: Limits | null;
}

const limited = (l: Limits) => limitValue(l.rpm) > 0 || limitValue(l.tpm) > 0 || limitValue(l.concurrent_streams) > 0;

export class QuotaScopes {
  private readonly tenants: TtlCache<Limits | null>;

  constructor(
    private readonly store: GatewayStore,
    private readonly opts: QuotaOptions,
  ) {
    this.tenants = new TtlCache(opts.tenantCacheTtlMs);
  }

  /** The scopes with at least one limit (none: the caller is unlimited). */
  async of(p: QuotaSubject): Promise<LimitScope[]> {
    const out: LimitScope[] = [];
    const key = mergeLimits(this.opts.defaultKeyLimits, p.keyLimits);
    if (limited(key)) out.push({ id: p.subject, limits: key });
    const tenant = mergeLimits(this.opts.defaultTenantLimits, await this.tenantLimits(p.tenant));
    if (limited(tenant)) out.push({ id: 'tenant', limits: tenant });
    return out;
  }

  /** Forget a tenant's cached record (its limits changed). */
  invalidate(tenant: string): void {
    this.tenants.delete(tenant);
  }

  private async tenantLimits(tenant: string): Promise<Limits | null> {
    const hit = this.tenants.get(tenant);
    if (hit !== undefined) return hit;
    const limits = (await this.store.getTenant(tenant))?.limits ?? null;
    this.tenants.set(tenant, limits);
    return limits;
  }
}

export interface Reservation {
  /** x-ratelimit-* headers of the answer. */
  headers: Record<string, string>;
  /** Gives back what was reserved beyond `used` and records usage; only the first call counts. */
  settle(usage: { promptTokens: number; completionTokens: number }): void;
}

/**
 * Reserves a request against its scopes (1 request, `tokens` tokens, a stream slot when leaseId
 * is set, renewed while it runs): a 429 GatewayError when a limit is reached. The reservation is
 * settled exactly once (in the background, after the answer), however the request ends.
 */
export async function reserve(
  svc: Services,
  c: GatewayContext,
  who: { tenant: string; keyId: string | null; keyHash?: string | null },
  scopes: LimitScope[],
  tokens: number,
  opts: { leaseId: string | null; onSettle?: (usage: { promptTokens: number; completionTokens: number }) => void },
): Promise<Reservation> {
  const { store } = svc;
  const leaseTtlMs = opts.leaseId ? svc.opts.leaseTtlMs : 0;
  const acquired = await inSpan('gateway.limit', c.get('otel'), () => store.acquire({ tenant: who.tenant, scopes, tokens, leaseId: opts.leaseId, leaseTtlMs, keyId: who.keyId }), {
    'switchboard.tokens_reserved': tokens,
  });
  if (!acquired.ok && acquired.reason === 'revoked') {
    if (who.keyHash) svc.keyCache.delete(who.keyHash);
    throw unauthorized(INVALID_KEY);
  }
  if (!acquired.ok) {
    throw new GatewayError(429, limitMessage(acquired), { code: `rate_limit_${acquired.reason}`, headers: rateLimitHeaders(acquired) });
  }
  let settled = false;
  let renew: ReturnType<typeof setInterval> | null = null;
  const leaseId = opts.leaseId;
  if (leaseId && scopes.some((s) => limitValue(s.limits.concurrent_streams) > 0)) {
    renew = setInterval(() => {
      store.renewLease(who.tenant, scopes, leaseId, leaseTtlMs).catch(() => {});
    }, Math.max(1000, leaseTtlMs / 3));
  }
  return {
    headers: rateLimitHeaders(acquired),
    settle(usage) {
      if (settled) return;
      settled = true;
      if (renew) clearInterval(renew);
      opts.onSettle?.(usage);
      svc.background(
        c,
        store.settle({
          tenant: who.tenant,
          scopes,
          reserved: tokens,
          used: usage.promptTokens + usage.completionTokens,
          leaseId,
          usage: { keyId: who.keyId, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens },
          day: utcDay(),
        }),
      );
    },
  };
}
