// The worker side of json-body.ts: parses the bodies it is sent and posts back the value (or the
// JsonBodyError's message and status).
import { parentPort } from 'node:worker_threads';
import { JsonBodyError, parseJsonBody } from './json-body.ts';
import { lowerWorkerThreadPriority } from './worker-priority.ts';

lowerWorkerThreadPriority();

parentPort!.on('message', ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  try {
    parentPort!.postMessage({ id, ok: true, value: parseJsonBody(bytes) });
  } catch (err) {
    parentPort!.postMessage({ id, ok: false, message: (err as Error).message ?? String(err), status: err instanceof JsonBodyError ? err.status : null });
  }
});
