// Token byte strings (token-bytes.ts) against the real tokenizers of the three fixture models:
// byte-level BPE (llama, qwen2) and Metaspace + byte-fallback BPE (mistral).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TextTokenizer } from '../text/tokenizer.ts';
import { loadTokenBytes, tokenBytesFromJson, UnsupportedTokenizerError } from './token-bytes.ts';

const MODELS = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models');
const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const concat = (parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));

const SAMPLES = [
  'Hello, world!',
  '{"name": "Ada", "age": 36, "tags": ["x", "y"]}',
  'caf\u00e9 na\u00efve \u00fcber',
  '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8',
  'emoji \u{1F600}\u{1F680} and \u{10348}',
  'tabs\tand\nnewlines\r\n  indented',
  '  leading and trailing spaces  ',
  '\\u00e9 escapes \\" in JSON',
];

for (const model of ['llama', 'mistral', 'qwen2']) {
  describe(`token bytes: ${model}`, () => {
    const dir = join(MODELS, model);
    const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf-8'));
    const tb = loadTokenBytes(dir);
    const added = new Set<number>(tj.added_tokens.map((t: { id: number }) => t.id));

    it('classifies the tokenizer', () => {
      assert.equal(tb.kind, model === 'mistral' ? 'sentencepiece' : 'byte-level');
    });

    it('decodes every vocabulary token as the tokenizer does', async () => {
      const tok = await TextTokenizer.load(dir);
      // An anchor token in front keeps the decoder's start-of-text space stripping out of the way.
      const anchor = tok.encode('a', false).at(-1)!;
      const anchorText = tok.decode([anchor], false);
      let checked = 0;
      for (let id = 0; id < tb.bytes.length; id++) {
        const b = tb.bytes[id];
        if (added.has(id)) {
          assert.equal(b, null, `added token ${id} must never be allowed inside JSON`);
          continue;
        }
        assert.ok(b && b.length > 0, `token ${id} has bytes`);
        const expected = tok.decode([anchor, id], false);
        assert.equal(anchorText + utf8.decode(b), expected, `token ${id} (${JSON.stringify(tok.decode([id], false))})`);
        checked++;
      }
      assert.ok(checked > 300);
    });

    it('concatenated token bytes are exactly the encoded text', async () => {
      const tok = await TextTokenizer.load(dir);
      for (const text of SAMPLES) {
        const ids = tok.encode(text, false);
        const bytes = concat(ids.map((id) => tb.bytes[id]!));
        // SentencePiece prepends "▁" to a text that does not start with one (prepend_scheme "first").
        const want = Buffer.from(model === 'mistral' && !text.startsWith(' ') ? ` ${text}` : text, 'utf-8');
        assert.deepEqual(bytes, want, JSON.stringify(text));
        // Byte-fallback pieces (<0xNN>) really are raw bytes.
        if (model === 'mistral' && /[^\x00-\x7f]/.test(text)) assert.ok(ids.some((id) => /^<0x/.test(tok.decode([id], false)) || tb.bytes[id]!.length === 1));
      }
    });
  });
}

describe('token bytes: other tokenizers', () => {
  it('maps GPT-2 byte-level characters back to bytes', () => {
    const tb = tokenBytesFromJson({
      model: { type: 'BPE', vocab: { '\u0120hi': 0, '\u010a': 1, '\u00e2\u0122': 2, '<|end|>': 3 } },
      decoder: { type: 'ByteLevel' },
      added_tokens: [{ id: 3, content: '<|end|>', special: true }],
    });
    assert.deepEqual([...tb.bytes[0]!], [0x20, 0x68, 0x69]);
    assert.deepEqual([...tb.bytes[1]!], [0x0a]);
    assert.deepEqual([...tb.bytes[2]!], [0xe2, 0x80]);
    assert.equal(tb.bytes[3], null);
  });

  it('reads Unigram vocabularies with a Metaspace decoder', () => {
    const tb = tokenBytesFromJson({
      model: { type: 'Unigram', vocab: [['<unk>', 0], ['\u2581x', -1], ['y\u2581', -2]] },
      decoder: { type: 'Metaspace', replacement: '\u2581' },
      added_tokens: [{ id: 0, content: '<unk>', special: true }],
    });
    assert.equal(tb.bytes[0], null);
    assert.equal(Buffer.from(tb.bytes[1]!).toString(), ' x');
    assert.equal(Buffer.from(tb.bytes[2]!).toString(), 'y ');
  });

  it('refuses tokenizers whose token text it cannot know', () => {
    assert.throws(() => tokenBytesFromJson({ model: { type: 'WordPiece', vocab: {} }, decoder: { type: 'WordPiece' } }), UnsupportedTokenizerError);
    assert.throws(() => tokenBytesFromJson({ model: { type: 'BPE', vocab: { a: 0 } }, decoder: null }), UnsupportedTokenizerError);
    assert.throws(() => tokenBytesFromJson({ model: { type: 'BPE', vocab: { a: 0 }, end_of_word_suffix: '</w>' }, decoder: { type: 'BPEDecoder' } }), UnsupportedTokenizerError);
  });
});
