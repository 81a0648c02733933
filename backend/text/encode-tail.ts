// Truncation without encoding the whole prompt. A request with `truncate: N` keeps only the last N
// prompt tokens, yet encoding a 4 MB prompt to keep 500 of its tokens costs seconds of tokenizer
// CPU. The tokenizers models use split the text before every space that follows a non-space
// (a regex or Metaspace pre-tokenizer, BERT's whitespace split) and their normalizers act on each
// character alone, so the tokens after such a split point do not depend on the text before it.
// encodeLast therefore encodes a suffix window cut at one, minus a margin for the first word after
// the cut (which a Prepend normalizer or a leading space can tokenize differently); as a second
// guard two windows cut at different places must agree on the kept ids. Otherwise the window
// doubles, and at half the text the whole is encoded. A tokenizer that does not qualify
// (tailEncodable) always encodes the whole. encode-tail.test.ts compares it with the full encode
// on every fixture tokenizer.

/** What encodeLast needs of a tokenizer (TextTokenizer has it). */
export interface Encoder {
  encode(text: string, addSpecial: boolean): number[];
}

type Json = Record<string, unknown> | null | undefined;

/** Normalizers that act on each character alone, or only at the text's two ends. */
function localNormalizer(n: Json): boolean {
  if (!n) return true;
  switch (n.type) {
    case 'Sequence':
      return ((n.normalizers as Json[]) ?? []).every(localNormalizer);
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
    case 'Lowercase':
    case 'StripAccents':
    case 'BertNormalizer':
    case 'Prepend':
    case 'Strip':
      return true;
    case 'Replace': {
      const pattern = (n.pattern as { String?: string } | undefined)?.String;
      return typeof pattern === 'string' && pattern.length === 1;
    }
    default:
      return false; // regex replacements and Precompiled charsmaps can join characters across a space
  }
}

/**
 * Split patterns (tokenizer.json's Split pre-tokenizer) known to split before every space that follows a
 * non-space: in each, a space (U+0020) can only begin a match (` ?X`, whitespace runs), never follow a
 * non-space inside one. GPT-2's (ByteLevel's own), Llama 3's and Qwen2's (also Gemma's, Phi-3's as
 * transformers 5 writes them). Another pattern might split where its earlier matches happened to end, so
 * a tokenizer using one is encoded whole.
 */
const SPLITS_AT_SPACES = new Set([
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
]);

/**
 * Pre-tokenizers that split before every space after a non-space. In a Sequence the first one must:
 * what follows only splits each piece further (or maps its characters one to one, ByteLevel without its
 * regex), so pieces after the cut come out the same; one placed later would see text an earlier one changed.
 */
function splitsAtSpaces(p: Json): boolean {
  if (!p) return false;
  switch (p.type) {
    case 'Sequence': {
      const [first] = (p.pretokenizers as Json[]) ?? [];
      return splitsAtSpaces(first);
    }
    case 'ByteLevel':
      return p.use_regex !== false;
    case 'Metaspace':
      return p.split !== false;
    case 'Split': {
      const pattern = p.pattern as { Regex?: string; String?: string } | undefined;
      if (typeof pattern?.String === 'string') return pattern.String === ' ' && p.behavior !== 'MergedWithPrevious';
      return typeof pattern?.Regex === 'string' && SPLITS_AT_SPACES.has(pattern.Regex) && p.invert !== true;
    }
    case 'Whitespace':
    case 'WhitespaceSplit':
    case 'BertPreTokenizer':
      return true;
    default:
      return false;
  }
}

/**
 * A BPE model none of whose merges joins a piece ending in something other than a space marker to
 * one starting with a space marker: then no token can span a space that follows a non-space, even
 * where nothing splits the text there (Metaspace with split false runs BPE over the whole text).
 */
function noMergeIntoSpace(model: Json, pre: Json): boolean {
  if (!model || model.type !== 'BPE' || !Array.isArray(model.merges)) return false;
  const markers = new Set([' ', '\u2581', '\u0120']);
  if (pre?.type === 'Metaspace' && typeof pre.replacement === 'string') markers.add(pre.replacement);
  for (const m of model.merges as (string | [string, string])[]) {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    if (!a || !b) continue;
    if (markers.has(b[0]!) && !markers.has(a[a.length - 1]!)) return false;
  }
  return true;
}

/**
 * The regexes above (ByteLevel's, the known Split patterns) also split between a letter and the
 * punctuation after it: letters end a match (`\p{L}+`), punctuation only begins one. That is where
 * text without spaces (Chinese, Japanese, hyphenated words) can be cut.
 */
function splitsAtPunctuation(p: Json): boolean {
  if (!p) return false;
  if (p.type === 'Sequence') return splitsAtPunctuation(((p.pretokenizers as Json[]) ?? [])[0]);
  if (p.type === 'ByteLevel') return p.use_regex !== false;
  return p.type === 'Split' && typeof (p.pattern as { Regex?: string } | undefined)?.Regex === 'string' && splitsAtSpaces(p);
}

/**
 * Where a tokenizer can be cut (tailEncodable), or null: the whole text is encoded. `punctuation`:
 * at punctuation after a letter too, except inside an occurrence of one of `guards` (added tokens
 * such as <|eot_id|>, which the tokenizer takes whole before anything splits them).
 */
export type TailCuts = { punctuation: boolean; guards: string[] } | null;

/**
 * Whether a tokenizer.json qualifies for encodeLast, and where it may be cut: a local normalizer, a
 * pre-tokenizer that splits at spaces (or BPE merges that never join across one; with a regex, at
 * punctuation after a letter too), and no added token that could span a cut (one containing
 * whitespace, or one that strips the spaces after it).
 */
export function tailEncodable(tokenizerJson: Record<string, unknown>): TailCuts {
  if (!localNormalizer(tokenizerJson.normalizer as Json)) return null;
  const pre = tokenizerJson.pre_tokenizer as Json;
  // Without a splitting pre-tokenizer the text is one piece (none, or Metaspace without split): BPE merges decide.
  const onePiece = !pre || (pre.type === 'Metaspace' && pre.split === false);
  if (!splitsAtSpaces(pre) && !(onePiece && noMergeIntoSpace(tokenizerJson.model as Json, pre))) return null;
  const added = (tokenizerJson.added_tokens as { content?: string; rstrip?: boolean }[]) ?? [];
  for (const t of added) {
    if (t.rstrip === true || /\s/.test(t.content ?? '')) return null;
  }
  if (!splitsAtPunctuation(pre)) return { punctuation: false, guards: [] };
  // splitAt indexes UTF-16 units, so the positions are too (Array.from over a string would count code points).
  const hasCut = (c: string) => {
    for (let i = 1; i < c.length; i++) if (splitAt(c, i, true)) return true;
    return false;
  };
  const guards = added.map((t) => t.content ?? '').filter(hasCut);
  return { punctuation: true, guards };
}

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
/**
 * Letters whose normal forms stay letters, and punctuation no normalizer joins to what precedes it
 * (a combining mark after a letter would compose with it under NFC): ASCII letters, CJK ideographs,
 * kana and Hangul syllables; ASCII punctuation and the common CJK and fullwidth marks.
 */
const isCutLetter = (c: number) =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x4e00 && c <= 0x9fff) || (c >= 0xac00 && c <= 0xd7a3) ||
  (c >= 0x3041 && c <= 0x3096) || (c >= 0x30a1 && c <= 0x30fa); // kana, without the combining sound marks U+3099-309C
const CUT_PUNCTUATION = new Set([...'!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~、。「」『』（），：；？！'].map((ch) => ch.charCodeAt(0)));
/** A split point: a space (U+0020) after a non-space; with `punctuation`, also such a mark after such a letter. */
const splitAt = (text: string, i: number, punctuation: boolean) => {
  const c = text.charCodeAt(i);
  const p = text.charCodeAt(i - 1);
  return (c === 0x20 && !isSpace(p)) || (punctuation && CUT_PUNCTUATION.has(c) && isCutLetter(p));
};

/** Whether position i of text lies strictly inside an occurrence of one of `guards`. */
function insideGuard(text: string, i: number, guards: readonly string[]): boolean {
  for (const g of guards) {
    for (let k = 1; k < g.length; k++) if (text.startsWith(g, i - k)) return true;
  }
  return false;
}
/** How far a cut may move forward to find a split point, and how long the word after it may be. */
const SEEK = 4096;
const WORD = 64;

/**
 * A split point at or after `at` whose next split point is at most WORD characters on, with the
 * token margin for that first word (a UTF-16 unit is at most 4 byte tokens; a few more for a
 * prepended marker and special tokens), or null when there is none within SEEK characters.
 */
export function cutAt(text: string, at: number, cuts: NonNullable<TailCuts> = { punctuation: false, guards: [] }): { cut: number; margin: number } | null {
  const end = Math.min(text.length, at + SEEK);
  let prev = -1;
  for (let i = Math.max(1, at); i < end; i++) {
    if (!splitAt(text, i, cuts.punctuation)) continue;
    if (cuts.guards.length > 0 && text.charCodeAt(i) !== 0x20 && insideGuard(text, i, cuts.guards)) continue;
    if (prev >= 0 && i - prev <= WORD) return { cut: prev, margin: 4 * (i - prev) + 8 };
    prev = i;
  }
  return null;
}

const sameTail = (a: number[], b: number[], n: number) => {
  for (let i = 1; i <= n; i++) if (a[a.length - i] !== b[b.length - i]) return false;
  return true;
};

/** The first window: about 8 characters per kept token, which most text needs far less than. */
const firstWindow = (keepLast: number) => 8 * keepLast + 1024;

/**
 * The last `keepLast` ids of tok.encode(text, addSpecial). `whole` false: `text` is only the end
 * of the prompt, and null means the answer needs more of it than was given. `cuts`: where the
 * tokenizer may be cut (tailEncodable); null: the whole text is encoded.
 */
export function encodeLast(tok: Encoder, text: string, addSpecial: boolean, keepLast: number, cuts: TailCuts, whole = true): number[] | null {
  if (keepLast <= 0) return [];
  const full = () => {
    if (!whole) return null;
    const ids = tok.encode(text, addSpecial);
    return ids.length > keepLast ? ids.slice(ids.length - keepLast) : ids;
  };
  if (cuts === null) return full();
  for (let window = firstWindow(keepLast); 2 * window < text.length; window *= 2) {
    const a = cutAt(text, text.length - window, cuts);
    const b = cutAt(text, text.length - Math.floor((3 * window) / 4), cuts);
    if (!a || !b || a.cut >= b.cut) continue;
    const long = tok.encode(text.slice(a.cut), addSpecial);
    if (long.length < keepLast + a.margin) continue;
    const short = tok.encode(text.slice(b.cut), addSpecial);
    if (short.length >= keepLast + b.margin && sameTail(long, short, keepLast)) return long.slice(long.length - keepLast);
  }
  return full();
}

/** How much of a kept prompt's end a tokenizer thread fetches first for encodeLast. */
export function tailChars(keepLast: number): number {
  return 4 * firstWindow(keepLast) + 2 * SEEK;
}
