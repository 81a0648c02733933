// The Python lorax-client's wire shapes (clients/python/lorax/types.py and client.py in
// predibase/lorax, as published): it POSTs `Request(...).dict(by_alias=True)` to the base URL (every
// Parameters field present, unset ones null, `stream` always there) and builds `Response` /
// `StreamResponse` pydantic models from what comes back. The checks below are those models'
// fields, written out: a missing required field or a wrong type is what would make the client raise.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postJson, readSSE, startBackend, type TestServer } from '../helpers/backend.ts';

const ADAPTERS = new URL('../fixtures/adapters/llama', import.meta.url).pathname;

/** Parameters(...).dict(by_alias=True) with the client's defaults (types.py `class Parameters`). */
function parameters(over: Record<string, unknown> = {}) {
  return {
    adapter_id: null, adapter_source: null, merged_adapters: null, api_token: null, do_sample: false, max_new_tokens: null,
    ignore_eos_token: false, repetition_penalty: null, return_full_text: false, stop: [], seed: null, temperature: null,
    top_k: null, top_p: null, truncate: null, typical_p: null, best_of: null, watermark: false, details: false,
    decoder_input_details: false, return_k_alternatives: null, response_format: null,
    ...over,
  };
}

type Check = (v: unknown, at: string) => void;
const int: Check = (v, at) => assert.ok(Number.isInteger(v), `${at}: int, got ${JSON.stringify(v)}`);
const float: Check = (v, at) => assert.ok(typeof v === 'number', `${at}: float, got ${JSON.stringify(v)}`);
const str: Check = (v, at) => assert.equal(typeof v, 'string', `${at}: str`);
const bool: Check = (v, at) => assert.equal(typeof v, 'boolean', `${at}: bool`);
const optional = (c: Check): Check => (v, at) => v === null || v === undefined || c(v, at);
const list = (c: Check): Check => (v, at) => {
  assert.ok(Array.isArray(v), `${at}: List`);
  (v as unknown[]).forEach((x, i) => c(x, `${at}[${i}]`));
};
const finishReason: Check = (v, at) => assert.ok(['length', 'eos_token', 'stop_sequence'].includes(v as string), `${at}: FinishReason, got ${JSON.stringify(v)}`);
/** A pydantic model: required fields must be present (Optional without default still required). */
const model = (fields: Record<string, [Check, 'required' | 'default']>): Check => (v, at) => {
  assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `${at}: object`);
  const o = v as Record<string, unknown>;
  for (const [k, [c, req]] of Object.entries(fields)) {
    if (req === 'required') assert.ok(k in o, `${at}.${k} is required by the client`);
    if (k in o) c(o[k], `${at}.${k}`);
  }
};

const InputToken = model({ id: [int, 'required'], text: [str, 'required'], logprob: [optional(float), 'default'] });
const AlternativeToken = model({ id: [int, 'required'], text: [str, 'required'], logprob: [optional(float), 'default'] });
const Token = model({
  id: [int, 'required'], text: [str, 'required'], logprob: [optional(float), 'required'], special: [bool, 'required'],
  alternative_tokens: [optional(list(AlternativeToken)), 'default'], skipped: [bool, 'required'],
});
const BestOfSequence = model({
  generated_text: [str, 'required'], finish_reason: [finishReason, 'required'], generated_tokens: [int, 'required'],
  seed: [optional(int), 'default'], prefill: [list(InputToken), 'required'], tokens: [list(Token), 'required'],
});
const Details = model({
  finish_reason: [finishReason, 'required'], prompt_tokens: [int, 'required'], generated_tokens: [int, 'required'],
  skipped_tokens: [int, 'required'], seed: [optional(int), 'default'], prefill: [list(InputToken), 'required'],
  tokens: [list(Token), 'required'], best_of_sequences: [optional(list(BestOfSequence)), 'default'],
});
const Response = model({ generated_text: [str, 'required'], details: [optional(Details), 'default'] });
const StreamDetails = model({ finish_reason: [finishReason, 'required'], prompt_tokens: [int, 'required'], generated_tokens: [int, 'required'], seed: [optional(int), 'default'] });
const StreamResponse = model({ token: [Token, 'required'], generated_text: [optional(str), 'default'], details: [optional(StreamDetails), 'default'] });

describe('lorax-client wire shapes', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend(['--adapter-source', 'local', '--adapter-root', ADAPTERS]);
  });
  after(async () => srv?.close());

  const cases = {
    'base model': parameters({ max_new_tokens: 5, details: true }),
    'an adapter, sampled, with alternatives and prompt details': parameters({ adapter_id: 'r8-qv', adapter_source: 'local', max_new_tokens: 6, details: true, decoder_input_details: true, do_sample: true, temperature: 0.7, top_k: 20, seed: 42, return_k_alternatives: 2 }),
    'merged adapters': parameters({ merged_adapters: { ids: ['r8-qv', 'r8-qv-b'], weights: [0.6, 0.4], merge_strategy: 'linear', density: 1.0, majority_sign_method: null }, adapter_source: 'local', max_new_tokens: 4, details: true }),
    'best_of': parameters({ adapter_id: 'r8-qv', max_new_tokens: 4, details: true, best_of: 2, do_sample: true }),
    'stop sequences, no details': parameters({ adapter_id: 'r4-rslora-mlp', max_new_tokens: 8, stop: ['\n'] }),
  };

  for (const [name, params] of Object.entries(cases)) {
    it(`Client.generate: ${name}`, async () => {
      const res = await postJson(`${srv.url}/`, { inputs: 'Hello, my name is', parameters: params, stream: false });
      assert.equal(res.status, 200, await res.clone().text());
      const payload = (await res.json()) as unknown[];
      assert.ok(Array.isArray(payload) && payload.length === 1, 'the client reads payload[0]');
      Response(payload[0], 'Response');
      const r = payload[0] as { details: { tokens: unknown[]; prefill: unknown[]; best_of_sequences?: unknown[] } | null };
      if (params.details) {
        assert.ok(r.details, 'details asked for');
        assert.equal(r.details.tokens.length > 0, true);
        if (params.decoder_input_details) assert.ok(r.details.prefill.length > 0, 'prefill details');
        if (params.best_of) assert.equal(r.details.best_of_sequences?.length, 1, 'best_of 2: the other sequence');
      }
    });
  }

  for (const [name, params] of Object.entries(cases)) {
    if (params.best_of || params.decoder_input_details) continue; // refused when streaming, as LoRAX
    it(`Client.generate_stream: ${name}`, async () => {
      const res = await postJson(`${srv.url}/`, { inputs: 'Hello, my name is', parameters: params, stream: true });
      assert.equal(res.status, 200);
      const events = (await readSSE(res)).map((d) => JSON.parse(d) as { generated_text: string | null; details: unknown });
      assert.ok(events.length > 0);
      events.forEach((e, i) => StreamResponse(e, `StreamResponse[${i}]`));
      const last = events.at(-1)!;
      assert.equal(typeof last.generated_text, 'string', 'the last event carries the text');
      if (params.details) assert.ok(last.details, 'and the stream details');
      else assert.equal(last.details, null, 'details only when asked, as LoRAX');
      for (const e of events.slice(0, -1)) assert.equal(e.generated_text, null);
    });
  }

  it('streaming refusals arrive as the client expects: a 422 with LoRAX\'s error body', async () => {
    const res = await postJson(`${srv.url}/`, { inputs: 'x', parameters: parameters({ best_of: 2, do_sample: true }), stream: true });
    assert.equal(res.status, 422);
    const body = (await res.json()) as { error: string; error_type: string };
    assert.equal(typeof body.error, 'string');
    assert.equal(body.error_type, 'validation');
  });
});
