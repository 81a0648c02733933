// The worker side of json-body.ts: gathers the chunks of streamed bodies, parses each body (whole
// or gathered) and posts back the value (or the JsonBodyError's message and status). A streamed
// body's long prompt string stays here (kept texts) until released; tokenizer threads fetch it
// over their ports, so it never crosses the request loop.
import { parentPort, type MessagePort } from 'node:worker_threads';
import { JsonBodyError, KEPT_STAND_IN, LARGE_TEXT_MIN_CHARS, parseJsonBody, type ParserMessage, type ParserReply, type TextReply, type TextRequest } from './json-body.ts';
import { lowerWorkerThreadPriority } from './worker-priority.ts';

lowerWorkerThreadPriority();

const bodies = new Map<number, Uint8Array[]>();
const kept = new Map<number, string>();

function answer(id: number, bytes: Uint8Array, keep: string | null): ParserReply {
  let value: unknown;
  try {
    value = parseJsonBody(bytes);
  } catch (err) {
    return { id, ok: false, message: (err as Error).message ?? String(err), status: err instanceof JsonBodyError ? err.status : null };
  }
  if (keep !== null && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const v = value as Record<string, unknown>;
    const s = v[keep];
    if (typeof s === 'string' && s.length >= LARGE_TEXT_MIN_CHARS) {
      kept.set(id, s);
      v[keep] = KEPT_STAND_IN;
      return { id, ok: true, value, kept: { field: keep, length: s.length } };
    }
  }
  return { id, ok: true, value };
}

parentPort!.on('message', (m: ParserMessage) => {
  switch (m.op) {
    case 'parse':
      return parentPort!.postMessage(answer(m.id, m.bytes, null));
    case 'chunk': {
      const parts = bodies.get(m.id);
      if (parts) parts.push(m.bytes);
      else bodies.set(m.id, [m.bytes]);
      return;
    }
    case 'end': {
      const parts = bodies.get(m.id) ?? [];
      bodies.delete(m.id);
      return parentPort!.postMessage(answer(m.id, parts.length === 1 ? parts[0]! : Buffer.concat(parts), m.keep));
    }
    case 'cancel':
      bodies.delete(m.id);
      return;
    case 'text': {
      const s = kept.get(m.text);
      return parentPort!.postMessage(s !== undefined ? { id: m.id, ok: true, value: s } : { id: m.id, ok: false, message: 'the text was released', status: null } satisfies ParserReply);
    }
    case 'release':
      kept.delete(m.text);
      return;
    case 'port':
      return serve(m.port);
  }
});

/** A tokenizer thread's requests for kept texts. */
function serve(port: MessagePort): void {
  port.on('message', (r: TextRequest) => port.postMessage({ job: r.job, text: kept.get(r.text) ?? null } satisfies TextReply));
}
