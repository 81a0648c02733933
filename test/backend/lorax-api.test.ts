// The backend over real HTTP with LoRAX request shapes (as curl or lorax-client send them), and
// its answers checked against transformers + PEFT references.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postJson, readSSE, startBackend, type TestServer } from '../helpers/backend.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const ref = JSON.parse(readFileSync(join(FIXTURES, 'reference', 'llama.json'), 'utf-8')) as {
  prompts: { text: string; ids: number[] }[];
  cases: { adapter: string | null; prompt: number; prompt_logprobs: number[]; greedy: { ids: number[] } }[];
  eos_token_id: number;
};
const refCase = (adapter: string | null, prompt: number) => ref.cases.find((c) => c.adapter === adapter && c.prompt === prompt)!;
const adapterDir = (name: string) => join(FIXTURES, 'adapters', 'llama', name);
// The reference greedy run never stops; ours stops at EOS (generation_config lists two ids).
const EOS = new Set([563, 566]);
function expectedGreedy(ids: number[], n: number): number[] {
  const out: number[] = [];
  for (const id of ids.slice(0, n)) {
    out.push(id);
    if (EOS.has(id)) break;
  }
  return out;
}

interface Details {
  finish_reason: string;
  generated_tokens: number;
  prompt_tokens: number;
  seed: number | null;
  prefill: { id: number; text: string; logprob: number | null }[];
  tokens: { id: number; text: string; logprob: number; special: boolean; alternative_tokens?: unknown[] }[];
  best_of_sequences?: unknown[];
}

describe('LoRAX REST API', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths', '--max-batch-prefill-tokens', '64']);
  });
  after(async () => {
    await srv.close();
  });

  for (const adapter of [null, 'r8-qv', 'r16-all', 'merged-ties']) {
    it(`greedy /generate with ${adapter ?? 'the base model'} gives transformers' tokens`, async () => {
      const c = refCase(adapter, 2);
      const res = await postJson(`${srv.url}/generate`, {
        inputs: ref.prompts[2]!.text,
        parameters: { max_new_tokens: 16, details: true, decoder_input_details: true, ...(adapter ? { adapter_id: adapterDir(adapter) } : {}) },
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { generated_text: string; details: Details };
      const ids = body.details.tokens.map((t) => t.id);
      assert.deepEqual(ids, expectedGreedy(c.greedy.ids, 16));
      assert.equal(body.details.generated_tokens, ids.length);
      assert.equal(body.details.prompt_tokens, ref.prompts[2]!.ids.length);
      assert.equal(body.details.finish_reason, EOS.has(ids.at(-1)!) ? 'eos_token' : 'length');
      // Prefill: the prompt's tokens, the first without a logprob, the rest as transformers scores them.
      assert.deepEqual(body.details.prefill.map((t) => t.id), ref.prompts[2]!.ids);
      assert.equal(body.details.prefill[0]!.logprob, null);
      body.details.prefill.slice(1).forEach((t, i) => assert.ok(Math.abs(t.logprob! - c.prompt_logprobs[i]!) < 1e-3, `prefill ${i + 1}`));
      assert.equal(typeof body.generated_text, 'string');
    });
  }

  it('omits details unless asked, and returns the text alone', async () => {
    const res = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 3 } });
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ['generated_text']);
  });

  it('streams TGI-shaped SSE events whose tokens add up to /generate', async () => {
    const params = { max_new_tokens: 12, details: true, adapter_id: adapterDir('r4-rslora-mlp') };
    const whole = (await (await postJson(`${srv.url}/generate`, { inputs: ref.prompts[1]!.text, parameters: params })).json()) as { generated_text: string; details: Details };
    const res = await postJson(`${srv.url}/generate_stream`, { inputs: ref.prompts[1]!.text, parameters: params });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const events = (await readSSE(res)).map((d) => JSON.parse(d) as { token: { id: number; text: string }; generated_text: string | null; details: Details | null });
    assert.deepEqual(events.map((e) => e.token.id), whole.details.tokens.map((t) => t.id));
    for (const e of events.slice(0, -1)) {
      assert.equal(e.generated_text, null);
      assert.equal(e.details, null);
    }
    const last = events.at(-1)!;
    assert.equal(last.generated_text, whole.generated_text);
    assert.equal(last.details!.finish_reason, whole.details.finish_reason);
    assert.equal(last.details!.generated_tokens, events.length);
  });

  it('serves lorax-client on POST / (array response, and stream: true)', async () => {
    const res = await postJson(`${srv.url}/`, { inputs: 'Hello there', parameters: { max_new_tokens: 4 } });
    const body = (await res.json()) as { generated_text: string }[];
    assert.ok(Array.isArray(body) && body.length === 1 && typeof body[0]!.generated_text === 'string');
    const s = await postJson(`${srv.url}/`, { inputs: 'Hello there', parameters: { max_new_tokens: 4 }, stream: true });
    const events = await readSSE(s);
    assert.equal(events.length, 4);
    assert.equal((JSON.parse(events[3]!) as { generated_text: string }).generated_text, body[0]!.generated_text);
  });

  it('samples reproducibly with a seed, and best_of returns the other candidates', async () => {
    const p = { max_new_tokens: 8, do_sample: true, temperature: 1.3, top_k: 50, top_p: 0.95, seed: 1234, details: true };
    const a = (await (await postJson(`${srv.url}/generate`, { inputs: 'Once upon a time', parameters: p })).json()) as { generated_text: string; details: Details };
    const b = (await (await postJson(`${srv.url}/generate`, { inputs: 'Once upon a time', parameters: p })).json()) as { generated_text: string; details: Details };
    assert.equal(a.generated_text, b.generated_text);
    assert.equal(a.details.seed, 1234);
    const { seed: _seed, ...noSeed } = p;
    const bo = (await (await postJson(`${srv.url}/generate`, { inputs: 'Once upon a time', parameters: { ...noSeed, best_of: 2 } })).json()) as { details: Details };
    assert.equal(bo.details.best_of_sequences!.length, 1);
  });

  it('returns k alternatives per token, the chosen token among them for greedy', async () => {
    const res = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 3, details: true, return_k_alternatives: 3 } });
    const body = (await res.json()) as { details: Details };
    for (const t of body.details.tokens) {
      const alts = t.alternative_tokens as { id: number; logprob: number }[];
      assert.equal(alts.length, 3);
      assert.equal(alts[0]!.id, t.id);
    }
  });

  it('stops at a stop sequence, keeping it in the text as LoRAX does', async () => {
    const free = (await (await postJson(`${srv.url}/generate`, { inputs: ref.prompts[0]!.text, parameters: { max_new_tokens: 16 } })).json()) as { generated_text: string };
    const stop = free.generated_text.slice(3, 6);
    assert.ok(stop.length === 3, `need some generated text, got ${JSON.stringify(free.generated_text)}`);
    const res = await postJson(`${srv.url}/generate`, { inputs: ref.prompts[0]!.text, parameters: { max_new_tokens: 16, stop: [stop], details: true } });
    const body = (await res.json()) as { generated_text: string; details: Details };
    assert.equal(body.details.finish_reason, 'stop_sequence');
    assert.ok(body.generated_text.endsWith(stop));
    assert.ok(free.generated_text.startsWith(body.generated_text));
  });

  it('answers merged_adapters like PEFT add_weighted_adapter (linear)', async () => {
    const c = refCase('merged-linear', 1);
    const res = await postJson(`${srv.url}/generate`, {
      inputs: ref.prompts[1]!.text,
      parameters: { max_new_tokens: 16, details: true, merged_adapters: { ids: [adapterDir('r8-qv'), adapterDir('r8-qv-b')], weights: [0.7, 0.5], merge_strategy: 'linear' } },
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { details: Details };
    assert.deepEqual(body.details.tokens.map((t) => t.id), expectedGreedy(c.greedy.ids, 16));
  });

  it('gives clear 4xx errors in LoRAX shape, never a 500', async () => {
    const cases: [unknown, number, RegExp][] = [
      [{ parameters: {} }, 422, /inputs/],
      [{ inputs: 'x', parameters: { temperature: -1 } }, 422, /temperature/],
      [{ inputs: 'x', parameters: { max_new_tokens: 0 } }, 422, /max_new_tokens/],
      [{ inputs: 'x', parameters: { top_p: 1.5 } }, 422, /top_p/],
      [{ inputs: 'x', parameters: { max_new_tokens: 100000 } }, 422, /must be <= 512/],
      [{ inputs: 'x', parameters: { stop: ['a', 'b', 'c', 'd', 'e'] } }, 422, /stop/],
      [{ inputs: 'x', parameters: { adapter_id: '/nonexistent/adapter' } }, 404, /not found/],
      [{ inputs: 'x', parameters: { adapter_id: adapterDir('wrong-shapes') } }, 422, /another model/],
      [{ inputs: 'x', parameters: { adapter_id: 'x', adapter_source: 'pbase' } }, 422, /Predibase's hosted adapter registry/],
      [{ inputs: 'x', parameters: { adapter_id: 's3://bucket/x', adapter_source: 's3' } }, 422, /--s3-buckets/],
      [{ inputs: 'x', parameters: { adapter_id: 'x', adapter_source: 's3' } }, 400, /expected s3:\/\/bucket\/prefix/],
      [{ inputs: 'x'.repeat(3000), parameters: {} }, 422, /must have less than/],
      [{ inputs: 'x', parameters: { response_format: { type: 'json_object', schema: { type: 'string', pattern: '(a)\\1' } } } }, 422, /"pattern"/],
    ];
    for (const [body, status, msg] of cases) {
      const res = await postJson(`${srv.url}/generate`, body);
      const text = await res.text();
      assert.equal(res.status, status, `${JSON.stringify(body).slice(0, 80)} -> ${text}`);
      const err = JSON.parse(text) as { error: string; error_type: string };
      assert.match(err.error, msg);
      assert.equal(typeof err.error_type, 'string');
    }
    const bad = await fetch(`${srv.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"inputs": ' });
    assert.equal(bad.status, 400);
    const big = await fetch(`${srv.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: 'x'.repeat(5 * 1024 * 1024) }) });
    assert.equal(big.status, 413);
    const streamErr = await postJson(`${srv.url}/generate_stream`, { inputs: 'x', parameters: { decoder_input_details: true } });
    assert.equal(streamErr.status, 422);
    const none = await fetch(`${srv.url}/nope`);
    assert.equal(none.status, 404);
    // The server still serves after all that.
    assert.equal((await postJson(`${srv.url}/generate`, { inputs: 'ok', parameters: { max_new_tokens: 1 } })).status, 200);
  });

  it('serves /health, /info, /tokenize and Prometheus /metrics', async () => {
    assert.deepEqual(await (await fetch(`${srv.url}/health`)).json(), { status: 'ok' });
    const info = (await (await fetch(`${srv.url}/info`)).json()) as Record<string, unknown>;
    assert.equal(info.max_total_tokens, 512);
    assert.equal(info.model_device_type, 'cpu');
    const toks = (await (await postJson(`${srv.url}/tokenize`, { inputs: ref.prompts[0]!.text })).json()) as { id: number }[];
    assert.deepEqual(toks.map((t) => t.id), ref.prompts[0]!.ids);
    assert.equal((await fetch(`${srv.url}/no/such/route/${Date.now()}`)).status, 404);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    // Every answer by route pattern: raw paths never become labels.
    const answers = (labels: string) => Number(new RegExp(`^switchboard_backend_http_requests_total\\{${labels}\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);
    assert.ok(answers('route="/generate",method="POST",status="200"') >= 1);
    assert.ok(answers('route="/tokenize",method="POST",status="200"') >= 1);
    assert.ok(answers('route="unmatched",method="GET",status="404"') >= 1);
    assert.ok(!metrics.includes('/no/such/route'));
    for (const name of ['lorax_request_count', 'lorax_request_duration_bucket', 'lorax_request_time_to_first_token_bucket', 'lorax_queue_length', 'lorax_batch_current_size', 'lorax_tokens_generated_total', 'lorax_adapter_loads_total{tier="device"}', 'lorax_adapter_load_duration_bucket', 'lorax_active_adapters']) {
      assert.ok(metrics.includes(name), `metrics lack ${name}`);
    }
  });
});
