// The worker side of json-body.ts: gathers the chunks of streamed bodies, parses each body (whole
// or gathered) and posts back the value (or the JsonBodyError's message and status).
import { parentPort } from 'node:worker_threads';
import { JsonBodyError, parseJsonBody, type ParserMessage, type ParserReply } from './json-body.ts';
import { lowerWorkerThreadPriority } from './worker-priority.ts';

lowerWorkerThreadPriority();

const bodies = new Map<number, Uint8Array[]>();

function answer(id: number, bytes: Uint8Array): ParserReply {
  try {
    return { id, ok: true, value: parseJsonBody(bytes) };
  } catch (err) {
    return { id, ok: false, message: (err as Error).message ?? String(err), status: err instanceof JsonBodyError ? err.status : null };
  }
}

parentPort!.on('message', (m: ParserMessage) => {
  switch (m.op) {
    case 'parse':
      return parentPort!.postMessage(answer(m.id, m.bytes));
    case 'chunk': {
      const parts = bodies.get(m.id);
      if (parts) parts.push(m.bytes);
      else bodies.set(m.id, [m.bytes]);
      return;
    }
    case 'end': {
      const parts = bodies.get(m.id) ?? [];
      bodies.delete(m.id);
      return parentPort!.postMessage(answer(m.id, parts.length === 1 ? parts[0]! : Buffer.concat(parts)));
    }
    case 'cancel':
      bodies.delete(m.id);
      return;
  }
});
