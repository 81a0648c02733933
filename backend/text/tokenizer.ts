// The model's own tokenizer (tokenizer.json, run by @huggingface/tokenizers, a faithful JS port
// of the Rust crate) and its chat template (tokenizer_config.json `chat_template` or
// chat_template.jinja, rendered by @huggingface/jinja, the Jinja subset transformers uses).
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

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
  private readonly special: Set<number>;
  private readonly template: Template | null;
  private readonly templateVars: Record<string, unknown>;

  private constructor(
    private readonly tok: Tokenizer,
    config: Record<string, unknown>,
    chatTemplate: string | null,
    readonly eosTokenIds: number[],
    readonly bosTokenId: number | null,
  ) {
    this.special = new Set([...tok.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
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
    return new TextTokenizer(tok, config, chatTemplate, eos, bos);
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return '';
    return this.tok.decode([...ids], { skip_special_tokens: skipSpecialTokens });
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
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
 * Streams text out of token ids without ever splitting a multi-byte character or a word that a
 * later token re-spells: TGI's prefix/read offsets. Each push returns the newly final text.
 */
export class IncrementalDecoder {
  private ids: number[] = [];
  private prefix = 0;
  private read = 0;

  constructor(
    private readonly tok: TextTokenizer,
    private readonly skipSpecial = true,
  ) {}

  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.tok.decode(this.ids.slice(this.prefix, this.read), this.skipSpecial);
    const newText = this.tok.decode(this.ids.slice(this.prefix), this.skipSpecial);
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      const delta = newText.slice(prefixText.length);
      this.prefix = this.read;
      this.read = this.ids.length;
      return delta;
    }
    return '';
  }

  /** Text still held back (an incomplete character at the end), released at the end of generation. */
  flush(): string {
    const prefixText = this.tok.decode(this.ids.slice(this.prefix, this.read), this.skipSpecial);
    const all = this.tok.decode(this.ids.slice(this.prefix), this.skipSpecial);
    this.prefix = this.read = this.ids.length;
    return all.length > prefixText.length ? all.slice(prefixText.length) : '';
  }
}
