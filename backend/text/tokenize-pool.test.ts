// The tokenizer pool: the same ids as the inline tokenizer for large inputs (on the worker
// threads), the early token bound (never wrong: every text it refuses really has more tokens),
// errors carried across the thread boundary, and the event loop left free while a large prompt
// is encoded.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { tokensAtLeast } from '../request-limits.ts';
import { INLINE_MAX_CHARS, maxCharsPerToken, TokenizePool, TooManyTokensError } from './tokenize-pool.ts';
import { ChatTemplateError, TextTokenizer } from './tokenizer.ts';

const MODELS = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models');

describe('maxCharsPerToken', () => {
  const json = (m: string) => JSON.parse(readFileSync(join(MODELS, m, 'tokenizer.json'), 'utf-8')) as Record<string, unknown>;

  it('bounds byte-level BPE, byte-fallback BPE and an NFC normalizer; refuses what can drop text', () => {
    assert.equal(maxCharsPerToken(json('llama')), 19, 'the longest token: <|start_header_id|>');
    assert.ok(maxCharsPerToken(json('mistral'))! > 0);
    assert.equal(maxCharsPerToken(json('qwen2'))! % 4, 0, 'NFC can join up to 4 code points into one');
    const llama = json('llama');
    assert.equal(maxCharsPerToken({ ...llama, normalizer: { type: 'Strip', strip_left: true, strip_right: true } }), null);
    assert.equal(maxCharsPerToken({ ...llama, pre_tokenizer: { type: 'Whitespace' } }), null);
    assert.equal(maxCharsPerToken({ ...llama, model: { ...(llama.model as object), unk_token: '<unk>', fuse_unk: true, byte_fallback: false } }), null);
    assert.equal(maxCharsPerToken({ ...llama, model: { type: 'WordPiece', vocab: {} } }), null);
  });
});

for (const model of ['llama', 'mistral', 'qwen2']) {
  describe(`tokenizer pool (${model})`, () => {
    let tok: TextTokenizer;
    let pool: TokenizePool;
    before(async () => {
      tok = await TextTokenizer.load(join(MODELS, model));
      pool = await TokenizePool.create(join(MODELS, model), tok, null, { size: 2 });
    });
    after(() => pool.close());

    // Words, digits, punctuation, whitespace runs, accents (composed and not), CJK, emoji.
    const alphabet = ['the', ' quick', ' Brown', ' fox', '123', '4567', '!!', ' ?', '\n\n', '  ', '\t', 'é', 'e\u0301', '日本語', '😀', 'ß', '<|eot_id|>', '</s>', '▁'];
    const randomText = (rand: () => number, pieces: number) => Array.from({ length: pieces }, () => alphabet[Math.floor(rand() * alphabet.length)]!).join('');

    it('the bound never refuses a text that fits: tokens >= chars / maxCharsPerToken', () => {
      const rand = mulberry32(7);
      const L = pool.maxCharsPerToken;
      if (L === null) return;
      for (let i = 0; i < 300; i++) {
        const text = randomText(rand, 1 + Math.floor(rand() * 40));
        for (const special of [true, false]) assert.ok(tok.encode(text, special).length >= tokensAtLeast(text.length, L), JSON.stringify(text));
      }
    });

    it('large inputs: the same ids, chat ids and token texts on the worker as inline', async () => {
      const rand = mulberry32(11);
      const text = randomText(rand, 3000);
      assert.ok(text.length > INLINE_MAX_CHARS);
      assert.deepEqual(await pool.encode(text), tok.encode(text));
      assert.deepEqual(await pool.encode(text, false), tok.encode(text, false));
      if (tok.hasChatTemplate) {
        const messages = [{ role: 'user', content: text }, { role: 'assistant', content: 'ok' }, { role: 'user', content: text.slice(0, 5000) }];
        assert.deepEqual(await pool.encodeChat(messages), tok.encodeChat(messages));
      }
      if (model === 'mistral') {
        // Its template refuses roles that do not alternate: the refusal crosses the thread as a ChatTemplateError.
        await assert.rejects(pool.encodeChat([{ role: 'user', content: text }, { role: 'user', content: text }]), (e: unknown) => e instanceof ChatTemplateError && /alternate/.test(e.message));
      }
      // Truncation (keepLast): the last ids of the full encoding, from the worker and inline alike.
      const all = tok.encode(text);
      assert.deepEqual(await pool.encode(text, true, null, 7), all.slice(all.length - 7));
      assert.deepEqual(await pool.encode(text.slice(0, 100), true, null, 3), tok.encode(text.slice(0, 100)).slice(-3));
      assert.deepEqual(await pool.encode(text, true, null, all.length + 5), all);
      const d = await pool.detail(text.slice(0, 4000), true);
      assert.deepEqual(d.ids, tok.encode(text.slice(0, 4000)));
      assert.deepEqual(d.texts, d.ids.map((i) => tok.decode([i], false)));
      assert.deepEqual(d.special, d.ids.map((i) => tok.isSpecial(i)));
    });

    it('refuses over-long texts: by length alone when it can, else after encoding', async () => {
      const long = 'abc '.repeat(100_000);
      const t0 = performance.now();
      const err = await pool.encode(long, true, 100).then(() => null, (e: unknown) => e);
      const took = performance.now() - t0;
      assert.ok(err instanceof TooManyTokensError);
      assert.ok(err.atLeast > 100 && err.atLeast <= tok.encode(long).length, 'a true lower bound');
      if (pool.maxCharsPerToken !== null) assert.ok(took < 50, `refused without encoding (${took.toFixed(1)} ms)`);
      await assert.rejects(pool.detail('x y '.repeat(1000), true, 10), TooManyTokensError);
      assert.equal((await pool.encode(long, true, null)).length, tok.encode(long).length, 'no limit: encoded in full');
    });
  });
}

describe('tokenizer pool and the event loop', () => {
  it('a 1 MB prompt encodes on a worker while the event loop stays free', async () => {
    const tok = await TextTokenizer.load(join(MODELS, 'llama'));
    const pool = await TokenizePool.create(join(MODELS, 'llama'), tok, null, { size: 1 });
    try {
      await pool.encode('warm up the worker '.repeat(200));
      const text = 'the quick brown fox jumps over the lazy dog '.repeat(23_000);
      const h = monitorEventLoopDelay({ resolution: 5 });
      h.enable();
      const t0 = performance.now();
      const ids = await pool.encode(text);
      const took = performance.now() - t0;
      h.disable();
      assert.ok(ids.length > 100_000);
      // The encode itself takes seconds here; the loop's worst delay stays far below that.
      assert.ok(h.max / 1e6 < Math.max(200, took / 5), `event loop delay up to ${(h.max / 1e6).toFixed(0)} ms while encoding took ${took.toFixed(0)} ms`);
    } finally {
      await pool.close();
    }
  });
});
