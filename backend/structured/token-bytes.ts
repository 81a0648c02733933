// The bytes each token id stands for, read from the model's tokenizer.json, so that the grammar
// (which works on bytes) can tell which tokens may come next.
//
// - Byte-level BPE (GPT-2, Llama 3, Qwen2): the decoder is ByteLevel; every character of a
//   vocabulary entry maps back to one byte through GPT-2's byte-to-unicode table (Ġ = space).
// - SentencePiece-style (Llama 2, Mistral; BPE or Unigram): the decoder replaces "▁" with a
//   space (Replace or Metaspace) and, with ByteFallback, "<0xNN>" tokens are the raw byte NN.
//   (The decoder's Strip / Metaspace drop one leading space at the very start of a decoded text:
//   the generated text then lacks a leading space, which never matters at the start of JSON.)
// - Added tokens (special or not) and unknown ids get `null`: they are never allowed inside JSON
//   (EOS is allowed by the grammar separately, at the end).
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';

export class UnsupportedTokenizerError extends Error {}

export interface TokenBytes {
  /** Bytes of each token id (index = id, up to the highest id in tokenizer.json); null: never inside JSON. */
  bytes: (Uint8Array | null)[];
  kind: 'byte-level' | 'sentencepiece' | 'plain';
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | [string, number][]; byte_fallback?: boolean; end_of_word_suffix?: string | null; continuing_subword_prefix?: string | null };
  decoder?: DecoderJson | null;
  added_tokens?: { id: number; content: string; special?: boolean }[];
}
interface DecoderJson {
  type: string;
  decoders?: DecoderJson[];
  pattern?: { String?: string; Regex?: string };
  content?: string;
  replacement?: string;
}

/** GPT-2's bytes_to_unicode, inverted: character → byte. */
function byteLevelDecoderTable(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCharCode(cs[i]!), b]));
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/** Token byte strings from a parsed tokenizer.json. */
export function tokenBytesFromJson(tj: TokenizerJson): TokenBytes {
  const model = tj.model ?? {};
  const type = model.type ?? (Array.isArray(model.vocab) ? 'Unigram' : 'BPE');
  if (type !== 'BPE' && type !== 'Unigram') throw new UnsupportedTokenizerError(`tokenizer model type ${type} is not supported for structured output`);
  if (model.end_of_word_suffix || model.continuing_subword_prefix) {
    throw new UnsupportedTokenizerError('tokenizers with word suffixes/prefixes (end_of_word_suffix, continuing_subword_prefix) are not supported for structured output');
  }
  const decoders = !tj.decoder ? [] : tj.decoder.type === 'Sequence' ? (tj.decoder.decoders ?? []) : [tj.decoder];
  const types = decoders.map((d) => d.type);
  if (decoders.length === 0) throw new UnsupportedTokenizerError('tokenizer.json has no decoder; cannot tell token bytes');
  for (const t of types) {
    if (!['ByteLevel', 'Replace', 'ByteFallback', 'Fuse', 'Strip', 'Metaspace'].includes(t)) {
      throw new UnsupportedTokenizerError(`tokenizer decoder ${t} is not supported for structured output`);
    }
  }
  const entries: [string, number][] = Array.isArray(model.vocab) ? model.vocab.map(([piece], id) => [piece, id]) : Object.entries(model.vocab ?? {});
  const added = new Set((tj.added_tokens ?? []).map((t) => t.id));
  let maxId = -1;
  for (const [, id] of entries) maxId = Math.max(maxId, id);
  for (const id of added) maxId = Math.max(maxId, id);
  const bytes: (Uint8Array | null)[] = new Array(maxId + 1).fill(null);
  const enc = new TextEncoder();

  if (types.includes('ByteLevel')) {
    const table = byteLevelDecoderTable();
    for (const [piece, id] of entries) {
      if (added.has(id)) continue;
      const out = new Uint8Array(piece.length);
      let ok = true;
      let i = 0;
      for (const ch of piece) {
        const b = table.get(ch);
        if (b === undefined) {
          ok = false;
          break;
        }
        out[i++] = b;
      }
      // A character outside the byte table cannot come out of a byte-level decoder faithfully.
      if (ok && i > 0) bytes[id] = out.subarray(0, i);
    }
    return { bytes, kind: 'byte-level' };
  }

  const fallback = types.includes('ByteFallback');
  const steps: ((s: string) => string)[] = [];
  for (const d of decoders) {
    if (d.type === 'Replace') {
      const content = d.content ?? '';
      if (d.pattern?.String !== undefined) {
        const pat = d.pattern.String;
        steps.push((s) => s.split(pat).join(content));
      } else if (d.pattern?.Regex !== undefined) {
        const re = new RegExp(d.pattern.Regex, 'gu');
        steps.push((s) => s.replace(re, content));
      }
    } else if (d.type === 'Metaspace') {
      const rep = d.replacement ?? '\u2581';
      steps.push((s) => s.split(rep).join(' '));
    }
  }
  for (const [piece, id] of entries) {
    if (added.has(id)) continue;
    const m = fallback ? BYTE_TOKEN.exec(piece) : null;
    if (m) {
      bytes[id] = Uint8Array.of(parseInt(m[1]!, 16));
      continue;
    }
    let s = piece;
    for (const f of steps) s = f(s);
    if (s.length > 0) bytes[id] = enc.encode(s);
  }
  return { bytes, kind: steps.length > 0 || fallback ? 'sentencepiece' : 'plain' };
}

const cache = new Map<string, { mtimeMs: number; value: TokenBytes }>();

/** Token byte strings of the tokenizer in a model directory (read once, cached). */
export function loadTokenBytes(modelDir: string): TokenBytes {
  const file = path.join(modelDir, 'tokenizer.json');
  const mtimeMs = statSync(file).mtimeMs;
  const hit = cache.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.value;
  const value = tokenBytesFromJson(JSON.parse(readFileSync(file, 'utf-8')) as TokenizerJson);
  cache.set(file, { mtimeMs, value });
  return value;
}
