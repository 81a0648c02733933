// OpenAI's inference routes (/v1/chat/completions, /v1/completions): parsing, budget, forwarded
// body (include_usage always on when streaming, for the token count), the usage chunk the client
// did not ask for dropped, and the backend's adapter id renamed back to the client's model name.
import { ChatCompletionRequest, CompletionRequest, chatMaxTokens, completionPrompts, contentToText, openaiError, parseOpenAIRequest } from '../../protocol/index.ts';
import type { AdapterSelection } from '../adapters.ts';
import type { StreamInspector } from '../forward.ts';
import { bytesAt, indexOfBytes, utf8, utf8Length } from '../lib/bytes.ts';
import { applyAdapter, guessTokens, type ParsedRequest, type ParseOutcome, type TokenUsage, type Validated } from './types.ts';

const USAGE_NULL_TAIL = ',"usage":null}';
const USAGE_NULL_TAIL_BYTES = utf8(USAGE_NULL_TAIL);
const USAGE_OBJECT = utf8('"usage":{');
const ERROR_START = utf8('{"error"');
const CLOSE_BRACE = utf8('}');

class OpenAIStreamInspector implements StreamInspector {
  events = 0;
  private done = false;
  private errored = false;
  private counted: TokenUsage | null = null;
  private readonly modelFrom: string | null;
  private readonly modelTo: string | null;
  private readonly modelFromBytes: Uint8Array | null;
  private readonly modelToBytes: Uint8Array | null;

  constructor(
    private readonly wantUsage: boolean,
    rename: { from: string; to: string } | null,
  ) {
    this.modelFrom = rename ? `"model":${JSON.stringify(rename.from)}` : null;
    this.modelTo = rename ? `"model":${JSON.stringify(rename.to)}` : null;
    this.modelFromBytes = this.modelFrom ? utf8(this.modelFrom) : null;
    this.modelToBytes = this.modelTo ? utf8(this.modelTo) : null;
  }

  /**
   * A token chunk on bytes, as event() would treat it: the adapter id renamed back to the
   * client's model name, the `"usage":null` the client did not ask for cut. [DONE], errors and
   * the usage chunk go to event().
   */
  quick(b: Uint8Array, start: number, end: number): true | Uint8Array[] | null {
    if (b[start] !== 0x7b || bytesAt(b, start, ERROR_START, end) || indexOfBytes(b, USAGE_OBJECT, start, end) >= 0) return null;
    this.events++;
    const trim = !this.wantUsage && end - start >= USAGE_NULL_TAIL_BYTES.length && bytesAt(b, end - USAGE_NULL_TAIL_BYTES.length, USAGE_NULL_TAIL_BYTES, end);
    const cut = trim ? end - USAGE_NULL_TAIL_BYTES.length : end;
    const m = this.modelFromBytes ? indexOfBytes(b, this.modelFromBytes, start, end) : -1;
    if (m < 0) return trim ? [b.subarray(start, cut), CLOSE_BRACE] : true;
    const after = m + this.modelFromBytes!.length;
    return [b.subarray(start, m), this.modelToBytes!, b.subarray(after, Math.max(after, cut)), ...(trim ? [CLOSE_BRACE] : [])];
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

export function parseChat(raw: unknown, valid?: Validated): ParseOutcome {
  const parsed = (valid as ReturnType<typeof parseOpenAIRequest<typeof ChatCompletionRequest>> | undefined) ?? parseOpenAIRequest(ChatCompletionRequest, raw);
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

export function parseCompletion(raw: unknown, valid?: Validated): ParseOutcome {
  const parsed = (valid as ReturnType<typeof parseOpenAIRequest<typeof CompletionRequest>> | undefined) ?? parseOpenAIRequest(CompletionRequest, raw);
  if (!parsed.success) return { ok: false, status: parsed.status, error: parsed.error };
  const r = parsed.data;
  const prompts = completionPrompts(r.prompt);
  return {
    ok: true,
    req: openaiRequest(raw as Record<string, unknown>, r, [], (info, opts) => {
      let reserve = 0;
      let bytes = 0;
      let ids = 0;
      for (const p of prompts) {
        if (typeof p !== 'string') ids += p.length;
        // Token ids are counted exactly; text is estimated from its bytes.
        const b = typeof p === 'string' ? utf8Length(p) : 0;
        bytes += b;
        const prompt = Math.min(typeof p === 'string' ? Math.ceil(b / opts.promptBytesPerToken) + 4 : p.length, info.maxInputLength);
        // OpenAI's (and the backend's) default for completions is 16 new tokens.
        reserve += Math.min(prompt + (r.max_tokens ?? 16), info.maxTotalTokens) * Math.max(r.n ?? 1, r.best_of ?? 1);
      }
      return { reserve, promptGuess: guessTokens(bytes) + ids };
    }),
  };
}
