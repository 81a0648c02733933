// The adapter tiers: source (disk / hub) -> validated spec in host memory -> engine slot.
// prepare() does the slow part (download, validation) for one request without holding up anyone;
// the scheduler then asks slotFor() between steps, which moves a prepared adapter into a free or
// least-recently-used unpinned slot in the background. When every slot is pinned and others wait,
// adapters active longer than the cycle time stop admitting, drain, and make room (LoRAX's
// adapter exchange).
import type { NativeAdapterSpec } from '../../native/addon.d.ts';
import type { AdapterSlots } from '../scheduler.ts';

/** What the store calls on the engine (native/engine.ts's Engine is one): fill a slot, empty it. */
export interface AdapterSlotEngine {
  loadAdapter(slot: number, spec: NativeAdapterSpec): Promise<void>;
  unloadAdapter(slot: number): void;
}

export interface AdapterStoreObserver {
  onLoad?(key: string, seconds: number, tier: 'host' | 'device'): void;
  onLoadError?(key: string, error: Error): void;
  onEvict?(key: string): void;
}

interface Entry {
  key: string;
  spec: NativeAdapterSpec | null;
  preparing: Promise<void> | null;
  /** Requests queued for it: the host copy stays while any wait. */
  waiters: number;
  slot: number | null;
  loadingSlot: boolean;
  pins: number;
  activeSince: number;
  lastUsed: number;
  draining: boolean;
  error: Error | null;
  info: Record<string, unknown>;
}

export interface AdapterStoreOptions {
  slots: number;
  /** Seconds an adapter may keep its slot while others wait for one. */
  cycleTimeS: number;
  /** Prepared adapters kept in host memory beyond those in slots. */
  maxHostAdapters: number;
  /** Called when a slot load finishes, so the scheduler looks again. */
  onChange: () => void;
  now?: () => number;
}

export class AdapterStore implements AdapterSlots {
  private readonly entries = new Map<string, Entry>();
  private readonly slotOwner: (string | null)[];
  private readonly now: () => number;

  constructor(
    private readonly engine: AdapterSlotEngine,
    private readonly opts: AdapterStoreOptions,
    private readonly observer: AdapterStoreObserver = {},
  ) {
    this.slotOwner = new Array(opts.slots).fill(null);
    this.now = opts.now ?? (() => performance.now() / 1000);
  }

  /**
   * Makes `key` ready to schedule: runs `load` (download + validation) once, however many
   * requests ask at the same time, and keeps the result in host memory. Rejects with the load's
   * error. Pair with `release` when the request finishes.
   */
  async prepare(key: string, load: () => Promise<{ spec: NativeAdapterSpec; info?: Record<string, unknown> }>): Promise<void> {
    let e = this.entries.get(key);
    if (!e) {
      e = { key, spec: null, preparing: null, waiters: 0, slot: null, loadingSlot: false, pins: 0, activeSince: 0, lastUsed: this.now(), draining: false, error: null, info: {} };
      this.entries.set(key, e);
    }
    e.waiters++;
    e.lastUsed = this.now();
    if (e.spec) return;
    if (!e.preparing) {
      const entry = e;
      const t0 = this.now();
      entry.error = null;
      entry.preparing = load().then(
        ({ spec, info }) => {
          entry.spec = spec;
          entry.info = info ?? {};
          entry.preparing = null;
          this.observer.onLoad?.(key, this.now() - t0, 'host');
          this.trimHost();
        },
        (err: Error) => {
          entry.preparing = null;
          this.observer.onLoadError?.(key, err);
          throw err;
        },
      );
    }
    try {
      await e.preparing;
    } catch (err) {
      e.waiters--;
      if (e.waiters === 0 && !e.spec) this.entries.delete(key);
      throw err;
    }
  }

  /** The request that called prepare() is done with the adapter (finished, failed or cancelled). */
  release(key: string): void {
    const e = this.entries.get(key);
    if (e && e.waiters > 0) e.waiters--;
    // A failed slot load is retried by the next request rather than remembered forever.
    if (e && e.waiters === 0 && e.error) this.entries.delete(key);
    this.trimHost();
  }

  slotFor(key: string): number | null {
    const e = this.entries.get(key);
    if (!e || !e.spec) return null;
    e.lastUsed = this.now();
    if (e.slot !== null && !e.loadingSlot) return e.slot;
    if (!e.loadingSlot) this.assignSlot(e);
    return null;
  }

  admitting(key: string): boolean {
    const e = this.entries.get(key);
    return !e?.draining;
  }

  pin(key: string): void {
    const e = this.entries.get(key);
    if (e) e.pins++;
  }

  unpin(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    e.pins = Math.max(0, e.pins - 1);
    if (e.pins === 0 && e.draining) this.opts.onChange();
  }

  failure(key: string): Error | null {
    return this.entries.get(key)?.error ?? null;
  }

  /** Adapters in engine slots, for /v1/models and /info. */
  resident(): { key: string; slot: number; info: Record<string, unknown> }[] {
    const out = [];
    for (const e of this.entries.values()) if (e.slot !== null && !e.loadingSlot) out.push({ key: e.key, slot: e.slot, info: e.info });
    return out;
  }

  get activeCount(): number {
    return this.slotOwner.filter((k) => k !== null).length;
  }

  private assignSlot(e: Entry): void {
    let slot = this.slotOwner.indexOf(null);
    if (slot < 0) slot = this.evictable();
    if (slot < 0) {
      this.rotate();
      return;
    }
    const old = this.slotOwner[slot];
    if (old !== null && old !== undefined) {
      const o = this.entries.get(old)!;
      o.slot = null;
      o.draining = false;
      this.engine.unloadAdapter(slot);
      this.observer.onEvict?.(old);
    }
    this.slotOwner[slot] = e.key;
    e.slot = slot;
    e.loadingSlot = true;
    const t0 = this.now();
    this.engine.loadAdapter(slot, e.spec!).then(
      () => {
        e.loadingSlot = false;
        e.activeSince = this.now();
        e.draining = false;
        this.observer.onLoad?.(e.key, this.now() - t0, 'device');
        this.opts.onChange();
      },
      (err: Error) => {
        e.loadingSlot = false;
        e.slot = null;
        this.slotOwner[slot] = null;
        e.error = err;
        this.observer.onLoadError?.(e.key, err);
        this.opts.onChange();
      },
    );
  }

  /** Least recently used slot whose adapter no running sequence uses. */
  private evictable(): number {
    let best = -1;
    let bestUsed = Infinity;
    this.slotOwner.forEach((k, i) => {
      const o = k ? this.entries.get(k) : null;
      if (!o || o.pins > 0 || o.loadingSlot) return;
      const used = o.draining ? -Infinity : o.lastUsed;
      if (used < bestUsed) {
        bestUsed = used;
        best = i;
      }
    });
    return best;
  }

  /** Every slot is busy and someone waits: the adapter that has held its slot longest past the cycle time drains. */
  private rotate(): void {
    const now = this.now();
    if (this.slotOwner.some((k) => k && this.entries.get(k)!.draining)) return;
    let victim: Entry | null = null;
    for (const k of this.slotOwner) {
      const o = k ? this.entries.get(k)! : null;
      if (!o || o.loadingSlot || now - o.activeSince < this.opts.cycleTimeS) continue;
      if (!victim || o.activeSince < victim.activeSince) victim = o;
    }
    if (victim) victim.draining = true;
  }

  /** Forgets prepared adapters nobody waits for, beyond the host budget, least recently used first. */
  private trimHost(): void {
    const idle = [...this.entries.values()].filter((e) => e.slot === null && e.waiters === 0 && !e.preparing);
    if (idle.length <= this.opts.maxHostAdapters) return;
    idle.sort((a, b) => a.lastUsed - b.lastUsed);
    for (const e of idle.slice(0, idle.length - this.opts.maxHostAdapters)) this.entries.delete(e.key);
  }
}
