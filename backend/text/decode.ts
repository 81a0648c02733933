// Token ids -> text exactly as transformers decodes them: the Rust `tokenizers` decoder pipeline
// (ByteLevel, Metaspace, WordPiece, Replace, ByteFallback, Fuse, Strip, BPE suffix) followed by
// transformers' clean_up_tokenization when the tokenizer's config asks for it.
//
// Every stage is written as a stream whose output, pushed token by token and then finished, is
// exactly the batch result. A stage holds back only what a later token could still change: an
// unfinished UTF-8 sequence, a run of <0xNN> byte tokens (Rust validates the run as a whole), the
// last token of a BPE-suffix decoder, trailing characters a Strip could remove, and the tail of the
// text that could still become a clean-up pattern (" ,", " 's", " ' " ...). So the text a stream
// has released is always a prefix of decode(all ids), whatever ids come next, and full decode is
// the same code run to the end. Streams can be cloned (to ask "what would this alternative token
// add here?" without disturbing the real one).
//
// Why not @huggingface/tokenizers' decode: it differs from Rust on added tokens under ByteLevel
// (passed through verbatim instead of byte-mapped), on Metaspace's first token, on byte-fallback
// runs, on ids outside the vocabulary, and defaults clean_up_tokenization_spaces to true where
// transformers defaults to false; and it cannot decode incrementally.

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet (GPT-2): printable Latin-1 bytes stand for themselves, the rest map to
// U+0100 upwards in byte order.
const CHAR_TO_BYTE: Map<string, number> = (() => {
  const m = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return m;
})();

const utf8 = new TextEncoder();

/**
 * Incremental UTF-8 -> UTF-16 with one U+FFFD per maximal invalid subsequence (WHATWG's decoder,
 * which is also what Rust's String::from_utf8_lossy does), with a clonable state.
 */
class Utf8Stream {
  private need = 0;
  private seen = 0;
  private cp = 0;
  private lo = 0x80;
  private hi = 0xbf;

  clone(): Utf8Stream {
    return Object.assign(new Utf8Stream(), this);
  }

  push(bytes: Iterable<number>): string {
    let out = '';
    for (const b of bytes) out += this.byte(b);
    return out;
  }

  private byte(b: number): string {
    if (this.need === 0) {
      if (b <= 0x7f) return String.fromCharCode(b);
      if (b >= 0xc2 && b <= 0xdf) {
        this.need = 1;
        this.cp = b & 0x1f;
      } else if (b >= 0xe0 && b <= 0xef) {
        if (b === 0xe0) this.lo = 0xa0;
        if (b === 0xed) this.hi = 0x9f;
        this.need = 2;
        this.cp = b & 0x0f;
      } else if (b >= 0xf0 && b <= 0xf4) {
        if (b === 0xf0) this.lo = 0x90;
        if (b === 0xf4) this.hi = 0x8f;
        this.need = 3;
        this.cp = b & 0x07;
      } else return '\uFFFD';
      return '';
    }
    if (b < this.lo || b > this.hi) {
      this.reset();
      return '\uFFFD' + this.byte(b); // the byte starts over
    }
    this.lo = 0x80;
    this.hi = 0xbf;
    this.cp = (this.cp << 6) | (b & 0x3f);
    if (++this.seen < this.need) return '';
    const cp = this.cp;
    this.reset();
    return String.fromCodePoint(cp);
  }

  private reset() {
    this.need = this.seen = this.cp = 0;
    this.lo = 0x80;
    this.hi = 0xbf;
  }

  finish(): string {
    if (this.need === 0) return '';
    this.reset();
    return '\uFFFD';
  }
}

/**
 * `text.replaceAll(pattern, by)` over a stream: releases everything except a tail that is a
 * proper prefix of the pattern. Left-to-right, non-overlapping, like Python's str.replace.
 */
class StreamReplace {
  private buf = '';
  constructor(
    private readonly pattern: string,
    private readonly by: string,
  ) {}

  clone(): StreamReplace {
    return Object.assign(new StreamReplace(this.pattern, this.by), this);
  }

  push(s: string, final = false): string {
    const buf = this.buf + s;
    const p = this.pattern;
    let out = '';
    let i = 0;
    while (i < buf.length) {
      if (buf.startsWith(p, i)) {
        out += this.by;
        i += p.length;
      } else if (!final && buf.length - i < p.length && p.startsWith(buf.slice(i))) {
        break;
      } else {
        out += buf[i];
        i++;
      }
    }
    this.buf = buf.slice(i);
    return out;
  }

  finish(): string {
    return this.push('', true);
  }
}

/** A chain of sequential replaces (each applied to the whole output of the previous one). */
class StreamCleanup {
  constructor(private readonly steps: StreamReplace[]) {}
  static of(pairs: readonly (readonly [string, string])[]): StreamCleanup {
    return new StreamCleanup(pairs.map(([a, b]) => new StreamReplace(a, b)));
  }
  clone(): StreamCleanup {
    return new StreamCleanup(this.steps.map((s) => s.clone()));
  }
  push(s: string): string {
    for (const step of this.steps) s = step.push(s);
    return s;
  }
  finish(): string {
    let s = '';
    for (const step of this.steps) s = step.push(s, true);
    return s;
  }
}

/** transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order. */
export const TRANSFORMERS_CLEANUP: readonly (readonly [string, string])[] = [
  [' .', '.'],
  [' ?', '?'],
  [' !', '!'],
  [' ,', ','],
  [" ' ", "'"],
  [" n't", "n't"],
  [" 'm", "'m"],
  [" 's", "'s"],
  [" 've", "'ve"],
  [" 're", "'re"],
];

/** The Rust WordPiece decoder's per-token cleanup (one more rule than transformers'). */
const WORDPIECE_CLEANUP: readonly (readonly [string, string])[] = [
  ...TRANSFORMERS_CLEANUP.slice(0, 7),
  [' do not', " don't"],
  ...TRANSFORMERS_CLEANUP.slice(7),
];

function cleanupOnce(text: string, pairs: readonly (readonly [string, string])[]): string {
  for (const [a, b] of pairs) text = text.replaceAll(a, b);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Decoder stages. Before a fusing stage (Fuse, ByteLevel) the stream is a list of pieces, one per
// token, each carrying its index (Rust's decode_chain indices are per stage). After it, the
// stream is fragments of one growing piece (index 0).

interface Stage {
  /** Takes one piece (or, once fused, one fragment of the single piece); returns released items. */
  push(piece: string): string[];
  finish(): string[];
  clone(): Stage;
}

class UnsupportedDecoder extends Error {}

const BYTE_TOKEN = /^<0x([+]?[0-9A-Fa-f]{1,2})>$/;

function byteOf(token: string): number | null {
  if (token.length !== 6) return null;
  const m = BYTE_TOKEN.exec(token);
  return m ? parseInt(m[1]!, 16) : null;
}

/** Replace(String|Regex) per token. */
class ReplaceStage implements Stage {
  constructor(
    private readonly pattern: string | RegExp,
    private readonly by: string,
  ) {}
  push(p: string) {
    return [typeof this.pattern === 'string' ? p.replaceAll(this.pattern, this.by) : p.replace(this.pattern, this.by)];
  }
  finish() {
    return [];
  }
  clone() {
    return this;
  }
}

/** Runs of <0xNN> tokens become their UTF-8 text if the whole run is valid, else one U+FFFD per byte. */
class ByteFallbackStage implements Stage {
  private bytes: number[] = [];
  push(p: string) {
    const b = byteOf(p);
    if (b !== null) {
      this.bytes.push(b);
      return [];
    }
    return [...this.flush(), p];
  }
  finish() {
    return this.flush();
  }
  private flush(): string[] {
    if (this.bytes.length === 0) return [];
    const bytes = this.bytes;
    this.bytes = [];
    try {
      return [new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes))];
    } catch {
      return bytes.map(() => '\uFFFD');
    }
  }
  clone() {
    const c = new ByteFallbackStage();
    c.bytes = [...this.bytes];
    return c;
  }
}

/** Metaspace: the replacement char becomes a space, except in the first token (dropped there). */
class MetaspaceStage implements Stage {
  private i = 0;
  constructor(
    private readonly replacement: string,
    private readonly dropInFirst: boolean,
    private readonly fused: boolean,
  ) {}
  push(p: string) {
    const first = this.fused || this.i++ === 0;
    return [p.replaceAll(this.replacement, first && this.dropInFirst ? '' : ' ')];
  }
  finish() {
    return [];
  }
  clone() {
    return Object.assign(new MetaspaceStage(this.replacement, this.dropInFirst, this.fused), this);
  }
}

/** WordPiece: "##x" glues to the previous token, others get a space; optional per-token cleanup. */
class WordPieceStage implements Stage {
  private i = 0;
  constructor(
    private readonly prefix: string,
    private readonly cleanup: boolean,
  ) {}
  push(p: string) {
    if (this.i++ > 0) p = this.prefix && p.startsWith(this.prefix) ? p.slice(this.prefix.length) : ' ' + p;
    return [this.cleanup ? cleanupOnce(p, WORDPIECE_CLEANUP) : p];
  }
  finish() {
    return [];
  }
  clone() {
    return Object.assign(new WordPieceStage(this.prefix, this.cleanup), this);
  }
}

/** WordPiece after a fuse: the single piece is token 0, so only the cleanup applies, streamed. */
class FusedCleanupStage implements Stage {
  constructor(private readonly c: StreamCleanup) {}
  push(p: string) {
    return [this.c.push(p)];
  }
  finish() {
    return [this.c.finish()];
  }
  clone() {
    return new FusedCleanupStage(this.c.clone());
  }
}

/** BPE end-of-word suffix: a space between words, nothing after the last token (so it waits). */
class BpeSuffixStage implements Stage {
  private held: string | null = null;
  constructor(private readonly suffix: string) {}
  push(p: string) {
    const out = this.held === null ? [] : [this.held.replaceAll(this.suffix, ' ')];
    this.held = p;
    return out;
  }
  finish() {
    const out = this.held === null ? [] : [this.held.replaceAll(this.suffix, '')];
    this.held = null;
    return out;
  }
  clone() {
    return Object.assign(new BpeSuffixStage(this.suffix), this);
  }
}

function stripPiece(p: string, content: string, start: number, stop: number): string {
  const chars = [...p];
  let a = 0;
  while (a < start && a < chars.length && chars[a] === content) a++;
  let b = chars.length;
  while (chars.length - b < stop && b > a && chars[b - 1] === content) b--;
  return chars.slice(a, b).join('');
}

class StripStage implements Stage {
  constructor(
    private readonly content: string,
    private readonly start: number,
    private readonly stop: number,
  ) {}
  push(p: string) {
    return [stripPiece(p, this.content, this.start, this.stop)];
  }
  finish() {
    return [];
  }
  clone() {
    return this;
  }
}

/** Strip over the one fused piece: drops leading content chars, holds trailing ones until settled. */
class FusedStripStage implements Stage {
  private dropped = 0;
  private begun = false;
  private tail = '';
  constructor(
    private readonly content: string,
    private readonly start: number,
    private readonly stop: number,
  ) {}
  push(p: string) {
    let s = '';
    for (const ch of p) {
      if (!this.begun) {
        if (ch === this.content && this.dropped < this.start) {
          this.dropped++;
          continue;
        }
        this.begun = true;
      }
      if (this.stop > 0 && ch === this.content) this.tail += ch;
      else {
        s += this.tail + ch;
        this.tail = '';
      }
    }
    return [s];
  }
  finish() {
    const chars = [...this.tail];
    this.tail = '';
    return [chars.slice(0, Math.max(0, chars.length - this.stop)).join('')];
  }
  clone() {
    return Object.assign(new FusedStripStage(this.content, this.start, this.stop), this);
  }
}

class FuseStage implements Stage {
  push(p: string) {
    return [p];
  }
  finish() {
    return [];
  }
  clone() {
    return this;
  }
}

/** ByteLevel: every token becomes bytes (through the alphabet if all its chars are in it, else its UTF-8), then UTF-8. */
class ByteLevelStage implements Stage {
  constructor(private readonly u: Utf8Stream = new Utf8Stream()) {}
  push(p: string) {
    let bytes: number[] | null = [];
    for (const ch of p) {
      const b = CHAR_TO_BYTE.get(ch);
      if (b === undefined) {
        bytes = null;
        break;
      }
      bytes.push(b);
    }
    return [this.u.push(bytes ?? utf8.encode(p))];
  }
  finish() {
    return [this.u.finish()];
  }
  clone() {
    return new ByteLevelStage(this.u.clone());
  }
}

/** No decoder in tokenizer.json: Rust joins the tokens with spaces. */
class JoinStage implements Stage {
  private i = 0;
  push(p: string) {
    return [this.i++ === 0 ? p : ' ' + p];
  }
  finish() {
    return [];
  }
  clone() {
    return Object.assign(new JoinStage(), this);
  }
}

function prependDrops(cfg: Json): boolean {
  if (typeof cfg.prepend_scheme === 'string') return cfg.prepend_scheme !== 'never';
  if (typeof cfg.add_prefix_space === 'boolean') return cfg.add_prefix_space;
  return true;
}

/** Compiles tokenizer.json's decoder into stage factories (fresh state per stream). */
function compile(decoder: Json | null): (() => Stage)[] {
  if (!decoder) return [() => new JoinStage()];
  const flat: Json[] = [];
  const walk = (d: Json) => {
    if (d.type === 'Sequence') for (const x of (d.decoders as Json[] | undefined) ?? []) walk(x);
    else flat.push(d);
  };
  walk(decoder);
  const out: (() => Stage)[] = [];
  let fused = false;
  for (const d of flat) {
    switch (d.type) {
      case 'ByteLevel':
        if (fused) throw new UnsupportedDecoder('ByteLevel after a fuse');
        out.push(() => new ByteLevelStage());
        fused = true;
        break;
      case 'Fuse':
        fused = true;
        break;
      case 'Replace': {
        if (fused) throw new UnsupportedDecoder('Replace after a fuse');
        const pat = d.pattern as { String?: string; Regex?: string } | undefined;
        const by = typeof d.content === 'string' ? d.content : '';
        let pattern: string | RegExp;
        if (typeof pat?.String === 'string') pattern = pat.String;
        else if (typeof pat?.Regex === 'string') {
          try {
            pattern = new RegExp(pat.Regex, 'gu');
          } catch {
            throw new UnsupportedDecoder(`Replace regex ${pat.Regex}`);
          }
        } else throw new UnsupportedDecoder('Replace without a pattern');
        const stage = new ReplaceStage(pattern, by);
        out.push(() => stage);
        break;
      }
      case 'ByteFallback':
        if (fused) throw new UnsupportedDecoder('ByteFallback after a fuse');
        out.push(() => new ByteFallbackStage());
        break;
      case 'Strip': {
        const content = typeof d.content === 'string' ? d.content : ' ';
        const start = Number(d.start ?? 0);
        const stop = Number(d.stop ?? 0);
        if (fused) out.push(() => new FusedStripStage(content, start, stop));
        else {
          const stage = new StripStage(content, start, stop);
          out.push(() => stage);
        }
        break;
      }
      case 'Metaspace': {
        const rep = typeof d.replacement === 'string' ? d.replacement : '\u2581';
        const drop = prependDrops(d);
        const f = fused;
        out.push(() => new MetaspaceStage(rep, drop, f));
        break;
      }
      case 'WordPiece': {
        const prefix = typeof d.prefix === 'string' ? d.prefix : '##';
        const cleanup = d.cleanup !== false;
        if (fused) {
          if (cleanup) out.push(() => new FusedCleanupStage(StreamCleanup.of(WORDPIECE_CLEANUP)));
        } else out.push(() => new WordPieceStage(prefix, cleanup));
        break;
      }
      case 'BPEDecoder': {
        if (fused) throw new UnsupportedDecoder('BPEDecoder after a fuse');
        const suffix = typeof d.suffix === 'string' ? d.suffix : '</w>';
        out.push(() => new BpeSuffixStage(suffix));
        break;
      }
      default:
        throw new UnsupportedDecoder(String(d.type));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export interface DecodeStream {
  /** Adds one id; returns the text that is now final (possibly ''). */
  push(id: number): string;
  /** Ends the sequence; returns everything still held back. The stream is spent afterwards. */
  finish(): string;
  /** An independent copy of the current state. */
  clone(): DecodeStream;
}

class PipelineStream implements DecodeStream {
  constructor(
    private readonly d: TokenDecoder,
    private readonly skipSpecial: boolean,
    private readonly stages: Stage[],
    private readonly cleanup: StreamCleanup | null,
  ) {}

  push(id: number): string {
    const token = this.d.tokenOf(id);
    if (token === null || (this.skipSpecial && this.d.isSpecialToken(token))) return '';
    return this.run([token], 0, false);
  }

  finish(): string {
    return this.run([], 0, true);
  }

  /** Feeds items into stage k onwards; at the end (final) every stage is finished in order. */
  private run(items: string[], k: number, final: boolean): string {
    for (let s = k; s < this.stages.length; s++) {
      const st = this.stages[s]!;
      const next: string[] = [];
      for (const it of items) next.push(...st.push(it));
      if (final) next.push(...st.finish());
      items = next;
    }
    let text = items.join('');
    if (this.cleanup) text = this.cleanup.push(text) + (final ? this.cleanup.finish() : '');
    return text;
  }

  clone(): DecodeStream {
    return new PipelineStream(
      this.d,
      this.skipSpecial,
      this.stages.map((s) => s.clone()),
      this.cleanup?.clone() ?? null,
    );
  }
}

/**
 * A decoder this module cannot stream exactly (an exotic tokenizer.json decoder): re-decodes the
 * whole sequence with @huggingface/tokenizers and releases text only while the old text stays a
 * prefix, holding back trailing U+FFFD and anything clean-up could still rewrite.
 */
class FallbackStream implements DecodeStream {
  private ids: number[] = [];
  private released = '';
  constructor(
    private readonly d: TokenDecoder,
    private readonly skipSpecial: boolean,
  ) {}
  push(id: number): string {
    this.ids.push(id);
    const full = this.d.decode(this.ids, this.skipSpecial);
    if (!full.startsWith(this.released)) return '';
    const settled = full.replace(this.d.cleanup ? /[\uFFFD \x27a-z]*$/ : /\uFFFD*$/, '');
    if (settled.length <= this.released.length) return '';
    const out = settled.slice(this.released.length);
    this.released = settled;
    return out;
  }
  finish(): string {
    const full = this.d.decode(this.ids, this.skipSpecial);
    const out = full.startsWith(this.released) ? full.slice(this.released.length) : '';
    this.released = full;
    return out;
  }
  clone(): DecodeStream {
    return Object.assign(new FallbackStream(this.d, this.skipSpecial), { ids: [...this.ids], released: this.released });
  }
}

/** Decoding side of one tokenizer: tokenizer.json's vocabulary, added tokens and decoder. */
export class TokenDecoder {
  private readonly tokens: (string | undefined)[] = [];
  private readonly special = new Set<string>();
  private readonly stages: (() => Stage)[] | null;
  /** Why the exact streaming pipeline is not used (null when it is). */
  readonly unsupported: string | null = null;

  /**
   * @param fallback batch decode without clean-up, for decoders outside the supported set.
   */
  constructor(
    tokenizerJson: Json,
    config: Json,
    private readonly fallback: ((ids: number[], skipSpecial: boolean) => string) | null = null,
  ) {
    const model = (tokenizerJson.model ?? {}) as Json;
    const vocab = model.vocab;
    if (Array.isArray(vocab)) vocab.forEach((e, i) => (this.tokens[i] = Array.isArray(e) ? String(e[0]) : String(e)));
    else if (vocab && typeof vocab === 'object') for (const [t, i] of Object.entries(vocab as Record<string, number>)) this.tokens[i] = t;
    for (const a of (tokenizerJson.added_tokens as Json[] | undefined) ?? []) {
      const content = String(a.content);
      this.tokens[Number(a.id)] = content;
      if (a.special) this.special.add(content);
    }
    // transformers registers the config's named special tokens as special on load.
    const named = (v: unknown): string | null => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as Json).content === 'string' ? ((v as Json).content as string) : null);
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token']) {
      const t = named(config[key]);
      if (t !== null && this.tokens.includes(t)) this.special.add(t);
    }
    for (const key of ['additional_special_tokens', 'extra_special_tokens']) {
      const list = config[key];
      const items = Array.isArray(list) ? list : list && typeof list === 'object' ? Object.values(list) : [];
      for (const v of items) {
        const t = named(v);
        if (t !== null && this.tokens.includes(t)) this.special.add(t);
      }
    }
    // Recent transformers skip the clean-up for BPE models unless forced (it corrupts their text).
    const bpe = model.type === 'BPE' || (model.type === undefined && Array.isArray(model.merges));
    this.cleanup = config.clean_up_tokenization_spaces === true && (!bpe || config.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true);
    let stages: (() => Stage)[] | null = null;
    try {
      stages = compile((tokenizerJson.decoder as Json | null | undefined) ?? null);
    } catch (err) {
      if (!(err instanceof UnsupportedDecoder) || !fallback) throw err;
      this.unsupported = err.message;
    }
    this.stages = stages;
  }

  /** Whether transformers applies clean_up_tokenization (config flag, default false; BPE models only when forced). */
  readonly cleanup: boolean;

  /** The token string of an id (added tokens first), or null for an id outside the vocabulary (Rust skips those). */
  tokenOf(id: number): string | null {
    return (Number.isInteger(id) && id >= 0 ? this.tokens[id] : undefined) ?? null;
  }

  /** skip_special_tokens drops tokens by content, as Rust's AddedVocabulary does. */
  isSpecialToken(token: string): boolean {
    return this.special.has(token);
  }

  isSpecial(id: number): boolean {
    const t = this.tokenOf(id);
    return t !== null && this.special.has(t);
  }

  stream(skipSpecial: boolean): DecodeStream {
    if (!this.stages) return new FallbackStream(this, skipSpecial);
    return new PipelineStream(
      this,
      skipSpecial,
      this.stages.map((f) => f()),
      this.cleanup ? StreamCleanup.of(TRANSFORMERS_CLEANUP) : null,
    );
  }

  decode(ids: readonly number[], skipSpecial: boolean): string {
    if (!this.stages) {
      const kept = ids.filter((id) => {
        const t = this.tokenOf(id);
        return t !== null && !(skipSpecial && this.special.has(t));
      });
      const raw = kept.length === 0 ? '' : this.fallback!(kept, false);
      return this.cleanup ? cleanupOnce(raw, TRANSFORMERS_CLEANUP) : raw;
    }
    const s = this.stream(skipSpecial);
    let text = '';
    for (const id of ids) text += s.push(id);
    return text + s.finish();
  }
}
