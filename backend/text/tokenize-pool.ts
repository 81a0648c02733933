// Tokenizing off the request loop. Encoding grows with the prompt (about 1.5-6 us a character
// on the bundled models, so a 1 MB prompt held the event loop for seconds and every other
// request with it). Texts of more than INLINE_MAX_CHARS go to a small pool of worker threads,
// each with its own copy of the tokenizer; shorter ones encode inline, where the thread round
// trip would cost more than the encode. Before any of that, a prompt whose length alone proves
// it has too many tokens is refused without being encoded (see maxCharsPerToken).
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Worker, type MessagePort } from 'node:worker_threads';
import type { TokenizeJob, TokenizeReply, WorkerInit } from './tokenize-worker.ts';
import { LargeText, textPort } from '../json-body.ts';
import { encodeLast, tailEncodable } from './encode-tail.ts';
import { tokensAtLeast } from '../request-limits.ts';
import { ChatTemplateError, type ChatTurn, type TextTokenizer } from './tokenizer.ts';

/**
 * Below this many characters, encoding inline is cheaper than a thread round trip.
 * SWITCHBOARD_TOKENIZE_INLINE_MAX_CHARS overrides it (bench/stall sets Infinity to measure the
 * server without the pool).
 */
export const INLINE_MAX_CHARS = Number(process.env.SWITCHBOARD_TOKENIZE_INLINE_MAX_CHARS) || 2048;

/** More tokens than allowed; `atLeast` is a lower bound (exact when the text was encoded). */
export class TooManyTokensError extends Error {
  constructor(readonly atLeast: number) {
    super(`at least ${atLeast} tokens`);
  }
}


type Json = Record<string, unknown> | null | undefined;

/**
 * How many times shorter (in UTF-16 units) a normalizer can make a text, or null when it can drop
 * characters outright. Decomposition (NFD/NFKD) never lowers the code point count, but a CJK
 * compatibility ideograph outside the BMP (2 units) becomes one in it (1 unit): 2. Composition
 * (NFC/NFKC) joins at most a 4-code-point canonical decomposition into one character: 4.
 */
function normalizerShrink(n: Json): number | null {
  if (!n) return 1;
  switch (n.type) {
    case 'Sequence': {
      let f = 1;
      for (const x of (n.normalizers as Json[]) ?? []) {
        const g = normalizerShrink(x);
        if (g === null) return null;
        f *= g;
      }
      return f;
    }
    case 'Prepend':
      return 1;
    case 'NFD':
    case 'NFKD':
      return 2;
    case 'NFC':
    case 'NFKC':
      return 4;
    case 'Replace': {
      const pattern = (n.pattern as { String?: string } | undefined)?.String;
      return typeof pattern === 'string' && typeof n.content === 'string' && n.content.length >= pattern.length ? 1 : null;
    }
    default:
      return null; // strip / clean / regex replacements drop characters; Precompiled may too
  }
}

/** Pre-tokenizers that split the text without dropping any of it. */
function preTokenizerKeepsText(p: Json): boolean {
  if (!p) return true;
  switch (p.type) {
    case 'Sequence':
      return ((p.pretokenizers as Json[]) ?? []).every(preTokenizerKeepsText);
    case 'ByteLevel':
    case 'Metaspace':
    case 'Digits':
      return true;
    case 'Split':
    case 'Punctuation':
      return p.behavior !== 'Removed';
    default:
      return false; // Whitespace / WhitespaceSplit / BertPreTokenizer drop the spaces
  }
}

/**
 * The longest text one token can stand for, in UTF-16 units of the client's text, or null when
 * the tokenizer admits no such bound. It holds when nothing in the pipeline drops characters and
 * every token is a vocabulary entry spelling what it covers: then a text of n units needs at
 * least n / L tokens (L: the longest vocabulary or added token, times what the normalizer can
 * shrink). Byte-level vocabularies spell one byte per character, and a UTF-16 unit is at least
 * one UTF-8 byte, so the bound holds there too. Unknown-token fusing (one [UNK] for a whole run
 * of unknown characters) breaks it: BPE qualifies only without it (or with byte fallback, which
 * never produces [UNK]); WordPiece and Unigram never do.
 */
export function maxCharsPerToken(tokenizerJson: Record<string, unknown>): number | null {
  const model = tokenizerJson.model as Json;
  if (!model || model.type !== 'BPE') return null;
  if (model.unk_token != null && model.fuse_unk === true && model.byte_fallback !== true) return null;
  const shrink = normalizerShrink(tokenizerJson.normalizer as Json);
  if (shrink === null) return null;
  if (!preTokenizerKeepsText(tokenizerJson.pre_tokenizer as Json)) return null;
  let longest = 1;
  for (const piece of Object.keys((model.vocab as Record<string, number>) ?? {})) if (piece.length > longest) longest = piece.length;
  for (const t of (tokenizerJson.added_tokens as { content?: string }[]) ?? []) if (t.content && t.content.length > longest) longest = t.content.length;
  return longest * shrink;
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;

interface Pending {
  resolve: (r: Extract<TokenizeReply, { ok: true }>) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  pending: Map<number, Pending>;
}

export interface PoolOptions {
  /** Worker threads (default: 2, or 1 on a machine with fewer than 4 cores). */
  size?: number;
  inlineMaxChars?: number;
}

export class TokenizePool {
  private readonly slots: (Slot | null)[];
  private nextId = 1;
  private closed = false;
  readonly inlineMaxChars: number;

  private constructor(
    private readonly tok: TextTokenizer,
    private readonly init: WorkerInit,
    opts: PoolOptions,
  ) {
    const size = opts.size ?? (availableParallelism() >= 4 ? 2 : 1);
    this.slots = Array.from({ length: Math.max(1, size) }, () => null);
    this.inlineMaxChars = opts.inlineMaxChars ?? INLINE_MAX_CHARS;
  }

  /** Reads tokenizer.json for the length bound; threads start on the first large job. */
  static async create(modelDir: string, tok: TextTokenizer, eos: number | number[] | null, opts: PoolOptions = {}): Promise<TokenizePool> {
    const json = JSON.parse(await readFile(path.join(modelDir, 'tokenizer.json'), 'utf-8')) as Record<string, unknown>;
    return new TokenizePool(tok, { modelDir, eos, maxCharsPerToken: maxCharsPerToken(json), tailEncodable: tailEncodable(json) }, opts);
  }

  get maxCharsPerToken(): number | null {
    return this.init.maxCharsPerToken;
  }

  /**
   * Token ids of `text`; TooManyTokensError as soon as it is known to exceed `maxTokens`.
   * `keepLast`: only the last this many ids are wanted (truncation); the rest never reach the loop.
   * A LargeText (a prompt the JSON body parser thread kept) is refused by its length alone, or
   * encoded by a thread that fetches it from the parser thread: its text never reaches the loop.
   */
  async encode(text: string | LargeText, addSpecial = true, maxTokens: number | null = null, keepLast: number | null = null): Promise<number[]> {
    this.checkBound(text.length, maxTokens);
    // Within the inline limit (only when it is raised past LARGE_TEXT_MIN_CHARS, as bench/stall's pool-OFF baseline does) it is encoded here like any text.
    if (text instanceof LargeText && text.length <= this.inlineMaxChars) text = await text.text();
    if (text instanceof LargeText) {
      const port = textPort();
      return Array.from((await this.submit({ op: 'encode', text: { ref: text.id, port }, addSpecial, maxTokens, keepLast }, [port])).ids);
    }
    if (text.length <= this.inlineMaxChars) return keepLast !== null ? encodeLast(this.tok, text, addSpecial, keepLast, this.init.tailEncodable)! : this.tok.encode(text, addSpecial);
    return Array.from((await this.submit({ op: 'encode', text, addSpecial, maxTokens, keepLast })).ids);
  }

  /** encodeChat, rendered and encoded off the loop when the conversation is large. */
  async encodeChat(messages: ChatTurn[], addGenerationPrompt = true, maxTokens: number | null = null): Promise<number[]> {
    let chars = 0;
    for (const m of messages) chars += typeof m.content === 'string' ? m.content.length : 0;
    if (chars <= this.inlineMaxChars) return this.tok.encodeChat(messages, addGenerationPrompt);
    return Array.from((await this.submit({ op: 'chat', messages, addGenerationPrompt, maxTokens })).ids);
  }

  /** Ids with each token's text and whether it is special (TGI's /tokenize). */
  async detail(text: string, addSpecial = true, maxTokens: number | null = null): Promise<{ ids: number[]; texts: string[]; special: boolean[] }> {
    this.checkBound(text.length, maxTokens);
    if (text.length <= this.inlineMaxChars) {
      const ids = this.tok.encode(text, addSpecial);
      if (maxTokens !== null && ids.length > maxTokens) throw new TooManyTokensError(ids.length);
      return { ids, texts: ids.map((i) => this.tok.decode([i], false)), special: ids.map((i) => this.tok.isSpecial(i)) };
    }
    const r = await this.submit({ op: 'detail', text, addSpecial, maxTokens });
    return { ids: Array.from(r.ids), texts: r.texts!, special: Array.from(r.special!, (s) => s === 1) };
  }

  private checkBound(chars: number, maxTokens: number | null): void {
    if (maxTokens === null) return;
    const atLeast = tokensAtLeast(chars, this.init.maxCharsPerToken);
    if (atLeast > maxTokens) throw new TooManyTokensError(atLeast);
  }

  private slot(i: number): Slot {
    const existing = this.slots[i];
    if (existing) return existing;
    // The server runs its TypeScript through tsx, whose loader hooks do not reach worker
    // threads: the worker registers them before importing its module.
    const entry = new URL('./tokenize-worker.ts', import.meta.url).href;
    const worker = new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(entry)}); });`, { eval: true, workerData: this.init });
    const pending = new Map<number, Pending>();
    let markReady!: () => void;
    const ready = new Promise<void>((r) => (markReady = r));
    const s: Slot = { worker, ready, pending };
    const fail = (err: Error) => {
      if (this.slots[i] === s) this.slots[i] = null; // the next job starts a fresh thread
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      markReady();
    };
    worker.on('message', (r: TokenizeReply | { ready: true }) => {
      if ('ready' in r) return markReady();
      const p = pending.get(r.id);
      if (!p) return;
      pending.delete(r.id);
      if (pending.size === 0) worker.unref();
      if (r.ok) p.resolve(r);
      else if (r.kind === 'too_long') p.reject(new TooManyTokensError(r.atLeast));
      else if (r.kind === 'template') p.reject(new ChatTemplateError(r.message));
      else p.reject(new Error(`tokenizer: ${r.message}`));
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`a tokenizer thread exited (${code})`)));
    // Referenced only while it holds work, so an idle pool never keeps the process alive.
    worker.unref();
    this.slots[i] = s;
    return s;
  }

  private submit(job: DistributiveOmit<TokenizeJob, 'id'>, transfer: MessagePort[] = []): Promise<Extract<TokenizeReply, { ok: true }>> {
    if (this.closed) return Promise.reject(new Error('the tokenizer pool is closed'));
    // The least busy thread takes the job (threads start only when needed).
    let best = 0;
    let bestLoad = Infinity;
    for (let i = 0; i < this.slots.length; i++) {
      const load = this.slots[i]?.pending.size ?? 0;
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    const s = this.slot(best);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      s.pending.set(id, { resolve, reject });
      s.worker.ref();
      s.worker.postMessage({ ...job, id } as TokenizeJob, transfer);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s?.worker.terminate()));
    this.slots.fill(null);
  }
}
