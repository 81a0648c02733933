// Request bodies from bytes to a JSON value, off the event loop when large. Decoding, the nesting
// check and JSON.parse of a 4 MiB body cost tens of milliseconds (more on a busy machine), long
// enough to show in every other request's latency when such bodies arrive back to back; bodies
// over INLINE_MAX_BYTES go to a worker thread (the bytes are transferred, not copied; the value
// comes back by structured clone, a copy of a few strings). One implementation, parseJsonBody,
// runs in both places, so a body gets the same answer whatever its size.
import { Worker } from 'node:worker_threads';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../protocol/json-depth.ts';

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

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; message: string; status: number | null };

let worker: Worker | null = null;
let nextId = 1;
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

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
  w.on('message', (r: Reply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (pending.size === 0) w.unref();
    if (r.ok) p.resolve(r.value);
    else p.reject(r.status !== null ? new JsonBodyError(r.message, r.status) : new Error(`JSON body parser: ${r.message}`));
  });
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the JSON body parser thread exited (${code})`)));
  // Referenced only while it holds work, so an idle parser never keeps the process alive.
  w.unref();
  worker = w;
  return w;
}

/** parseJsonBody, on the worker thread for bodies over INLINE_MAX_BYTES. Takes ownership of `bytes`. */
export function parseJsonBodyAsync(bytes: Uint8Array): Promise<unknown> {
  if (bytes.byteLength <= INLINE_MAX_BYTES) {
    try {
      return Promise.resolve(parseJsonBody(bytes));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const w = parser();
    pending.set(id, { resolve, reject });
    w.ref();
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const own = whole ? bytes : bytes.slice();
    w.postMessage({ id, bytes: own }, [own.buffer as ArrayBuffer]);
  });
}
