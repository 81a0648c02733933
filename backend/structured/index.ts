// Structured output (JSON mode) for the routes: response_format → a constraint whose newMask()
// gives each generated sequence its own matcher (generate.ts calls it once per sequence, so
// best_of / n choices cloned from one request never share state).
//
// Compiled grammars are cached per vocabulary and schema text; masks are cached inside each
// grammar and shared by all sequences. The first structured request of a process reads the
// model's tokenizer.json and builds the token trie (cached per runtime).
import { DEFAULT_JSON_OBJECT_SCHEMA, OpenAIResponseFormat, type ResponseFormat } from '../../protocol/index.ts';
import { RequestError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import type { Nfa } from './automaton.ts';
import { compileSchemaAsync } from './compile-pool.ts';
import type { CompileOptions } from './compile.ts';
import { bindGrammar, Grammar } from './grammar.ts';
import { SchemaError } from './schema.ts';
import { loadTokenBytes, UnsupportedTokenizerError } from './token-bytes.ts';
import { Vocab } from './vocab.ts';
import { SchemaJson } from './schema-json.ts';

export { SchemaError } from './schema.ts';
export { Grammar, Matcher } from './grammar.ts';
export { Vocab } from './vocab.ts';

export type MaskFn = (generated: readonly number[]) => Uint32Array | undefined;

/**
 * What a GenerationRequest carries: a factory of per-sequence mask functions. `maxNewTokens`:
 * the sequence's token budget, which the mask steers the value to close within (grammar.ts).
 */
export interface Constraint {
  newMask(maxNewTokens?: number): MaskFn;
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

function cacheOf(vocab: Vocab): Map<string, Grammar> {
  let cache = grammars.get(vocab);
  if (!cache) {
    cache = new Map();
    grammars.set(vocab, cache);
  }
  return cache;
}

/** A cached grammar, marked most recently used. */
function cached(cache: Map<string, Grammar>, key: string): Grammar | undefined {
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
  }
  return hit;
}

function remember(cache: Map<string, Grammar>, key: string, vocab: Vocab, nfa: Nfa, options: Partial<CompileOptions>): Grammar {
  const g = bindGrammar(nfa, vocab, (options.horizon ?? vocab.maxTokenBytes) >= vocab.maxTokenBytes);
  cache.set(key, g);
  if (cache.size > GRAMMAR_CACHE) {
    const oldest = cache.keys().next().value!;
    cache.get(oldest)!.dropMasks();
    cache.delete(oldest);
  }
  return g;
}

const compiling = new WeakMap<Vocab, Map<string, Promise<Grammar>>>();

/**
 * The grammar of `schema` for a vocabulary, from the cache or compiled: a cache miss on a large
 * schema compiles on the worker thread (compile-pool.ts), and concurrent requests for one new
 * schema share that compile.
 */
export function grammarForRequest(vocab: Vocab, schema: unknown, options: Partial<CompileOptions> = {}): Promise<Grammar> {
  const cache = cacheOf(vocab);
  // A SchemaJson's text is what JSON.stringify would have written for its schema: the same key.
  const key = schema instanceof SchemaJson ? `[${schema.json},${JSON.stringify(options)}]` : JSON.stringify([schema, options]);
  const hit = cached(cache, key);
  if (hit) return Promise.resolve(hit);
  let inflight = compiling.get(vocab);
  if (!inflight) {
    inflight = new Map();
    compiling.set(vocab, inflight);
  }
  let p = inflight.get(key);
  if (!p) {
    const jobs = inflight;
    p = compileSchemaAsync(schema, { horizon: vocab.maxTokenBytes, singleByte: [...vocab.singleByte], ...options }, key.length)
      .then((nfa) => remember(cache, key, vocab, nfa, options))
      .finally(() => jobs.delete(key));
    inflight.set(key, p);
  }
  return p;
}

/** A constraint over a compiled grammar (tests and the bench use it without a Runtime). */
export function constraintOf(grammar: Grammar): Constraint {
  return {
    grammar,
    newMask(maxNewTokens?: number) {
      const m = grammar.matcher(maxNewTokens ?? null);
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

/** Builds the constraint for `schema`, or rejects with a RequestError naming what is not supported. */
export async function schemaConstraint(rt: Runtime, schema: unknown, where: string, status: number, stop: readonly string[] = []): Promise<Constraint> {
  let vocab: Vocab;
  try {
    vocab = vocabFor(rt);
  } catch (err) {
    if (err instanceof UnsupportedTokenizerError) throw new RequestError(`${where}: structured output is not available for this model: ${err.message}`, status);
    throw err;
  }
  try {
    // A tokenizer that cleans up decoded text must never be given the sequences it rewrites, and
    // a stop sequence must never cut a value short: neither is generated.
    const options: Partial<CompileOptions> = {};
    if (rt.tokenizer.decoder.cleanup) options.cleanup = true;
    if (stop.some((x) => x.length > 0)) options.stop = [...stop];
    return constraintOf(await grammarForRequest(vocab, schema, options));
  } catch (err) {
    if (err instanceof SchemaError) {
      throw new RequestError(`${where}: ${err.issues.length > 1 ? 'unsupported or invalid JSON Schema: ' : ''}${err.issues.join('; ')}`, status);
    }
    throw err;
  }
}

/** LoRAX `parameters.response_format` (422 on a schema we cannot honour); `stop`: the request's stop sequences. */
export async function loraxConstraint(rt: Runtime, rf: ResponseFormat | undefined, stop: readonly string[] = []): Promise<Constraint | undefined> {
  if (!rf || rf.type === 'text') return undefined;
  return schemaConstraint(rt, rf.schema ?? DEFAULT_JSON_OBJECT_SCHEMA, 'parameters.response_format.schema', 422, stop);
}

/** OpenAI `response_format` (400 on a schema we cannot honour); `stop`: the request's stop sequences. */
export async function openaiConstraint(rt: Runtime, rf: OpenAIResponseFormat | undefined, stop: readonly string[] = []): Promise<Constraint | undefined> {
  if (!rf || rf.type === 'text') return undefined;
  if (rf.type === 'json_object') return schemaConstraint(rt, rf.schema ?? ANY_JSON_OBJECT, 'response_format.schema', 400, stop);
  return schemaConstraint(rt, rf.json_schema.schema ?? ANY_JSON_OBJECT, 'response_format.json_schema.schema', 400, stop);
}
