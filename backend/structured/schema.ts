// JSON Schema → a normalized schema graph, with every keyword either understood or refused.
//
// The graph keeps the schema's *semantics* (what validates), so that `accepts` can check a
// value (used to filter enum/const values by their sibling keywords and to prove oneOf branches
// disjoint). What is *generated* for a node is decided by compile.ts, and is always a subset of
// what validates.
//
// Keywords are in three groups:
// - understood and enforced (SUPPORTED below);
// - annotations, which change nothing a validator checks (title, description, default, ...);
// - everything else a validator checks that we do not enforce: refused up front, by name and
//   location (SchemaError). Unknown non-standard keywords are ignored, as validators ignore them.
//
// Combinations are normalized before parsing: `allOf` parts (and `$ref` / `anyOf` / `oneOf` with
// sibling keywords) are merged keyword by keyword into one schema (mergeRaw: intersections of
// types and enums, the tighter bound, the union of `required`, per-property conjunctions with
// additionalProperties applied across parts), so intersections of object schemas need no
// product automaton. What cannot be merged exactly is refused by name.
import { compilePattern, cpMatches, FORMAT_PATTERNS, PatternError, type CpNfa } from './regex.ts';

export class SchemaError extends Error {
  constructor(readonly issues: string[]) {
    super(issues.join('; '));
  }
}

export type JsonType = 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null';
const JSON_TYPES: readonly JsonType[] = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];

/** String formats we generate exactly (a fixed-shape subset of each, always valid). */
export const FIXED_FORMATS = ['date', 'time', 'date-time', 'uuid'] as const;
export const SUPPORTED_FORMATS = [...FIXED_FORMATS, ...(Object.keys(FORMAT_PATTERNS) as (keyof typeof FORMAT_PATTERNS)[])] as const;
export type FixedFormat = (typeof FIXED_FORMATS)[number];
export type StringFormat = (typeof SUPPORTED_FORMATS)[number];
/** Fixed length of each fixed-shape format as we generate it. */
export const FORMAT_LENGTH: Record<FixedFormat, number> = { date: 10, time: 9, 'date-time': 20, uuid: 36 };
export const isFixedFormat = (f: StringFormat): f is FixedFormat => Object.hasOwn(FORMAT_LENGTH, f);

export interface StringC {
  minLength: number;
  maxLength: number;
  format: StringFormat | null;
  /** `pattern` (or a variable-shape format's pattern) as a code-point NFA. */
  pattern: CpNfa | null;
}
/** Numeric bounds; null: unbounded on that side. */
export interface NumC {
  min: number | null;
  exclMin: boolean;
  max: number | null;
  exclMax: boolean;
}
export interface ObjC {
  props: [string, Node][];
  required: string[];
  /** Schema of properties not in `props` (any when absent, never when false). */
  additional: Node;
  minProperties: number;
  maxProperties: number;
}
export interface ArrC {
  prefix: Node[];
  /** Items after the prefix. */
  items: Node;
  minItems: number;
  maxItems: number;
  /** uniqueItems: true. */
  unique: boolean;
}

export type Node =
  | { k: 'any'; id: number }
  | { k: 'never'; id: number; why?: string }
  | { k: 'ref'; id: number; ref: string; path: string; target: Node | null; recursive: boolean }
  | { k: 'anyOf' | 'oneOf'; id: number; options: Node[]; path: string }
  | {
      k: 'typed';
      id: number;
      path: string;
      /** null: no `type` keyword (any type validates). */
      types: Set<JsonType> | null;
      enum: unknown[] | null;
      str: StringC;
      num: NumC;
      obj: ObjC;
      arr: ArrC;
      /** Which type-specific keyword groups appear (to infer what to generate without `type`). */
      has: Set<JsonType>;
    };
export type TypedNode = Extract<Node, { k: 'typed' }>;

/** Keywords that only annotate. */
const ANNOTATIONS = new Set([
  '$schema', '$id', '$comment', '$anchor', '$vocabulary', '$defs', 'definitions', 'title', 'description', 'default', 'examples', 'example',
  'deprecated', 'readOnly', 'writeOnly', 'contentEncoding', 'contentMediaType', 'contentSchema', 'discriminator', 'nullable', 'xml',
  'externalDocs', '$recursiveAnchor', '$dynamicAnchor',
]);
const STRING_KW = ['minLength', 'maxLength', 'format', 'pattern'];
const NUMBER_KW = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
const OBJECT_KW = ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'];
const ARRAY_KW = ['items', 'prefixItems', 'additionalItems', 'minItems', 'maxItems', 'uniqueItems'];
const SUPPORTED = new Set(['type', 'enum', 'const', '$ref', 'anyOf', 'oneOf', 'allOf', ...STRING_KW, ...NUMBER_KW, ...OBJECT_KW, ...ARRAY_KW]);
/** Validation keywords we do not enforce: refused. */
const UNSUPPORTED = new Set([
  'patternProperties', 'propertyNames', 'dependentRequired', 'dependentSchemas', 'dependencies', 'if', 'then', 'else', 'not',
  'contains', 'minContains', 'maxContains', 'unevaluatedProperties', 'unevaluatedItems', 'multipleOf', '$dynamicRef', '$recursiveRef',
  'divisibleBy', 'disallow', 'extends',
]);

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** Strict deep equality of JSON values (key order ignored), as JSON Schema's enum/const use. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => jsonEqual(x, bb[i]));
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b as object, k) && jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function decodePointer(ref: string): string[] | null {
  if (ref === '#') return [];
  if (!ref.startsWith('#/')) return null;
  return ref
    .slice(2)
    .split('/')
    .map((seg) => {
      let s = seg;
      try {
        s = decodeURIComponent(seg);
      } catch {
        /* keep as is */
      }
      return s.replace(/~1/g, '/').replace(/~0/g, '~');
    });
}

const esc = (seg: string) => seg.replace(/~/g, '~0').replace(/\//g, '~1');

/** Parses a JSON Schema into the normalized graph; throws SchemaError listing every problem. */
export function parseSchema(root: unknown): Node {
  return new Parser(root).run();
}

class Parser {
  private issues: string[] = [];
  private nextId = 0;
  private byPointer = new Map<string, Node>();
  private refs: Extract<Node, { k: 'ref' }>[] = [];

  constructor(private readonly root: unknown) {}

  run(): Node {
    const node = this.parse(this.root, '#');
    this.byPointer.set('#', node);
    // Resolve refs (targets parsed once, by pointer; cycles are fine).
    for (let i = 0; i < this.refs.length; i++) {
      const r = this.refs[i]!;
      const target = this.parseAt(r.ref, r.path);
      r.target = target;
    }
    if (this.issues.length) throw new SchemaError(this.issues);
    markRecursiveRefs(node);
    return node;
  }

  private issue(path: string, msg: string): void {
    // Merged and distributed schemas can meet the same problem twice.
    const text = `${msg} (at ${path})`;
    if (!this.issues.includes(text)) this.issues.push(text);
  }

  private parseAt(ref: string, from: string): Node {
    const cached = this.byPointer.get(ref);
    if (cached) return cached;
    const segs = decodePointer(ref);
    if (!segs) {
      this.issue(from, `$ref "${ref}" (only local references "#" or "#/..." are supported)`);
      return this.mk({ k: 'never' });
    }
    let cur: unknown = this.root;
    for (const s of segs) {
      if (Array.isArray(cur) && /^\d+$/.test(s)) cur = cur[Number(s)];
      else if (isObj(cur) && Object.hasOwn(cur, s)) cur = cur[s];
      else {
        this.issue(from, `$ref "${ref}" does not resolve`);
        return this.mk({ k: 'never' });
      }
    }
    // Refs inside are queued, not followed, so cycles through this pointer terminate.
    const node = this.parse(cur, ref);
    this.byPointer.set(ref, node);
    return node;
  }

  private mk<T extends { k: string }>(n: T): T & { id: number } {
    return { ...n, id: this.nextId++ };
  }

  private parse(s: unknown, path: string): Node {
    if (s === true) return this.mk({ k: 'any' });
    if (s === false) return this.mk({ k: 'never' });
    if (!isObj(s)) {
      this.issue(path, 'not a schema (must be an object or a boolean)');
      return this.mk({ k: 'never' });
    }
    if (NEVER_WHY in s) return this.mk({ k: 'never', why: `${(s as Record<symbol, string>)[NEVER_WHY]} (at ${path})` });
    const keys = Object.keys(s);
    const unsupported = keys.filter((k) => UNSUPPORTED.has(k));
    if (unsupported.length) {
      for (const k of unsupported) this.issue(path, `unsupported keyword "${k}"`);
    }
    const constraining = keys.filter((k) => SUPPORTED.has(k) && !(k === 'uniqueItems' && s[k] === false));
    const siblings = () => Object.fromEntries(Object.entries(s).filter(([k]) => k !== '$ref' && k !== 'allOf' && k !== 'anyOf' && k !== 'oneOf' && !ANNOTATIONS.has(k)));

    if ('$ref' in s) {
      if (typeof s.$ref !== 'string') {
        this.issue(path, '"$ref" must be a string');
        return this.mk({ k: 'never' });
      }
      // $ref beside other constraints (2019-09+: both apply): an intersection, merged.
      if (constraining.some((k) => k !== '$ref')) return this.parseMerged([{ $ref: s.$ref }, { ...siblings(), ...pick(s, ['allOf', 'anyOf', 'oneOf']) }], path);
      const r = this.mk({ k: 'ref' as const, ref: s.$ref, path, target: null, recursive: false });
      this.refs.push(r);
      return r;
    }

    if ('allOf' in s) {
      const all = s.allOf;
      if (!Array.isArray(all) || all.length === 0) {
        this.issue(path, '"allOf" must be a non-empty array');
        return this.mk({ k: 'never' });
      }
      return this.parseMerged([...all, { ...siblings(), ...pick(s, ['anyOf', 'oneOf']) }], path);
    }

    for (const comb of ['anyOf', 'oneOf'] as const) {
      if (!(comb in s)) continue;
      const arr = s[comb];
      if (!Array.isArray(arr) || arr.length === 0) {
        this.issue(path, `"${comb}" must be a non-empty array`);
        return this.mk({ k: 'never' });
      }
      const others = constraining.filter((k) => k !== comb);
      if (others.length) {
        // Sibling keywords apply to every branch: distribute them (A ∧ (B1 ∨ B2) = (A ∧ B1) ∨ (A ∧ B2);
        // for oneOf too, since a value failing A fails every branch).
        const rest = Object.fromEntries(Object.entries(s).filter(([k]) => k !== comb && !ANNOTATIONS.has(k)));
        return this.parse({ [comb]: arr.map((b) => ({ allOf: [b, rest] })) }, path);
      }
      const options = arr.map((x, i) => this.parse(x, `${path}/${comb}/${i}`));
      const node = this.mk({ k: comb, options, path });
      if (comb === 'oneOf') this.oneOfs.push(node as Extract<Node, { k: 'oneOf' }>);
      return node;
    }

    if (constraining.length === 0) return this.mk({ k: 'any' });

    // A typed node.
    let types: Set<JsonType> | null = null;
    if ('type' in s) {
      const t = s.type;
      const list = Array.isArray(t) ? t : [t];
      if (list.length === 0 || !list.every((x) => typeof x === 'string' && (JSON_TYPES as readonly string[]).includes(x))) {
        this.issue(path, `"type" must be one of ${JSON_TYPES.join(', ')} or an array of them`);
        return this.mk({ k: 'never' });
      }
      types = new Set(list as JsonType[]);
    }
    let values: unknown[] | null = null;
    if ('enum' in s) {
      if (!Array.isArray(s.enum)) this.issue(path, '"enum" must be an array');
      else values = [...s.enum];
    }
    if ('const' in s) values = values === null ? [s.const] : values.filter((v) => jsonEqual(v, s.const));

    const has = new Set<JsonType>();
    // Strings.
    const str: StringC = { minLength: 0, maxLength: Infinity, format: null, pattern: null };
    if ('minLength' in s) {
      if (!isCount(s.minLength)) this.issue(path, '"minLength" must be a non-negative integer');
      else str.minLength = s.minLength;
      has.add('string');
    }
    if ('maxLength' in s) {
      if (!isCount(s.maxLength)) this.issue(path, '"maxLength" must be a non-negative integer');
      else str.maxLength = s.maxLength;
      has.add('string');
    }
    if ('format' in s) {
      const f = s.format;
      const stringsPossible = types === null || types.has('string');
      if (typeof f !== 'string') this.issue(path, '"format" must be a string');
      else if ((SUPPORTED_FORMATS as readonly string[]).includes(f)) {
        str.format = f as StringFormat;
        if (!isFixedFormat(str.format)) str.pattern = compilePattern(FORMAT_PATTERNS[str.format]);
        has.add('string');
      } else if (stringsPossible) this.issue(path, `unsupported keyword "format" ("${f}"; supported: ${SUPPORTED_FORMATS.join(', ')})`);
    }
    if ('pattern' in s) {
      const pat = s.pattern;
      has.add('string');
      if (typeof pat !== 'string') this.issue(path, '"pattern" must be a string');
      else if (str.format !== null) this.issue(path, '"pattern" together with "format" is not supported');
      else {
        try {
          str.pattern = compilePattern(pat);
        } catch (err) {
          if (!(err instanceof PatternError)) throw err;
          this.issue(path, `unsupported keyword "pattern" (${JSON.stringify(pat)}: ${err.message})`);
        }
      }
    }
    // Numbers.
    const num: NumC = { min: null, exclMin: false, max: null, exclMax: false };
    const bound = (k: string) => {
      const v = s[k];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        this.issue(path, `"${k}" must be a number`);
        return null;
      }
      has.add('number');
      return v;
    };
    if ('minimum' in s) num.min = bound('minimum');
    if ('maximum' in s) num.max = bound('maximum');
    for (const [k, side] of [['exclusiveMinimum', 'min'], ['exclusiveMaximum', 'max']] as const) {
      if (!(k in s)) continue;
      const v = s[k];
      if (typeof v === 'boolean') {
        // draft 4: a flag on minimum/maximum.
        if (side === 'min') num.exclMin = v && num.min !== null;
        else num.exclMax = v && num.max !== null;
        continue;
      }
      const b = bound(k);
      if (b === null) continue;
      if (side === 'min') {
        if (num.min === null || b >= num.min) {
          num.min = b;
          num.exclMin = true;
        }
      } else if (num.max === null || b <= num.max) {
        num.max = b;
        num.exclMax = true;
      }
    }
    // Objects.
    const obj: ObjC = { props: [], required: [], additional: this.mk({ k: 'any' }), minProperties: 0, maxProperties: Infinity };
    if ('properties' in s) {
      has.add('object');
      if (!isObj(s.properties)) this.issue(path, '"properties" must be an object');
      else obj.props = Object.entries(s.properties).map(([name, sub]) => [name, this.parse(sub, `${path}/properties/${esc(name)}`)]);
    }
    if ('required' in s) {
      has.add('object');
      if (!Array.isArray(s.required) || !s.required.every((x) => typeof x === 'string')) this.issue(path, '"required" must be an array of strings');
      else obj.required = [...new Set(s.required as string[])];
    }
    if ('additionalProperties' in s) {
      has.add('object');
      obj.additional = this.parse(s.additionalProperties, `${path}/additionalProperties`);
    }
    for (const k of ['minProperties', 'maxProperties'] as const) {
      if (!(k in s)) continue;
      has.add('object');
      if (!isCount(s[k])) this.issue(path, `"${k}" must be a non-negative integer`);
      else if (k === 'minProperties') obj.minProperties = s[k];
      else obj.maxProperties = s[k];
    }
    // Arrays.
    const arr: ArrC = { prefix: [], items: this.mk({ k: 'any' }), minItems: 0, maxItems: Infinity, unique: s.uniqueItems === true };
    if ('uniqueItems' in s && typeof s.uniqueItems !== 'boolean') this.issue(path, '"uniqueItems" must be a boolean');
    if (arr.unique) has.add('array');
    if ('prefixItems' in s) {
      has.add('array');
      if (!Array.isArray(s.prefixItems)) this.issue(path, '"prefixItems" must be an array');
      else arr.prefix = s.prefixItems.map((x, i) => this.parse(x, `${path}/prefixItems/${i}`));
    }
    if ('items' in s) {
      has.add('array');
      if (Array.isArray(s.items)) {
        // draft 4-2019 tuple form: items[] + additionalItems.
        if ('prefixItems' in s) this.issue(path, '"items" as an array together with "prefixItems" is not supported');
        arr.prefix = s.items.map((x, i) => this.parse(x, `${path}/items/${i}`));
        if ('additionalItems' in s) arr.items = this.parse(s.additionalItems, `${path}/additionalItems`);
      } else arr.items = this.parse(s.items, `${path}/items`);
    } else if ('additionalItems' in s) {
      // Without array-form items, additionalItems has no effect.
    }
    for (const k of ['minItems', 'maxItems'] as const) {
      if (!(k in s)) continue;
      has.add('array');
      if (!isCount(s[k])) this.issue(path, `"${k}" must be a non-negative integer`);
      else if (k === 'minItems') arr.minItems = s[k];
      else arr.maxItems = s[k];
    }
    return this.mk({ k: 'typed' as const, path, types, enum: values, str, num, obj, arr, has });
  }

  oneOfs: Extract<Node, { k: 'oneOf' }>[] = [];

  private mergeDepth = 0;

  /**
   * Parses the merge of allOf parts. Merging inlines $ref targets, so a recursive $ref beside
   * other keywords would inline itself forever: nesting is bounded.
   */
  private parseMerged(parts: unknown[], path: string): Node {
    if (this.mergeDepth >= 24) {
      this.issue(path, '"allOf" (or "$ref" beside other keywords) nests too deeply: a recursive "$ref" with sibling keywords is not supported');
      return this.mk({ k: 'never' });
    }
    this.mergeDepth++;
    try {
      return this.parse(this.mergeRaw(parts, path), path);
    } finally {
      this.mergeDepth--;
    }
  }

  /** The raw schema at a local pointer (null when it does not resolve: parse() then reports it). */
  private rawAt(ref: string): unknown {
    const segs = decodePointer(ref);
    if (!segs) return null;
    let cur: unknown = this.root;
    for (const seg of segs) {
      if (Array.isArray(cur) && /^\d+$/.test(seg)) cur = cur[Number(seg)];
      else if (isObj(cur) && Object.hasOwn(cur, seg)) cur = cur[seg];
      else return null;
    }
    return cur;
  }

  /** The plain parts a schema conjoins: `$ref`s followed, nested allOf flattened. */
  private flatten(x: unknown, path: string, out: unknown[], depth: number): void {
    if (depth > 16) {
      this.issue(path, '"allOf" / "$ref" nest too deeply to merge (a reference cycle through "allOf"?)');
      return;
    }
    if (!isObj(x)) {
      out.push(x);
      return;
    }
    if (typeof x.$ref === 'string' || Array.isArray(x.allOf)) {
      const rest = Object.fromEntries(Object.entries(x).filter(([k]) => k !== '$ref' && k !== 'allOf'));
      if (typeof x.$ref === 'string') {
        const target = this.rawAt(x.$ref);
        if (target === null) {
          this.issue(path, decodePointer(x.$ref) ? `$ref "${x.$ref}" does not resolve` : `$ref "${x.$ref}" (only local references "#" or "#/..." are supported)`);
          out.push(false);
        } else this.flatten(target, x.$ref, out, depth + 1);
      }
      if (Array.isArray(x.allOf)) for (const p of x.allOf) this.flatten(p, path, out, depth + 1);
      if (Object.keys(rest).some((k) => SUPPORTED.has(k) || UNSUPPORTED.has(k))) out.push(rest);
      return;
    }
    out.push(x);
  }

  /** allOf parts merged into one equivalent schema, or a part naming why not (see the file comment). */
  mergeRaw(parts: unknown[], path: string): unknown {
    const flat: unknown[] = [];
    for (const p of parts) this.flatten(p, path, flat, 0);
    const objs: Record<string, unknown>[] = [];
    for (const p of flat) {
      if (p === false) return false;
      if (p === true) continue;
      if (!isObj(p)) {
        this.issue(path, '"allOf": a part is not a schema');
        return false;
      }
      if (NEVER_WHY in p) return p;
      objs.push(p);
    }
    if (objs.length === 0) return true;
    if (objs.length === 1) return objs[0];
    const out: Record<string, unknown> = {};
    const never = (why: string) => ({ [NEVER_WHY]: why });
    const all = (k: string) => objs.filter((o) => k in o).map((o) => o[k]);
    const keys = [...new Set(objs.flatMap((o) => Object.keys(o)))];
    for (const k of keys) {
      if (ANNOTATIONS.has(k) || ['properties', 'additionalProperties', 'items', 'prefixItems', 'additionalItems', 'enum', 'const'].includes(k)) continue;
      const vals = all(k);
      switch (k) {
        case 'type': {
          let acc: Set<string> | null = null;
          for (const v of vals) {
            const t = new Set((Array.isArray(v) ? v : [v]) as string[]);
            if (acc === null) acc = t;
            else {
              const cur: Set<string> = acc;
              const next = new Set<string>();
              for (const x of cur) {
                if (t.has(x)) next.add(x);
                else if (x === 'number' && t.has('integer')) next.add('integer');
                else if (x === 'integer' && t.has('number')) next.add('integer');
              }
              acc = next;
            }
          }
          if (acc!.size === 0) return never('"allOf" parts require different "type"s');
          out.type = [...acc!];
          break;
        }
        case 'minLength':
        case 'minItems':
        case 'minProperties':
        case 'minimum':
          out[k] = vals.every((v) => typeof v === 'number') ? Math.max(...(vals as number[])) : vals[0];
          break;
        case 'maxLength':
        case 'maxItems':
        case 'maxProperties':
        case 'maximum':
          out[k] = vals.every((v) => typeof v === 'number') ? Math.min(...(vals as number[])) : vals[0];
          break;
        case 'exclusiveMinimum':
        case 'exclusiveMaximum':
          if (!vals.every((v) => typeof v === 'number')) {
            this.issue(path, `"allOf" parts with the draft-4 boolean form of "${k}" cannot be merged`);
            return false;
          }
          out[k] = k === 'exclusiveMinimum' ? Math.max(...(vals as number[])) : Math.min(...(vals as number[]));
          break;
        case 'required':
          out.required = [...new Set(vals.flatMap((v) => (Array.isArray(v) ? v : [])))];
          break;
        case 'uniqueItems':
          out.uniqueItems = vals.some((v) => v === true);
          break;
        case 'anyOf': {
          // (A1 ∨ A2) ∧ (B1 ∨ B2): the cross product, while small.
          let acc: unknown[] = vals[0] as unknown[];
          for (const v of vals.slice(1)) {
            if (!Array.isArray(v) || !Array.isArray(acc) || acc.length * v.length > 64) {
              this.issue(path, '"allOf" parts with several "anyOf" of more than 64 combinations cannot be merged');
              return false;
            }
            acc = acc.flatMap((a) => v.map((b) => ({ allOf: [a, b] })));
          }
          out.anyOf = acc;
          break;
        }
        default:
          if (vals.slice(1).every((v) => jsonEqual(v, vals[0]))) out[k] = vals[0];
          else if (SUPPORTED.has(k) || UNSUPPORTED.has(k)) {
            this.issue(path, `"allOf" parts with different "${k}" values cannot be merged`);
            return false;
          }
      }
    }
    // enum/const: the values every part allows.
    let values: unknown[] | null = null;
    for (const o of objs) {
      for (const list of ['enum' in o ? o.enum : undefined, 'const' in o ? [o.const] : undefined]) {
        if (!Array.isArray(list)) continue;
        values = values === null ? [...list] : values.filter((v) => list.some((w) => jsonEqual(v, w)));
      }
    }
    if (values !== null) out.enum = values;
    // Properties: each declared name conjoins its schema in every part that declares it and the
    // additionalProperties of every part that does not.
    const declared = [...new Set(objs.flatMap((o) => (isObj(o.properties) ? Object.keys(o.properties) : [])))];
    if (declared.length) {
      const props: Record<string, unknown> = {};
      for (const name of declared) {
        props[name] = conj(objs.map((o) => (isObj(o.properties) && Object.hasOwn(o.properties, name) ? o.properties[name] : 'additionalProperties' in o ? o.additionalProperties : true)));
      }
      out.properties = props;
    }
    if (objs.some((o) => 'additionalProperties' in o)) out.additionalProperties = conj(objs.map((o) => ('additionalProperties' in o ? o.additionalProperties : true)));
    // Items, position by position.
    const tuple = (o: Record<string, unknown>) => (Array.isArray(o.prefixItems) ? o.prefixItems : Array.isArray(o.items) ? o.items : []);
    const rest = (o: Record<string, unknown>) => (Array.isArray(o.items) ? ('additionalItems' in o ? o.additionalItems : true) : 'items' in o ? o.items : true);
    if (objs.some((o) => 'items' in o || 'prefixItems' in o)) {
      const L = Math.max(...objs.map((o) => tuple(o).length));
      if (L > 0) out.prefixItems = Array.from({ length: L }, (_, j) => conj(objs.map((o) => (j < tuple(o).length ? tuple(o)[j] : rest(o)))));
      out.items = conj(objs.map(rest));
    }
    return out;
  }
}

/** Marks a merged schema no value satisfies, with the reason (reported if nothing else is left). */
const NEVER_WHY = Symbol('never');

const pick = (s: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.filter((k) => k in s).map((k) => [k, s[k]]));

/** The conjunction of raw schemas: true dropped, duplicates merged, else an allOf. */
function conj(list: unknown[]): unknown {
  const parts: unknown[] = [];
  for (const x of list) {
    if (x === true || x === undefined) continue;
    if (x === false) return false;
    if (!parts.some((p) => jsonEqual(p, x))) parts.push(x);
  }
  return parts.length === 0 ? true : parts.length === 1 ? parts[0] : { allOf: parts };
}

/** Follows refs (no cycle can consist of refs alone after parsing, but guard anyway). */
export function deref(n: Node): Node {
  let cur = n;
  for (let i = 0; cur.k === 'ref' && i < 64; i++) cur = cur.target ?? { k: 'never', id: -1 };
  return cur.k === 'ref' ? { k: 'never', id: -1 } : cur;
}

function children(n: Node): Node[] {
  switch (n.k) {
    case 'ref':
      return n.target ? [n.target] : [];
    case 'anyOf':
    case 'oneOf':
      return n.options;
    case 'typed':
      return [...n.obj.props.map(([, v]) => v), n.obj.additional, ...n.arr.prefix, n.arr.items];
    default:
      return [];
  }
}

/** Every node reachable from root, each once (the graph may be cyclic through refs). */
function reachableNodes(root: Node): Node[] {
  const all: Node[] = [];
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    all.push(n);
    stack.push(...children(n));
  }
  return all;
}

/** Marks refs that can reach themselves (recursive schemas): the compiler bounds their depth. */
function markRecursiveRefs(root: Node): void {
  for (const r of reachableNodes(root)) {
    if (r.k !== 'ref' || !r.target) continue;
    const vis = new Set<Node>();
    const st = [r.target];
    while (st.length) {
      const n = st.pop()!;
      if (n === r) {
        r.recursive = true;
        break;
      }
      if (vis.has(n)) continue;
      vis.add(n);
      st.push(...children(n));
    }
  }
}

/** JSON type of a value, with integers told apart ("integer" also counts as "number"). */
function typeOf(v: unknown): JsonType {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v as JsonType;
}

function typeAllowed(types: Set<JsonType> | null, t: JsonType): boolean {
  if (types === null) return true;
  return types.has(t) || (t === 'integer' && types.has('number'));
}

const cpLength = (s: string) => [...s].length;

const DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
function formatOk(f: FixedFormat, s: string): boolean {
  const date = (d: string) => {
    const m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(d);
    if (!m) return false;
    const y = +m[1]!;
    const mo = +m[2]!;
    const day = +m[3]!;
    const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
    return mo >= 1 && mo <= 12 && day >= 1 && day <= (mo === 2 && leap ? 29 : DAYS[mo]!);
  };
  const time = (t: string) => {
    const m = /^(\d\d):(\d\d):(\d\d)(\.\d+)?(z|[+-](\d\d):(\d\d))$/i.exec(t);
    return !!m && +m[1]! <= 23 && +m[2]! <= 59 && +m[3]! <= 59 && +(m[6] ?? 0) <= 23 && +(m[7] ?? 0) <= 59;
  };
  switch (f) {
    case 'date':
      return date(s);
    case 'time':
      return time(s);
    case 'date-time': {
      const parts = s.split(/t|\s/i);
      return parts.length === 2 && date(parts[0]!) && time(parts[1]!);
    }
    case 'uuid':
      return /^[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(s);
  }
}

/** Whether `v` validates against the node (the schema's semantics, not what we generate). */
export function accepts(n: Node, v: unknown, ignoreEnum = false): boolean {
  switch (n.k) {
    case 'any':
      return true;
    case 'never':
      return false;
    case 'ref':
      return n.target ? accepts(n.target, v) : false;
    case 'anyOf':
      return n.options.some((o) => accepts(o, v));
    case 'oneOf':
      return n.options.filter((o) => accepts(o, v)).length === 1;
    case 'typed': {
      const t = typeOf(v);
      if (!typeAllowed(n.types, t)) return false;
      if (!ignoreEnum && n.enum !== null && !n.enum.some((e) => jsonEqual(e, v))) return false;
      if (t === 'string') {
        const s = v as string;
        const len = cpLength(s);
        if (len < n.str.minLength || len > n.str.maxLength) return false;
        if (n.str.format && isFixedFormat(n.str.format) && !formatOk(n.str.format, s)) return false;
        if (n.str.pattern && !cpMatches(n.str.pattern, s)) return false;
      } else if (t === 'number' || t === 'integer') {
        const x = v as number;
        const { min, max, exclMin, exclMax } = n.num;
        if (min !== null && (exclMin ? !(x > min) : !(x >= min))) return false;
        if (max !== null && (exclMax ? !(x < max) : !(x <= max))) return false;
      } else if (t === 'object') {
        const o = v as Record<string, unknown>;
        const keys = Object.keys(o);
        if (keys.length < n.obj.minProperties || keys.length > n.obj.maxProperties) return false;
        for (const r of n.obj.required) if (!Object.hasOwn(o, r)) return false;
        const declared = new Map(n.obj.props);
        for (const k of keys) {
          const sub = declared.get(k);
          if (!accepts(sub ?? n.obj.additional, o[k])) return false;
        }
      } else if (t === 'array') {
        const a = v as unknown[];
        if (a.length < n.arr.minItems || a.length > n.arr.maxItems) return false;
        if (n.arr.unique && a.some((x, i) => a.slice(0, i).some((y) => jsonEqual(x, y)))) return false;
        for (let i = 0; i < a.length; i++) if (!accepts(i < n.arr.prefix.length ? n.arr.prefix[i]! : n.arr.items, a[i])) return false;
      }
      return true;
    }
  }
}

/** Instance types a node may validate (number split into integer and non-integer). */
function semTypes(n: Node, depth = 0): Set<string> {
  const all = new Set(['object', 'array', 'string', 'integer', 'fraction', 'boolean', 'null']);
  if (depth > 16) return all;
  switch (n.k) {
    case 'any':
      return all;
    case 'never':
      return new Set();
    case 'ref':
      return n.target ? semTypes(n.target, depth + 1) : new Set();
    case 'anyOf':
    case 'oneOf': {
      const u = new Set<string>();
      for (const o of n.options) for (const t of semTypes(o, depth + 1)) u.add(t);
      return u;
    }
    case 'typed': {
      let ts: Set<string>;
      if (n.enum !== null) {
        ts = new Set(n.enum.map((v) => (typeOf(v) === 'number' ? 'fraction' : typeOf(v))));
      } else ts = all;
      if (n.types === null) return ts;
      const allowed = new Set<string>();
      for (const t of n.types) {
        if (t === 'number') allowed.add('integer').add('fraction');
        else allowed.add(t);
      }
      return new Set([...ts].filter((t) => allowed.has(t)));
    }
  }
}

/** Conservatively proves that no value validates against both nodes. */
export function disjoint(a: Node, b: Node, depth = 0): boolean {
  if (depth > 8) return false;
  a = deref(a);
  b = deref(b);
  if (a.k === 'never' || b.k === 'never') return true;
  if (a.k === 'any' || b.k === 'any') return false;
  if (a.k === 'anyOf' || a.k === 'oneOf') return a.options.every((o) => disjoint(o, b, depth + 1));
  if (b.k === 'anyOf' || b.k === 'oneOf') return b.options.every((o) => disjoint(a, o, depth + 1));
  if (a.k !== 'typed' || b.k !== 'typed') return false;
  const ta = semTypes(a);
  const tb = semTypes(b);
  if (![...ta].some((t) => tb.has(t))) return true;
  if (a.enum !== null && a.enum.every((v) => !accepts(a, v) || !accepts(b, v))) return true;
  if (b.enum !== null && b.enum.every((v) => !accepts(b, v) || !accepts(a, v))) return true;
  // Both objects (only): a required property whose schemas cannot agree (a discriminator).
  const onlyObjects = (t: Set<string>) => t.size === 1 && t.has('object');
  if (onlyObjects(ta) && onlyObjects(tb)) {
    for (const [x, y] of [[a, b], [b, a]] as const) {
      const px = new Map(x.obj.props);
      const py = new Map(y.obj.props);
      for (const r of x.obj.required) {
        const sx = px.get(r) ?? x.obj.additional;
        const sy = py.get(r) ?? y.obj.additional;
        if (disjoint(sx, sy, depth + 1)) return true;
      }
    }
  }
  return false;
}

/** oneOf branches we cannot prove mutually exclusive: generation could match two of them. */
export function checkOneOf(root: Node): string[] {
  const issues: string[] = [];
  for (const n of reachableNodes(root)) {
    if (n.k === 'oneOf') {
      for (let i = 0; i < n.options.length; i++) {
        for (let j = i + 1; j < n.options.length; j++) {
          if (!disjoint(n.options[i]!, n.options[j]!)) {
            issues.push(
              `"oneOf" branches ${i} and ${j} may both match the same value (supported when branches differ in type, in enum/const values, or in a required property with distinct const/enum values; otherwise use "anyOf") (at ${n.path})`,
            );
          }
        }
      }
    }
  }
  return issues;
}
