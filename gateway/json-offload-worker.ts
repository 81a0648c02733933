// The worker-thread side of json-offload.ts: parses request bodies with the same parseJsonObject
// the inline path uses (so the answer never depends on the body's size) and serialises forwarded
// bodies to UTF-8 bytes, which go back transferred.
import { parentPort } from 'node:worker_threads';
import { parseJsonObject } from './body.ts';
import { GatewayError } from './errors.ts';

const enc = new TextEncoder();

parentPort!.on('message', (m: { id: number; op: 'parse'; bytes: Uint8Array } | { id: number; op: 'stringify'; value: unknown }) => {
  try {
    if (m.op === 'parse') {
      parentPort!.postMessage({ id: m.id, ok: true, value: parseJsonObject(m.bytes) });
    } else {
      const bytes = enc.encode(JSON.stringify(m.value));
      parentPort!.postMessage({ id: m.id, ok: true, bytes }, [bytes.buffer]);
    }
  } catch (err) {
    const ge = err instanceof GatewayError ? err : null;
    parentPort!.postMessage({ id: m.id, ok: false, message: (err as Error)?.message ?? String(err), status: ge?.status ?? null, code: (ge?.opts.code as string | undefined) ?? null });
  }
});
