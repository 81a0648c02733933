// Quotas: requests per minute, tokens per minute (reserve before forwarding, settle after),
// concurrent streams. The bucket arithmetic lives here once; MemoryStore runs it directly and
// RedisStore's Lua scripts (store/redis-scripts.ts) are a line-for-line transcription of it.
//
// Token bucket, per scope and kind: capacity = the per-minute limit, refilled continuously at
// limit/60 s. A request takes 1 from the rpm bucket and its whole token budget (prompt estimate +
// max new tokens, for every sequence it may generate) from the tpm bucket; when it ends, the
// unused part goes back. Because the budget is an upper bound on what the backend can generate,
// concurrent requests can never overshoot the tpm limit together.
import type { AcquireResult, LimitScope, Limits, RateInfo } from './store/types.ts';

export const WINDOW_MS = 60_000;

export interface BucketState {
  tokens: number;
  ts: number;
}

/** Level of a bucket at `now` (absent state = full). May be negative (debt) after an overrun. */
export function bucketLevel(state: BucketState | undefined, capacity: number, now: number): number {
  if (!state) return capacity;
  const level = state.tokens + (Math.max(0, now - state.ts) * capacity) / WINDOW_MS;
  return level > capacity ? capacity : level;
}

/** Milliseconds until the bucket holds `cost`. */
export function waitMs(level: number, cost: number, capacity: number): number {
  return level >= cost ? 0 : Math.ceil(((cost - level) * WINDOW_MS) / capacity);
}

export function rateInfo(level: number, capacity: number): RateInfo {
  return {
    limit: capacity,
    remaining: Math.max(0, Math.floor(level)),
    resetMs: Math.ceil(((capacity - Math.min(capacity, level)) * WINDOW_MS) / capacity),
  };
}

/** A positive limit, or 0 for "unlimited". */
export function limitValue(v: number | null | undefined): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

/** Merges limits field by field (later wins when set). */
export function mergeLimits(...all: Array<Limits | null | undefined>): Limits {
  const out: Limits = {};
  for (const l of all) {
    if (!l) continue;
    for (const k of ['rpm', 'tpm', 'concurrent_streams'] as const) if (l[k] !== undefined) out[k] = l[k];
  }
  return out;
}

/** The most restrictive RateInfo of several scopes (least remaining). */
export function tighter(a: RateInfo | null, b: RateInfo | null): RateInfo | null {
  if (!a) return b;
  if (!b) return a;
  return b.remaining < a.remaining ? b : a;
}

/**
 * A token budget no tpm bucket can ever hold: answered at once with a clear message instead
 * of a 429 that would never clear.
 */
export function oversizedFor(scopes: LimitScope[], tokens: number): { scope: string; limit: number } | null {
  for (const s of scopes) {
    const tpm = limitValue(s.limits.tpm);
    if (tpm > 0 && tokens > tpm) return { scope: s.id, limit: tpm };
  }
  return null;
}

/** Headers for a request that passed (OpenAI's names), and for a 429. */
export function rateLimitHeaders(result: AcquireResult): Record<string, string> {
  const h: Record<string, string> = {};
  if (result.ok) {
    if (result.requests) {
      h['x-ratelimit-limit-requests'] = String(result.requests.limit);
      h['x-ratelimit-remaining-requests'] = String(result.requests.remaining);
      h['x-ratelimit-reset-requests'] = `${(result.requests.resetMs / 1000).toFixed(3)}s`;
    }
    if (result.tokens) {
      h['x-ratelimit-limit-tokens'] = String(result.tokens.limit);
      h['x-ratelimit-remaining-tokens'] = String(result.tokens.remaining);
      h['x-ratelimit-reset-tokens'] = `${(result.tokens.resetMs / 1000).toFixed(3)}s`;
    }
    return h;
  }
  h['retry-after'] = String(Math.max(1, Math.ceil(result.retryAfterMs / 1000)));
  if (result.reason === 'rpm') {
    h['x-ratelimit-limit-requests'] = String(result.limit);
    h['x-ratelimit-remaining-requests'] = '0';
    h['x-ratelimit-reset-requests'] = `${(result.retryAfterMs / 1000).toFixed(3)}s`;
  } else if (result.reason === 'tpm') {
    h['x-ratelimit-limit-tokens'] = String(result.limit);
    h['x-ratelimit-reset-tokens'] = `${(result.retryAfterMs / 1000).toFixed(3)}s`;
  } else {
    h['x-ratelimit-limit-concurrent-streams'] = String(result.limit);
  }
  return h;
}

export function limitMessage(result: Extract<AcquireResult, { ok: false }>): string {
  const who = result.scope === 'tenant' ? 'tenant' : 'API key';
  const secs = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
  switch (result.reason) {
    case 'rpm':
      return `rate limit reached: ${result.limit} requests per minute for this ${who}; retry in ${secs} s`;
    case 'tpm':
      return `rate limit reached: ${result.limit} tokens per minute for this ${who} (counting prompt + max_tokens of requests in flight); retry in ${secs} s`;
    case 'concurrency':
      return `too many concurrent streams: at most ${result.limit} for this ${who}; retry when one ends`;
    case 'revoked':
      return 'invalid API key (unknown, revoked or expired)';
  }
}
