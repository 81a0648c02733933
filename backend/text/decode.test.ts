// Decoding against transformers: every prefix of a few hundred id sequences per fixture tokenizer
// (test/fixtures/decode/*.json, written by scripts/make-decode-fixtures.py), full decode and the
// incremental decoder; plus exhaustive checks that what the stream releases never has to change.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TRANSFORMERS_CLEANUP, TokenDecoder } from './decode.ts';
import { IncrementalDecoder, TextTokenizer } from './tokenizer.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures');

interface Case {
  ids: number[];
  skip: [number, string][];
  keep: [number, string][];
}
interface DecodeRef {
  tokenizer: string;
  dir: string;
  transformers: string;
  clean_up_tokenization_spaces: boolean;
  all_special_ids: number[];
  tokenization: { text: string; ids: number[]; ids_no_special: number[] }[];
  cases: Case[];
}

/** Prefix texts from [keep, add] edits counted in code points (as Python writes them). */
function prefixes(edits: [number, string][]): string[] {
  const out: string[] = [];
  let prev: string[] = [];
  for (const [keep, add] of edits) {
    prev = [...prev.slice(0, keep), ...add];
    out.push(prev.join(''));
  }
  return out;
}

const refFiles = readdirSync(join(FIXTURES, 'decode')).filter((f) => f.endsWith('.json'));

describe('decode references', () => {
  it('cover every fixture tokenizer', () => {
    const names = refFiles.map((f) => f.replace(/\.json$/, '')).sort();
    assert.deepEqual(names, ['byte-fallback-special', 'bytelevel-cleanup', 'llama', 'metaspace', 'mistral', 'qwen2', 'wordpiece']);
  });
});

for (const file of refFiles) {
  const ref = JSON.parse(readFileSync(join(FIXTURES, 'decode', file), 'utf-8')) as DecodeRef;
  describe(`${ref.tokenizer}: decode vs transformers ${ref.transformers}`, async () => {
    const tok = await TextTokenizer.load(join(ROOT, ref.dir));

    it('has the same clean-up setting and special tokens', () => {
      assert.equal(tok.decoder.cleanup, ref.clean_up_tokenization_spaces);
      for (const id of ref.all_special_ids) assert.ok(tok.isSpecial(id), `id ${id} should be special`);
    });

    for (const skip of [true, false]) {
      it(`decodes every prefix exactly (skip_special_tokens=${skip})`, () => {
        let n = 0;
        for (const c of ref.cases) {
          const truth = prefixes(skip ? c.skip : c.keep);
          for (let k = 1; k <= c.ids.length; k++) {
            assert.equal(tok.decode(c.ids.slice(0, k), skip), truth[k - 1], `ids ${JSON.stringify(c.ids.slice(0, k))}`);
            n++;
          }
        }
        assert.ok(n > 1000, `only ${n} prefixes`);
      });

      it(`streams only text that every later prefix keeps, adding up to each prefix (skip_special_tokens=${skip})`, () => {
        for (const c of ref.cases) {
          const truth = prefixes(skip ? c.skip : c.keep);
          const d = new IncrementalDecoder(tok, skip);
          let released = '';
          for (let k = 1; k <= c.ids.length; k++) {
            const peeked = d.peek(c.ids[k - 1]!);
            const delta = d.push(c.ids[k - 1]!);
            assert.equal(peeked, delta, 'peek() and push() release the same text');
            released += delta;
            for (let n = k; n <= c.ids.length; n++) {
              assert.ok(truth[n - 1]!.startsWith(released), `after ${JSON.stringify(c.ids.slice(0, k))} released ${JSON.stringify(released)}, but prefix ${n} decodes to ${JSON.stringify(truth[n - 1])}`);
            }
          }
          assert.equal(released + d.flush(), truth[c.ids.length - 1], `ids ${JSON.stringify(c.ids)}`);
          assert.equal(tok.tokenTexts(c.ids, skip).join(''), truth[c.ids.length - 1]);
        }
      });
    }

    it('encodes the reference texts as transformers does', () => {
      for (const t of ref.tokenization) {
        assert.deepEqual(tok.encode(t.text, true), t.ids, JSON.stringify(t.text));
        assert.deepEqual(tok.encode(t.text, false), t.ids_no_special, JSON.stringify(t.text));
      }
    });
  });
}

/** Token string -> id from tokenizer.json (model vocabulary and added tokens). */
function idsOf(dir: string, tokens: string[]): number[] {
  const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf-8')) as { model: { vocab: Record<string, number> }; added_tokens: { id: number; content: string }[] };
  const map = new Map<string, number>(Object.entries(tj.model.vocab));
  for (const a of tj.added_tokens) map.set(a.content, a.id);
  return tokens.map((t) => {
    const id = map.get(t);
    assert.ok(id !== undefined, `${t} not in ${dir}`);
    return id;
  });
}

/** Every sequence of length 1..len over the alphabet. */
function* sequences(alphabet: number[], len: number): Generator<number[]> {
  const seq: number[] = [];
  function* rec(): Generator<number[]> {
    if (seq.length > 0) yield [...seq];
    if (seq.length === len) return;
    for (const a of alphabet) {
      seq.push(a);
      yield* rec();
      seq.pop();
    }
  }
  yield* rec();
}

// Alphabets built from what can be rewritten: spaces before punctuation and contractions (clean-up),
// partial UTF-8 (byte-level bytes, <0xNN> tokens, an invalid byte), first-token rules, special tokens.
const EXHAUSTIVE: { dir: string; tokens: string[] }[] = [
  { dir: 'tokenizers/bytelevel-cleanup', tokens: ['Ġ', ',', '.', "'", 's', 'n', 't', 'm', 'æ', 'Ĺ', '¥', '<|eot_id|>', ' spaced'] },
  { dir: 'tokenizers/wordpiece', tokens: [',', "'", 's', 'n', 't', 'do', 'not', '##s', '.', '[SEP]', '<extra>'] },
  { dir: 'tokenizers/byte-fallback-special', tokens: ['▁', '▁"', ',', "'", 's', '<0xE6>', '<0x97>', '<0xA5>', '<0xFF>', '</s>', 'a'] },
  { dir: 'models/mistral', tokens: ['▁', '▁"', ',', '<0xE6>', '<0x97>', '<0xA5>', '<0xFF>', '</s>', 'a'] },
  { dir: 'tokenizers/metaspace', tokens: ['▁', '▁"', ',', "'", 's', '<0xE6>', '</s>', 'a', '▁a'] },
];

describe('incremental decoding, exhaustively over short sequences', () => {
  for (const { dir, tokens } of EXHAUSTIVE) {
    it(`${dir}: released text is a prefix of the decode of every continuation`, async () => {
      const tok = await TextTokenizer.load(join(FIXTURES, dir));
      const alphabet = idsOf(join(FIXTURES, dir), tokens);
      const len = alphabet.length > 11 ? 4 : 5;
      for (const skip of [true, false]) {
        // released text after each prefix, shared by all of its continuations
        const releasedAt = new Map<string, string>();
        for (const seq of sequences(alphabet, len)) {
          const key = seq.join(',');
          const parent = releasedAt.get(seq.slice(0, -1).join(',')) ?? '';
          const d = new IncrementalDecoder(tok, skip);
          for (const id of seq.slice(0, -1)) d.push(id);
          const released = parent + d.push(seq.at(-1)!);
          releasedAt.set(key, released);
          const full = tok.decode(seq, skip);
          for (let k = 1; k <= seq.length; k++) {
            const r = releasedAt.get(seq.slice(0, k).join(','))!;
            if (!full.startsWith(r)) assert.fail(`${JSON.stringify(seq.map((i) => tok.decode([i], false)))}: released ${JSON.stringify(r)} after ${k}, full ${JSON.stringify(full)}`);
          }
          assert.equal(released + d.flush(), full);
        }
      }
    });
  }

  it('streamed clean-up equals the sequential replaces applied to the whole text', () => {
    const tj = JSON.parse(readFileSync(join(FIXTURES, 'tokenizers/bytelevel-cleanup/tokenizer.json'), 'utf-8')) as Record<string, unknown>;
    const raw = new TokenDecoder(tj, {});
    const cleaned = new TokenDecoder(tj, { clean_up_tokenization_spaces: true, clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: true });
    const alphabet = idsOf(join(FIXTURES, 'tokenizers/bytelevel-cleanup'), ['Ġ', "'", 's', 'n', 't', 'm', 're', 've', '.', ',', '!', '?']);
    let n = 0;
    for (const seq of sequences(alphabet, 4)) {
      let text = raw.decode(seq, true);
      for (const [a, b] of TRANSFORMERS_CLEANUP) text = text.replaceAll(a, b);
      assert.equal(cleaned.decode(seq, true), text);
      n++;
    }
    assert.ok(n > 20_000);
  });
});

describe('decode details', () => {
  it('keeps the comma after a space token when clean-up removes the space (issue 13)', async () => {
    const tok = await TextTokenizer.load(join(FIXTURES, 'tokenizers/bytelevel-cleanup'));
    const ids = tok.encode('[\n 9210 ,\n -2429 ,\n ] Non ? ok !', false);
    const d = new IncrementalDecoder(tok);
    const pieces = ids.map((id) => d.push(id));
    pieces.push(d.flush());
    assert.equal(pieces.join(''), '[\n 9210,\n -2429,\n ] Non? ok!');
    assert.equal(tok.decode(ids), '[\n 9210,\n -2429,\n ] Non? ok!');
    // the comma token carries the comma; the space token before it shows nothing
    const comma = ids.indexOf(tok.encode(',', false)[0]!);
    assert.equal(pieces[comma], ',');
    assert.equal(pieces[comma - 1], '');
  });

  it('applies clean-up to a BPE model only when forced, as transformers 5 does', () => {
    const tj = JSON.parse(readFileSync(join(FIXTURES, 'models/llama/tokenizer.json'), 'utf-8')) as Record<string, unknown>;
    const wj = JSON.parse(readFileSync(join(FIXTURES, 'tokenizers/wordpiece/tokenizer.json'), 'utf-8')) as Record<string, unknown>;
    assert.equal(new TokenDecoder(tj, { clean_up_tokenization_spaces: true }).cleanup, false);
    assert.equal(new TokenDecoder(tj, { clean_up_tokenization_spaces: true, clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: true }).cleanup, true);
    assert.equal(new TokenDecoder(tj, {}).cleanup, false);
    assert.equal(new TokenDecoder(wj, { clean_up_tokenization_spaces: true }).cleanup, true);
    assert.equal(new TokenDecoder(wj, {}).cleanup, false);
  });

  it('falls back to re-decoding for a decoder it cannot stream, still never taking text back', async () => {
    const dir = join(FIXTURES, 'models/llama');
    const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf-8')) as Record<string, unknown>;
    const { Tokenizer } = await import('@huggingface/tokenizers');
    const ctc = { ...tj, decoder: { type: 'CTC', pad_token: '<pad>', word_delimiter_token: '|', cleanup: false } };
    const lib = new Tokenizer(ctc, {});
    const d = new TokenDecoder(ctc, {}, (ids) => lib.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
    assert.equal(d.unsupported, 'CTC');
    const tok = await TextTokenizer.load(dir);
    const ids = tok.encode('aab, hello 日本', false);
    const s = d.stream(true);
    let released = '';
    const full = d.decode(ids, true);
    assert.equal(full, lib.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }));
    for (const id of ids) {
      released += s.push(id);
      assert.ok(full.startsWith(released));
    }
    assert.equal(released + s.finish(), full);
    assert.throws(() => new TokenDecoder(ctc, {}), /CTC/, 'without a fallback an unknown decoder is an error at load');
  });

  it('skips ids outside the vocabulary, as Rust does', async () => {
    const tok = await TextTokenizer.load(join(FIXTURES, 'models/llama'));
    const hi = tok.encode('hi', false);
    assert.equal(tok.decode([...hi, 100_000, ...hi]), 'hihi');
    assert.equal(tok.decode([-1, 0.5, ...hi]), 'hi');
  });

  it('holds an unfinished UTF-8 character and releases U+FFFD only when it cannot complete', async () => {
    const tok = await TextTokenizer.load(join(FIXTURES, 'models/qwen2'));
    const [e6, x97, xa5] = idsOf(join(FIXTURES, 'models/qwen2'), ['æ', 'Ĺ', '¥']);
    const d = new IncrementalDecoder(tok);
    assert.equal(d.push(e6!), '');
    assert.equal(d.push(x97!), '');
    assert.equal(d.push(xa5!), '日');
    assert.equal(d.push(e6!), '');
    assert.equal(d.flush(), '\uFFFD');
  });
});
