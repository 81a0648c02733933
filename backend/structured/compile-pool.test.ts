// Large schemas compile on the worker thread: the same NFA as compiling inline, the same
// SchemaError issues, the event loop keeps turning meanwhile, and concurrent requests for one new
// schema share one compile.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TextTokenizer } from '../text/tokenizer.ts';
import { compileSchemaAsync, INLINE_MAX_CHARS } from './compile-pool.ts';
import { compileSchema } from './compile.ts';
import { grammarForRequest } from './index.ts';
import { SchemaError } from './schema.ts';
import { largeSchema } from './test-schemas.ts';
import { loadTokenBytes } from './token-bytes.ts';
import { Vocab } from './vocab.ts';

/** Event-loop turns (setImmediate) until `p` settles. */
async function turnsWhile<T>(p: Promise<T>): Promise<{ turns: number; result: PromiseSettledResult<T> }> {
  let done = false;
  let turns = 0;
  const settled = Promise.allSettled([p]).then(([r]) => {
    done = true;
    return r!;
  });
  while (!done) {
    await new Promise((r) => setImmediate(r));
    turns++;
  }
  return { turns, result: await settled };
}

describe('schema compilation off the event loop', () => {
  it('gives the inline NFA while the event loop keeps turning', async () => {
    const schema = largeSchema();
    assert.ok(JSON.stringify(schema).length > INLINE_MAX_CHARS);
    const { turns, result } = await turnsWhile(compileSchemaAsync(schema, { horizon: 16 }));
    assert.equal(result.status, 'fulfilled');
    assert.deepEqual((result as PromiseFulfilledResult<unknown>).value, compileSchema(schema, { horizon: 16 }));
    // Inline, a compile this size is one long turn; on the worker the loop runs throughout.
    assert.ok(turns >= 10, `only ${turns} event-loop turns during the compile`);
  });

  it('rejects with the same SchemaError issues as an inline compile', async () => {
    const schema = largeSchema({ code: { type: 'string', pattern: '^[A-Z]+$' }, odd: { not: { type: 'null' } } });
    let inline: SchemaError | undefined;
    try {
      compileSchema(schema);
    } catch (err) {
      inline = err as SchemaError;
    }
    assert.ok(inline instanceof SchemaError);
    await assert.rejects(compileSchemaAsync(schema), (err: unknown) => err instanceof SchemaError && JSON.stringify(err.issues) === JSON.stringify(inline!.issues));
  });

  it('compiles small schemas inline and shares one compile between concurrent requests', async () => {
    const small = { type: 'object', properties: { a: { type: 'boolean' } } };
    const { turns } = await turnsWhile(compileSchemaAsync(small));
    assert.equal(turns, 1, 'a small schema is ready at once');
    const dir = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models', 'llama');
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf-8')) as { vocab_size: number; eos_token_id: number };
    const tok = await TextTokenizer.load(dir, cfg.eos_token_id);
    const vocab = new Vocab(loadTokenBytes(dir).bytes, cfg.vocab_size, tok.eosTokenIds);
    const schema = largeSchema({ unique: { const: Math.random() } });
    const [a, b] = await Promise.all([grammarForRequest(vocab, schema), grammarForRequest(vocab, schema)]);
    assert.equal(a, b, 'one grammar for both');
    assert.equal(await grammarForRequest(vocab, schema), a, 'and from the cache afterwards');
  });
});
