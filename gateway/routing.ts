// Backend replicas: health (active GET /health checks with hysteresis + passive failure marking),
// in-flight counts, and the order in which to try them for a request.
//
// Adapter affinity: rendezvous (highest-random-weight) hashing of the adapter over the replicas,
// so one adapter keeps landing on the replica where it is already loaded; with bounded load
// (consistent hashing with bounded loads, Mirrokni et al.): a replica already holding more than
// `loadFactor` x its fair share of this gateway's in-flight requests (and at least `minLoad` of
// them: a replica with a handful of requests is not overloaded, it batches them) is passed over
// for the next one in the adapter's order. Base-model requests (no adapter to keep hot) go to the least loaded
// replica. Adding or losing a replica moves only the adapters that hashed to it.

/** Connection errors that mean nothing is there to answer (as opposed to a slow answer). */
const REFUSED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** The system error code of a failed fetch: on the error itself (node:http) or its cause (undici). */
function causeCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  if (typeof e?.code === 'string') return e.code;
  return typeof e?.cause?.code === 'string' ? e.cause.code : '';
}

export interface Backend {
  url: string;
  index: number;
  healthy: boolean;
  inFlight: number;
  consecutiveFailures: number;
  lastError: string | null;
  lastCheckAt: number;
  /** When a proxied request last got an answer from it (ms since epoch; 0: never). */
  lastAnswerAt: number;
}

export interface RouterOptions {
  /** Bounded-load factor c: no replica takes more than max(minLoad, ceil(c * (in-flight + 1) / healthy)). */
  loadFactor?: number;
  /** In-flight requests a replica may always take before it counts as overloaded. */
  minLoad?: number;
  healthIntervalMs?: number;
  healthTimeoutMs?: number;
  /** Consecutive failed health probes before a replica counts as down (default 3). */
  unhealthyAfter?: number;
  fetch?: typeof fetch;
  log?: (msg: string) => void;
}

export class Router {
  readonly backends: Backend[];
  readonly loadFactor: number;
  readonly minLoad: number;
  readonly healthIntervalMs: number;
  private readonly healthTimeoutMs: number;
  private readonly unhealthyAfter: number;
  private readonly f: typeof fetch;
  private readonly log: (msg: string) => void;
  private timer: ReturnType<typeof setInterval> | null = null;
  private checking: Promise<void> | null = null;
  private lastCheck = 0;
  private rr = 0;

  constructor(urls: string[], opts: RouterOptions = {}) {
    if (urls.length === 0) throw new Error('at least one backend URL is needed');
    this.backends = urls.map((u, index) => {
      const url = new URL(u);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`backend ${u}: must be an http(s) URL`);
      return { url: u.replace(/\/+$/, ''), index, healthy: true, inFlight: 0, consecutiveFailures: 0, lastError: null, lastCheckAt: 0, lastAnswerAt: 0 };
    });
    this.loadFactor = opts.loadFactor ?? 1.25;
    this.minLoad = opts.minLoad ?? 16;
    this.healthIntervalMs = opts.healthIntervalMs ?? 2000;
    this.healthTimeoutMs = opts.healthTimeoutMs ?? 1000;
    this.unhealthyAfter = Math.max(1, opts.unhealthyAfter ?? 3);
    this.f = opts.fetch ?? ((...a) => fetch(...a));
    this.log = opts.log ?? (() => {});
  }

  /** Rendezvous order of every replica for an affinity key (independent of health and load). */
  rendezvous(key: string): Backend[] {
    return [...this.backends]
      .map((b) => ({ b, score: hash53(`${key}\u0000${b.url}`) }))
      .sort((x, y) => y.score - x.score || x.b.index - y.b.index)
      .map((x) => x.b);
  }

  /**
   * The replicas to try for a request, best first: the affinity choice (bounded load), then the
   * other healthy replicas in the adapter's rendezvous order, then unhealthy ones as a last
   * resort (their health may be stale).
   */
  plan(affinityKey: string | null): Backend[] {
    const healthy = this.backends.filter((b) => b.healthy);
    const unhealthy = this.backends.filter((b) => !b.healthy);
    if (healthy.length === 0) return affinityKey === null ? [...this.backends] : this.rendezvous(affinityKey);
    let order: Backend[];
    if (affinityKey === null) {
      const start = this.rr++ % healthy.length;
      order = healthy
        .map((b, i) => ({ b, tie: (i - start + healthy.length) % healthy.length }))
        .sort((x, y) => x.b.inFlight - y.b.inFlight || x.tie - y.tie)
        .map((x) => x.b);
    } else {
      const ranked = this.rendezvous(affinityKey).filter((b) => b.healthy);
      const total = healthy.reduce((n, b) => n + b.inFlight, 0);
      const cap = Math.max(this.minLoad, Math.ceil((this.loadFactor * (total + 1)) / healthy.length));
      const chosen = ranked.find((b) => b.inFlight < cap) ?? ranked[0]!;
      order = [chosen, ...ranked.filter((b) => b !== chosen)];
    }
    return [...order, ...(affinityKey === null ? unhealthy : this.rendezvous(affinityKey).filter((b) => !b.healthy))];
  }

  /** Counts a request in flight on `b`; the returned function (idempotent) ends it. */
  begin(b: Backend): () => void {
    b.inFlight++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      b.inFlight--;
    };
  }

  /** Passive health: a connection failure takes the replica out until a health check passes. */
  reportFailure(b: Backend, why: string): void {
    b.consecutiveFailures++;
    b.lastError = why;
    if (b.healthy) this.log(`backend ${b.url} marked unhealthy: ${why}`);
    b.healthy = false;
  }

  reportSuccess(b: Backend): void {
    b.consecutiveFailures = 0;
    if (!b.healthy) this.log(`backend ${b.url} is healthy again`);
    b.healthy = true;
    b.lastError = null;
  }

  /** A proxied request got an answer from `b`: proof of life that a slow probe cannot outvote. */
  reportAnswer(b: Backend): void {
    b.lastAnswerAt = Date.now();
    if (!b.healthy) this.reportSuccess(b);
    else b.consecutiveFailures = 0;
  }

  /**
   * A failed probe (timeout, error status): one slow or failed probe under load is not an outage. The replica goes out
   * after `unhealthyAfter` failures in a row, and not while proxied requests keep getting answers
   * (within the last two probe intervals).
   */
  private probeFailed(b: Backend, why: string): void {
    b.lastError = why;
    if (!b.healthy) {
      b.consecutiveFailures++;
      return;
    }
    if (Date.now() - b.lastAnswerAt < 2 * this.healthIntervalMs) return;
    b.consecutiveFailures++;
    if (b.consecutiveFailures >= this.unhealthyAfter) this.reportFailure(b, `${why} (${b.consecutiveFailures} probes in a row)`);
  }

  async checkOne(b: Backend): Promise<boolean> {
    b.lastCheckAt = Date.now();
    try {
      const res = await this.f(`${b.url}/health`, { signal: AbortSignal.timeout(this.healthTimeoutMs) });
      await res.body?.cancel().catch(() => {});
      if (res.ok) {
        this.reportSuccess(b);
        return true;
      }
      this.probeFailed(b, `GET /health answered ${res.status}`);
    } catch (err) {
      const why = `GET /health failed: ${(err as Error).message}`;
      // Nothing listening (or no such host) is an outage, not a slow moment: out at once.
      if (REFUSED.has(causeCode(err))) this.reportFailure(b, why);
      else this.probeFailed(b, why);
    }
    return false;
  }

  checkAll(): Promise<void> {
    this.checking ??= Promise.all(this.backends.map((b) => this.checkOne(b)))
      .then(() => undefined)
      .finally(() => {
        this.lastCheck = Date.now();
        this.checking = null;
      });
    return this.checking;
  }

  /** Node: periodic checks on a timer that does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    void this.checkAll();
    this.timer = setInterval(() => void this.checkAll(), this.healthIntervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** Workers (no timers between requests): a check when the last one is older than the interval. */
  maybeCheck(): Promise<void> | null {
    if (this.timer || this.checking || Date.now() - this.lastCheck < this.healthIntervalMs) return null;
    return this.checkAll();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  get healthyCount(): number {
    return this.backends.filter((b) => b.healthy).length;
  }
}

/** cyrb53: a fast, well-mixed 53-bit string hash (for rendezvous hashing; not cryptographic). */
function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
