// Forwarding to a backend replica: retry on another replica only before the first byte,
// streaming pass-through with backpressure, client disconnect -> upstream abort, and a backend
// that fails mid-stream -> an error event in the API's shape (never a clean end of stream).
//
// Streams are re-framed per SSE event (never buffered beyond the event being read) so each event
// can be inspected for token counts and, where the gateway asked for more than the client did
// (LoRAX details, OpenAI usage), trimmed back. The response body is a pull stream with a high
// water mark of 0: the backend is read only as fast as the client reads.
import { GatewayError } from './errors.ts';
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
    if (!call.waitFirstByte || !res.ok || !res.body) {
      return { res, backend, reader: null, first: null, abort, end, attempts: attempt + 1 };
    }
    // A stream: nothing has reached the client yet, so a replica that fails before its first
    // byte can still be replaced.
    const reader = res.body.getReader();
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
   * Called once at the end. `failure`: why the upstream broke, or null if it ended by itself.
   * Returns the data of an error event to append (the stream did not finish properly), or null.
   */
  end(failure: string | null): string | null;
}

export type StreamOutcome = 'complete' | 'failed' | 'cancelled';

const SEPARATOR = /\r\n\r\n|\n\n|\r\r/;
const enc = new TextEncoder();

/** Splits bytes into SSE events and rebuilds the output stream event by event. */
export class SseFramer {
  private buf = '';
  private readonly dec = new TextDecoder();

  constructor(private readonly inspector: StreamInspector) {}

  push(chunk: Uint8Array): string {
    this.buf += this.dec.decode(chunk, { stream: true });
    let out = '';
    for (;;) {
      const m = SEPARATOR.exec(this.buf);
      if (!m) break;
      const block = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      out += this.block(block);
    }
    return out;
  }

  /** Whatever is left when the upstream ends (an event without its blank line still counts). */
  flush(): string {
    const rest = this.buf + this.dec.decode();
    this.buf = '';
    return rest.trim() ? this.block(rest.replace(/[\r\n]+$/, '')) : '';
  }

  private block(block: string): string {
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
    if (out === text) return `${block}\n\n`;
    return `${[...other, ...out.split('\n').map((l) => `data: ${l}`)].join('\n')}\n\n`;
  }
}

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
                const out = tail + (trailer !== null ? sseEvent(trailer) : '');
                if (out) controller.enqueue(enc.encode(out));
                controller.close();
                finish(trailer !== null ? 'failed' : 'complete');
                return;
              }
              chunk = r.value;
            }
            const out = framer.push(chunk);
            if (out) {
              controller.enqueue(enc.encode(out));
              return;
            }
          }
        } catch (err) {
          if (finished) return;
          up.abort.abort();
          const trailer = inspector.end(`backend connection failed mid-stream (${(err as Error)?.message ?? 'unknown error'})`);
          try {
            if (trailer !== null) controller.enqueue(enc.encode(sseEvent(trailer)));
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
