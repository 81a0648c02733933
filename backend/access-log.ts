// One access log line per request: method, route pattern, status, adapter, prompt and generated
// tokens, time. The route module that runs a generation notes the adapter and token counts in
// the request's async context (AsyncLocalStorage), so no route needs to know about logging.
// Nothing from headers, query strings or bodies is ever written: no credential can reach a log.
import { AsyncLocalStorage } from 'node:async_hooks';

export interface AccessEntry {
  method: string;
  /** The matched route pattern (`/generate`), never the raw path. */
  route: string;
  status: number;
  adapter: string | null;
  tokensIn: number | null;
  tokensOut: number | null;
  ms: number;
  /** Whether the answer was a stream (then `ms` runs to its end). */
  stream: boolean;
}

export interface UsageNote {
  adapter: string | null;
  tokensIn: number | null;
  tokensOut: number | null;
}

const current = new AsyncLocalStorage<UsageNote>();

/** Runs `fn` with a fresh usage note for the request; the note is returned for the log line. */
export function withUsageNote<T>(fn: () => T): { note: UsageNote; result: T } {
  const note: UsageNote = { adapter: null, tokensIn: null, tokensOut: null };
  return { note, result: current.run(note, fn) };
}

/** A generation records its adapter and prompt size (sums over the choices of one request). */
export function noteGenerationStart(adapter: string | null, tokensIn: number): void {
  const n = current.getStore();
  if (!n) return;
  n.adapter ??= adapter;
  n.tokensIn = Math.max(n.tokensIn ?? 0, tokensIn);
}

export function noteGenerated(tokens: number): void {
  const n = current.getStore();
  if (n) n.tokensOut = (n.tokensOut ?? 0) + tokens;
}

/** The text form: `POST /generate 200 adapter=x in=12 out=20 35.1ms`. */
export function formatAccess(e: AccessEntry): string {
  const parts = [e.method, e.route, String(e.status)];
  if (e.adapter !== null) parts.push(`adapter=${e.adapter}`);
  if (e.tokensIn !== null) parts.push(`in=${e.tokensIn}`);
  if (e.tokensOut !== null) parts.push(`out=${e.tokensOut}`);
  parts.push(`${e.ms.toFixed(1)}ms${e.stream ? ' (stream)' : ''}`);
  return parts.join(' ');
}

/** The JSON form (--json-output): one object per line. */
export function jsonAccess(e: AccessEntry): string {
  return JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'request', method: e.method, route: e.route, status: e.status, adapter: e.adapter, tokens_in: e.tokensIn, tokens_out: e.tokensOut, duration_ms: Number(e.ms.toFixed(3)), stream: e.stream });
}
