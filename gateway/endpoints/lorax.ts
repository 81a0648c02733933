// LoRAX's inference routes (/generate, /generate_stream, / with "stream"): parsing, budget,
// forwarded body (details always on, for the token count) and trimming of what the client did not ask for.
import { CompatGenerateRequest, GenerateRequest, GenerateStreamRequest, loraxError, parseLoraxRequest, type GenerateParameters } from '../../protocol/index.ts';
import type { StreamInspector } from '../forward.ts';
import { bytesAt, indexOfBytes, utf8, utf8Length } from '../lib/bytes.ts';
import { applyAdapter, guessTokens, type ParsedRequest, type ParseOutcome, type TokenUsage, type Validated } from './types.ts';

export type LoraxRoute = '/generate' | '/generate_stream' | '/';

function loraxSchemas(p: GenerateParameters): ParsedRequest['schemas'] {
  const rf = p.response_format;
  return rf && rf.type !== 'text' && rf.schema ? [{ path: 'parameters.response_format.schema', schema: rf.schema }] : [];
}

const ERROR_START = utf8('{"error"');
const DETAILS_NULL = utf8('"details":null');

class LoraxStreamInspector implements StreamInspector {
  events = 0;
  private final: TokenUsage | null = null;
  private errored = false;
  constructor(private readonly wantDetails: boolean) {}

  /** A token event (`"details":null`) on bytes: counted, passed on; anything else goes to event(). */
  quick(b: Uint8Array, start: number, end: number): true | null {
    if (bytesAt(b, start, ERROR_START, end) || indexOfBytes(b, DETAILS_NULL, start, end) < 0) return null;
    this.events++;
    return true;
  }

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

export function parseLorax(route: LoraxRoute, raw: unknown, valid?: Validated): ParseOutcome {
  const schema = route === '/generate' ? GenerateRequest : route === '/generate_stream' ? GenerateStreamRequest : CompatGenerateRequest;
  const parsed = (valid as ReturnType<typeof parseLoraxRequest<typeof schema>> | undefined) ?? parseLoraxRequest(schema, raw);
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
