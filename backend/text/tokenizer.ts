// The model's own tokenizer (tokenizer.json, run by @huggingface/tokenizers, a faithful JS port
// of the Rust crate) and its chat template (tokenizer_config.json `chat_template` or
// chat_template.jinja, rendered by @huggingface/jinja, the Jinja subset transformers uses).
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { TokenDecoder, type DecodeStream } from './decode.ts';

export interface ChatTurn {
  role: string;
  content: string;
  [key: string]: unknown;
}

type TokenLike = string | { content?: string } | null | undefined;
const tokenContent = (t: TokenLike): string | null => (typeof t === 'string' ? t : (t?.content ?? null));

async function readJson(file: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf-8');
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${file}: invalid JSON: ${(err as Error).message}`);
  }
}

export class TextTokenizer {
  private readonly template: Template | null;
  private readonly templateVars: Record<string, unknown>;

  private constructor(
    private readonly tok: Tokenizer,
    config: Record<string, unknown>,
    chatTemplate: string | null,
    readonly eosTokenIds: number[],
    readonly bosTokenId: number | null,
    /** Decoding (ids -> text) as transformers does it: see decode.ts. */
    readonly decoder: TokenDecoder,
  ) {
    this.template = chatTemplate ? new Template(chatTemplate) : null;
    this.templateVars = {
      bos_token: tokenContent(config.bos_token as TokenLike) ?? '',
      eos_token: tokenContent(config.eos_token as TokenLike) ?? '',
      unk_token: tokenContent(config.unk_token as TokenLike) ?? '',
      pad_token: tokenContent(config.pad_token as TokenLike) ?? '',
    };
  }

  /** Loads tokenizer.json, tokenizer_config.json (and chat_template.jinja, generation_config.json). */
  static async load(dir: string, modelEos: number | number[] | null = null): Promise<TextTokenizer> {
    const tj = await readJson(path.join(dir, 'tokenizer.json'));
    if (!tj) throw new Error(`${path.join(dir, 'tokenizer.json')}: not found (Switchboard needs a fast tokenizer file)`);
    const config = (await readJson(path.join(dir, 'tokenizer_config.json'))) ?? {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tj, config);
    } catch (err) {
      throw new Error(`${path.join(dir, 'tokenizer.json')}: cannot build the tokenizer: ${(err as Error).message}`);
    }
    let chatTemplate: string | null = null;
    const ct = config.chat_template;
    if (typeof ct === 'string') chatTemplate = ct;
    else if (Array.isArray(ct)) chatTemplate = (ct as { name: string; template: string }[]).find((t) => t.name === 'default')?.template ?? null;
    const jinjaFile = await readFile(path.join(dir, 'chat_template.jinja'), 'utf-8').catch(() => null);
    if (jinjaFile !== null) chatTemplate = jinjaFile;
    // EOS: generation_config.json wins (instruct models list several), then config.json, then the tokenizer's.
    const gen = await readJson(path.join(dir, 'generation_config.json'));
    const idsOf = (v: unknown) => (typeof v === 'number' ? [v] : Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : []);
    let eos = idsOf(gen?.eos_token_id);
    if (eos.length === 0) eos = idsOf(modelEos);
    const eosText = tokenContent(config.eos_token as TokenLike);
    if (eos.length === 0 && eosText !== null) {
      const id = tok.token_to_id(eosText);
      if (id !== undefined) eos = [id];
    }
    const bosText = tokenContent(config.bos_token as TokenLike);
    const bos = bosText !== null ? (tok.token_to_id(bosText) ?? null) : null;
    const decoder = new TokenDecoder(tj, config, (ids) => tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
    return new TextTokenizer(tok, config, chatTemplate, eos, bos, decoder);
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** transformers' tokenizer.decode(ids, skip_special_tokens) with the tokenizer's clean_up_tokenization_spaces. */
  decode(ids: readonly number[], skipSpecialTokens = true): string {
    return this.decoder.decode(ids, skipSpecialTokens);
  }

  /** A special token: skip_special_tokens drops it from decoded text. */
  isSpecial(id: number): boolean {
    return this.decoder.isSpecial(id);
  }

  /**
   * One text per id that concatenates to decode(ids, skipSpecialTokens): each id gets the text
   * the incremental decoder settles when it arrives, the last one also what was still held back.
   * (Per-token texts of a prompt, /tokenize; not a substitute for decode() of the whole.)
   */
  tokenTexts(ids: readonly number[], skipSpecialTokens = false): string[] {
    const s = this.decoder.stream(skipSpecialTokens);
    const texts = ids.map((id) => s.push(id));
    if (texts.length > 0) texts[texts.length - 1] += s.finish();
    return texts;
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Renders a conversation as transformers' apply_chat_template(tokenize=False) does. */
  applyChatTemplate(messages: ChatTurn[], addGenerationPrompt = true): string {
    if (!this.template) throw new Error('this model has no chat template (tokenizer_config.json chat_template)');
    try {
      return this.template.render({ ...this.templateVars, messages, add_generation_prompt: addGenerationPrompt });
    } catch (err) {
      // raise_exception() (roles must alternate, ...) or a template that cannot handle this input.
      throw new ChatTemplateError((err as Error).message);
    }
  }

  /**
   * Token ids of a rendered chat prompt. The template already wrote the BOS text, so special
   * tokens are not added again (transformers does the same).
   */
  encodeChat(messages: ChatTurn[], addGenerationPrompt = true): number[] {
    return this.encode(this.applyChatTemplate(messages, addGenerationPrompt), false);
  }
}

/** The template refused the conversation (e.g. roles must alternate): the client's error. */
export class ChatTemplateError extends Error {}

/**
 * Streams the text of a generation out of its token ids. What it releases is always a prefix of
 * decode(all ids): text a later token could still change (an unfinished UTF-8 character, a run of
 * byte-fallback tokens, a space that clean-up may remove before "," "!" "?" "'s" ...) is held until
 * it is settled, and flush() releases the rest, so the pieces add up to exactly decode(all ids).
 *
 * The text released by push(id) is that token's text in the API (details.tokens[].text, logprob
 * tokens): a token whose text a later token settles shows "" and the later token carries it.
 */
export class IncrementalDecoder {
  private stream: DecodeStream;

  constructor(
    tok: TextTokenizer,
    skipSpecial = true,
  ) {
    this.stream = tok.decoder.stream(skipSpecial);
  }

  push(id: number): string {
    return this.stream.push(id);
  }

  /** What push(id) would release now, leaving this decoder as it is (texts of alternative tokens). */
  peek(id: number): string {
    return this.stream.clone().push(id);
  }

  /** Whether some text is held back now (flush() would release it), leaving this decoder as it is. */
  holding(): boolean {
    return this.stream.clone().finish() !== '';
  }

  /** Text still held back, released at the end of generation. The decoder can go on afterwards only as a new sequence. */
  flush(): string {
    return this.stream.finish();
  }
}
