// A large request body's prompt stays off the backend's event loop (issue 15): the body goes to
// the JSON parser thread chunk by chunk, its prompt stays there (json-body.ts's LargeText) and the
// tokenizer thread fetches it from there, so neither the body nor the multi-megabyte string is
// ever made on the loop; it comes to the loop only when the answer repeats it (return_full_text,
// echo). The answers are the same as for the same prompt sent small: errors in each API's shape,
// truncation, the repeated prompt. The server runs in this process so the counters can be read.
// (The production thresholds are 64 KiB for both; see below.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../helpers/backend.ts';

// Low thresholds (read when json-body.ts loads, hence the imports below): a body over 4 KiB streams
// to the parser thread and a prompt of 600 characters or more stays there, so a kept prompt can be
// short enough for the fixture's 511-token limit (echo cannot truncate); prompts over 100
// characters are encoded on the tokenizer pool.
process.env.SWITCHBOARD_JSON_INLINE_MAX_BYTES = '4096';
process.env.SWITCHBOARD_LARGE_TEXT_MIN_CHARS = '600';
// Below the kept size, as in production (2,048 < 64 Ki): a kept prompt is encoded on the pool.
process.env.SWITCHBOARD_TOKENIZE_INLINE_MAX_CHARS = '100';
const { bodyStats, LARGE_TEXT_MIN_CHARS } = await import('../../backend/json-body.ts');
const { postJson, readSSE, startBackend } = await import('../helpers/backend.ts');

const words = 'the quick brown fox jumps over the lazy dog and runs far away ';
const prompt = (chars: number) => words.repeat(Math.ceil(chars / words.length)).slice(0, chars);

describe('large prompt bodies', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend(['--threads', '1']);
  });
  after(() => srv.close());

  /** What a call did to the counters, with the answer. */
  async function call(path: string, body: unknown) {
    const s0 = { ...bodyStats };
    const res = await postJson(`${srv.url}${path}`, body);
    const text = await res.text();
    const d = Object.fromEntries(Object.entries(bodyStats).map(([k, v]) => [k, v - s0[k as keyof typeof s0]])) as typeof bodyStats;
    return { status: res.status, text, d };
  }

  it('refuses a 1 MB prompt at the token bound without the prompt reaching the loop (LoRAX and OpenAI shapes)', async () => {
    const big = prompt(1_000_000);
    const lorax = await call('/generate', { inputs: big, parameters: { max_new_tokens: 2 } });
    assert.equal(lorax.status, 422, lorax.text.slice(0, 300));
    const le = JSON.parse(lorax.text) as { error: string; error_type: string };
    assert.match(le.error, /^Input validation error: `inputs` must have less than 511 tokens\. Given: at least \d+$/);
    assert.equal(le.error_type, 'validation');
    const openai = await call('/v1/completions', { model: 'llama', prompt: big, max_tokens: 2 });
    assert.equal(openai.status, 400, openai.text.slice(0, 300));
    const oe = JSON.parse(openai.text) as { error: { message: string; type: string } };
    assert.match(oe.error.message, /must have less than 511 tokens\. Given: at least \d+/);
    assert.equal(oe.error.type, 'invalid_request_error');
    for (const r of [lorax, openai]) {
      assert.equal(r.d.keptTexts, 1);
      assert.equal(r.d.textsToLoop, 0);
      assert.equal(r.d.gatheredBytes, 0);
      assert.ok(r.d.streamedBytes > 1_000_000);
    }
  });

  it('truncates a kept prompt on the tokenizer thread, as it truncates the same prompt inline', async () => {
    const big = prompt(LARGE_TEXT_MIN_CHARS + 5_000);
    const kept = await call('/generate', { inputs: big, parameters: { max_new_tokens: 3, truncate: 40, details: true, decoder_input_details: true } });
    assert.equal(kept.status, 200, kept.text.slice(0, 300));
    assert.equal(kept.d.keptTexts, 1);
    assert.equal(kept.d.textsToLoop, 0);
    // The same prompt tail sent small (inline, no kept text) must give the same prefill tokens and text.
    const tail = big.slice(-2_000);
    const small = await call('/generate', { inputs: tail, parameters: { max_new_tokens: 3, truncate: 40, details: true, decoder_input_details: true } });
    assert.equal(small.status, 200, small.text.slice(0, 300));
    assert.equal(small.d.keptTexts, 0);
    type R = { generated_text: string; details: { prompt_tokens: number; prefill: { id: number }[] } };
    const a = JSON.parse(kept.text) as R;
    const b = JSON.parse(small.text) as R;
    assert.equal(a.details.prompt_tokens, 40);
    assert.deepEqual(a.details.prefill.map((t) => t.id).slice(1), b.details.prefill.map((t) => t.id).slice(1));
    assert.equal(a.generated_text, b.generated_text);
  });

  it("truncates from the kept prompt's end, and from the whole where its end has nowhere to cut: the ids of the full encode", async () => {
    const { TextTokenizer } = await import('../../backend/text/tokenizer.ts');
    const tok = await TextTokenizer.load(new URL('../fixtures/models/llama', import.meta.url).pathname);
    // Prose (the tokenizer thread fetches only the end: encode-tail.ts), then prose ending in 30,000
    // digits, where nothing can be cut (the end is not enough, so it fetches the whole).
    for (const big of [prompt(300_000), `${prompt(300_000)} ${'0123456789'.repeat(3_000)}`]) {
      const r = await call('/generate', { inputs: big, parameters: { max_new_tokens: 1, truncate: 40, details: true, decoder_input_details: true } });
      assert.equal(r.status, 200, r.text.slice(0, 300));
      assert.equal(r.d.keptTexts, 1);
      assert.equal(r.d.textsToLoop, 0);
      const ids = (JSON.parse(r.text) as { details: { prefill: { id: number }[] } }).details.prefill.map((t) => t.id);
      assert.deepEqual(ids, tok.encode(big, true).slice(-40));
    }
  });

  it('repeats a kept prompt where the answer asks for it (return_full_text, echo), never the stand-in', async () => {
    const big = prompt(LARGE_TEXT_MIN_CHARS + 4_000);
    const full = await call('/generate', { inputs: big, parameters: { max_new_tokens: 2, truncate: 16, return_full_text: true } });
    assert.equal(full.status, 200, full.text.slice(0, 300));
    assert.equal(full.d.keptTexts, 1);
    assert.equal(full.d.textsToLoop, 1);
    assert.ok((JSON.parse(full.text) as { generated_text: string }).generated_text.startsWith(big));
    const stream = await postJson(`${srv.url}/generate_stream`, { inputs: big, parameters: { max_new_tokens: 2, truncate: 16, return_full_text: true } });
    const events = (await readSSE(stream)).map((d) => JSON.parse(d) as { generated_text: string | null });
    assert.ok(events.at(-1)!.generated_text!.startsWith(big));
    // echo: a kept prompt under the token limit (padded with spaces past the inline body size).
    const short = prompt(LARGE_TEXT_MIN_CHARS + 50);
    const echo = await call('/v1/completions', { model: 'llama', prompt: short, max_tokens: 2, echo: true, user: 'u'.repeat(5000) });
    assert.equal(echo.status, 200, echo.text.slice(0, 300));
    assert.equal(echo.d.keptTexts, 1);
    assert.equal(echo.d.textsToLoop, 1);
    assert.ok((JSON.parse(echo.text) as { choices: { text: string }[] }).choices[0]!.text.startsWith(short));
    const plain = await call('/v1/completions', { model: 'llama', prompt: short, max_tokens: 2, user: 'u'.repeat(5000) });
    assert.equal(plain.status, 200, plain.text.slice(0, 300));
    assert.equal(plain.d.keptTexts, 1);
    assert.equal(plain.d.textsToLoop, 0);
    assert.ok(!plain.text.includes('\u2026'));
  });

  it('answers a large body with bad JSON in each API shape', async () => {
    const bad = `{"inputs": "${prompt(200_000)}", "parameters": {`;
    const lorax = await fetch(`${srv.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bad });
    assert.equal(lorax.status, 400);
    assert.match(((await lorax.json()) as { error: string }).error, /^request body is not valid JSON/);
    const openai = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bad.replace('"inputs"', '"prompt"') });
    assert.equal(openai.status, 400);
    assert.match(((await openai.json()) as { error: { message: string } }).error.message, /^request body is not valid JSON/);
    // A body whose kept field has the wrong neighbours still gets the schema's answer (the stand-in never shows).
    const wrong = await call('/generate', { inputs: prompt(LARGE_TEXT_MIN_CHARS + 10), parameters: { max_new_tokens: -1 } });
    assert.equal(wrong.status, 422);
    assert.match((JSON.parse(wrong.text) as { error: string }).error, /max_new_tokens/);
    assert.ok(!wrong.text.includes('\u2026'));
  });
});
