// Node only: the `fetch` the gateway uses for its backends on Node, over node:http with a
// keep-alive agent. Same contract as the subset of fetch the gateway uses (string/bytes/stream bodies,
// AbortSignal, a streaming Response body with backpressure, errors when the connection breaks
// mid-body), at a fraction of undici-fetch's per-request cost: the request goes out in one write
// instead of a body stream, and no Request object is built. Workers keep the platform fetch.
import { Agent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';

/** JSON answers up to this size (with a Content-Length) are buffered rather than streamed. */
const BUFFER_JSON_BYTES = 1024 * 1024;

function headerObject(h: HeadersInit | undefined): Record<string, string> {
  if (!h) return {};
  if (h instanceof Headers) return Object.fromEntries(h.entries());
  if (Array.isArray(h)) return Object.fromEntries(h);
  return { ...(h as Record<string, string>) };
}

function responseHeaders(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.append(k, x);
    else out.set(k, v);
  }
  return out;
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * A JSON answer read whole, with the members of Response the gateway reads (status, ok, headers,
 * body, text, json, arrayBuffer, clone), at a fraction of an undici Response's cost: no body stream
 * unless `body` is asked for, no reader to drain it, Headers built only when read. Same observable
 * behaviour: a body is read once (bodyUsed, then a TypeError), text() decodes UTF-8 with
 * replacement and drops a BOM.
 */
class BufferedResponse {
  readonly ok: boolean;
  readonly redirected = false;
  readonly type = 'basic';
  private used = false;
  private hdrs: Headers | null = null;
  private stream: ReadableStream<Uint8Array> | null = null;

  constructor(
    private readonly buf: Buffer,
    readonly status: number,
    readonly statusText: string,
    private readonly raw: IncomingHttpHeaders,
    readonly url: string,
  ) {
    this.ok = status >= 200 && status < 300;
  }

  get headers(): Headers {
    return (this.hdrs ??= responseHeaders(this.raw));
  }

  get bodyUsed(): boolean {
    return this.used;
  }

  get body(): ReadableStream<Uint8Array> {
    if (!this.stream) {
      const self = this;
      this.stream = new ReadableStream<Uint8Array>(
        {
          pull(c) {
            if (!self.used && self.buf.byteLength > 0) c.enqueue(new Uint8Array(self.buf.buffer, self.buf.byteOffset, self.buf.byteLength));
            self.used = true;
            c.close();
          },
          cancel() {
            self.used = true;
          },
        },
        { highWaterMark: 0 },
      );
    }
    return this.stream;
  }

  private take(): Buffer {
    if (this.used || this.stream?.locked) throw new TypeError('Body is unusable: Body has already been read');
    this.used = true;
    return this.buf;
  }

  text(): Promise<string> {
    try {
      const b = this.take();
      return Promise.resolve((b.subarray(0, 3).equals(UTF8_BOM) ? b.subarray(3) : b).toString('utf8'));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text()) as unknown;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    try {
      const b = this.take();
      return Promise.resolve(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await this.arrayBuffer());
  }

  clone(): BufferedResponse {
    if (this.used || this.stream?.locked) throw new TypeError('Response.clone: Body has already been consumed.');
    return new BufferedResponse(this.buf, this.status, this.statusText, this.raw, this.url);
  }
}

type ReadResult = ReadableStreamReadResult<Uint8Array>;

/** Bytes an IncomingReader holds for a slow reader before it stops reading the socket. */
const QUEUE_BYTES = 64 * 1024;

/**
 * Reads an IncomingMessage without a web stream: each chunk as Node delivered it, or, when several
 * arrived while the reader was busy (the client slower than the backend), all of them at once, so
 * they leave in one write. Past 64 KiB queued the socket is no longer read until the reader
 * catches up, so a slow reader slows the backend down (pausing on every queued chunk instead
 * made each chunk cost a pause and a resume of the socket when the gateway is busy). An answer
 * cut short rejects the pending read; it never ends cleanly.
 */
class IncomingReader {
  private queue: Buffer[] = [];
  private queued = 0;
  private paused = false;
  private ended = false;
  private failure: Error | null = null;
  private waiter: { resolve: (r: ReadResult) => void; reject: (e: Error) => void } | null = null;
  private closedAt: { promise: Promise<undefined>; resolve: () => void } | null = null;

  constructor(private readonly r: IncomingMessage) {
    r.on('data', (c: Buffer) => {
      const w = this.waiter;
      if (w) {
        this.waiter = null;
        w.resolve({ done: false, value: c });
        return;
      }
      this.queue.push(c);
      this.queued += c.byteLength;
      if (this.queued > QUEUE_BYTES && !this.paused) {
        this.paused = true;
        r.pause();
      }
    });
    r.on('end', () => {
      this.ended = true;
      this.wake();
    });
    r.on('error', (err: Error) => {
      this.failure ??= err;
      this.wake();
    });
    r.on('close', () => {
      if (!this.ended) this.failure ??= new Error('the connection closed before the response was complete');
      this.wake();
    });
  }

  private wake(): void {
    if (this.ended || this.failure) this.closedAt?.resolve();
    const w = this.waiter;
    if (!w || this.queue.length > 0) return;
    this.waiter = null;
    if (this.failure) w.reject(this.failure);
    else w.resolve({ done: true, value: undefined });
  }

  read(): Promise<ReadResult> {
    if (this.queue.length > 0) {
      const q = this.queue;
      this.queue = [];
      this.queued = 0;
      if (this.paused && !this.ended && !this.failure) {
        this.paused = false;
        this.r.resume();
      }
      return Promise.resolve({ done: false, value: q.length === 1 ? q[0]! : Buffer.concat(q) });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise<ReadResult>((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  cancel(reason?: unknown): Promise<void> {
    this.queue = [];
    this.queued = 0;
    this.ended = true;
    this.r.destroy(reason instanceof Error ? reason : undefined);
    this.wake();
    return Promise.resolve();
  }

  get closed(): Promise<undefined> {
    if (!this.closedAt) {
      let resolve!: () => void;
      const promise = new Promise<undefined>((r) => (resolve = () => r(undefined)));
      this.closedAt = { promise, resolve };
      if (this.ended || this.failure) resolve();
    }
    return this.closedAt.promise;
  }

  releaseLock(): void {}
}

/**
 * An answer that is not buffered (an event stream, or anything not JSON), with the members of
 * Response the gateway reads. The relay takes its body through `directReader()` (forward.ts), no
 * web stream in between; `body` builds one on the same reader for anyone else.
 */
class StreamedResponse {
  readonly ok: boolean;
  readonly redirected = false;
  readonly type = 'basic';
  private taken = false;
  private hdrs: Headers | null = null;
  private stream: ReadableStream<Uint8Array> | null = null;
  private readonly reader: IncomingReader;

  constructor(
    r: IncomingMessage,
    readonly status: number,
    readonly statusText: string,
    readonly url: string,
  ) {
    this.ok = status >= 200 && status < 300;
    this.reader = new IncomingReader(r);
    this.raw = r.headers;
  }

  private readonly raw: IncomingHttpHeaders;

  get headers(): Headers {
    return (this.hdrs ??= responseHeaders(this.raw));
  }

  get bodyUsed(): boolean {
    return this.taken;
  }

  /** The body's reader, once (instead of `body.getReader()`). */
  directReader(): ReadableStreamDefaultReader<Uint8Array> {
    if (this.taken || this.stream) throw new TypeError('Body is unusable: Body has already been read');
    this.taken = true;
    return this.reader as unknown as ReadableStreamDefaultReader<Uint8Array>;
  }

  get body(): ReadableStream<Uint8Array> {
    if (!this.stream) {
      const reader = this.reader;
      const self = this;
      this.stream = new ReadableStream<Uint8Array>(
        {
          async pull(c) {
            self.taken = true;
            const r = await reader.read();
            if (r.done) c.close();
            else c.enqueue(r.value);
          },
          cancel(reason) {
            return reader.cancel(reason);
          },
        },
        { highWaterMark: 0 },
      );
    }
    return this.stream;
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const reader = this.directReader();
    const parts: Uint8Array[] = [];
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      parts.push(r.value);
    }
    const b = Buffer.concat(parts);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }

  async text(): Promise<string> {
    const b = Buffer.from(await this.arrayBuffer());
    return (b.subarray(0, 3).equals(UTF8_BOM) ? b.subarray(3) : b).toString('utf8');
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text()) as unknown;
  }

  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await this.arrayBuffer());
  }
}

/** `head` (already read), then the rest of `rest`, as one web stream. */
function prefixed(head: Buffer[], rest: IncomingMessage): ReadableStream<Uint8Array> {
  const tail = (Readable.toWeb(rest) as unknown as ReadableStream<Uint8Array>).getReader();
  let i = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        if (i < head.length) {
          c.enqueue(head[i++]!);
          return;
        }
        const r = await tail.read();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      cancel(reason) {
        return tail.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

function abortError(signal: AbortSignal): Error {
  const r = signal.reason as unknown;
  return r instanceof Error ? r : new DOMException('This operation was aborted', 'AbortError');
}

export function createNodeFetch(opts: { maxSockets?: number } = {}): typeof fetch {
  const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 512, keepAliveMsecs: 10_000 };
  const http = new Agent(agentOpts);
  const https = new HttpsAgent(agentOpts);
  const f = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
      const method = (init.method ?? 'GET').toUpperCase();
      const headers = headerObject(init.headers);
      let body: Uint8Array | string | undefined;
      let stream: ReadableStream<Uint8Array> | undefined;
      if (init.body !== undefined && init.body !== null) {
        if (typeof init.body === 'string' || init.body instanceof Uint8Array) body = init.body;
        else if (init.body instanceof ReadableStream) stream = init.body as ReadableStream<Uint8Array>;
        else throw new TypeError('node fetch: only string, Uint8Array and ReadableStream bodies are supported');
        // A stream goes out chunked (adapter uploads: never held whole in memory).
        if (body !== undefined) headers['content-length'] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength);
      }
      const signal = init.signal ?? undefined;
      if (signal?.aborted) return reject(abortError(signal));
      const https_ = url.protocol === 'https:';
      let res: IncomingMessage | null = null;
      // eslint-disable-next-line prefer-const
      let req: ReturnType<typeof httpRequest>;
      const onAbort = () => {
        const err = abortError(signal!);
        if (res) res.destroy(err);
        req.destroy(err);
      };
      req = (https_ ? httpsRequest : httpRequest)(
        { agent: https_ ? https : http, method, hostname: url.hostname, port: url.port || (https_ ? 443 : 80), path: `${url.pathname}${url.search}`, headers },
        (r) => {
          res = r;
          const status = r.statusCode ?? 502;
          const empty = method === 'HEAD' || status === 204 || status === 304;
          // A body cut short by the peer must be an error, never a clean end.
          r.on('aborted', () => r.destroy(new Error('the connection closed before the response was complete')));
          r.on('close', () => signal?.removeEventListener('abort', onAbort));
          const init = { status, statusText: r.statusMessage ?? '' };
          if (empty) {
            r.resume();
            resolve(new Response(null, { ...init, headers: responseHeaders(r.headers) }));
            return;
          }
          // A JSON answer (every non-streaming one) is read whole before it is handed on: cheaper
          // than a web stream over the socket (building one costs tens of µs), and its reader wants
          // all of it anyway. Without a Content-Length (chunked), it is buffered up to the same
          // bound and handed on as a stream, what was read first, if it grows past it.
          const length = Number(r.headers['content-length'] ?? NaN);
          if ((r.headers['content-type'] ?? '').includes('json') && !(length > BUFFER_JSON_BYTES)) {
            const chunks: Buffer[] = [];
            let total = 0;
            const off = () => {
              r.removeListener('data', onData);
              r.removeListener('end', onEnd);
              r.removeListener('error', reject);
            };
            const onData = (c: Buffer) => {
              chunks.push(c);
              total += c.byteLength;
              if (total <= BUFFER_JSON_BYTES) return;
              off();
              r.pause();
              resolve(new Response(prefixed(chunks, r), { ...init, headers: responseHeaders(r.headers) }));
            };
            const onEnd = () => {
              off();
              resolve(new BufferedResponse(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), status, init.statusText, r.headers, url.href) as unknown as Response);
            };
            r.on('data', onData);
            r.on('end', onEnd);
            r.on('error', reject);
            return;
          }
          // Anything else (event streams) is read as it comes, without a web stream in between.
          resolve(new StreamedResponse(r, status, init.statusText, url.href) as unknown as Response);
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => {
        if (res) return;
        signal?.removeEventListener('abort', onAbort);
        reject(signal?.aborted ? abortError(signal) : err);
      });
      if (!stream) {
        req.end(body);
        return;
      }
      // Pumped with backpressure; a stream that errors (a body past its limit) aborts the request.
      const reader = stream.getReader();
      const pump = async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            if (req.destroyed) return;
            if (!req.write(value)) await new Promise<void>((r) => req.once('drain', r).once('close', r));
          }
          req.end();
        } catch (err) {
          req.destroy(err as Error);
        }
      };
      void pump();
    });
  return f as typeof fetch;
}
