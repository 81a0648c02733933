// What differs between the forwarded inference routes: how the body is parsed (protocol/ zod
// schemas), which adapter(s) it names, which JSON Schemas it carries, how the forwarded body is
// rewritten (tenant adapter ids; details / include_usage so the gateway can count tokens), the
// token budget to reserve, and how tokens are counted in the answer (and what the gateway asked
// for beyond the client is trimmed away). The gateway never reads model output otherwise.
import {
  ChatCompletionRequest,
  CompatGenerateRequest,
  CompletionRequest,
  GenerateRequest,
  GenerateStreamRequest,
  chatMaxTokens,
  contentToText,
  loraxError,
  openaiError,
  parseLoraxRequest,
  parseOpenAIRequest,
  type GenerateParameters,
} from '../protocol/index.ts';
import type { AdapterSelection, BackendInfo } from './adapters.ts';
import type { ApiKind } from './errors.ts';
import type { StreamInspector } from './forward.ts';
import { utf8Length } from './util.ts';

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

const guessTokens = (bytes: number) => Math.ceil(bytes / 4);

function applyAdapter(target: Record<string, unknown>, sel: AdapterSelection, idField: 'adapter_id' | 'model'): void {
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

// ---------------------------------------------------------------------------------------------
// LoRAX
// ---------------------------------------------------------------------------------------------

export type LoraxRoute = '/generate' | '/generate_stream' | '/';

function loraxSchemas(p: GenerateParameters): ParsedRequest['schemas'] {
  const rf = p.response_format;
  return rf && rf.type !== 'text' && rf.schema ? [{ path: 'parameters.response_format.schema', schema: rf.schema }] : [];
}

class LoraxStreamInspector implements StreamInspector {
  events = 0;
  private final: TokenUsage | null = null;
  private errored = false;
  constructor(private readonly wantDetails: boolean) {}

  event(data: string): string | null {
    if (data.startsWith('{"error"')) {
      this.errored = true;
      return data;
    }
    // Every event but the last has `"details":null` (key order is the backend's, and a quote
    // inside token text is always escaped, so this cannot match inside a string).
    if (data.includes('"details":null')) {
      this.events++;
      return data;
    }
    let obj: { token?: unknown; details?: { prompt_tokens?: number; generated_tokens?: number } | null; error?: unknown };
    try {
      obj = JSON.parse(data) as typeof obj;
    } catch {
      return data;
    }
    if (obj.error !== undefined && obj.token === undefined) {
      this.errored = true;
      return data;
    }
    this.events++;
    if (obj.details) {
      this.final = { promptTokens: obj.details.prompt_tokens ?? 0, completionTokens: obj.details.generated_tokens ?? this.events };
      if (!this.wantDetails) return JSON.stringify({ ...obj, details: null });
    }
    return data;
  }

  end(failure: string | null): string | null {
    if (this.final || this.errored) return null;
    return JSON.stringify(loraxError(failure ?? 'the backend ended the stream before the generation finished', 'incomplete_generation'));
  }

  usage(): TokenUsage | null {
    return this.final;
  }
}

export function parseLorax(route: LoraxRoute, raw: unknown): ParseOutcome {
  const schema = route === '/generate' ? GenerateRequest : route === '/generate_stream' ? GenerateStreamRequest : CompatGenerateRequest;
  const parsed = parseLoraxRequest(schema, raw);
  if (!parsed.success) return { ok: false, status: parsed.status, error: parsed.error };
  const data = parsed.data as { inputs: string; parameters: GenerateParameters; stream?: boolean };
  const p = data.parameters;
  const stream = route === '/generate_stream' || (route === '/' && data.stream === true);
  const wantDetails = p.details || (!stream && p.decoder_input_details);
  const body = raw as Record<string, unknown>;
  const req: ParsedRequest = {
    api: 'lorax',
    raw: body,
    stream,
    single: p.adapter_id,
    merged: p.merged_adapters?.ids,
    schemas: loraxSchemas(p),
    budget(info, opts) {
      const bytes = utf8Length(data.inputs);
      let prompt = Math.min(Math.ceil(bytes / opts.promptBytesPerToken) + 4, info.maxInputLength);
      if (p.truncate !== undefined) prompt = Math.min(prompt, p.truncate + 4);
      const perSeq = Math.min(prompt + (p.max_new_tokens ?? info.maxTotalTokens), info.maxTotalTokens);
      return { reserve: perSeq * (p.best_of ?? 1), promptGuess: guessTokens(bytes) };
    },
    forwardBody(sel) {
      const params = { ...((body.parameters as Record<string, unknown> | null | undefined) ?? {}) };
      applyAdapter(params, sel, 'adapter_id');
      params.details = true; // token counts; trimmed from the answer unless the client asked
      return { ...body, parameters: params };
    },
    finishJson(json) {
      const one = (r: unknown): TokenUsage | null => {
        const d = (r as { details?: { prompt_tokens?: number; generated_tokens?: number; best_of_sequences?: Array<{ generated_tokens?: number }> } } | null)?.details;
        if (!d) return null;
        const extra = (d.best_of_sequences ?? []).reduce((n, s) => n + (s.generated_tokens ?? 0), 0);
        return { promptTokens: d.prompt_tokens ?? 0, completionTokens: (d.generated_tokens ?? 0) + extra };
      };
      const trim = (r: unknown) => {
        if (!wantDetails && r && typeof r === 'object') delete (r as Record<string, unknown>).details;
        return r;
      };
      if (Array.isArray(json)) {
        const usage = json.map(one).reduce<TokenUsage | null>((a, u) => (u ? { promptTokens: (a?.promptTokens ?? 0) + u.promptTokens, completionTokens: (a?.completionTokens ?? 0) + u.completionTokens } : a), null);
        return { body: json.map(trim), usage };
      }
      const usage = one(json);
      return { body: trim(json), usage };
    },
    inspector() {
      return new LoraxStreamInspector(p.details);
    },
  };
  return { ok: true, req };
}

// ---------------------------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------------------------

const USAGE_NULL_TAIL = ',"usage":null}';

class OpenAIStreamInspector implements StreamInspector {
  events = 0;
  private done = false;
  private errored = false;
  private counted: TokenUsage | null = null;
  private readonly modelFrom: string | null;
  private readonly modelTo: string | null;

  constructor(
    private readonly wantUsage: boolean,
    rename: { from: string; to: string } | null,
  ) {
    this.modelFrom = rename ? `"model":${JSON.stringify(rename.from)}` : null;
    this.modelTo = rename ? `"model":${JSON.stringify(rename.to)}` : null;
  }

  event(raw: string): string | null {
    if (raw === '[DONE]') {
      this.done = true;
      return raw;
    }
    let data = this.modelFrom && raw.includes(this.modelFrom) ? raw.replace(this.modelFrom, this.modelTo!) : raw;
    if (data.startsWith('{"error"')) {
      this.errored = true;
      return data;
    }
    if (data.includes('"usage":{')) {
      try {
        const obj = JSON.parse(data) as { choices?: unknown[]; usage?: { prompt_tokens?: number; completion_tokens?: number } | null };
        if (obj.usage) {
          this.counted = { promptTokens: obj.usage.prompt_tokens ?? 0, completionTokens: obj.usage.completion_tokens ?? 0 };
          // The usage chunk the gateway asked for on the client's behalf.
          if (!this.wantUsage && Array.isArray(obj.choices) && obj.choices.length === 0) return null;
        }
      } catch {
        // not JSON: pass it on untouched
      }
      return data;
    }
    this.events++;
    if (!this.wantUsage && data.endsWith(USAGE_NULL_TAIL)) data = `${data.slice(0, -USAGE_NULL_TAIL.length)}}`;
    return data;
  }

  end(failure: string | null): string | null {
    if (this.done || this.errored) return null;
    return JSON.stringify(
      openaiError(failure ?? 'the backend ended the stream before the completion finished', 'server_error', null, 'stream_interrupted'),
    );
  }

  usage(): TokenUsage | null {
    return this.counted;
  }
}

function renameModel(sel: AdapterSelection): { from: string; to: string } | null {
  if (sel.kind !== 'single' || sel.target.id === sel.target.name) return null;
  return { from: sel.target.id, to: sel.target.name };
}

function openaiRequest(
  raw: Record<string, unknown>,
  data: { model: string; stream: boolean; stream_options?: { include_usage?: boolean | undefined } | undefined },
  schemas: ParsedRequest['schemas'],
  budget: ParsedRequest['budget'],
): ParsedRequest {
  const wantUsage = data.stream_options?.include_usage === true;
  return {
    api: 'openai',
    raw,
    stream: data.stream,
    single: data.model,
    merged: undefined,
    schemas,
    budget,
    forwardBody(sel) {
      const body = { ...raw };
      applyAdapter(body, sel, 'model');
      if (data.stream) body.stream_options = { ...((raw.stream_options as object | null | undefined) ?? {}), include_usage: true };
      return body;
    },
    finishJson(json, sel) {
      const obj = json as { usage?: { prompt_tokens?: number; completion_tokens?: number }; model?: string } | null;
      const usage = obj?.usage ? { promptTokens: obj.usage.prompt_tokens ?? 0, completionTokens: obj.usage.completion_tokens ?? 0 } : null;
      const rename = renameModel(sel);
      if (rename && obj && obj.model === rename.from) obj.model = rename.to;
      return { body: obj, usage };
    },
    inspector(sel) {
      return new OpenAIStreamInspector(wantUsage, renameModel(sel));
    },
  };
}

function openaiSchemas(rf: unknown, tools: Array<{ function: { parameters?: unknown } }> | undefined): ParsedRequest['schemas'] {
  const out: ParsedRequest['schemas'] = [];
  const f = rf as { type?: string; schema?: unknown; json_schema?: { schema?: unknown } } | undefined;
  if (f?.type === 'json_schema' && f.json_schema?.schema) out.push({ path: 'response_format.json_schema.schema', schema: f.json_schema.schema });
  if (f?.type === 'json_object' && f.schema) out.push({ path: 'response_format.schema', schema: f.schema });
  tools?.forEach((t, i) => {
    if (t.function.parameters) out.push({ path: `tools[${i}].function.parameters`, schema: t.function.parameters });
  });
  return out;
}

export function parseChat(raw: unknown): ParseOutcome {
  const parsed = parseOpenAIRequest(ChatCompletionRequest, raw);
  if (!parsed.success) return { ok: false, status: parsed.status, error: parsed.error };
  const r = parsed.data;
  return {
    ok: true,
    req: openaiRequest(raw as Record<string, unknown>, r, openaiSchemas(r.response_format, r.tools), (info, opts) => {
      let bytes = 0;
      for (const m of r.messages) bytes += utf8Length(contentToText(m.content as never)) + 16;
      if (r.tools) bytes += utf8Length(JSON.stringify(r.tools));
      if (r.tool_prompt) bytes += utf8Length(r.tool_prompt);
      // + 64: room for what the chat template adds (role headers, a default system prompt).
      const prompt = Math.min(Math.ceil(bytes / opts.promptBytesPerToken) + 64, info.maxInputLength);
      const perSeq = Math.min(prompt + (chatMaxTokens(r) ?? info.maxTotalTokens), info.maxTotalTokens);
      return { reserve: perSeq * (r.n ?? 1), promptGuess: guessTokens(bytes) };
    }),
  };
}

export function parseCompletion(raw: unknown): ParseOutcome {
  const parsed = parseOpenAIRequest(CompletionRequest, raw);
  if (!parsed.success) return { ok: false, status: parsed.status, error: parsed.error };
  const r = parsed.data;
  const prompts = typeof r.prompt === 'string' ? [r.prompt] : r.prompt;
  return {
    ok: true,
    req: openaiRequest(raw as Record<string, unknown>, r, [], (info, opts) => {
      let reserve = 0;
      let bytes = 0;
      for (const p of prompts) {
        const b = utf8Length(p);
        bytes += b;
        const prompt = Math.min(Math.ceil(b / opts.promptBytesPerToken) + 4, info.maxInputLength);
        // OpenAI's (and the backend's) default for completions is 16 new tokens.
        reserve += Math.min(prompt + (r.max_tokens ?? 16), info.maxTotalTokens) * Math.max(r.n ?? 1, r.best_of ?? 1);
      }
      return { reserve, promptGuess: guessTokens(bytes) };
    }),
  };
}
