// The worker-thread side of json-offload.ts: parses request bodies with the same parseJsonObject
// the inline path uses (so the answer never depends on the body's size) and serialises forwarded
// bodies to UTF-8 bytes, which go back transferred.
import { parentPort } from 'node:worker_threads';
import { checkJsonBody, parseJsonObject } from './body.ts';
import type { RequestSchemaName } from '../protocol/request-schemas.ts';
import { GatewayError } from './errors.ts';
import os from 'node:os';

// Large bodies wait for CPU instead of the gateway's loop: this thread runs at nice 10. Linux keeps
// nice per thread, so setpriority(0) lowers this worker alone (elsewhere it would lower the whole
// process, hence the platform check). backend/worker-priority.ts does the same for the backend's pools.
if (process.platform === 'linux') {
  try {
    os.setPriority(Math.max(os.getPriority(), 10));
  } catch {
    // Forbidden by a sandbox: the worker keeps the loop's priority.
  }
}

const enc = new TextEncoder();

parentPort!.on('message', (m: { id: number; op: 'parse'; bytes: Uint8Array } | { id: number; op: 'check'; bytes: Uint8Array; name: RequestSchemaName } | { id: number; op: 'stringify'; value: unknown }) => {
  try {
    if (m.op === 'check') {
      parentPort!.postMessage({ id: m.id, ok: true, checked: checkJsonBody(m.bytes, m.name) });
    } else if (m.op === 'parse') {
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
