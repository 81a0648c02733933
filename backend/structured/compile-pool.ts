// Compiles JSON Schemas for requests without stalling the event loop: a large schema can take
// tens of milliseconds to compile, and the same thread runs every other request's engine steps
// and streams. Schemas of more than INLINE_MAX_CHARS (as JSON) go to one worker thread, started
// on first use and holding the process open only while it has work; small ones compile inline,
// where a thread round trip would cost more than the compile.
import { Worker } from 'node:worker_threads';
import type { Nfa } from './automaton.ts';
import { compileSchema, type CompileOptions } from './compile.ts';
import type { CompileJob } from './compile-worker.ts';
import { SchemaError } from './schema.ts';
import { SchemaJson } from './schema-json.ts';

export const INLINE_MAX_CHARS = 2048;

/**
 * Keywords whose automata can take far longer to build than the schema's size suggests (a
 * pattern or variable-shape format laid out once per allowed length, sets over enum values):
 * schemas with them always compile on the worker.
 */
const COSTLY = /"(pattern|uniqueItems)"|"format"\s*:\s*"(email|uri|hostname|ipv4|ipv6)"/;
function costly(schema: unknown): boolean {
  return COSTLY.test(JSON.stringify(schema));
}

interface Reply {
  id: number;
  nfa?: Nfa;
  issues?: string[] | null;
  message?: string;
}

let worker: Worker | null = null;
let nextId = 1;
const pending = new Map<number, { resolve: (nfa: Nfa) => void; reject: (err: Error) => void }>();

function failAll(w: Worker, err: Error): void {
  if (worker !== w) return;
  for (const p of pending.values()) p.reject(err);
  pending.clear();
  worker = null;
}

function compiler(): Worker {
  if (worker) return worker;
  // The server runs its TypeScript through tsx, whose loader hooks do not reach worker threads:
  // the worker registers them before importing its module.
  const entry = new URL('./compile-worker.ts', import.meta.url).href;
  const w = new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(entry)}); });`, { eval: true });
  w.on('message', (r: Reply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (pending.size === 0) w.unref();
    if (r.nfa) p.resolve(r.nfa);
    else p.reject(r.issues ? new SchemaError(r.issues) : new Error(`schema compile failed: ${r.message}`));
  });
  // A crashed worker fails what it held; the next schema starts a fresh one.
  w.on('error', (err) => failAll(w, err));
  w.on('exit', (code) => failAll(w, new Error(`the schema compiler thread exited (${code})`)));
  // Referenced only while it holds work (after the listeners, which would take a reference again).
  w.unref();
  worker = w;
  return w;
}

/**
 * compileSchema, off the event loop for large schemas; rejects with SchemaError like it throws.
 * `size`: the schema's JSON length, when the caller has it.
 */
export function compileSchemaAsync(schema: unknown, options: Partial<CompileOptions> = {}, size = schema instanceof SchemaJson ? schema.json.length : JSON.stringify(schema).length): Promise<Nfa> {
  if (schema instanceof SchemaJson) {
    // Parsed by the compiler thread: only the text crosses.
    const id = nextId++;
    return new Promise<Nfa>((resolve, reject) => {
      const w = compiler();
      pending.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, schema: null, schemaJson: schema.json, options } satisfies CompileJob);
    });
  }
  if (size <= INLINE_MAX_CHARS && !costly(schema)) {
    try {
      return Promise.resolve(compileSchema(schema, options));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  const id = nextId++;
  return new Promise<Nfa>((resolve, reject) => {
    const w = compiler();
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage({ id, schema, options } satisfies CompileJob);
  });
}
