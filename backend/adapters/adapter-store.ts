// The adapter tiers: source (disk / hub) -> validated spec in host memory -> engine slot.
// prepare() does the slow part (download, validation) for one request without holding up anyone;
// the scheduler then asks slotFor() between steps, which moves a prepared adapter into a free or
// least-recently-used unpinned slot in the background. When every slot is pinned and others wait,
// adapters active longer than the cycle time stop admitting, drain, and make room (LoRAX's
// adapter exchange). Adapters in slots also share a byte budget (--adapter-memory-fraction): a
// load that would pass it evicts idle slots first, by the same rule, and an adapter larger than
// the whole budget is refused when it is prepared.
import type { NativeAdapterSpec } from '../../native/addon.d.ts';
import type { AdapterSlots } from '../scheduler.ts';
import { AdapterError } from './source.ts';

/** Bytes an adapter takes in an engine slot: every lora_A and lora_B element at `elementBytes`. */
export function adapterBytes(spec: NativeAdapterSpec, elementBytes: number): number {
  let n = 0;
  for (const m of spec.modules) for (const t of [m.a, m.b]) n += t.shape.reduce((x, y) => x * y, 1);
  return n * elementBytes;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

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
  /** Bytes in an engine slot (adapterBytes). */
  bytes: number;
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
  /** Bytes the adapters in slots may take together (default: unlimited). */
  memoryBytes?: number;
  /** Where memoryBytes came from, for the refusal of an adapter larger than all of it. */
  memoryBudgetExplain?: string;
  /** Bytes of one adapter element in the engine (default 2: the CUDA engine's 16-bit types). */
  elementBytes?: number;
}

export class AdapterStore implements AdapterSlots {
  private readonly entries = new Map<string, Entry>();
  private readonly slotOwner: (string | null)[];
  private readonly now: () => number;
  private used = 0;

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
      e = { key, spec: null, preparing: null, waiters: 0, slot: null, loadingSlot: false, pins: 0, activeSince: 0, lastUsed: this.now(), draining: false, error: null, info: {}, bytes: 0 };
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
          const id = typeof info?.id === 'string' ? `"${info.id}"` : key;
          const bytes = adapterBytes(spec, this.opts.elementBytes ?? 2);
          if (bytes > this.budgetBytes) {
            throw new AdapterError(
              `adapter ${id} needs ${mib(bytes)} of engine memory, more than the whole adapter budget of ${mib(this.budgetBytes)} (${this.opts.memoryBudgetExplain ?? 'the adapter memory budget'}): raise --adapter-memory-fraction or use an adapter of lower rank`,
              422,
            );
          }
          entry.spec = spec;
          entry.bytes = bytes;
          entry.info = info ?? {};
          entry.preparing = null;
          this.observer.onLoad?.(key, this.now() - t0, 'host');
          this.trimHost();
        },
      ).catch((err: Error) => {
        entry.preparing = null;
        this.observer.onLoadError?.(key, err);
        throw err;
      });
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

  /** Bytes the adapters in slots (loaded or loading) take. */
  get usedBytes(): number {
    return this.used;
  }

  /** Bytes they may take together (Infinity: no budget). */
  get budgetBytes(): number {
    return this.opts.memoryBytes ?? Infinity;
  }

  private assignSlot(e: Entry): void {
    // Room for one more slot and for e's bytes, made from the least recently used idle slots;
    // where evicting every idle one would not make it, nothing is evicted and a slot drains.
    const victims: number[] = [];
    const candidates = this.evictionOrder();
    let freeSlots = this.slotOwner.filter((k) => k === null).length;
    let used = this.used;
    while (freeSlots === 0 || used + e.bytes > this.budgetBytes) {
      const v = candidates.shift();
      if (v === undefined) {
        this.rotate();
        return;
      }
      victims.push(v);
      freeSlots++;
      used -= this.entries.get(this.slotOwner[v]!)!.bytes;
    }
    for (const v of victims) this.evict(v);
    const slot = this.slotOwner.indexOf(null);
    this.slotOwner[slot] = e.key;
    this.used += e.bytes;
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
        this.used -= e.bytes;
        e.error = err;
        this.observer.onLoadError?.(e.key, err);
        this.opts.onChange();
      },
    );
  }

  /** Slots whose adapter no running sequence uses and that are not loading: draining ones first, then least recently used. */
  private evictionOrder(): number[] {
    const out: { slot: number; used: number }[] = [];
    this.slotOwner.forEach((k, i) => {
      const o = k ? this.entries.get(k) : null;
      if (!o || o.pins > 0 || o.loadingSlot) return;
      out.push({ slot: i, used: o.draining ? -Infinity : o.lastUsed });
    });
    return out.sort((a, b) => a.used - b.used).map((c) => c.slot);
  }

  private evict(slot: number): void {
    const o = this.entries.get(this.slotOwner[slot]!)!;
    o.slot = null;
    o.draining = false;
    this.slotOwner[slot] = null;
    this.used -= o.bytes;
    this.engine.unloadAdapter(slot);
    this.observer.onEvict?.(o.key);
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
