// The adapter tiers without an engine: a fake slot engine whose loads the test finishes or fails,
// and a clock the test moves. Host preparation once per key, slots filled in the background,
// least-recently-used eviction that never touches a pinned or loading slot, cycle-time draining
// (one adapter at a time, the longest resident first), failed loads, the host-memory budget, and
// the byte budget of adapters in slots (--adapter-memory-fraction).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NativeAdapterSpec } from '../../native/addon.d.ts';
import { AdapterStore, adapterBytes, type AdapterSlotEngine, type AdapterStoreOptions } from './adapter-store.ts';
import type { AdapterError } from './source.ts';

interface PendingLoad {
  slot: number;
  spec: NativeAdapterSpec;
  resolve: () => void;
  reject: (err: Error) => void;
}

class FakeEngine implements AdapterSlotEngine {
  readonly pending: PendingLoad[] = [];
  readonly unloads: number[] = [];
  /** What each slot holds, as the engine sees it. */
  readonly held = new Map<number, NativeAdapterSpec>();

  loadAdapter(slot: number, spec: NativeAdapterSpec): Promise<void> {
    assert.ok(!this.held.has(slot), `slot ${slot} loaded while still holding an adapter`);
    return new Promise((resolve, reject) => {
      this.pending.push({
        slot,
        spec,
        resolve: () => {
          this.held.set(slot, spec);
          resolve();
        },
        reject,
      });
    });
  }

  unloadAdapter(slot: number): void {
    this.unloads.push(slot);
    this.held.delete(slot);
  }

  /** Finishes the oldest pending load. */
  async finish(): Promise<PendingLoad> {
    const p = this.pending.shift();
    assert.ok(p, 'no slot load pending');
    p.resolve();
    await Promise.resolve();
    await Promise.resolve();
    return p;
  }
}

const spec = (name: string): NativeAdapterSpec => ({ modules: [], name } as unknown as NativeAdapterSpec);

/** An adapter of `bytes` bytes at one byte per element: one module, lora_A [1, bytes/2], lora_B [bytes/2, 1]. */
const sized = (name: string, bytes: number): NativeAdapterSpec =>
  ({
    name,
    modules: [{ layer: 0, module: 'q_proj', rank: 1, scale: 1, a: { name: 'a', dtype: 'F32', shape: [1, bytes / 2] }, b: { name: 'b', dtype: 'F32', shape: [bytes / 2, 1] } }],
  }) as unknown as NativeAdapterSpec;

function setup(opts: Partial<AdapterStoreOptions> = {}, sizes: Record<string, number> = {}) {
  const engine = new FakeEngine();
  const clock = { t: 0 };
  const events = { changes: 0, evicted: [] as string[], loaded: [] as string[], errors: [] as string[] };
  const store = new AdapterStore(
    engine,
    { slots: 2, cycleTimeS: 10, maxHostAdapters: 4, onChange: () => events.changes++, now: () => clock.t, ...opts },
    {
      onLoad: (key, _s, tier) => events.loaded.push(`${tier}:${key}`),
      onLoadError: (key) => events.errors.push(key),
      onEvict: (key) => events.evicted.push(key),
    },
  );
  const loads = new Map<string, number>();
  /** prepare() with a loader that counts its calls. */
  const prepare = (key: string) =>
    store.prepare(key, async () => {
      loads.set(key, (loads.get(key) ?? 0) + 1);
      return { spec: sizes[key] === undefined ? spec(key) : sized(key, sizes[key]), info: { id: key } };
    });
  /** Prepares `key` and moves it into a slot; returns the slot. */
  const resident = async (key: string) => {
    await prepare(key);
    assert.equal(store.slotFor(key), null, 'the first ask starts the slot load');
    await engine.finish();
    const slot = store.slotFor(key);
    assert.notEqual(slot, null);
    return slot!;
  };
  return { engine, clock, events, store, loads, prepare, resident };
}

describe('AdapterStore with a fake engine', () => {
  it('prepares a key once for concurrent requests, and every request sees a failure', async () => {
    const { store } = setup();
    let calls = 0;
    let finish!: (v: { spec: NativeAdapterSpec }) => void;
    const load = () => {
      calls++;
      return new Promise<{ spec: NativeAdapterSpec }>((r) => (finish = r));
    };
    const both = Promise.all([store.prepare('a', load), store.prepare('a', load)]);
    finish({ spec: spec('a') });
    await both;
    assert.equal(calls, 1);

    let failCalls = 0;
    const failing = async (): Promise<{ spec: NativeAdapterSpec }> => {
      failCalls++;
      await Promise.resolve();
      throw new Error('bad safetensors');
    };
    const results = await Promise.allSettled([store.prepare('b', failing), store.prepare('b', failing)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.equal(failCalls, 1);
    // A failed preparation is not remembered: the next request tries again.
    await assert.rejects(store.prepare('b', failing), /bad safetensors/);
    assert.equal(failCalls, 2);
  });

  it('fills a free slot in the background and tells the scheduler when it is resident', async () => {
    const { store, engine, events, prepare } = setup();
    assert.equal(store.slotFor('a'), null, 'unknown key');
    await prepare('a');
    assert.equal(store.slotFor('a'), null);
    assert.equal(store.slotFor('a'), null, 'asking again does not start a second load');
    assert.equal(engine.pending.length, 1);
    assert.equal(events.changes, 0);
    assert.deepEqual(store.resident(), []);
    const load = await engine.finish();
    assert.equal(events.changes, 1);
    assert.equal(store.slotFor('a'), load.slot);
    assert.deepEqual(store.resident(), [{ key: 'a', slot: load.slot, info: { id: 'a' } }]);
    assert.equal(store.activeCount, 1);
    assert.deepEqual(events.loaded, ['host:a', 'device:a']);
  });

  it('evicts the least recently used unpinned adapter when the slots are full', async () => {
    const { store, engine, events, clock, prepare, resident } = setup();
    clock.t = 1;
    const slotA = await resident('a');
    clock.t = 2;
    const slotB = await resident('b');
    clock.t = 3;
    store.slotFor('a'); // a used after b
    clock.t = 4;
    await prepare('c');
    assert.equal(store.slotFor('c'), null);
    assert.deepEqual(events.evicted, ['b']);
    assert.deepEqual(engine.unloads, [slotB]);
    await engine.finish();
    assert.equal(store.slotFor('c'), slotB);
    assert.equal(store.slotFor('a'), slotA);
    assert.equal(store.slotFor('b'), null, 'b must load again');
  });

  it('never evicts a pinned adapter, however long unused', async () => {
    const { store, engine, events, clock, prepare, resident } = setup();
    clock.t = 1;
    await resident('a');
    store.pin('a');
    clock.t = 2;
    const slotB = await resident('b');
    clock.t = 3;
    await prepare('c');
    store.slotFor('c');
    assert.deepEqual(events.evicted, ['b']);
    assert.deepEqual(engine.unloads, [slotB]);
  });

  it('never evicts a slot whose load is still running', async () => {
    const { store, engine, events, clock, prepare } = setup({ slots: 1 });
    await prepare('a');
    store.slotFor('a'); // load in flight
    clock.t = 100;
    await prepare('b');
    assert.equal(store.slotFor('b'), null);
    assert.deepEqual(events.evicted, []);
    assert.equal(engine.pending.length, 1);
  });

  it('when every slot is pinned and others wait, the adapter resident longest past the cycle time drains', async () => {
    const { store, engine, events, clock, prepare, resident } = setup({ cycleTimeS: 10 });
    clock.t = 0;
    const slotA = await resident('a');
    clock.t = 5;
    await resident('b');
    store.pin('a');
    store.pin('b');
    await prepare('c');
    clock.t = 9;
    assert.equal(store.slotFor('c'), null);
    assert.ok(store.admitting('a') && store.admitting('b'), 'nobody drains before the cycle time');
    clock.t = 16; // both past the cycle time; a has held its slot longer
    assert.equal(store.slotFor('c'), null);
    assert.equal(store.admitting('a'), false, 'a stops admitting new requests');
    assert.equal(store.admitting('b'), true, 'one adapter drains at a time');
    store.slotFor('c');
    assert.equal(store.admitting('b'), true);
    const before = events.changes;
    store.unpin('a'); // its last running sequence finished
    assert.equal(events.changes, before + 1, 'the scheduler is told to look again');
    assert.equal(store.slotFor('c'), null);
    assert.deepEqual(events.evicted, ['a']);
    assert.deepEqual(engine.unloads, [slotA]);
    await engine.finish();
    assert.equal(store.slotFor('c'), slotA);
    assert.equal(store.admitting('a'), true, 'an evicted adapter admits again (it will wait for a slot)');
  });

  it('a drained adapter goes before a less recently used one', async () => {
    const { store, events, clock, prepare, resident } = setup({ cycleTimeS: 10 });
    clock.t = 0;
    await resident('a');
    clock.t = 1;
    await resident('b');
    store.pin('a');
    store.pin('b');
    await prepare('c');
    clock.t = 20;
    store.slotFor('c'); // a drains
    clock.t = 21;
    store.slotFor('a');
    store.unpin('a');
    store.unpin('b'); // b now unpinned and used longer ago than a
    store.slotFor('c');
    assert.deepEqual(events.evicted, ['a']);
  });

  it('a failed slot load fails the waiting requests, frees the slot, and is retried once they are gone', async () => {
    const { store, engine, events, prepare, loads } = setup({ slots: 1 });
    await prepare('a');
    store.slotFor('a');
    engine.pending.shift()!.reject(new Error('out of device memory'));
    await new Promise((r) => setImmediate(r));
    assert.match(store.failure('a')?.message ?? '', /out of device memory/);
    assert.deepEqual(events.errors, ['a']);
    assert.equal(events.changes, 1);
    assert.equal(store.activeCount, 0, 'the slot is free again');
    await prepare('b');
    assert.equal(store.slotFor('b'), null);
    await engine.finish();
    assert.equal(store.slotFor('b'), 0);
    store.release('a'); // the request that waited for a is answered
    assert.equal(store.failure('a'), null);
    await prepare('a');
    assert.equal(loads.get('a'), 2, 'prepared again from the source');
  });

  it('keeps at most maxHostAdapters prepared adapters that nobody waits for, dropping the least recently used', async () => {
    const { store, clock, prepare, loads } = setup({ maxHostAdapters: 1 });
    clock.t = 1;
    await prepare('a');
    store.release('a');
    clock.t = 2;
    await prepare('b');
    store.release('b');
    await prepare('b');
    assert.equal(loads.get('b'), 1, 'b stayed in host memory');
    await prepare('a');
    assert.equal(loads.get('a'), 2, 'a was dropped for b');
    // Adapters with waiting requests are never dropped, whatever the budget.
    clock.t = 3;
    await prepare('c');
    await prepare('d');
    await prepare('c');
    await prepare('d');
    assert.equal(loads.get('c'), 1);
    assert.equal(loads.get('d'), 1);
  });

  it('adapters in slots do not count against the host budget', async () => {
    const { store, prepare, resident, loads } = setup({ maxHostAdapters: 0, slots: 1 });
    await resident('a');
    store.release('a');
    await prepare('a');
    assert.equal(loads.get('a'), 1, 'resident: not dropped');
    await prepare('b');
    store.release('b');
    await prepare('b');
    assert.equal(loads.get('b'), 2, 'not resident, nobody waiting, budget 0: dropped');
  });

  describe('byte budget of adapters in slots', () => {
    it('counts lora_A and lora_B elements at the engine element size', () => {
      assert.equal(adapterBytes(sized('x', 100), 1), 100);
      assert.equal(adapterBytes(sized('x', 100), 2), 200);
      assert.equal(adapterBytes(spec('x'), 4), 0);
    });

    it('a load that would pass the budget evicts the least recently used idle slots first', async () => {
      const { store, events, clock, resident, engine } = setup({ slots: 4, memoryBytes: 300, elementBytes: 1 }, { a: 100, b: 100, c: 100, d: 100, big: 200 });
      await resident('a');
      clock.t = 1;
      await resident('b');
      clock.t = 2;
      await resident('c');
      assert.equal(store.usedBytes, 300);
      assert.equal(store.budgetBytes, 300);
      clock.t = 3;
      store.slotFor('a'); // a used again: b is now the least recently used
      clock.t = 4;
      await resident('d'); // a free slot is left, but not 100 bytes
      assert.deepEqual(events.evicted, ['b']);
      assert.equal(store.usedBytes, 300);
      assert.equal(store.activeCount, 3);
      // 200 bytes: two idle adapters go, least recently used first (c at t=2, then a at t=3).
      clock.t = 5;
      store.slotFor('d');
      await resident('big');
      assert.deepEqual(events.evicted, ['b', 'c', 'a']);
      assert.equal(store.usedBytes, 300);
      assert.deepEqual(store.resident().map((r) => r.key).sort(), ['big', 'd']);
      assert.equal(engine.held.size, 2);
    });

    it('keeps pinned adapters: the load waits, evicting nothing, until one is idle', async () => {
      const { store, events, clock, resident, prepare, engine } = setup({ slots: 4, memoryBytes: 200, elementBytes: 1 }, { a: 100, b: 100, c: 100 });
      await resident('a');
      clock.t = 1;
      await resident('b');
      store.pin('a');
      store.pin('b');
      await prepare('c');
      assert.equal(store.slotFor('c'), null);
      assert.equal(engine.pending.length, 0, 'no room and nothing idle: nothing loads');
      assert.deepEqual(events.evicted, []);
      assert.equal(store.usedBytes, 200);
      // a, the least recently used, is pinned: b goes once it is idle.
      store.unpin('b');
      assert.equal(store.slotFor('c'), null);
      assert.deepEqual(events.evicted, ['b']);
      await engine.finish();
      assert.notEqual(store.slotFor('c'), null);
      assert.equal(store.usedBytes, 200);
      assert.ok(store.resident().some((r) => r.key === 'a'), 'the pinned adapter kept its slot');
    });

    it('refuses an adapter larger than the whole budget with a 4xx naming the flag', async () => {
      const { store, prepare, engine, events } = setup({ slots: 4, memoryBytes: 300, elementBytes: 2, memoryBudgetExplain: '--adapter-memory-fraction 0.1 x total device memory 1.00 GiB' }, { huge: 200 });
      await assert.rejects(prepare('huge'), (e: AdapterError) => {
        assert.equal(e.name, 'AdapterError');
        assert.equal(e.status, 422);
        assert.match(e.message, /adapter "huge" needs .* more than the whole adapter budget .*--adapter-memory-fraction/);
        return true;
      });
      assert.equal(store.slotFor('huge'), null);
      assert.equal(engine.pending.length, 0);
      assert.equal(store.usedBytes, 0);
      assert.deepEqual(events.errors, ['huge']);
    });

    it('gives the bytes back on eviction and on a failed slot load', async () => {
      const { store, resident, prepare, engine, clock } = setup({ slots: 1, memoryBytes: 1000, elementBytes: 1 }, { a: 100, b: 300 });
      await resident('a');
      assert.equal(store.usedBytes, 100);
      clock.t = 1;
      await prepare('b');
      assert.equal(store.slotFor('b'), null); // slot count: a is evicted
      assert.equal(store.usedBytes, 300, 'a unloaded, b loading counts');
      const p = engine.pending.shift()!;
      p.reject(new Error('out of memory'));
      await Promise.resolve();
      await Promise.resolve();
      assert.equal(store.usedBytes, 0);
      assert.match(store.failure('b')?.message ?? '', /out of memory/);
      assert.equal(store.activeCount, 0);
    });

    it('no budget: unlimited', () => {
      const { store } = setup();
      assert.equal(store.budgetBytes, Infinity);
    });
  });
});
