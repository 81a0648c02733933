// encodeLast against the full encode (whose ids the decode and tokenizer tests hold to
// transformers'), on every fixture tokenizer: byte-level BPE with the Llama 3 and Qwen2 regexes,
// Metaspace BPE with byte fallback, WordPiece; on prose, whitespace runs, digit runs, long words
// without spaces, CJK, emoji and special-token text; and that ordinary text really is encoded
// from a window, not in full.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { cutAt, encodeLast, tailChars, tailEncodable, type Encoder, type TailCuts } from './encode-tail.ts';
import { TextTokenizer } from './tokenizer.ts';

const FIXTURES = join(import.meta.dirname, '..', '..', 'test', 'fixtures');

/**
 * The fixture vocabularies are too small to merge runs of a character, where a token depends on
 * where the run starts (BPE pairs 'aaaaa' as aa|aa|a from its left end): a copy of a fixture
 * tokenizer with such merges, the case a careless cut gets wrong.
 */
function withRunMerges(model: string): string {
  const src = join(FIXTURES, 'models', model);
  const json = JSON.parse(readFileSync(join(src, 'tokenizer.json'), 'utf-8')) as { model: { vocab: Record<string, number>; merges: [string, string][] }; added_tokens: { id: number }[] };
  let next = Math.max(...Object.values(json.model.vocab), ...json.added_tokens.map((t) => t.id)) + 1;
  for (const [a, b] of [['a', 'a'], ['aa', 'a'], ['aa', 'aa'], ['aaaa', 'aaaa'], ['1', '1'], ['11', '11'], ['-', '-'], ['--', '--'], ['b', 'a'], ['ab', 'ab']]) {
    for (const piece of [a, b]) json.model.vocab[piece!] ??= next++;
    json.model.vocab[a! + b!] ??= next++;
    json.model.merges.unshift([a!, b!]);
  }
  const dir = mkdtempSync(join(tmpdir(), `sb-runs-${model}-`));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  if (existsSync(join(src, 'tokenizer_config.json'))) copyFileSync(join(src, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  return dir;
}

const dirs = [
  ...readdirSync(join(FIXTURES, 'models')).map((m) => join(FIXTURES, 'models', m)),
  ...readdirSync(join(FIXTURES, 'tokenizers')).map((m) => join(FIXTURES, 'tokenizers', m)),
  withRunMerges('llama'),
  withRunMerges('mistral'),
];
const nameOf = (dir: string) => (dir.startsWith(FIXTURES) ? dir.slice(FIXTURES.length + 1) : `${dir.split('-')[2]} with run merges`);

const words = ['the', 'quick', 'Brown', 'fox', "don't", 'über', 'naïve', 'e\u0301te\u0301', '日本語', '😀', 'ß', 'x.y', '<|eot_id|>', '</s>', '[CLS]', '▁', 'Ġ'];
const seps = [' ', ' ', ' ', '  ', '\n', '\n\n', '\t', ' \n ', '. ', ', ', '!! ', '   '];
/** Prose-like text with every kind of piece; `runs` adds long stretches without spaces. */
function randomText(rand: () => number, chars: number, runs: boolean): string {
  const out: string[] = [];
  let n = 0;
  const pick = <T,>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!;
  while (n < chars) {
    let piece: string;
    const r = rand();
    if (runs && r < 0.02) piece = pick(['a', '1', '日', '😀', '-', 'ab']).repeat(50 + Math.floor(rand() * 3000));
    else if (r < 0.08) piece = String(Math.floor(rand() * 1e9));
    else piece = pick(words);
    piece += pick(seps);
    out.push(piece);
    n += piece.length;
  }
  return out.join('');
}

/** An Encoder that records how long the texts it was asked to encode were. */
function counting(tok: TextTokenizer) {
  const lengths: number[] = [];
  const enc: Encoder = { encode: (t, s) => (lengths.push(t.length), tok.encode(t, s)) };
  return { enc, lengths };
}

for (const dir of dirs) {
  const name = nameOf(dir);
  describe(`encodeLast (${name})`, () => {
    let tok: TextTokenizer;
    let eligible: TailCuts;
    before(async () => {
      tok = await TextTokenizer.load(dir);
      eligible = tailEncodable(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf-8')) as Record<string, unknown>);
    });

    it('qualifies (all but the one whose added token contains a space)', () => {
      assert.equal(eligible !== null, name !== 'tokenizers/bytelevel-cleanup');
    });

    it('the last N ids equal those of the full encode', () => {
      const rand = mulberry32(name.length * 7919 + 3);
      for (let k = 0; k < 4; k++) {
        const text = randomText(rand, 24_000 + Math.floor(rand() * 8000), k % 2 === 1);
        for (const special of [true, false]) {
          const all = tok.encode(text, special);
          for (const keep of [1, 37, 511, 1500]) {
            const want = all.slice(Math.max(0, all.length - keep));
            const label = `${name} text ${k} special ${special} keep ${keep}`;
            assert.deepEqual(encodeLast(tok, text, special, keep, eligible), want, label);
            // Given only the end of the text: the same ids, or null (fetch the whole).
            const tail = encodeLast(tok, text.slice(-tailChars(keep)), special, keep, eligible, false);
            if (tail !== null) assert.deepEqual(tail, want, `${label} (tail only)`);
          }
        }
      }
    });

    it('a long word across the window (its tokens depend on where it starts): the same ids', () => {
      const rand = mulberry32(17);
      const prose = randomText(rand, 20_000, false);
      for (const [unit, count] of [['a', 9001], ['ab', 4000], ['1', 7777], ['日', 3001], ['-', 5000], ['😀', 1201]] as const) {
        for (const end of [' end.', ' the end of it', '']) {
          const text = `${prose} ${unit.repeat(count)}${end}`;
          const all = tok.encode(text, true);
          for (const keep of [3, 40, 300, 1500]) {
            assert.deepEqual(encodeLast(tok, text, true, keep, eligible), all.slice(Math.max(0, all.length - keep)), `${name} ${unit} x ${count}${end} keep ${keep}`);
          }
        }
      }
    });

    it('encodes ordinary text from a window, not in full', () => {
      if (!eligible) return;
      const text = randomText(mulberry32(5), 60_000, false);
      const { enc, lengths } = counting(tok);
      const ids = encodeLast(enc, text, true, 200, eligible)!;
      assert.equal(ids.length, 200);
      assert.ok(Math.max(...lengths) < text.length / 4, `encoded ${Math.max(...lengths)} of ${text.length} chars`);
      assert.notEqual(encodeLast(enc, text.slice(-tailChars(200)), true, 200, eligible, false), null, 'the fetched tail is enough');
    });

    it('text without spaces (CJK with its punctuation, hyphenated words, special tokens in it): the same ids, from a window where a regex splits it', () => {
      const rand = mulberry32(23);
      const pick = <T,>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
      const cjk = ['日本語', '中文', '東京', 'テスト', 'ひらがな', '한국어', '文字'];
      const glue = ['，', '。', '、', '「', '」', '-', '.', ',', '!', '<|eot_id|>', '</s>', '<|im_start|>', '[SEP]'];
      const words = ['the', 'quick', 'Brown', 'fox', 'ab', 'aaaa', '1234'];
      for (let k = 0; k < 3; k++) {
        const parts: string[] = [];
        for (let n = 0; n < 20_000; ) {
          const piece = (k === 0 ? pick(cjk) : k === 1 ? pick(words) : pick([...cjk, ...words])) + (rand() < 0.3 ? pick(glue) : '');
          parts.push(piece);
          n += piece.length;
        }
        const text = parts.join('');
        const all = tok.encode(text, true);
        for (const keep of [1, 40, 300]) {
          assert.deepEqual(encodeLast(tok, text, true, keep, eligible), all.slice(Math.max(0, all.length - keep)), `${name} no-space text ${k} keep ${keep}`);
        }
        if (eligible?.punctuation) {
          const { enc, lengths } = counting(tok);
          encodeLast(enc, text, true, 100, eligible);
          assert.ok(Math.max(...lengths) < text.length / 2, `${name} text ${k}: encoded ${Math.max(...lengths)} of ${text.length} chars`);
        }
      }
    });
  });
}

describe('tailEncodable', () => {
  const llama = JSON.parse(readFileSync(join(FIXTURES, 'models', 'llama', 'tokenizer.json'), 'utf-8')) as Record<string, unknown>;
  it('refuses what could join text across a cut', () => {
    assert.deepEqual(tailEncodable(llama), { punctuation: true, guards: ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] });
    const model = llama.model as { merges: unknown[] };
    const joining = { ...model, merges: [...model.merges, ['x', '\u0120y']] };
    assert.equal(tailEncodable({ ...llama, pre_tokenizer: null, model: joining }), null, 'BPE over the whole text with a merge across a space');
    assert.notEqual(tailEncodable({ ...llama, model: joining }), null, 'the regex splits there first');
    assert.notEqual(tailEncodable({ ...llama, pre_tokenizer: null }), null, 'one piece, and no merge joins across a space');
    const split = (llama.pre_tokenizer as { pretokenizers: Record<string, unknown>[] }).pretokenizers;
    const pairs = { type: 'Split', pattern: { Regex: '..' }, behavior: 'Isolated', invert: false };
    assert.equal(tailEncodable({ ...llama, pre_tokenizer: { type: 'Sequence', pretokenizers: [pairs, split[1]] } }), null, 'an unknown pattern may split by position');
    assert.equal(tailEncodable({ ...llama, pre_tokenizer: { type: 'Sequence', pretokenizers: [split[1], split[0]] } }), null, 'the regex would see text ByteLevel changed');
    const merged = { type: 'Split', pattern: { String: ' ' }, behavior: 'MergedWithPrevious', invert: false };
    assert.equal(tailEncodable({ ...llama, pre_tokenizer: merged }), null, 'the space stays with the word before it');
    assert.notEqual(tailEncodable({ ...llama, pre_tokenizer: { ...merged, behavior: 'MergedWithNext' } }), null);
    assert.equal(tailEncodable({ ...llama, normalizer: { type: 'Precompiled', precompiled_charsmap: '' } }), null);
    assert.equal(tailEncodable({ ...llama, normalizer: { type: 'Replace', pattern: { String: '  ' }, content: ' ' } }), null);
    assert.equal(tailEncodable({ ...llama, added_tokens: [{ content: '<x>', rstrip: true }] }), null);
    // Positions in UTF-16 units: the cut inside '😀😀a-' is at unit 5 (code point 3 of 4).
    assert.deepEqual(tailEncodable({ ...llama, added_tokens: [{ content: '😀😀a-' }, { content: '😀-' }] })?.guards, ['😀😀a-']);
  });
});

describe('cutAt', () => {
  it('cuts before a space after a non-space, or (with punctuation) before punctuation after a letter, never inside an added token', () => {
    assert.deepEqual(cutAt('aaaa bb cc', 0), { cut: 4, margin: 4 * 3 + 8 });
    assert.equal(cutAt('aaaa-bb-cc', 0), null, 'spaces only');
    const punct = { punctuation: true, guards: [] };
    assert.equal(cutAt('aaaa-bb-cc', 0, punct)?.cut, 4);
    assert.equal(cutAt('中文，中文。中文', 0, punct)?.cut, 2);
    assert.equal(cutAt('e\u0301e\u0301 x', 0, punct), null, 'a combining mark composes with the letter before it');
    assert.equal(cutAt('ひ\u3099，ひ\u3099。ひ\u3099', 0, punct), null, 'nor after a combining sound mark (not a letter to the regex)');
    const text = 'xx<|start_header_id|>user<|end_header_id|>-hi-there';
    const guards = ['<|start_header_id|>', '<|end_header_id|>'];
    assert.equal(cutAt(text, 5, { punctuation: true, guards: [] })?.cut, 9, "without guards: before the '_' inside <|start_header_id|>");
    const guarded = cutAt(text, 5, { punctuation: true, guards })!;
    assert.equal(text.slice(guarded.cut), '<|end_header_id|>-hi-there', 'with guards: before the next added token');
  });
});
