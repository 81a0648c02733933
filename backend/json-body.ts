// Request bodies from bytes to a JSON value, off the event loop when large. Gathering, decoding,
// the nesting check and JSON.parse of a 4 MiB body cost tens of milliseconds of loop time (more on
// a busy machine), long enough to show in every other request's latency. So a body that is (or
// grows) larger than INLINE_MAX_BYTES goes to a worker thread piece by piece, as its socket chunks
// arrive: each chunk is posted as it comes (copied natively into the message, never gathered in a
// JavaScript buffer on the loop) and the worker joins, decodes and parses them. Smaller bodies are
// parsed inline, where a thread hop would cost more. One implementation, parseJsonBody, runs in
// both places, so a body gets the same answer whatever its size.
//
// The prompt of a large body need not come back at all: a route names its prompt field (`keep`),
// and a string there longer than LARGE_TEXT_MIN_CHARS stays on the parser thread as a LargeText
// (the loop gets its length and a handle). Making a multi-megabyte string on the loop costs about
// 3 ms per MB here (a fresh large-object allocation and the incremental marking it pays for), more
// than everything else a large body costs the loop. The tokenizer threads fetch the text from the
// parser thread over their own MessagePorts; the loop copies it only to echo it in an answer.
//
// A large body is also validated there (`check`: the route's schema by name, protocol/
// request-schemas.ts, and the server's limits, request-limits.ts): a valid-JSON body can still be
// costly to validate and to copy (500,000 token ids, 200,000 logit_bias keys, 100,000 messages:
// hundreds of ms of zod, issue formatting, structured cloning and GC on the loop). The thread
// answers with the validated request, or only the error body / refusal, so nothing big crosses back
// for a request that is refused.
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../protocol/json-depth.ts';
import type { ErrorResponse, OpenAIErrorResponse, RequestSchemaName } from '../protocol/index.ts';
import type { RefusalLimits, RequestRefusal } from './request-limits.ts';

export const INLINE_MAX_BYTES = Number(process.env.SWITCHBOARD_JSON_INLINE_MAX_BYTES) || 64 * 1024;

/** What is wrong with a body, with the status it answers (routes wrap it in their error shape). */
export class JsonBodyError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Bytes to a JSON value: 400 for an empty body, nesting deeper than MAX_JSON_DEPTH, or bad JSON. */
export function parseJsonBody(bytes: Uint8Array): unknown {
  const text = new TextDecoder().decode(bytes);
  if (text.trim() === '') throw new JsonBodyError('request body must be a JSON object', 400);
  // Before JSON.parse: the validation and serialisation after it recurse.
  if (jsonTooDeep(text)) throw new JsonBodyError(`request body nests objects/arrays more than ${MAX_JSON_DEPTH} levels deep`, 400);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new JsonBodyError(`request body is not valid JSON: ${(err as Error).message}`, 400);
  }
}

/** Loop -> parser thread. A body is `chunk`s then `end` (or `cancel`), or one whole `parse`. */
export type ParserMessage =
  | { op: 'parse'; id: number; bytes: Uint8Array; check: BodyCheck | null }
  | { op: 'chunk'; id: number; bytes: Uint8Array }
  /** `keep`: the top-level field whose long string stays on the thread (its id is the body's). */
  | { op: 'end'; id: number; keep: string | null; check: BodyCheck | null }
  | { op: 'cancel'; id: number }
  /** The text of a kept string, copied to the loop (id: this request's; text: the LargeText's). */
  | { op: 'text'; id: number; text: number }
  | { op: 'release'; text: number }
  /** A tokenizer thread's end of a channel on which it asks for kept texts (TextRequest / TextReply). */
  | { op: 'port'; port: MessagePort };

/** Validate a parsed body with this schema and these limits where it was parsed. */
export interface BodyCheck {
  name: RequestSchemaName;
  limits: RefusalLimits;
}

/**
 * How a checked body fared. `valid`: the value is the schema's output. `invalid`: the schema's
 * error body and status (parse*Request's), `refused`: requestRefusal()'s; for both the value is null.
 */
export type CheckOutcome =
  | { kind: 'valid' }
  | { kind: 'invalid'; status: number; error: ErrorResponse | OpenAIErrorResponse }
  | { kind: 'refused'; refusal: RequestRefusal };

export type ParserReply =
  /** `schemaJson`: a valid request's large response_format schema, as text (its field holds `{}`). */
  | { id: number; ok: true; value: unknown; kept?: { field: string; length: number }; checked?: CheckOutcome; schemaJson?: string }
  | { id: number; ok: false; message: string; status: number | null };

/**
 * Tokenizer thread -> parser thread, on a port from textPort(), and the answer (null: released).
 * `tail`: only the last this many characters (truncation needs only the prompt's end: encode-tail.ts);
 * `whole` says whether the reply is the whole text.
 */
export interface TextRequest {
  job: number;
  text: number;
  tail?: number;
}
export interface TextReply {
  job: number;
  text: string | null;
  whole: boolean;
}

/**
 * Top-level strings at least this long are kept on the parser thread when the route asks (in
 * bodies over INLINE_MAX_BYTES). SWITCHBOARD_LARGE_TEXT_MIN_CHARS overrides it (tests set it low so
 * a prompt under the fixture's token limit is kept).
 */
export const LARGE_TEXT_MIN_CHARS = Number(process.env.SWITCHBOARD_LARGE_TEXT_MIN_CHARS) || 64 * 1024;

/**
 * A request's prompt held by the parser thread: the loop knows its length (enough for the token
 * bound) and hands its id to the tokenizer pool. release() when the request is over; the routes'
 * body reader does it when the response closes.
 */
export class LargeText {
  private released = false;
  constructor(
    readonly id: number,
    readonly length: number,
  ) {
    bodyStats.keptTexts++;
  }

  /** The text itself, copied to the loop: only for answers that echo the prompt. */
  text(): Promise<string> {
    if (this.released) return Promise.reject(new Error('the text was released'));
    bodyStats.textsToLoop++;
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const w = parser();
      pending.set(id, { resolve: (r) => resolve(r.value as string), reject });
      w.ref();
      w.postMessage({ op: 'text', id, text: this.id } satisfies ParserMessage);
    });
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    worker?.postMessage({ op: 'release', text: this.id } satisfies ParserMessage);
  }
}

/** A string, or a LargeText's text fetched to the loop. */
export function textOf(t: string | LargeText): Promise<string> {
  return typeof t === 'string' ? Promise.resolve(t) : t.text();
}

/**
 * A new channel to the parser thread: the caller (a tokenizer thread) posts TextRequests on the
 * returned port and gets TextReplies. When the parser thread ends, the port closes.
 */
export function textPort(): MessagePort {
  const ch = new MessageChannel();
  parser().postMessage({ op: 'port', port: ch.port2 } satisfies ParserMessage, [ch.port2]);
  return ch.port1;
}

/**
 * What the loop did with request bodies: `gatheredBytes` were joined into one buffer here (small
 * bodies, and bodies read without a Node stream), `streamedBytes` went to the parser thread chunk
 * by chunk; `keptTexts` prompts stayed there, `textsToLoop` of them were copied to the loop
 * (answers that echo the prompt). Tests read them to check that a large body and its prompt never
 * reach the loop.
 */
export const bodyStats = {
  gatheredBytes: 0,
  streamedBytes: 0,
  streamedBodies: 0,
  keptTexts: 0,
  textsToLoop: 0,
  /** Bodies validated on the parser thread (any outcome), and of those, refused there (invalid or over a limit). */
  checkedOnThread: 0,
  refusedOnThread: 0,
  /** Bodies validated on the loop (routes/common.ts, small bodies). */
  checkedOnLoop: 0,
  /** Valid requests whose response_format schema came to the loop as JSON text (structured/schema-json.ts). */
  schemaTexts: 0,
};

let worker: Worker | null = null;
let nextId = 1;
type Ok = Extract<ParserReply, { ok: true }>;
const pending = new Map<number, { resolve: (r: Ok) => void; reject: (e: Error) => void }>();
/** Bodies being streamed to the thread: referenced while any is open, like pending answers. */
let open = 0;

function holdsWork(w: Worker): void {
  if (pending.size === 0 && open === 0) w.unref();
}

function parser(): Worker {
  if (worker) return worker;
  // tsx's loader hooks do not reach worker threads: the worker registers them first.
  const entry = new URL('./json-body-worker.ts', import.meta.url).href;
  const w = new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(entry)}); });`, { eval: true });
  const fail = (err: Error) => {
    if (worker === w) worker = null;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  w.on('message', (r: ParserReply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    holdsWork(w);
    if (r.ok && r.checked) {
      bodyStats.checkedOnThread++;
      if (r.checked.kind !== 'valid') bodyStats.refusedOnThread++;
    }
    if (r.ok) p.resolve(r);
    else p.reject(r.status !== null ? new JsonBodyError(r.message, r.status) : new Error(`JSON body parser: ${r.message}`));
  });
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the JSON body parser thread exited (${code})`)));
  // Referenced only while it holds work, so an idle parser never keeps the process alive.
  w.unref();
  worker = w;
  return w;
}

/**
 * parseJsonBody, on the worker thread for bodies over INLINE_MAX_BYTES (and checked there when
 * `check` is given; `checked` is null for a body parsed inline). Takes ownership of `bytes`.
 */
export function parseJsonBodyAsync(bytes: Uint8Array, check: BodyCheck | null = null): Promise<{ value: unknown; checked: CheckOutcome | null; schemaJson: string | null }> {
  bodyStats.gatheredBytes += bytes.byteLength;
  if (bytes.byteLength <= INLINE_MAX_BYTES) {
    try {
      return Promise.resolve({ value: parseJsonBody(bytes), checked: null, schemaJson: null });
    } catch (err) {
      return Promise.reject(err);
    }
  }
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const w = parser();
    pending.set(id, { resolve: (r) => resolve({ value: r.value, checked: r.checked ?? null, schemaJson: r.schemaJson ?? null }), reject });
    w.ref();
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const own = whole ? bytes : bytes.slice();
    w.postMessage({ op: 'parse', id, bytes: own, check } satisfies ParserMessage, [own.buffer as ArrayBuffer]);
  });
}

/** A body on its way to the parser thread, one chunk at a time. */
class StreamedBody {
  private readonly id = nextId++;
  private readonly w = parser();
  private done = false;

  constructor() {
    open++;
    bodyStats.streamedBodies++;
    this.w.ref();
  }

  /**
   * The chunk is copied into the message by the runtime (no JavaScript allocation on the loop); it
   * is not transferred, because a socket chunk's memory belongs to Node's HTTP parser.
   */
  push(bytes: Uint8Array): void {
    bodyStats.streamedBytes += bytes.byteLength;
    this.w.postMessage({ op: 'chunk', id: this.id, bytes } satisfies ParserMessage);
  }

  end(keep: string | null, check: BodyCheck | null): Promise<ParsedBody> {
    this.close();
    return new Promise((resolve, reject) => {
      pending.set(this.id, { resolve: (r) => resolve({ value: r.value, kept: r.kept ? new LargeText(r.id, r.kept.length) : null, checked: r.checked ?? null, schemaJson: r.schemaJson ?? null }), reject });
      this.w.postMessage({ op: 'end', id: this.id, keep, check } satisfies ParserMessage);
    });
  }

  cancel(): void {
    if (this.done) return;
    this.close();
    this.w.postMessage({ op: 'cancel', id: this.id } satisfies ParserMessage);
    holdsWork(this.w);
  }

  private close(): void {
    if (!this.done) open--;
    this.done = true;
  }
}

/** What readJsonStream needs of a Node request stream (IncomingMessage), duck-typed. */
export interface NodeBodyStream {
  on(ev: 'data', fn: (chunk: Uint8Array) => void): unknown;
  on(ev: 'end' | 'close', fn: () => void): unknown;
  on(ev: 'error', fn: (err: Error) => void): unknown;
  removeListener(ev: string, fn: (...a: never[]) => void): unknown;
  pause(): unknown;
  readableEnded: boolean;
}

export interface StreamOptions {
  maxBytes: number;
  /** A top-level field whose string, when LARGE_TEXT_MIN_CHARS or longer in a streamed body, stays on the parser thread. */
  keep?: string | null;
  /** The Content-Length header when there is one (a body that says it is large goes to the thread from its first chunk). */
  declaredBytes?: number | null;
  /** The error for a body past maxBytes (the caller's shape and headers). */
  tooLarge: () => Error;
  /** Validate a streamed body on the parser thread (ParsedBody.checked); a body parsed inline is not checked here. */
  check?: BodyCheck | null;
}

/**
 * A parsed body. `kept`: the `keep` field's string stayed on the parser thread; in `value` that
 * field holds a one-character stand-in instead, so the route's schema sees a non-empty string
 * exactly as it would have (no check on a prompt depends on more than that), and the route uses
 * `kept` as the prompt.
 */
export interface ParsedBody {
  value: unknown;
  kept: LargeText | null;
  /** The check's outcome when the thread ran it (the value is null unless valid); null when parsed inline. */
  checked: CheckOutcome | null;
  /** A valid request's large schema as JSON text (ParserReply's schemaJson), or null. */
  schemaJson: string | null;
}

/** What stands in for a kept string in a ParsedBody's value. */
export const KEPT_STAND_IN = '\u2026';

/**
 * Reads a Node request stream to its end and parses it (parseJsonBody's answers). Up to
 * INLINE_MAX_BYTES the chunks are gathered and parsed here; past that (or declared past it) every
 * chunk goes to the parser thread as it arrives, so a large body is never gathered, decoded or
 * parsed on the loop. Past maxBytes it stops reading with tooLarge() and leaves the stream paused,
 * not destroyed: destroying would reset the socket, so the client would see a reset instead of
 * the answer (Node discards the rest of the body after the answer).
 */
export function readJsonStream(s: NodeBodyStream, opts: StreamOptions): Promise<ParsedBody> {
  return new Promise((resolve, reject) => {
    let parts: Uint8Array[] = [];
    let total = 0;
    let streamed: StreamedBody | null = opts.declaredBytes != null && opts.declaredBytes > INLINE_MAX_BYTES ? new StreamedBody() : null;
    const detach = () => {
      s.removeListener('data', onData);
      s.removeListener('end', onEnd);
      s.removeListener('error', onError);
      s.removeListener('close', onClose);
    };
    const fail = (err: Error) => {
      detach();
      streamed?.cancel();
      reject(err);
    };
    const onData = (chunk: Uint8Array) => {
      total += chunk.byteLength;
      if (total > opts.maxBytes) {
        s.pause();
        return fail(opts.tooLarge());
      }
      if (streamed) return streamed.push(chunk);
      parts.push(chunk);
      if (total > INLINE_MAX_BYTES) {
        // Larger than it said (or it said nothing): the rest goes to the thread too.
        streamed = new StreamedBody();
        for (const p of parts) streamed.push(p);
        parts = [];
      }
    };
    const onEnd = () => {
      detach();
      if (streamed) return void streamed.end(opts.keep ?? null, opts.check ?? null).then(resolve, reject);
      bodyStats.gatheredBytes += total;
      try {
        resolve({ value: parseJsonBody(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total)), kept: null, checked: null, schemaJson: null });
      } catch (err) {
        reject(err as Error);
      }
    };
    const onError = (err: Error) => fail(err);
    // The client went away before the end: nobody will read the answer.
    const onClose = () => fail(new JsonBodyError('client closed the request before its body was complete', 499));
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    s.on('close', onClose);
  });
}
