// Whether the engine can generate, as LoRAX's /health decides it: a recent successful step says
// yes without any work; otherwise a one-token generation is run. Answers are shared by concurrent
// probes and kept for a moment, so a load balancer polling every second costs at most one
// generation per `cacheS` on an idle server and none on a busy one.

export interface HealthOptions {
  /** A step that succeeded this recently proves the engine works (seconds). */
  freshS?: number;
  /** A probe's answer is reused this long (seconds). */
  cacheS?: number;
  /** A probe that has not finished after this long counts as a failure (seconds). */
  timeoutS?: number;
  now?: () => number;
}

export interface HealthResult {
  ok: boolean;
  /** Why not, when not ok. */
  error?: string;
}

export class Health {
  private lastStep = -Infinity;
  private cached: { at: number; result: HealthResult } | null = null;
  private pending: Promise<HealthResult> | null = null;
  private readonly freshS: number;
  private readonly cacheS: number;
  private readonly timeoutS: number;
  private readonly now: () => number;

  /** `probe` runs a one-token generation and rejects if it cannot. */
  constructor(
    private readonly probe: (signal: AbortSignal) => Promise<void>,
    opts: HealthOptions = {},
  ) {
    this.freshS = opts.freshS ?? 5;
    this.cacheS = opts.cacheS ?? 2;
    this.timeoutS = opts.timeoutS ?? 30;
    this.now = opts.now ?? (() => performance.now() / 1000);
  }

  /** The scheduler tells each engine step that returned results. */
  noteStep(): void {
    this.lastStep = this.now();
  }

  /** A failed step makes the next check probe, whatever happened before it. */
  noteFailure(): void {
    this.lastStep = -Infinity;
    this.cached = null;
  }

  async check(): Promise<HealthResult> {
    const t = this.now();
    if (t - this.lastStep <= this.freshS) return { ok: true };
    if (this.cached && t - this.cached.at <= this.cacheS) return this.cached.result;
    this.pending ??= this.runProbe().then((result) => {
      this.cached = { at: this.now(), result };
      this.pending = null;
      return result;
    });
    return this.pending;
  }

  private async runProbe(): Promise<HealthResult> {
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`a one-token generation did not finish within ${this.timeoutS} s`));
        ac.abort();
      }, this.timeoutS * 1000);
    });
    try {
      await Promise.race([this.probe(ac.signal), timeout]);
      return { ok: true };
    } catch (err) {
      return { ok: false, error: (err as Error).message || String(err) };
    } finally {
      clearTimeout(timer);
    }
  }
}
