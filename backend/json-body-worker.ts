// The worker side of json-body.ts: gathers the chunks of streamed bodies, parses each body (whole
// or gathered) and posts back the value (or the JsonBodyError's message and status). A streamed
// body's long prompt string stays here (kept texts) until released; tokenizer threads fetch it
// over their ports, so it never crosses the request loop. A body sent with a check is validated
// here too (the route's schema by name, then the server's limits), so a refused body's value stays
// here and only its error goes back.
import { parentPort, type MessagePort } from 'node:worker_threads';
import { parseNamedRequest } from '../protocol/request-schemas.ts';
import { JsonBodyError, KEPT_STAND_IN, LARGE_TEXT_MIN_CHARS, parseJsonBody, type BodyCheck, type ParserMessage, type ParserReply, type TextReply, type TextRequest } from './json-body.ts';
import { requestRefusal } from './request-limits.ts';
import { SCHEMA_TEXT_MIN_CHARS, schemaSlot } from './structured/schema-json.ts';
import { lowerWorkerThreadPriority } from './worker-priority.ts';

lowerWorkerThreadPriority();

const bodies = new Map<number, Uint8Array[]>();
const kept = new Map<number, string>();

/** The reply for a parsed (and, with a check, validated) value; the kept text was already taken out. */
function checked(id: number, value: unknown, check: BodyCheck | null, kept?: { field: string; length: number }): ParserReply {
  const k = kept ? { kept } : {};
  if (!check) return { id, ok: true, value, ...k };
  try {
    return validated(id, value, check, k);
  } catch (err) {
    // A bug in a schema or a check: the route answers 500, as it would inline; the thread lives on.
    return { id, ok: false, message: (err as Error).message ?? String(err), status: null };
  }
}

function validated(id: number, value: unknown, check: BodyCheck, k: { kept?: { field: string; length: number } }): ParserReply {
  const parsed = parseNamedRequest(check.name, value);
  if (!parsed.success) return { id, ok: true, value: null, ...k, checked: { kind: 'invalid', status: parsed.status, error: parsed.error } };
  const refusal = requestRefusal(check.name, parsed.data, check.limits);
  if (refusal) return { id, ok: true, value: null, ...k, checked: { kind: 'refused', refusal } };
  // A large response_format schema goes back as its JSON text (structured/schema-json.ts).
  const slot = schemaSlot(check.name, parsed.data);
  if (slot) {
    const json = JSON.stringify(slot.owner[slot.key]);
    if (json.length >= SCHEMA_TEXT_MIN_CHARS) {
      slot.owner[slot.key] = {};
      return { id, ok: true, value: parsed.data, ...k, checked: { kind: 'valid' }, schemaJson: json };
    }
  }
  return { id, ok: true, value: parsed.data, ...k, checked: { kind: 'valid' } };
}

function answer(id: number, bytes: Uint8Array, keep: string | null, check: BodyCheck | null): ParserReply {
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
      return checked(id, value, check, { field: keep, length: s.length });
    }
  }
  return checked(id, value, check);
}

parentPort!.on('message', (m: ParserMessage) => {
  switch (m.op) {
    case 'parse':
      return parentPort!.postMessage(answer(m.id, m.bytes, null, m.check));
    case 'chunk': {
      const parts = bodies.get(m.id);
      if (parts) parts.push(m.bytes);
      else bodies.set(m.id, [m.bytes]);
      return;
    }
    case 'end': {
      const parts = bodies.get(m.id) ?? [];
      bodies.delete(m.id);
      return parentPort!.postMessage(answer(m.id, parts.length === 1 ? parts[0]! : Buffer.concat(parts), m.keep, m.check));
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
  port.on('message', (r: TextRequest) => {
    const s = kept.get(r.text);
    const whole = s === undefined || r.tail === undefined || r.tail >= s.length;
    port.postMessage({ job: r.job, text: s === undefined ? null : whole ? s : s.slice(s.length - r.tail!), whole } satisfies TextReply);
  });
}
