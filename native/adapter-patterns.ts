// Regular expressions from adapter_config.json (target_modules / exclude_modules as a string,
// rank_pattern / alpha_pattern keys, layers_pattern) come from tenants, so they are matched with a
// linear-time engine (re2js, a port of RE2: no backtracking, so `(.*)*x` costs what `.*x` costs)
// and within bounds checked when the config is read: pattern length, number of patterns, subject
// length. Python's `re` syntax is mostly RE2's; what RE2 cannot do in linear time (backreferences,
// lookaround) is refused with an error that names the pattern, at upload as well as at load.
//
// Python semantics, as PEFT calls them: re.fullmatch(p, s) is RE2's matches(); re.match(p, s) is
// lookingAt() (anchored at the start only). `$` is the end of the text here, and before a final
// newline in Python: module names never contain a newline, so the two agree.
import { RE2JS } from 're2js';

/** Longest single pattern accepted. */
export const MAX_PATTERN_LENGTH = 256;
/** Most keys in rank_pattern, and in alpha_pattern (tools write one per module: 7 x layers). */
export const MAX_PATTERN_KEYS = 1024;
/** Most characters over all keys of rank_pattern, and of alpha_pattern: what bounds one module's matching. */
export const MAX_PATTERN_CHARS = 32 * 1024;
/** Most entries in layers_pattern, and in a target_modules / exclude_modules list. */
export const MAX_LAYERS_PATTERNS = 8;
export const MAX_MODULE_LIST = 512;
/** Longest module name matched (PEFT module names of the served architectures are far shorter). */
export const MAX_SUBJECT_LENGTH = 256;

/** A problem with one pattern of an adapter config (the client's fault: a 4xx). */
export class PatternError extends Error {
  override name = 'PatternError';
}

export interface PythonRegex {
  /** re.fullmatch(pattern, s) */
  fullmatch(s: string): boolean;
  /** re.match(pattern, s): the groups of a match anchored at the start, or null. */
  match(s: string): (string | null)[] | null;
}

const compiled = new Map<string, RE2JS>();
const MAX_CACHED = 2048;

function tooLong(pattern: string, what: string): PatternError {
  return new PatternError(`${what} ${JSON.stringify(pattern.slice(0, 64))}... is ${pattern.length} characters long (at most ${MAX_PATTERN_LENGTH})`);
}

/** `source` is what RE2 compiles; `shown` is the pattern as the config wrote it (for messages). */
function compile(source: string, what: string, shown: string): PythonRegex {
  let re = compiled.get(source);
  if (!re) {
    try {
      // Python's \Z is RE2's \z; named groups (?P<n>...) are RE2 syntax already.
      re = RE2JS.compile(source.replace(/(^|[^\\])((?:\\\\)*)\\Z/g, '$1$2\\z'));
    } catch (err) {
      const why = (err as Error).message.replace(/^error parsing regexp: /, '');
      throw new PatternError(
        `${what} ${JSON.stringify(shown)} is not a regular expression Switchboard can match (${why}; backreferences and lookaround are not supported)`,
      );
    }
    if (compiled.size >= MAX_CACHED) compiled.delete(compiled.keys().next().value!);
    compiled.set(source, re);
  }
  const r = re;
  const subject = (s: string) => {
    if (s.length > MAX_SUBJECT_LENGTH) throw new PatternError(`module name ${JSON.stringify(s.slice(0, 64))}... is longer than ${MAX_SUBJECT_LENGTH} characters`);
    return s;
  };
  return {
    fullmatch: (s) => r.matcher(subject(s)).matches(),
    match: (s) => {
      const m = r.matcher(subject(s));
      if (!m.lookingAt()) return null;
      const groups: (string | null)[] = [];
      for (let i = 0; i <= m.groupCount(); i++) groups.push(m.group(i));
      return groups;
    },
  };
}

/**
 * Compiles a Python `re` pattern for RE2. `what` names the field for messages
 * ("target_modules", ...). Throws PatternError for a pattern too long or one RE2 cannot run.
 */
export function pythonRegex(pattern: string, what: string): PythonRegex {
  if (pattern.length > MAX_PATTERN_LENGTH) throw tooLong(pattern, what);
  return compile(pattern, what, pattern);
}

const PLAIN_KEY = /^[A-Za-z0-9_.]+$/;

/**
 * re.match(rf"(.*\.)?({key})$", name) for a key of letters, digits, "_" and "." only (what tools
 * write: module names), without a regex engine: the key, each "." a wildcard as in the regex,
 * must match the whole name or a suffix that follows a literal ".". Same answer, a fraction of the cost.
 */
function plainKeyMatches(key: string, name: string): boolean {
  const start = name.length - key.length;
  if (start < 0 || (start > 0 && name[start - 1] !== '.')) return false;
  for (let i = 0; i < key.length; i++) if (key[i] !== '.' && key[i] !== name[start + i]) return false;
  return true;
}

/** Whether a rank_pattern / alpha_pattern key matches a module name, as PEFT's get_pattern_key decides. */
export function patternKeyMatches(key: string, name: string, what: string): boolean {
  if (PLAIN_KEY.test(key) && name.length <= MAX_SUBJECT_LENGTH) return plainKeyMatches(key, name);
  return patternKeyRegex(key, what).match(name) !== null;
}

/** PEFT's get_pattern_key pattern for one rank_pattern / alpha_pattern key: re.match(rf"(.*\.)?({key})$", name). */
export function patternKeyRegex(key: string, what: string): PythonRegex {
  if (key.length > MAX_PATTERN_LENGTH) throw tooLong(key, what);
  return compile(`(.*\\.)?(${key})$`, what, key);
}

/** PEFT's layer-index pattern: re.match(rf".*\.{layers_pattern}\.(\d+)\.", name), or its default. */
export function layerIndexRegex(layersPattern: string | null): PythonRegex {
  if (layersPattern === null) return compile('.*\\.[^.]*\\.(\\d+)\\.', 'layers_pattern', '');
  if (layersPattern.length > MAX_PATTERN_LENGTH) throw tooLong(layersPattern, 'layers_pattern');
  return compile(`.*\\.${layersPattern}\\.(\\d+)\\.`, 'layers_pattern', layersPattern);
}

/**
 * A time budget for matching one adapter's patterns against its modules: the caller awaits
 * `tick()` between matches, which yields to the event loop every `sliceMs` (so other requests run)
 * and throws PatternError once `totalMs` of matching has been spent.
 */
export class MatchBudget {
  private spent = 0;
  private sliceStart = performance.now();

  constructor(
    private readonly totalMs = 2000,
    private readonly sliceMs = 5,
  ) {}

  async tick(): Promise<void> {
    const now = performance.now();
    if (now - this.sliceStart < this.sliceMs) return;
    this.spent += now - this.sliceStart;
    if (this.spent > this.totalMs) {
      throw new PatternError(`matching the adapter's patterns against its modules took longer than ${this.totalMs} ms`);
    }
    await new Promise<void>((r) => setImmediate(r));
    this.sliceStart = performance.now();
  }
}
