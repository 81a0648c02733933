// What differs between the forwarded inference routes, as one interface each API implements
// (endpoints/lorax.ts, endpoints/openai.ts): how the body is parsed (protocol/ zod schemas), which
// adapter(s) it names, which JSON Schemas it carries, how the forwarded body is rewritten (tenant
// adapter ids; details / include_usage so the gateway can count tokens), the token budget to
// reserve, and how tokens are counted in the answer (what the gateway asked for beyond the client
// is trimmed away). The gateway never reads model output otherwise.
import type { AdapterSelection, BackendInfo } from '../adapters.ts';
import type { ApiKind } from '../errors.ts';
import type { StreamInspector } from '../forward.ts';

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

export interface Budget {
  /** Tokens reserved against tpm: an upper bound of what the backend may count. */
  reserve: number;
  /** Prompt tokens to charge when the answer never says (an abandoned stream). */
  promptGuess: number;
}

export interface BudgetOptions {
  /** Bytes per token assumed for the reservation's prompt bound (1 = never underestimates BPE/byte-fallback tokenizers). */
  promptBytesPerToken: number;
}

export interface ParsedRequest {
  api: ApiKind;
  /** The body as the client sent it (forwarded with minimal changes, so nothing is lost in a round trip through zod). */
  raw: Record<string, unknown>;
  stream: boolean;
  single: string | undefined;
  merged: string[] | undefined;
  /** JSON Schemas to check, with the parameter path for error messages. */
  schemas: Array<{ path: string; schema: unknown }>;
  budget(info: BackendInfo, opts: BudgetOptions): Budget;
  /** The body for the backend. */
  forwardBody(sel: AdapterSelection): Record<string, unknown>;
  /** Counts tokens of a non-streaming 2xx JSON answer and trims what the client did not ask for. */
  finishJson(body: unknown, sel: AdapterSelection): { body: unknown; usage: TokenUsage | null };
  inspector(sel: AdapterSelection): StreamInspector & { usage(): TokenUsage | null; events: number };
}

export type ParseOutcome = { ok: true; req: ParsedRequest } | { ok: false; status: number; error: unknown };

/** The schema's result for a body, when it was validated where it was parsed (services.readRequest). */
export type Validated = { success: true; data: unknown } | { success: false; status: number; error: unknown };

/** Prompt tokens charged when the answer never says (about 4 bytes a token). */
export const guessTokens = (bytes: number) => Math.ceil(bytes / 4);

export function applyAdapter(target: Record<string, unknown>, sel: AdapterSelection, idField: 'adapter_id' | 'model'): void {
  delete target.api_token; // only the gateway decides which hub token goes with which adapter
  if (sel.kind === 'single') {
    target[idField] = sel.target.id;
    target.adapter_source = sel.target.source;
    if (sel.target.apiToken) target.api_token = sel.target.apiToken;
  } else if (sel.kind === 'merged') {
    const m = target.merged_adapters as Record<string, unknown>;
    // One token per id (null: none), so no adapter's token is ever sent for another's repo.
    target.merged_adapters = { ...m, ids: sel.targets.map((t) => t.id), api_tokens: sel.targets.map((t) => t.apiToken) };
    target.adapter_source = sel.source;
  }
}
