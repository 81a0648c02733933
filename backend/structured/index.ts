// Structured output (JSON mode) for the routes: response_format → a constraint whose newMask()
// gives each generated sequence its own matcher (generate.ts calls it once per sequence, so
// best_of / n choices cloned from one request never share state).
//
// Compiled grammars are cached per vocabulary and schema text; masks are cached inside each
// grammar and shared by all sequences. The first structured request of a process reads the
// model's tokenizer.json and builds the token trie (cached per runtime).
import { DEFAULT_JSON_OBJECT_SCHEMA, OpenAIResponseFormat, type ResponseFormat } from '../../protocol/index.ts';
import { RequestError } from '../generate.ts';
import type { Runtime } from '../runtime.ts';
import { compileSchema, type CompileOptions } from './compile.ts';
import { Grammar } from './grammar.ts';
import { SchemaError } from './schema.ts';
import { loadTokenBytes, UnsupportedTokenizerError } from './token-bytes.ts';
import { Vocab } from './vocab.ts';

export { SchemaError } from './schema.ts';
export { Grammar, Matcher } from './grammar.ts';
export { Vocab } from './vocab.ts';

export type MaskFn = (generated: readonly number[]) => Uint32Array | undefined;

/** What a GenerationRequest carries: a factory of per-sequence mask functions. */
export interface Constraint {
  newMask(): MaskFn;
  readonly grammar: Grammar;
}

/** OpenAI's schema for json_object with no schema: any JSON object. */
export const ANY_JSON_OBJECT: Readonly<Record<string, unknown>> = Object.freeze({ type: 'object' });

const vocabs = new WeakMap<Runtime, Vocab>();
const grammars = new WeakMap<Vocab, Map<string, Grammar>>();
const GRAMMAR_CACHE = 64;

function vocabFor(rt: Runtime): Vocab {
  let v = vocabs.get(rt);
  if (!v) {
    const tb = loadTokenBytes(rt.engine.model.dir);
    v = new Vocab(tb.bytes, rt.engine.model.spec.vocabSize, rt.tokenizer.eosTokenIds);
    vocabs.set(rt, v);
  }
  return v;
}

/** Compiles (or finds in the cache) the grammar of `schema` for a vocabulary. */
export function grammarFor(vocab: Vocab, schema: unknown, options: Partial<CompileOptions> = {}): Grammar {
  let cache = grammars.get(vocab);
  if (!cache) {
    cache = new Map();
    grammars.set(vocab, cache);
  }
  const key = JSON.stringify([schema, options]);
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const nfa = compileSchema(schema, { horizon: vocab.maxTokenBytes, ...options });
  const g = new Grammar(nfa, vocab, (options.horizon ?? vocab.maxTokenBytes) >= vocab.maxTokenBytes);
  cache.set(key, g);
  if (cache.size > GRAMMAR_CACHE) {
    const oldest = cache.keys().next().value!;
    cache.get(oldest)!.dropMasks();
    cache.delete(oldest);
  }
  return g;
}

/** A constraint over a compiled grammar (tests and the bench use it without a Runtime). */
export function constraintOf(grammar: Grammar): Constraint {
  return {
    grammar,
    newMask() {
      const m = grammar.matcher();
      return (generated) => {
        try {
          return m.mask(generated);
        } catch (err) {
          // The scheduler loop must never throw; end this sequence instead.
          console.error(`structured output: mask failed: ${(err as Error).message}`);
          return grammar.vocab.eosMask;
        }
      };
    },
  };
}

/** Builds the constraint for `schema`, or throws a RequestError naming what is not supported. */
export function schemaConstraint(rt: Runtime, schema: unknown, where: string, status: number): Constraint {
  let vocab: Vocab;
  try {
    vocab = vocabFor(rt);
  } catch (err) {
    if (err instanceof UnsupportedTokenizerError) throw new RequestError(`${where}: structured output is not available for this model: ${err.message}`, status);
    throw err;
  }
  try {
    return constraintOf(grammarFor(vocab, schema));
  } catch (err) {
    if (err instanceof SchemaError) {
      throw new RequestError(`${where}: ${err.issues.length > 1 ? 'unsupported or invalid JSON Schema: ' : ''}${err.issues.join('; ')}`, status);
    }
    throw err;
  }
}

/** LoRAX `parameters.response_format` (422 on a schema we cannot honour). */
export function loraxConstraint(rt: Runtime, rf: ResponseFormat | undefined): Constraint | undefined {
  if (!rf || rf.type === 'text') return undefined;
  return schemaConstraint(rt, rf.schema ?? DEFAULT_JSON_OBJECT_SCHEMA, 'parameters.response_format.schema', 422);
}

/** OpenAI `response_format` (400 on a schema we cannot honour). */
export function openaiConstraint(rt: Runtime, rf: OpenAIResponseFormat | undefined): Constraint | undefined {
  if (!rf || rf.type === 'text') return undefined;
  if (rf.type === 'json_object') return schemaConstraint(rt, rf.schema ?? ANY_JSON_OBJECT, 'response_format.schema', 400);
  return schemaConstraint(rt, rf.json_schema.schema ?? ANY_JSON_OBJECT, 'response_format.json_schema.schema', 400);
}

/**
 * `response_format` of a /v1/completions body. The protocol's CompletionRequest does not list
 * it (OpenAI's legacy endpoint has none), so the route parses it from the raw body with this.
 */
