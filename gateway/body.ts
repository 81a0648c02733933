// Reading request bodies with a size limit enforced while reading (not only by Content-Length,
// which a client may omit or lie about): 413 past the limit (an answer, not a reset connection),
// 400 for something that is not JSON or nests deeper than MAX_JSON_DEPTH.
import { jsonTooDeep, MAX_JSON_DEPTH } from '../protocol/json-depth.ts';
import { GatewayError } from './errors.ts';
import { parseNamedRequest, type RequestSchemaName } from '../protocol/request-schemas.ts';

/**
 * A runtime's native body stream, when it has one cheaper than `Request.body` (Node: the
 * IncomingMessage @hono/node-server passes as env.incoming). Duck-typed: no node: imports here.
 */
export type NativeBody = AsyncIterable<Uint8Array> & {
  destroy?: (err?: Error) => void;
  /** Node's stream events: read by listeners, cheaper than an async iterator per request. */
  on?(ev: 'data', fn: (chunk: Uint8Array) => void): unknown;
  on?(ev: 'end' | 'close', fn: () => void): unknown;
  on?(ev: 'error', fn: (err: Error) => void): unknown;
  removeListener?(ev: string, fn: (...a: never[]) => void): unknown;
  pause?(): unknown;
  readableEnded?: boolean;
};

/** A Node stream read to its end by listeners, refused past `maxBytes` (the rest left unread). */
function readNodeStream(s: NativeBody, maxBytes: number, what: string): Promise<{ parts: Uint8Array[]; total: number }> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    let total = 0;
    const done = () => {
      s.removeListener!('data', onData);
      s.removeListener!('end', onEnd);
      s.removeListener!('error', onError);
      s.removeListener!('close', onClose);
    };
    const onData = (chunk: Uint8Array) => {
      total += chunk.byteLength;
      if (total > maxBytes) {
        // Paused, not destroyed: destroying would reset the socket, so the client would see a
        // reset instead of the 413. Left unread, Node discards the rest of the body after the
        // answer, and the connection survives.
        done();
        s.pause!();
        reject(tooLarge(what, maxBytes));
        return;
      }
      parts.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve({ parts, total });
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new GatewayError(499, 'client closed the request before its body was complete'));
    };
    s.on!('data', onData);
    s.on!('end', onEnd);
    s.on!('error', onError);
    s.on!('close', onClose);
  });
}

/** `contentLength`: the header when the caller has it already (undefined: read from `req`). */
export async function readBytes(req: Request, maxBytes: number, what = 'request body', native?: NativeBody | null, contentLength?: string | null): Promise<Uint8Array<ArrayBuffer>> {
  const early = declaredTooLarge(contentLength !== undefined ? contentLength : req.headers.get('content-length'), maxBytes, what);
  if (early) throw early;
  let parts: Uint8Array[] = [];
  let total = 0;
  if (native && typeof native.on === 'function' && typeof native.removeListener === 'function' && typeof native.pause === 'function' && !native.readableEnded) {
    ({ parts, total } = await readNodeStream(native, maxBytes, what));
  } else if (native) {
    // Iterated by hand: leaving a for-await early would destroy the stream and with it the socket,
    // so the client would see a reset instead of the 413.
    const it = native[Symbol.asyncIterator]();
    for (;;) {
      const { done, value } = await it.next();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) throw tooLarge(what, maxBytes);
      parts.push(value);
    }
  } else {
    if (!req.body) return new Uint8Array(0) as Uint8Array<ArrayBuffer>;
    const reader = req.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        reader.releaseLock();
        throw tooLarge(what, maxBytes);
      }
      parts.push(value);
    }
  }
  if (parts.length === 1 && parts[0]!.byteOffset === 0 && parts[0]!.byteLength === parts[0]!.buffer.byteLength) return parts[0]! as Uint8Array<ArrayBuffer>;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

function tooLarge(what: string, maxBytes: number): GatewayError {
  // The rest of the body is never read: the connection must not be reused after this answer
  // (a client sending its next request on it would see the socket close under it).
  return new GatewayError(413, `${what} is larger than ${maxBytes} bytes`, { code: 'request_too_large', headers: { connection: 'close' } });
}

const dec = new TextDecoder('utf-8', { fatal: true });

/**
 * Bytes to the JSON object of a request body: 400 (invalid_json) for bad UTF-8, an empty body,
 * nesting deeper than MAX_JSON_DEPTH, bad JSON or a non-object. The one implementation, run inline
 * for small bodies and on a JsonCodec's worker thread for large ones, so a body gets the same
 * answer whatever its size.
 */
export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = dec.decode(bytes);
  } catch {
    throw new GatewayError(400, 'request body is not valid UTF-8', { code: 'invalid_json' });
  }
  if (text.trim() === '') throw new GatewayError(400, 'request body must be a JSON object', { code: 'invalid_json' });
  // Before JSON.parse: everything after it (zod, schema checks, JSON.stringify) recurses.
  if (jsonTooDeep(text)) {
    throw new GatewayError(400, `request body nests objects/arrays more than ${MAX_JSON_DEPTH} levels deep`, { code: 'invalid_json' });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new GatewayError(400, `request body is not valid JSON: ${(err as Error).message}`, { code: 'invalid_json' });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new GatewayError(400, 'request body must be a JSON object', { code: 'invalid_json' });
  }
  return value as Record<string, unknown>;
}

/**
 * Where large bodies are decoded, depth-checked, parsed and serialised: off the request loop (on
 * Node, gateway/json-offload.ts: worker threads). Absent (Workers, where the runtime isolates
 * requests and has no threads), everything runs inline. Duck-typed: no node: imports here.
 */
export interface JsonCodec {
  /** Bodies of at most this many bytes are handled inline (a thread hop costs more than they do). */
  readonly inlineMaxBytes: number;
  /** parseJsonObject off the loop; rejects with its GatewayError. Takes ownership of `bytes`. */
  parse(bytes: Uint8Array): Promise<Record<string, unknown>>;
  /** JSON.stringify off the loop, as UTF-8 bytes (transferred back, not copied). */
  stringify(value: unknown): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * parseJsonObject, then the named request schema, both off the loop (checkJsonBody's answer): a
   * body the schema refuses never comes back, only its error; a valid one comes back with its
   * validated form, so the loop runs neither zod nor the error formatting over a large value.
   */
  parseChecked?(bytes: Uint8Array, name: RequestSchemaName): Promise<CheckedBody>;
}

/** A request body parsed and validated by name: the body with the schema's output, or the schema's error (status and body). */
export type CheckedBody = { raw: Record<string, unknown>; valid: { success: true; data: unknown } } | { raw: null; valid: { success: false; status: number; error: unknown } };

/** parseJsonObject and parseNamedRequest in one, as JsonCodec.parseChecked runs them on its thread. */
export function checkJsonBody(bytes: Uint8Array, name: RequestSchemaName): CheckedBody {
  const raw = parseJsonObject(bytes);
  const r = parseNamedRequest(name, raw);
  return r.success ? { raw, valid: { success: true, data: r.data } } : { raw: null, valid: { success: false, status: r.status, error: r.error } };
}

/** A declared Content-Length (the header's value) past `maxBytes`: the 413 to answer before anything else is done. */
export function declaredTooLarge(contentLength: string | null, maxBytes: number, what = 'request body'): GatewayError | null {
  const declared = Number(contentLength ?? 'NaN');
  return Number.isFinite(declared) && declared > maxBytes ? tooLarge(what, maxBytes) : null;
}

/** What Node's HTTP server hands a 'clientError' listener (duck-typed: no node: imports here). */
export interface ClientErrorSocket {
  writable: boolean;
  /** The response in progress on this connection, if any (Node's own field). */
  _httpMessage?: { headersSent?: boolean } | null;
  end(data: string): void;
  destroy(): void;
}

/**
 * Answers a request Node's HTTP parser refused (an unknown method, a malformed chunk, oversized
 * headers) with a JSON error in the API's shape instead of Node's empty 400: OpenAI's under /v1/,
 * LoRAX's elsewhere, judged from the request line when the parser kept it.
 */
export function answerClientError(err: { code?: string; rawPacket?: { toString(enc: 'latin1'): string } }, socket: ClientErrorSocket): void {
  // Mid-response (a pipelined request went bad) nothing more can be written coherently.
  if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent) {
    socket.destroy();
    return;
  }
  const line = err.rawPacket?.toString('latin1').split('\r\n', 1)[0] ?? '';
  const path = line.split(' ')[1] ?? '';
  const tooBig = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooBig ? 431 : 400;
  const message = tooBig ? 'request headers are too large' : `malformed HTTP request (${err.code ?? 'parse error'})`;
  const body = path.startsWith('/v1/')
    ? JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code: tooBig ? 'headers_too_large' : 'bad_request' } })
    : JSON.stringify({ error: message, error_type: 'validation' });
  socket.end(
    `HTTP/1.1 ${status} ${tooBig ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${new TextEncoder().encode(body).byteLength}\r\nconnection: close\r\n\r\n${body}`,
  );
}
