// The worker side of compile-pool.ts: compiles schemas it is sent and posts back the NFA (its
// typed arrays transferred, not copied) or the SchemaError's issues.
import { parentPort } from 'node:worker_threads';
import { compileSchema, type CompileOptions } from './compile.ts';
import { SchemaError } from './schema.ts';
import { lowerWorkerThreadPriority } from '../worker-priority.ts';

lowerWorkerThreadPriority();

export interface CompileJob {
  id: number;
  schema: unknown;
  /** The schema as JSON text instead (schema-json.ts), parsed here. */
  schemaJson?: string;
  options: Partial<CompileOptions>;
}

parentPort!.on('message', ({ id, schema, schemaJson, options }: CompileJob) => {
  try {
    const nfa = compileSchema(schemaJson !== undefined ? (JSON.parse(schemaJson) as unknown) : schema, options);
    const buffers = Object.values(nfa).flatMap((v) => (ArrayBuffer.isView(v) ? [v.buffer as ArrayBuffer] : []));
    parentPort!.postMessage({ id, nfa }, [...new Set(buffers)]);
  } catch (err) {
    parentPort!.postMessage({ id, issues: err instanceof SchemaError ? err.issues : null, message: (err as Error).message ?? String(err) });
  }
});
