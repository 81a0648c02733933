// What issue 13 broadened, checked at the byte-automaton level against an independent validator
// (ajv + ajv-formats): formats, patterns, fractional bounds, uniqueItems, allOf / anyOf / $ref
// with siblings, minProperties beyond the declared properties; what is still refused names the
// keyword at fault. Token-level and model-level checks are in json-mode.test.ts and
// test/backend/json-mode-e2e.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LazyDfa } from './automaton.ts';
import { sample } from './test-sampling.ts';
import { compileSchema, decimalParts } from './compile.ts';
import { compilePattern, cpMatches, PatternError, utf8Sequences } from './regex.ts';
import { SchemaError } from './schema.ts';
import { USER_SCHEMAS } from './test-schemas.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { validationErrors } from '../../test/helpers/json-validator.ts';

const dfaOf = (schema: unknown) => new LazyDfa(compileSchema(schema, { maxWhitespace: 2 }));

function check(schema: unknown, yes: string[], no: string[]) {
  const dfa = dfaOf(schema);
  for (const y of yes) {
    assert.ok(dfa.matches(y), `${JSON.stringify(schema)} should accept ${y}`);
    assert.equal(validationErrors(schema, JSON.parse(y)), null, `ajv disagrees on ${y}`);
  }
  for (const n of no) assert.ok(!dfa.matches(n), `${JSON.stringify(schema)} should reject ${n}`);
}

function refused(schema: unknown, ...names: (string | RegExp)[]) {
  assert.throws(
    () => compileSchema(schema),
    (err: unknown) => {
      assert.ok(err instanceof SchemaError, `expected a SchemaError, got ${err}`);
      for (const n of names) {
        if (typeof n === 'string') assert.ok(err.message.includes(n), `"${err.message}" should name ${n}`);
        else assert.match(err.message, n);
      }
      return true;
    },
  );
}

describe('structured features: languages', () => {
  it('formats email, hostname, ipv4, ipv6, uri (a valid subset of each)', () => {
    check({ type: 'string', format: 'email' }, ['"a.b+c@example.com"', '"x@a-b.io"'], ['"a@b"', '"@b.co"', '"a..b@c.de"', '"a@-b.de"']);
    check({ type: 'string', format: 'hostname' }, ['"example.com"', '"a"', '"x-1.y"'], ['"-a.com"', '"a-.com"', '"a..b"', '""']);
    check({ type: 'string', format: 'ipv4' }, ['"0.0.0.0"', '"255.255.255.255"', '"192.168.1.20"'], ['"256.1.1.1"', '"01.1.1.1"', '"1.1.1"']);
    check({ type: 'string', format: 'ipv6' }, ['"2001:db8:0:0:0:0:2:1"'], ['"2001:db8::1:2:3:4:5:6:7"', '"1:2:3:4:5:6:7"']);
    check({ type: 'string', format: 'uri' }, ['"https://example.com/a/b?x=1"', '"http://a"'], ['"example.com"', '"https://"']);
    check({ type: 'string', format: 'email', maxLength: 6 }, ['"a@b.cd"'], ['"ab@c.de"']);
  });

  it('pattern: classes, quantifiers, alternation, anchors, escapes', () => {
    check({ type: 'string', pattern: '^[A-Z]{2}-\\d{3,5}$' }, ['"AB-123"', '"ZZ-12345"'], ['"AB-12"', '"ab-123"', '"AB-123456"']);
    check({ type: 'string', pattern: 'ab+c', maxLength: 6 }, ['"abc"', '"xabbcy"', '"abbbbc"'], ['"ac"', '"xabbbbc"']);
    check({ type: 'string', pattern: '^(yes|no)$|^\\d+$' }, ['"yes"', '"no"', '"42"'], ['"yes1"', '"maybe"']);
    check({ type: 'string', pattern: '^[^"\\\\]*$', maxLength: 3 }, ['"ab"', '"\\n"'], ['"\\""', '"\\\\"']);
    check({ type: 'string', pattern: '^\\u00e9+\\.?$' }, ['"é."', '"éé"'], ['"e"', '"\\u00e9"']);
    check({ type: 'string', pattern: '^a.b$' }, ['"a b"', '"a😀b"'], ['"a\\nb"']);
    // A pattern and lengths that leave nothing is refused by name.
    refused({ type: 'string', pattern: '^a{5}$', maxLength: 3 }, '"pattern"');
  });

  it('the pattern NFA agrees with JavaScript (u flag) on matching', () => {
    const rand = mulberry32(7);
    const patterns = ['^[a-c]{1,3}x?$', 'b|c\\d', '^(?:ab|a)*$', '^\\w+@\\S+$', '[^a-z]', '^.{2}$'];
    const alphabet = ['a', 'b', 'c', 'x', '1', '@', ' ', '\n', 'é', '😀', 'Z'];
    for (const p of patterns) {
      const nfa = compilePattern(p);
      const re = new RegExp(p, 'u');
      for (let i = 0; i < 300; i++) {
        const s = Array.from({ length: Math.floor(rand() * 6) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
        assert.equal(cpMatches(nfa, s), re.test(s), `${p} on ${JSON.stringify(s)}`);
      }
    }
  });

  it('random patterns: compiled or refused by name (never another error), and then matching like RegExp with the u flag', () => {
    const rand = mulberry32(11);
    const atoms = ['a', 'b', '.', '\\d', '\\w', '[ab]', '[^a]', '(', ')', '|', '*', '+', '?', '{1,2}', '{2}', '^', '$', '\\1', '(?:', '(?=', '\\b', '[', ']', '\\', 'é', '{'];
    const alphabet = ['a', 'b', 'c', '1', ' ', 'é', '_', '\n', '{'];
    let compiled = 0;
    for (let i = 0; i < 1500; i++) {
      const src = Array.from({ length: 1 + Math.floor(rand() * 6) }, () => atoms[Math.floor(rand() * atoms.length)]).join('');
      let nfa: ReturnType<typeof compilePattern>;
      try {
        nfa = compilePattern(src);
      } catch (err) {
        assert.ok(err instanceof PatternError, `${src}: ${err}`);
        continue;
      }
      let re: RegExp;
      try {
        re = new RegExp(src, 'u');
      } catch {
        assert.fail(`${JSON.stringify(src)} compiled but is not a valid u-flag RegExp`);
      }
      compiled++;
      for (let k = 0; k < 20; k++) {
        const str = Array.from({ length: Math.floor(rand() * 5) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
        assert.equal(cpMatches(nfa, str), re.test(str), `${JSON.stringify(src)} on ${JSON.stringify(str)}`);
      }
    }
    assert.ok(compiled > 100, `${compiled} compiled`);
  });

  it('UTF-8 sequences cover each code point range exactly', () => {
    for (const [lo, hi] of [[0, 0x7f], [0x80, 0x10ffff], [0x7ff, 0x801], [0xe000, 0xffff], [0x10000, 0x10ffff], [0x3a9, 0x4e2d]]) {
      const seqs = utf8Sequences(lo!, hi!);
      for (let cp = Math.max(lo! - 2, 0); cp <= Math.min(hi! + 2, 0x10ffff); cp += cp < 0x3000 ? 1 : 97) {
        if (cp >= 0xd800 && cp <= 0xdfff) continue;
        const bytes = Buffer.from(String.fromCodePoint(cp), 'utf-8');
        const n = seqs.filter((s) => s.length === bytes.length && s.every(([a, b], k) => bytes[k]! >= a && bytes[k]! <= b)).length;
        assert.equal(n, cp >= lo! && cp <= hi! ? 1 : 0, `U+${cp.toString(16)} in [${lo}, ${hi}]`);
      }
    }
  });

  it('fractional bounds: exact, strict where exclusive', () => {
    check({ type: 'number', minimum: 0.5, maximum: 99.95 }, ['0.5', '1', '99.95', '99.9', '0.51', '50.123'], ['0.4', '0.49', '99.96', '100', '0.50', '-1']);
    check({ type: 'number', exclusiveMinimum: -1.25, exclusiveMaximum: 0.001 }, ['-1', '-1.24', '0', '0.0009', '-0.5'], ['-1.25', '0.001', '0.002', '-2', '-1.3']);
    check({ type: 'number', minimum: -273.15, maximum: 1000 }, ['-273.15', '-273', '1000', '999.999'], ['-273.16', '1000.1', '-274']);
    check({ type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1e-3 }, ['0.0005', '0.000999'], ['0', '0.001', '0.0010']);
    check({ type: 'integer', minimum: 0.5, maximum: 3.5 }, ['1', '3'], ['0', '4', '1.5']);
    assert.deepEqual(decimalParts(1e-7), { int: '0', frac: '0000001' });
    assert.deepEqual(decimalParts(1.5e21), { int: '1500000000000000000000', frac: '' });
    assert.deepEqual(decimalParts(-273.15), { int: '273', frac: '15' });
    refused({ type: 'number', minimum: 2.5, exclusiveMaximum: 2.5 }, '"minimum"/"maximum"');
  });

  it('uniqueItems over finite item sets (pydantic set[Literal], set[bool], small int ranges)', () => {
    check({ type: 'array', items: { enum: ['a', 'b', 'c'] }, uniqueItems: true }, ['[]', '["a","c"]', '["a","b","c"]', '["b"]'], ['["a","a"]', '["c","a"]', '["a","b","c","a"]']);
    check({ type: 'array', items: { type: 'integer', minimum: 1, maximum: 4 }, uniqueItems: true, minItems: 2, maxItems: 3 }, ['[1,2]', '[2,3,4]'], ['[1]', '[1,1]', '[1,2,3,4]']);
    check({ type: 'array', items: { type: 'boolean' }, uniqueItems: true }, ['[true,false]', '[false]'], ['[true,true]']);
    // set[str]: at most 8 items, of lengths distinct modulo their count.
    check({ type: 'array', items: { type: 'string' }, uniqueItems: true, maxItems: 3 }, ['[]', '["","a","bc"]', '["abc","a"]'], ['["a","b"]', '["",""]', '["a","b","c","d"]']);
    check({ type: 'array', items: { type: 'string', maxLength: 2 }, uniqueItems: true, minItems: 2 }, ['["","a"]'], ['["ab","a"]', '["a"]']);
    refused({ type: 'array', items: { type: 'string' }, uniqueItems: true, minItems: 9 }, '"minItems" 9', '"uniqueItems"');
    refused({ type: 'array', items: { type: 'number' }, uniqueItems: true }, '"uniqueItems"', 'at #');
    refused({ type: 'array', items: { enum: [1, 2] }, uniqueItems: true, minItems: 3 }, '"minItems" 3', '"uniqueItems"');
  });

  it('allOf intersections, anyOf and $ref beside other keywords', () => {
    check(
      { allOf: [{ type: 'object', properties: { a: { type: 'integer', minimum: 0 } }, required: ['a'] }, { type: 'object', properties: { a: { maximum: 5 }, b: { type: 'boolean' } }, required: ['b'] }] },
      ['{"a":5,"b":true}', '{"a":0,"b":false}'],
      ['{"a":6,"b":true}', '{"a":1}', '{"b":true}'],
    );
    // additionalProperties of one part applies to the other part's properties.
    refused({ allOf: [{ type: 'object', properties: { a: { type: 'integer' } }, additionalProperties: false }, { properties: { b: { type: 'integer' } }, required: ['b'] }] }, '"b"');
    refused({ allOf: [{ type: 'string' }, { type: 'integer' }] }, '"type"');
    check({ type: 'object', properties: { k: { enum: ['a', 'b'] }, x: { type: 'integer' } }, required: ['k'], additionalProperties: false, anyOf: [{ required: ['x'] }, { properties: { k: { const: 'b' } } }] }, ['{"k":"a","x":1}', '{"k":"b"}'], ['{"k":"a"}']);
    check({ $defs: { s: { type: 'string', maxLength: 3 } }, $ref: '#/$defs/s', minLength: 2 }, ['"ab"', '"abc"'], ['"a"', '"abcd"']);
    check({ oneOf: [{ type: 'integer' }, { type: 'string' }], minimum: 3 }, ['3', '"x"'], ['2']);
    // A recursive $ref beside other keywords would inline itself forever: refused by name.
    refused({ $defs: { n: { type: 'object', properties: { c: { $ref: '#/$defs/n', maxProperties: 1 } } } }, $ref: '#/$defs/n' }, 'recursive "$ref" with sibling keywords');
  });

  it('minProperties beyond the declared properties: undeclared keys that cannot collide', () => {
    // The case: {"id":1,"x":2} satisfies it.
    const s = { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], minProperties: 2 };
    check(s, ['{"id":1,"xyz":2}', '{"id":1,"abc":null}'], ['{"id":1}', '{"id":1,"ab":2}', '{"id":1,"id":2}']);
    check({ type: 'object', additionalProperties: { type: 'integer' }, minProperties: 2 }, ['{"":1,"a":2}', '{"ab":1,"a":2}'], ['{"a":1,"b":2}', '{"a":1,"a":2}']);
    refused({ type: 'object', properties: { id: { type: 'integer' } }, minProperties: 2, additionalProperties: false }, '"minProperties" 2', '"additionalProperties"');
    refused({ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], maxProperties: 0 }, '"maxProperties" 0');
    refused({ type: 'string', minLength: 3, maxLength: 2 }, '"minLength" 3 > "maxLength" 2');
  });

  it('refuses what no automaton can decide, by name', () => {
    refused({ type: 'string', pattern: '(a)\\1' }, '"pattern"', 'backreferences');
    refused({ type: 'string', pattern: '^(?=a)' }, 'lookahead');
    refused({ type: 'string', pattern: '(?<!a)b' }, 'lookbehind');
    refused({ type: 'string', pattern: '\\bword' }, 'word boundary');
    refused({ type: 'string', pattern: '\\p{L}+' }, 'Unicode property escapes');
    refused({ type: 'string', pattern: 'a(^b)' }, 'anchor');
    refused({ type: 'string', pattern: '[' }, '"pattern"');
    refused({ type: 'string', format: 'email', pattern: 'a' }, '"pattern" together with "format"');
    refused({ type: 'string', pattern: '^[a-z]{1,999}$', maxLength: 900 }, '"pattern"', '"maxLength"');
  });
});

describe('structured features: stop sequences and clean-up patterns are never generated', () => {
  it('the product automaton avoids every pattern, and keeps everything else', () => {
    const stop = ['ab', 'bca', '\n\n', ':"z'];
    const dfa = new LazyDfa(compileSchema({ type: 'object', properties: { s: { type: 'string', maxLength: 8 } } }, { maxWhitespace: 2, stop }));
    for (const ok of ['{"s":"ba"}', '{"s":"bcb"}', '{\n"s":"ba"\n}', '{"s":"b"\n}']) assert.ok(dfa.matches(ok), ok);
    for (const bad of ['{"s":"xaby"}', '{"s":"bbca"}', '{"s":"zz"}', '{\n\n"s":""}']) assert.ok(!dfa.matches(bad), bad);
    const rand = mulberry32(5);
    const utf8 = new TextDecoder();
    for (let i = 0; i < 200; i++) {
      const b = sample(dfa, rand);
      if (!b) continue;
      const text = utf8.decode(b);
      for (const p of stop) assert.ok(!text.includes(p), `${JSON.stringify(text)} contains ${JSON.stringify(p)}`);
    }
    // Needed by every value: refused, naming "stop".
    assert.throws(() => compileSchema({ type: 'object' }, { stop: ['}'] }), /stop sequences \("\}"\)/);
    // Long stop sequences cannot blow the automaton up.
    assert.throws(() => compileSchema({ type: 'array', items: { type: 'string', maxLength: 200 }, maxItems: 50 }, { stop: ['x'.repeat(400), 'y'.repeat(400)] }), /too large.*stop sequences/);
  });

  it('clean-up patterns: " ," " ." " ?" " !" " \'" " n\'" never appear, in strings or between tokens', () => {
    const dfa = new LazyDfa(compileSchema({ type: 'array', items: { type: 'string', maxLength: 6 } }, { maxWhitespace: 2, cleanup: true }));
    for (const ok of ['["a, b"]', '["n\'t"]', '["it\'s"]', '[ "x" ]']) assert.ok(dfa.matches(ok), ok);
    for (const bad of ['["a ,b"]', '["Non ?"]', '["it \'s"]', '["do n\'t"]', '["x" ,"y"]', '["x ."]']) assert.ok(!dfa.matches(bad), bad);
  });
});

describe('structured features: sampled texts validate with ajv', () => {
  for (const [name, schema] of Object.entries(USER_SCHEMAS)) {
    it(name, () => {
      const dfa = dfaOf(schema);
      const utf8 = new TextDecoder('utf-8', { fatal: true });
      let done = 0;
      for (let seed = 0; seed < 40; seed++) {
        const bytes = sample(dfa, mulberry32(seed * 104729 + name.length));
        if (!bytes) continue;
        done++;
        const text = utf8.decode(bytes);
        const value = JSON.parse(text) as unknown;
        assert.equal(validationErrors(schema, value), null, `${name} seed ${seed}: ${text}`);
      }
      assert.ok(done >= 20, `${name}: only ${done}/40 samples finished`);
    });
  }
});
