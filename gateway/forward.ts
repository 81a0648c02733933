// Forwarding to a backend replica: retry on another replica only before the first byte,
// streaming pass-through with backpressure, client disconnect -> upstream abort, and a backend
// that fails mid-stream -> an error event in the API's shape (never a clean end of stream).
//
// Streams are framed per SSE event on bytes (never buffered beyond the event being read) so each
// event can be inspected for token counts and, where the gateway asked for more than the client
// did (LoRAX details, OpenAI usage), trimmed back; a token event goes through as the bytes it came
// in, found and counted by a byte search (the endpoints' `quick` paths), and only the few events
// that must be read as text are decoded. The response body is a pull stream with a high water
// mark of 0: the backend is read only as fast as the client reads, and whatever arrived meanwhile
// leaves in one write.
import { GatewayError } from './errors.ts';
import { bytesAt, concatBytes, utf8 } from './lib/bytes.ts';
import type { Backend, Router } from './routing.ts';

export interface UpstreamCall {
  path: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  body?: string | Uint8Array<ArrayBuffer> | null;
  headers: Record<string, string>;
  affinity: string | null;
  /** Only these replicas (URLs) may serve it (an upload that is not on every replica). */
  only?: string[] | null;
  /** The client's signal: when it aborts, so does the upstream request. */
  signal?: AbortSignal;
  /** Wait for the first body byte before committing to a replica (streams), so a replica that dies
   *  before answering anything is retried on the next one. */
  waitFirstByte: boolean;
  maxAttempts?: number;
  /** Headers per attempt (e.g. a traceparent naming the attempt's span). */
  onAttempt?: (backend: Backend, attempt: number) => void;
}

export interface Upstream {
  res: Response;
  backend: Backend;
  /** Set when waitFirstByte and the response is a 2xx stream. */
  reader: ReadableStreamDefaultReader<Uint8Array> | null;
  first: Uint8Array | null;
  /** Aborts the upstream request (a call without waitFirstByte: stops reading its answer). */
  abort: { abort(reason?: unknown): void };
  /** Ends the replica's in-flight count (idempotent). */
  end: () => void;
  attempts: number;
}

const RETRY_STATUS = new Set([429, 502, 503, 504]);

/** The body's reader without a web stream, where the fetch offers one (node-fetch.ts's streamed answers). */
function directReaderOf(res: Response): ReadableStreamDefaultReader<Uint8Array> | null {
  const direct = (res as Partial<{ directReader(): ReadableStreamDefaultReader<Uint8Array> }>).directReader;
  return typeof direct === 'function' ? direct.call(res) : null;
}

function linkAbort(from: AbortSignal | undefined, to: AbortController): () => void {
  if (!from) return () => {};
  if (from.aborted) {
    to.abort(from.reason);
    return () => {};
  }
  const on = () => to.abort(from.reason);
  from.addEventListener('abort', on, { once: true });
  return () => from.removeEventListener('abort', on);
}

export async function callUpstream(router: Router, call: UpstreamCall, f: typeof fetch = fetch): Promise<Upstream> {
  let plan = router.plan(call.affinity);
  if (call.only) {
    const only = new Set(call.only);
    plan = plan.filter((b) => only.has(b.url));
    if (plan.length === 0) {
      throw new GatewayError(503, 'no backend replica that holds this adapter is configured; upload it again', {
        type: 'server_error',
        code: 'adapter_unavailable',
        loraxType: 'overloaded',
      });
    }
  }
  const maxAttempts = Math.min(plan.length, call.maxAttempts ?? 3);
  let lastRetryable: Upstream | null = null;
  let lastError = 'no backend replica answered';
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    const backend = plan[attempt]!;
    if (call.signal?.aborted) break;
    call.onAttempt?.(backend, attempt);
    // A stream needs its own controller (the relay aborts it when the client stops reading); a
    // plain answer follows the caller's signal alone, and one AbortController (and a listener
    // linking it) per request is saved.
    const ownAbort = call.waitFirstByte ? new AbortController() : null;
    const unlink = ownAbort ? linkAbort(call.signal, ownAbort) : () => {};
    const endFlight = router.begin(backend);
    const end = () => {
      endFlight();
      unlink();
    };
    let res: Response;
    try {
      res = await f(`${backend.url}${call.path}`, {
        method: call.method,
        headers: call.headers,
        ...(call.body !== undefined && call.body !== null ? { body: call.body } : {}),
        ...(ownAbort ? { signal: ownAbort.signal } : call.signal ? { signal: call.signal } : {}),
      });
    } catch (err) {
      end();
      if (call.signal?.aborted) break;
      lastError = `${backend.url}: ${(err as Error).message}`;
      router.reportFailure(backend, (err as Error).message);
      continue;
    }
    const answer = res;
    const abort = ownAbort ?? { abort: () => void answer.body?.cancel().catch(() => {}) };
    if (RETRY_STATUS.has(res.status)) {
      // Overloaded or unavailable: another replica may serve it. Keep the answer in case none can.
      if (lastRetryable) {
        await lastRetryable.res.body?.cancel().catch(() => {});
        lastRetryable.end();
      }
      lastRetryable = { res, backend, reader: null, first: null, abort, end, attempts: attempt + 1 };
      if (res.status !== 429) router.reportFailure(backend, `answered ${res.status}`);
      continue;
    }
    router.reportAnswer(backend);
    // A stream: nothing has reached the client yet, so a replica that fails before its first
    // byte can still be replaced. (Node's fetch hands its body over without a web stream.)
    const reader = call.waitFirstByte && res.ok ? (directReaderOf(res) ?? res.body?.getReader() ?? null) : null;
    if (!reader) return { res, backend, reader: null, first: null, abort, end, attempts: attempt + 1 };
    try {
      const r = await reader.read();
      if (r.done) throw new Error('stream ended before its first byte');
      if (lastRetryable) {
        await lastRetryable.res.body?.cancel().catch(() => {});
        lastRetryable.end();
      }
      return { res, backend, reader, first: r.value, abort, end, attempts: attempt + 1 };
    } catch (err) {
      abort.abort();
      end();
      if (call.signal?.aborted) break;
      lastError = `${backend.url}: ${(err as Error).message}`;
      router.reportFailure(backend, (err as Error).message);
    }
  }
  if (lastRetryable) return lastRetryable;
  if (call.signal?.aborted) throw new GatewayError(499, 'client closed the request', { type: 'server_error' });
  throw new GatewayError(502, `no backend replica could serve the request (${lastError})`, {
    type: 'server_error',
    code: 'backend_unavailable',
    loraxType: 'overloaded',
  });
}

// ---------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------

/** Looks at (and may rewrite or drop) each event of a stream; says how it ended. */
export interface StreamInspector {
  /** The event's data (to send), or null to drop the event. */
  event(data: string): string | null;
  /**
   * Optional fast path, tried first for an event of a single `data:` line: its data as UTF-8 bytes,
   * `bytes[start..end)`, never decoded. Returns true (seen and counted: the event goes on as it
   * came), the pieces of its new data (seen and counted: sent instead; subarrays of `bytes` are
   * fine), or null (not handled here: `event` gets the decoded text). Most events of a stream
   * (every token) take this path, so a token costs a byte search, not a decode and an encode.
   */
  quick?(bytes: Uint8Array, start: number, end: number): true | Uint8Array[] | null;
  /**
   * Called once at the end. `failure`: why the upstream broke, or null if it ended by itself.
   * Returns the data of an error event to append (the stream did not finish properly), or null.
   */
  end(failure: string | null): string | null;
}

export type StreamOutcome = 'complete' | 'failed' | 'cancelled';

const LF = 0x0a;
const CR = 0x0d;
const DATA = utf8('data:');
const DATA_SP = utf8('data: ');
const BLANK = utf8('\n\n');

/**
 * Splits bytes into SSE events and rebuilds the output stream event by event, on bytes: an event
 * the inspector passes unchanged is sent as the bytes it came in (a chunk of such events is sent
 * as the chunk itself, no copy), and only events it must read as text (an error, the last one with
 * the counts) are decoded. Separators are ASCII, so a multi-byte character is never cut by a
 * split; an event cut across chunks waits, as bytes, for the rest. Invalid UTF-8 in an event that
 * is passed on goes on as it came (it used to be replaced by U+FFFD).
 */
export class SseFramer {
  /** The start of an event whose end has not arrived yet (its pieces: joined once its end comes). */
  private pending: Uint8Array[] = [];
  private pendingLen = 0;
  /** Where in `pending` the separator search resumes. */
  private scanFrom = 0;
  /** Set while the event being scanned has a line break (not a one-line `data:` event). */
  private broken = false;
  private sepLen = 0;
  private atStart = true;
  private readonly dec = new TextDecoder('utf-8', { ignoreBOM: true });
  // The output being assembled: finished parts, then a run of bytes contiguous in one input array.
  private parts: Uint8Array[] = [];
  private run: Uint8Array | null = null;
  private runStart = 0;
  private runEnd = 0;

  constructor(private readonly inspector: StreamInspector) {}

  /** The bytes to send for `chunk` (whole events only: the rest waits for the next chunk), or null. */
  push(chunk: Uint8Array): Uint8Array | null {
    let buf = chunk;
    let scan = 0;
    if (this.pending.length > 0) {
      // A piece without CR or LF cannot end the event: kept as it is, so a long event arriving
      // in many pieces is joined once, not once per piece.
      if (!this.atStart && chunk.indexOf(LF) < 0 && chunk.indexOf(CR) < 0) {
        this.keep(chunk);
        return null;
      }
      this.pending.push(chunk);
      buf = concatBytes(this.pending);
      scan = this.scanFrom;
      this.pending = [];
      this.pendingLen = 0;
    }
    let start = 0;
    if (this.atStart) {
      // A byte order mark opening the stream is not part of the first event (as TextDecoder did).
      if (buf.length < 3 && bytesAt(BOM, 0, buf)) {
        this.keep(buf);
        return null;
      }
      this.atStart = false;
      if (bytesAt(buf, 0, BOM)) start = scan = 3;
    }
    for (;;) {
      const sep = this.separator(buf, scan);
      if (sep < 0) break;
      this.block(buf, start, sep);
      start = sep + this.sepLen;
      scan = start;
    }
    if (start < buf.length) this.keep(start === 0 ? buf : buf.subarray(start));
    return this.take();
  }

  private keep(piece: Uint8Array): void {
    this.pending.push(piece);
    this.pendingLen += piece.byteLength;
    // Nothing kept holds a separator: one cut by the end of what is kept starts in its last 3 bytes.
    this.scanFrom = Math.max(0, this.pendingLen - 3);
  }

  /** Whatever is left when the upstream ends (an event without its blank line still counts). */
  flush(): Uint8Array | null {
    let rest = this.pending.length > 0 ? concatBytes(this.pending) : null;
    this.pending = [];
    this.pendingLen = 0;
    if (rest && this.atStart && bytesAt(rest, 0, BOM)) rest = rest.subarray(3);
    const text = rest ? this.dec.decode(rest) : '';
    if (text.trim()) {
      const block = text.replace(/[\r\n]+$/, '');
      const out = this.textBlock(block);
      if (out !== null) this.put(utf8(out));
      else this.put(utf8(`${block}\n\n`));
    }
    return this.take();
  }

  /** The first event separator (CRLF CRLF, LF LF or CR CR) at or after `from`, its length in sepLen; -1 if none. */
  private separator(b: Uint8Array, from: number): number {
    const n = b.length;
    for (let i = from; i < n; i++) {
      const c = b[i];
      if (c !== LF && c !== CR) continue;
      const d = b[i + 1];
      if (c === LF) {
        if (d === LF) return this.sep(i, 2);
      } else if (d === LF) {
        if (b[i + 2] === CR && b[i + 3] === LF) return this.sep(i, 4);
      } else if (d === CR) {
        return this.sep(i, 2);
      }
      this.broken = true;
    }
    return -1;
  }

  private sep(at: number, len: number): number {
    this.sepLen = len;
    return at;
  }

  /** One event, `b[s..e)` (its separator follows at e). */
  private block(b: Uint8Array, s: number, e: number): void {
    const broken = this.broken;
    this.broken = false;
    if (s === e) return;
    const quick = this.inspector.quick;
    if (!broken && quick && bytesAt(b, s, DATA, e)) {
      const r = quick.call(this.inspector, b, b[s + 5] === 0x20 ? s + 6 : s + 5, e);
      if (r === true) {
        this.asItCame(b, s, e);
        return;
      }
      if (r !== null) {
        this.put(DATA_SP);
        for (const p of r) this.put(p);
        this.put(BLANK);
        return;
      }
    }
    const out = this.textBlock(this.dec.decode(b.subarray(s, e)));
    if (out === null) this.asItCame(b, s, e);
    else if (out) this.put(utf8(out));
  }

  /** The event `b[s..e)` unchanged, then a blank line (the input's own bytes when it ended with LF LF). */
  private asItCame(b: Uint8Array, s: number, e: number): void {
    this.emit(b, s, e);
    if (this.sepLen === 2 && b[e] === LF) this.emit(b, e, e + 2);
    else this.put(BLANK);
  }

  /** A block read as text: what to send instead ('' for nothing), or null to send it as it came. */
  private textBlock(block: string): string | null {
    const lines = block.split(/\r\n|\n|\r/);
    const data: string[] = [];
    const other: string[] = [];
    for (const l of lines) {
      if (l.startsWith('data:')) data.push(l.slice(l.startsWith('data: ') ? 6 : 5));
      else if (l !== '') other.push(l);
    }
    if (data.length === 0) return other.length ? `${other.join('\n')}\n\n` : '';
    const text = data.join('\n');
    const out = this.inspector.event(text);
    if (out === null) return '';
    if (out === text) return null;
    return `${[...other, ...out.split('\n').map((l) => `data: ${l}`)].join('\n')}\n\n`;
  }

  private emit(b: Uint8Array, s: number, e: number): void {
    if (this.run === b && this.runEnd === s) {
      this.runEnd = e;
      return;
    }
    this.endRun();
    this.run = b;
    this.runStart = s;
    this.runEnd = e;
  }

  private put(piece: Uint8Array): void {
    this.endRun();
    if (piece.byteLength > 0) this.parts.push(piece);
  }

  private endRun(): void {
    if (!this.run) return;
    this.parts.push(this.runStart === 0 && this.runEnd === this.run.byteLength ? this.run : this.run.subarray(this.runStart, this.runEnd));
    this.run = null;
  }

  private take(): Uint8Array | null {
    this.endRun();
    if (this.parts.length === 0) return null;
    const out = concatBytes(this.parts);
    this.parts = [];
    return out;
  }
}

const BOM = new Uint8Array([0xef, 0xbb, 0xbf]);

export function sseEvent(data: string): string {
  return `data: ${data}\n\n`;
}

export interface StreamOptions {
  /** Called exactly once when the stream is over, however it ended. */
  onFinish: (outcome: StreamOutcome) => void;
}

/**
 * The client's body for an upstream SSE stream: pull-based (the backend is read only when the
 * client wants more), re-framed per event through the inspector, closed with an error event if
 * the backend breaks, and cancelling the backend when the client goes away.
 */
export function relayStream(up: Upstream, inspector: StreamInspector, opts: StreamOptions): ReadableStream<Uint8Array> {
  const reader = up.reader!;
  const framer = new SseFramer(inspector);
  let finished = false;
  const finish = (outcome: StreamOutcome) => {
    if (finished) return;
    finished = true;
    up.end();
    opts.onFinish(outcome);
  };
  let first: Uint8Array | null = up.first;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          // Loop until there is something to hand over: a pull that enqueues nothing would
          // leave the client's read pending forever.
          for (;;) {
            let chunk: Uint8Array;
            if (first) {
              chunk = first;
              first = null;
            } else {
              const r = await reader.read();
              if (r.done) {
                const tail = framer.flush();
                const trailer = inspector.end(null);
                const parts = [tail, trailer !== null ? utf8(sseEvent(trailer)) : null].filter((p): p is Uint8Array => p !== null);
                if (parts.length) controller.enqueue(concatBytes(parts));
                controller.close();
                finish(trailer !== null ? 'failed' : 'complete');
                return;
              }
              chunk = r.value;
            }
            const out = framer.push(chunk);
            if (out) {
              controller.enqueue(out);
              return;
            }
          }
        } catch (err) {
          if (finished) return;
          up.abort.abort();
          const trailer = inspector.end(`backend connection failed mid-stream (${(err as Error)?.message ?? 'unknown error'})`);
          try {
            if (trailer !== null) controller.enqueue(utf8(sseEvent(trailer)));
            controller.close();
          } catch {
            // the client is gone too
          }
          finish('failed');
        }
      },
      cancel() {
        // The client went away: stop the generation on the backend.
        up.abort.abort();
        reader.cancel().catch(() => {});
        finish('cancelled');
      },
    },
    { highWaterMark: 0 },
  );
}
