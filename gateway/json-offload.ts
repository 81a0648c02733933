// Node only: large JSON bodies decoded, depth-checked, parsed and re-serialised on worker threads,
// so no client can hold the gateway's event loop with a big body (issue 15). Decoding plus the
// nesting scan plus JSON.parse of a 1 MB body cost about 10 ms on an idle core and several times
// that on a busy one: every other request waits that long when it runs inline. The request bytes
// are transferred to a worker (not copied); the parsed object comes back by structured clone (a
// memcpy of its strings); the forwarded body goes back to a worker as a structured clone and
// returns as transferred UTF-8 bytes, so the main thread never runs JSON.stringify's escaping over
// a megabyte of prompt either. Small bodies (<= inlineMaxBytes) stay inline: a thread hop costs
// more than they do. Workers (Cloudflare) never load this module: their runtime isolates requests.
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { checkJsonBody, parseJsonObject, type CheckedBody, type JsonCodec } from './body.ts';
import type { RequestSchemaName } from '../protocol/request-schemas.ts';
import { GatewayError } from './errors.ts';

export const DEFAULT_INLINE_MAX_BYTES = 64 * 1024;

/** Bodies validated on a worker (parseChecked), and of those refused there (only the error came back). Tests read them. */
export const offloadStats = { checked: 0, refused: 0 };

type Reply =
  | { id: number; ok: true; value?: unknown; bytes?: Uint8Array<ArrayBuffer>; checked?: CheckedBody }
  | { id: number; ok: false; message: string; status: number | null; code: string | null };

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Thread {
  worker: Worker;
  pending: Map<number, Pending>;
}

export interface JsonOffloadOptions {
  /** Worker threads (default: 1 on a machine with fewer than 4 cores, else 2). */
  threads?: number;
  inlineMaxBytes?: number;
  /** The worker module (tests: one that cannot load). */
  workerEntry?: string;
}

export class JsonOffload implements JsonCodec {
  readonly inlineMaxBytes: number;
  readonly threads: number;
  private readonly entry: string;
  private readonly pool: (Thread | null)[];
  private nextId = 1;
  private closed = false;
  /** A thread that could not start (no answer before it failed): parse inline from then on. */
  private broken = false;

  constructor(opts: JsonOffloadOptions = {}, private readonly log: (msg: string) => void = () => {}) {

    this.inlineMaxBytes = opts.inlineMaxBytes ?? DEFAULT_INLINE_MAX_BYTES;
    this.threads = Math.max(1, opts.threads ?? (os.availableParallelism() < 4 ? 1 : 2));
    this.entry = opts.workerEntry ?? new URL('./json-offload-worker.ts', import.meta.url).href;
    // Started on first use: most gateways never see a body over the threshold.
    this.pool = Array.from({ length: this.threads }, () => null);
  }

  parse(bytes: Uint8Array): Promise<Record<string, unknown>> {
    if (this.broken) return inline(() => parseJsonObject(bytes));
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const own = whole ? bytes : bytes.slice();
    return this.send({ op: 'parse', bytes: own }, [own.buffer as ArrayBuffer]) as Promise<Record<string, unknown>>;
  }

  parseChecked(bytes: Uint8Array, name: RequestSchemaName): Promise<CheckedBody> {
    if (this.broken) return inline(() => checkJsonBody(bytes, name));
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const own = whole ? bytes : bytes.slice();
    return this.send({ op: 'check', bytes: own, name }, [own.buffer as ArrayBuffer]) as Promise<CheckedBody>;
  }

  stringify(value: unknown): Promise<Uint8Array<ArrayBuffer>> {
    if (this.broken) return inline(() => new TextEncoder().encode(JSON.stringify(value)) as Uint8Array<ArrayBuffer>);
    return this.send({ op: 'stringify', value }, []) as Promise<Uint8Array<ArrayBuffer>>;
  }

  /** Starts every thread now (a thread's start-up, about a second with tsx, then never lands on a request). */
  warm(): void {
    for (let i = 0; i < this.pool.length; i++) this.pool[i] ??= this.start(i);
  }

  /** Ends the threads; work still queued is refused. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.pool.map((t) => t?.worker.terminate()));
  }

  private send(msg: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the JSON worker pool is closed'));
    const t = this.pick();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      t.pending.set(id, { resolve, reject });
      if (t.pending.size === 1) t.worker.ref();
      t.worker.postMessage({ id, ...msg }, transfer);
    });
  }

  /** The thread with the least work queued (started if need be). */
  private pick(): Thread {
    let best: Thread | null = null;
    for (let i = 0; i < this.pool.length; i++) {
      const t = this.pool[i] ?? (this.pool[i] = this.start(i));
      if (!best || t.pending.size < best.pending.size) best = t;
      if (t.pending.size === 0) break;
    }
    return best!;
  }

  private start(slot: number): Thread {
    // tsx's loader hooks do not reach worker threads: the worker registers them first.
    const worker = new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(this.entry)}); });`, { eval: true });
    const t: Thread = { worker, pending: new Map() };
    let answered = false;
    const fail = (err: Error) => {
      if (this.pool[slot] === t) this.pool[slot] = null; // the next request starts a fresh one
      if (!answered && !this.closed && !this.broken) {
        // It never worked (a runtime without the loader it needs, say): correctness over isolation.
        this.broken = true;
        this.log(`JSON worker threads unavailable (${err.message}): parsing large bodies on the event loop`);
      }
      for (const p of t.pending.values()) p.reject(err);
      t.pending.clear();
    };
    worker.on('message', (r: Reply) => {
      answered = true;
      const p = t.pending.get(r.id);
      if (!p) return;
      t.pending.delete(r.id);
      if (t.pending.size === 0) worker.unref();
      if (r.ok && r.checked) {
        offloadStats.checked++;
        if (!r.checked.valid.success) offloadStats.refused++;
      }
      if (r.ok) p.resolve(r.checked ?? r.bytes ?? r.value);
      else if (r.status !== null) p.reject(new GatewayError(r.status, r.message, { code: r.code }));
      else p.reject(new Error(`JSON worker: ${r.message}`));
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`a JSON worker thread exited (${code})`)));
    // Referenced only while it holds work, so an idle pool never keeps the process alive.
    worker.unref();
    return t;
  }
}

function inline<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (err) {
    return Promise.reject(err as Error);
  }
}
