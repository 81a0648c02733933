// Issue 13, through real HTTP: the text of every route is the decode of the generated ids, token
// texts add up to it, and streamed pieces add up to the final text. Run on the llama fixture and on
// the same model with clean_up_tokenization_spaces=True (the setting that made " ," lose its comma).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TextTokenizer } from '../../backend/text/tokenizer.ts';
import { postJson, readSSE, startBackend, type TestServer } from '../helpers/backend.ts';

const LLAMA = join(import.meta.dirname, '..', 'fixtures', 'models', 'llama');
const SCHEMA = { type: 'array', items: { type: 'integer' }, maxItems: 6 };
const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

interface Tok {
  id: number;
  text: string;
  special: boolean;
}

/** The llama fixture with clean_up_tokenization_spaces switched on and forced for its BPE model (nothing else changes). */
function cleanupModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sb-cleanup-'));
  cpSync(LLAMA, dir, { recursive: true });
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf-8')) as Record<string, unknown>;
  cfg.clean_up_tokenization_spaces = true;
  cfg.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = true; // recent transformers skip it for BPE otherwise
  writeFileSync(cfgPath, JSON.stringify(cfg));
  return dir;
}

for (const variant of ['llama', 'llama with clean-up'] as const) {
  describe(`text fidelity on every route (${variant})`, () => {
    let srv: TestServer;
    let dir = LLAMA;
    let tok: TextTokenizer;
    before(async () => {
      if (variant !== 'llama') dir = cleanupModel();
      srv = await startBackend(['--model-id', dir]);
      tok = await TextTokenizer.load(dir);
    });
    after(async () => {
      await srv.close();
      if (dir !== LLAMA) rmSync(dir, { recursive: true, force: true });
    });

    const params = (seed: number) => ({
      max_new_tokens: 40,
      temperature: 1.5,
      seed,
      details: true,
      response_format: { type: 'json_object', schema: SCHEMA },
    });

    it('/generate: generated_text is the decode of the token ids, and the token texts add up to it', async () => {
      let rewritten = 0;
      // JSON mode (the repro) and free text (where clean-up has more to rewrite)
      const runs = SEEDS.flatMap((seed) => [
        { seed, json: true, inputs: 'Numbers:', parameters: params(seed) as Record<string, unknown> },
        { seed, json: false, inputs: "Hello , world ! it 's", parameters: { max_new_tokens: 40, temperature: 1.5, seed, details: true } },
      ]);
      for (const { seed, json, inputs, parameters } of runs) {
        const res = await postJson(`${srv.url}/generate`, { inputs, parameters });
        assert.equal(res.status, 200);
        const body = (await res.json()) as { generated_text: string; details: { tokens: Tok[] } };
        const ids = body.details.tokens.map((t) => t.id);
        assert.equal(body.generated_text, tok.decode(ids, true), `seed ${seed}`);
        const nonSpecial = body.details.tokens.filter((t) => !t.special);
        assert.equal(nonSpecial.map((t) => t.text).join(''), body.generated_text, `seed ${seed}: token texts`);
        for (const t of body.details.tokens.filter((t) => t.special)) assert.equal(t.text, tok.decode([t.id], false));
        // how often clean-up changed the text compared to the tokens decoded one by one
        if (nonSpecial.map((t) => tok.decode([t.id], true)).join('') !== body.generated_text) rewritten++;
        if (json) JSON.parse(body.generated_text); // JSON mode on the llama fixture: a finished output parses
      }
      if (variant !== 'llama') assert.ok(rewritten > 0, 'these seeds should exercise clean-up (a space before a comma)');
    });

    it('/generate_stream: streamed token texts add up to the final generated_text, which matches /generate', async () => {
      for (const seed of SEEDS.slice(0, 6)) {
        const plain = (await (await postJson(`${srv.url}/generate`, { inputs: 'Numbers:', parameters: params(seed) })).json()) as { generated_text: string };
        const res = await postJson(`${srv.url}/generate_stream`, { inputs: 'Numbers:', parameters: params(seed) });
        assert.equal(res.status, 200);
        const events = (await readSSE(res)).map((d) => JSON.parse(d) as { token: Tok; generated_text: string | null });
        const final = events.at(-1)!;
        assert.equal(final.generated_text, plain.generated_text, `seed ${seed}`);
        const ids = events.map((e) => e.token.id);
        assert.equal(final.generated_text, tok.decode(ids, true));
        assert.equal(events.filter((e) => !e.token.special).map((e) => e.token.text).join(''), final.generated_text, `seed ${seed}`);
      }
    });

    it('prompt token texts (decoder_input_details, echo logprobs) add up to the decode of the prompt ids', async () => {
      // " ," " ?" " 's" split over two tokens each: clean-up rewrites across token boundaries
      const inputs = "[\n 9210 ,\n -2429 ,\n ] Non ? it 's";
      const res = await postJson(`${srv.url}/generate`, { inputs, parameters: { max_new_tokens: 2, decoder_input_details: true, details: true } });
      const body = (await res.json()) as { details: { prefill: { id: number; text: string }[] } };
      const ids = body.details.prefill.map((t) => t.id);
      const texts = body.details.prefill.map((t) => t.text);
      assert.equal(texts.join(''), tok.decode(ids, false));
      const comma = ids.indexOf(tok.encode(',', false)[0]!);
      assert.equal(texts[comma], ',');
      if (variant === 'llama') assert.equal(texts.join(''), `<|begin_of_text|>${inputs}`);
      else {
        assert.equal(texts.join(''), "<|begin_of_text|>[\n 9210,\n -2429,\n ] Non? it's");
        assert.equal(texts[comma - 1], '', 'the space before the comma is removed, so its token shows nothing');
      }
      const oa = (await (await postJson(`${srv.url}/v1/completions`, { model: srv.rt.modelName, prompt: inputs, max_tokens: 1, echo: true, logprobs: 0, temperature: 0 })).json()) as {
        choices: { logprobs: { tokens: string[] } }[];
      };
      assert.equal(oa.choices[0]!.logprobs.tokens.slice(0, ids.length).join(''), tok.decode(ids, false));
    });

    it('stop sequences cut the decoded text at the first match: after it on /generate, before it on /v1', async () => {
      let tested = 0;
      for (const seed of SEEDS) {
        const free = { max_new_tokens: 30, temperature: 1.5, seed };
        const full = ((await (await postJson(`${srv.url}/generate`, { inputs: 'Hello , world !', parameters: free })).json()) as { generated_text: string }).generated_text;
        if (full.length < 8) continue;
        const mid = Math.floor(full.length / 2);
        const stop = full.slice(mid, mid + 2);
        const at = full.indexOf(stop);
        const lorax = (await (await postJson(`${srv.url}/generate`, { inputs: 'Hello , world !', parameters: { ...free, stop: [stop], details: true } })).json()) as {
          generated_text: string;
          details: { finish_reason: string };
        };
        assert.equal(lorax.generated_text, full.slice(0, at + stop.length), `seed ${seed}, stop ${JSON.stringify(stop)}`);
        assert.equal(lorax.details.finish_reason, 'stop_sequence');
        const body = { model: srv.rt.modelName, prompt: 'Hello , world !', max_tokens: 30, temperature: 1.5, seed, stop: [stop] };
        const oa = (await (await postJson(`${srv.url}/v1/completions`, body)).json()) as { choices: { text: string; finish_reason: string }[] };
        assert.equal(oa.choices[0]!.text, full.slice(0, at), `seed ${seed}, stop ${JSON.stringify(stop)}`);
        assert.equal(oa.choices[0]!.finish_reason, 'stop');
        const streamed = (await readSSE(await postJson(`${srv.url}/v1/completions`, { ...body, stream: true })))
          .filter((d) => d !== '[DONE]')
          .flatMap((d) => (JSON.parse(d) as { choices: { text: string }[] }).choices.map((x) => x.text))
          .join('');
        assert.equal(streamed, full.slice(0, at));
        tested++;
      }
      assert.ok(tested >= 6, `only ${tested} seeds gave text long enough`);
    });

    it('/v1/completions and /v1/chat/completions: stream deltas and logprob tokens add up to the content', async () => {
      for (const seed of SEEDS.slice(0, 6)) {
        const body = { model: srv.rt.modelName, prompt: 'Numbers:', max_tokens: 40, temperature: 1.5, seed, logprobs: 2, response_format: { type: 'json_object', schema: SCHEMA } };
        const plain = (await (await postJson(`${srv.url}/v1/completions`, body)).json()) as {
          choices: { text: string; finish_reason: string; logprobs: { tokens: string[]; text_offset: number[] } }[];
        };
        if (!plain.choices) assert.fail(JSON.stringify(plain));
        const c = plain.choices[0]!;
        JSON.parse(c.text);
        const joined = c.logprobs.tokens.join('');
        // the last token may be the end-of-sequence token, shown by its content
        assert.ok(joined === c.text || tok.isSpecial(tok.encode(joined.slice(c.text.length), false)[0] ?? -1), `seed ${seed}: ${JSON.stringify(joined)} vs ${JSON.stringify(c.text)}`);
        assert.ok(joined.startsWith(c.text));
        c.logprobs.text_offset.forEach((o, i) => assert.equal(o, c.logprobs.tokens.slice(0, i).join('').length));

        const streamed = await readSSE(await postJson(`${srv.url}/v1/completions`, { ...body, stream: true }));
        const text = streamed
          .filter((d) => d !== '[DONE]')
          .map((d) => JSON.parse(d) as { choices: { text: string }[] })
          .flatMap((d) => d.choices.map((x) => x.text))
          .join('');
        assert.equal(text, c.text, `seed ${seed}: completion stream`);

        const chatBody = { model: srv.rt.modelName, messages: [{ role: 'user', content: 'Numbers?' }], max_tokens: 40, temperature: 1.5, seed, logprobs: true, top_logprobs: 2, response_format: { type: 'json_object', schema: SCHEMA } };
        const chat = (await (await postJson(`${srv.url}/v1/chat/completions`, chatBody)).json()) as {
          choices: { message: { content: string }; logprobs: { content: { token: string; bytes: number[] }[] } }[];
        };
        if (!chat.choices) assert.fail(JSON.stringify(chat));
        const content = chat.choices[0]!.message.content;
        const lp = chat.choices[0]!.logprobs.content;
        assert.ok(lp.map((t) => t.token).join('').startsWith(content));
        for (const t of lp) assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf-8')]);
        const chunks = (await readSSE(await postJson(`${srv.url}/v1/chat/completions`, { ...chatBody, stream: true })))
          .filter((d) => d !== '[DONE]')
          .map((d) => JSON.parse(d) as { choices: { delta: { content?: string } }[] });
        assert.equal(chunks.flatMap((d) => d.choices.map((x) => x.delta.content ?? '')).join(''), content, `seed ${seed}: chat stream`);
      }
    });
  });
}
