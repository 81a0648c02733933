// Reading request bodies with a size limit enforced while reading (not only by Content-Length,
// which a client may omit or lie about): 413 past the limit, 400 for something that is not JSON.
import { GatewayError } from './errors.ts';

/**
 * A runtime's native body stream, when it has one cheaper than `Request.body` (Node: the
 * IncomingMessage @hono/node-server passes as env.incoming). Duck-typed: no node: imports here.
 */
export type NativeBody = AsyncIterable<Uint8Array> & { destroy?: (err?: Error) => void };

export async function readBytes(req: Request, maxBytes: number, what = 'request body', native?: NativeBody | null): Promise<Uint8Array<ArrayBuffer>> {
  const declared = Number(req.headers.get('content-length') ?? 'NaN');
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(what, maxBytes);
  const parts: Uint8Array[] = [];
  let total = 0;
  if (native) {
    for await (const value of native) {
      total += value.byteLength;
      if (total > maxBytes) {
        native.destroy?.();
        throw tooLarge(what, maxBytes);
      }
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
        await reader.cancel().catch(() => {});
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
  return new GatewayError(413, `${what} is larger than ${maxBytes} bytes`, { code: 'request_too_large' });
}

const dec = new TextDecoder('utf-8', { fatal: true });

/** The JSON object of a request body. */
export async function readJsonObject(req: Request, maxBytes: number, native?: NativeBody | null): Promise<Record<string, unknown>> {
  const bytes = await readBytes(req, maxBytes, 'request body', native);
  let text: string;
  try {
    text = dec.decode(bytes);
  } catch {
    throw new GatewayError(400, 'request body is not valid UTF-8', { code: 'invalid_json' });
  }
  if (text.trim() === '') throw new GatewayError(400, 'request body must be a JSON object', { code: 'invalid_json' });
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
