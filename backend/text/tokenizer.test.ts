// The JS tokenizer and chat template against transformers' own output on the fixture models
// (byte-level BPE for llama/qwen2, sentencepiece-style BPE with byte fallback for mistral).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ChatTemplateError, IncrementalDecoder, TextTokenizer, type ChatTurn } from './tokenizer.ts';

const FIXTURES = join(import.meta.dirname, '..', '..', 'test', 'fixtures');

interface Ref {
  eos_token_id: number;
  bos_token_id: number | null;
  generation_eos_token_id: number | number[];
  tokenization: { text: string; ids: number[]; ids_no_special: number[]; decoded: string; decoded_skip_special: string }[];
  chat: { messages: ChatTurn[]; add_generation_prompt: boolean; text: string; ids: number[] }[];
}

for (const model of ['llama', 'mistral', 'qwen2']) {
  describe(`${model} tokenizer vs transformers`, async () => {
    const ref = JSON.parse(readFileSync(join(FIXTURES, 'reference', `${model}.json`), 'utf-8')) as Ref;
    const tok = await TextTokenizer.load(join(FIXTURES, 'models', model));

    it('encodes exactly as transformers, with and without special tokens', () => {
      for (const t of ref.tokenization) {
        assert.deepEqual(tok.encode(t.text), t.ids, JSON.stringify(t.text));
        assert.deepEqual(tok.encode(t.text, false), t.ids_no_special, JSON.stringify(t.text));
      }
    });

    it('decodes exactly as transformers', () => {
      for (const t of ref.tokenization) {
        assert.equal(tok.decode(t.ids, false), t.decoded, JSON.stringify(t.text));
        assert.equal(tok.decode(t.ids, true), t.decoded_skip_special, JSON.stringify(t.text));
      }
    });

    it('renders the chat template and its tokens exactly as apply_chat_template', () => {
      for (const c of ref.chat) {
        assert.equal(tok.applyChatTemplate(c.messages, c.add_generation_prompt), c.text);
        assert.deepEqual(tok.encodeChat(c.messages, c.add_generation_prompt), c.ids);
      }
    });

    it('knows the end-of-sequence ids from generation_config.json', () => {
      const expected = Array.isArray(ref.generation_eos_token_id) ? ref.generation_eos_token_id : [ref.generation_eos_token_id];
      assert.deepEqual(tok.eosTokenIds, expected);
      assert.equal(tok.bosTokenId, ref.bos_token_id);
    });

    it('streams text that adds up to the full decode, never half a character', () => {
      for (const t of ref.tokenization) {
        const d = new IncrementalDecoder(tok);
        let text = '';
        for (const id of t.ids_no_special) {
          const delta = d.push(id);
          assert.ok(!delta.includes('\uFFFD'), `replacement char streamed for ${JSON.stringify(t.text)}`);
          text += delta;
        }
        text += d.flush();
        assert.equal(text, tok.decode(t.ids_no_special, true), JSON.stringify(t.text));
      }
    });
  });
}

describe('chat template errors', () => {
  it('raise_exception in a template is a ChatTemplateError', async () => {
    const tok = await TextTokenizer.load(join(FIXTURES, 'models', 'mistral'));
    assert.throws(
      () => tok.applyChatTemplate([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]),
      (e: unknown) => e instanceof ChatTemplateError && /alternate/.test(e.message),
    );
  });
});
