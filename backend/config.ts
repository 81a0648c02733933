// `switchboard serve` options. Flag names follow LoRAX's launcher (--max-input-length, ...), and
// each can also come from the environment variable LoRAX uses for it (MAX_INPUT_LENGTH, ...).
// One table drives parsing, environment lookup, defaults and --help.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DEFAULT_ADAPTER_SOURCE, SERVED_ADAPTER_SOURCES } from '../protocol/index.ts';

interface OptionDef {
  flag: string;
  env: string;
  schema: z.ZodType;
  help: string;
  /** A switch: `--flag` alone means true. */
  boolean?: true;
  /**
   * A credential: also read from a file (`--flag-file`, `ENV_FILE`), and a warning when given on
   * the command line, where every user of the machine sees it in `ps`.
   */
  secret?: true;
  /** Other accepted spellings of the flag. */
  aliases?: string[];
}

const int = (min = 0) => z.coerce.number().int().min(min);
const num = () => z.coerce.number();
const bool = () => z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);

const OPTIONS = {
  modelId: { flag: 'model-id', env: 'MODEL_ID', schema: z.string().min(1), help: 'Model: a directory (config.json, *.safetensors, tokenizer.json), a Hub repo id (org/name) or org/name@revision' },
  revision: { flag: 'revision', env: 'REVISION', schema: z.string().min(1).optional(), help: 'Hub revision of --model-id: branch, tag or commit (default: main)' },
  downloadOnly: { flag: 'download-only', env: 'DOWNLOAD_ONLY', schema: bool().default(false), help: 'Download --model-id into the hub cache, then exit', boolean: true },
  hubOffline: { flag: 'hub-offline', env: 'HF_HUB_OFFLINE', schema: z.union([z.boolean(), z.string().regex(/^(1|0|true|false|yes|no|on|off)$/i, 'expected 1/0, true/false, yes/no or on/off').transform((v) => /^(1|true|yes|on)$/i.test(v))]).default(false), help: 'Never contact the Hub: the model (and hub adapters) come from the hub cache alone', boolean: true },
  port: { flag: 'port', env: 'PORT', schema: int(0).max(65535).default(8080), help: 'HTTP port' },
  hostname: { flag: 'hostname', env: 'SWITCHBOARD_HOSTNAME', schema: z.string().default('127.0.0.1'), help: 'Address to listen on (0.0.0.0 for every interface)' },
  maxConcurrentRequests: { flag: 'max-concurrent-requests', env: 'MAX_CONCURRENT_REQUESTS', schema: int(1).default(128), help: 'Requests in flight before new ones get 429' },
  maxBestOf: { flag: 'max-best-of', env: 'MAX_BEST_OF', schema: int(1).default(2), help: 'Largest best_of a request may ask for' },
  maxStopSequences: { flag: 'max-stop-sequences', env: 'MAX_STOP_SEQUENCES', schema: int(0).default(4), help: 'Stop sequences per request' },
  maxInputLength: { flag: 'max-input-length', env: 'MAX_INPUT_LENGTH', schema: int(1).optional(), help: 'Prompt tokens (default: min(max_position_embeddings, 4096) - 1)' },
  maxTotalTokens: { flag: 'max-total-tokens', env: 'MAX_TOTAL_TOKENS', schema: int(2).optional(), help: 'Prompt + generated tokens per request (default: min(max_position_embeddings, 4096))' },
  maxBatchPrefillTokens: { flag: 'max-batch-prefill-tokens', env: 'MAX_BATCH_PREFILL_TOKENS', schema: int(1).default(4096), help: 'Prefill tokens per step over the whole batch (longer prompts are chunked)' },
  maxBatchTotalTokens: { flag: 'max-batch-total-tokens', env: 'MAX_BATCH_TOTAL_TOKENS', schema: int(1).optional(), help: 'KV cache size in tokens (default: 16 x max-total-tokens on CPU)' },
  maxBatchSize: { flag: 'max-batch-size', env: 'MAX_BATCH_SIZE', schema: int(1).default(256), help: 'Sequences per step' },
  waitingServedRatio: { flag: 'waiting-served-ratio', env: 'WAITING_SERVED_RATIO', schema: num().min(0).default(1.2), help: 'Admit new requests into a running batch when waiting/running reaches this ratio' },
  maxWaitingTokens: { flag: 'max-waiting-tokens', env: 'MAX_WAITING_TOKENS', schema: int(0).default(20), help: '... or after this many decode steps' },
  maxActiveAdapters: { flag: 'max-active-adapters', env: 'MAX_ACTIVE_ADAPTERS', schema: int(1).default(128), help: 'Adapters resident in the engine at once' },
  adapterCycleTimeS: { flag: 'adapter-cycle-time-s', env: 'ADAPTER_CYCLE_TIME_S', schema: num().min(0).default(2), help: 'Seconds an adapter keeps its slot while others wait for one' },
  adapterMemoryFraction: { flag: 'adapter-memory-fraction', env: 'ADAPTER_MEMORY_FRACTION', schema: num().min(0).max(1).default(0.1), help: 'Share of device memory for adapter weights (CUDA engine)' },
  adapterSource: { flag: 'adapter-source', env: 'ADAPTER_SOURCE', schema: z.enum(SERVED_ADAPTER_SOURCES).default(DEFAULT_ADAPTER_SOURCE), help: 'Default source of adapter_id: hub, local or s3' },
  s3Buckets: { flag: 's3-buckets', env: 'S3_BUCKETS', schema: z.string().default('').transform((v) => v.split(',').map((b) => b.trim()).filter(Boolean)), help: 'S3 buckets adapter_source "s3" may read with this server\'s AWS credentials, comma-separated ("*": any); every caller can name them' },
  s3Endpoint: { flag: 's3-endpoint', env: 'AWS_ENDPOINT_URL_S3', schema: z.string().url().optional(), help: 'S3-compatible endpoint for adapter_source "s3" (MinIO, R2, ...; path-style addressing)' },
  adapterRoot: { flag: 'adapter-root', env: 'ADAPTER_ROOT', schema: z.string().optional(), help: 'Directory that relative local adapter ids resolve against' },
  adapterCacheDir: { flag: 'huggingface-hub-cache', env: 'HUGGINGFACE_HUB_CACHE', schema: z.string().optional(), help: 'Hub cache shared with huggingface_hub, for the model and hub adapters (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)', aliases: ['adapter-cache-dir'] },
  hubEndpoint: { flag: 'hub-endpoint', env: 'HF_ENDPOINT', schema: z.string().url().default('https://huggingface.co'), help: 'Hugging Face Hub (or compatible) endpoint' },
  hubToken: { flag: 'hub-token', env: 'HF_TOKEN', schema: z.string().optional(), help: 'The operator\'s hub token: for --model-id (default: the file huggingface-cli login writes), and for adapters only with --allow-hub-token-fallback', secret: true },
  allowHubTokenFallback: { flag: 'allow-hub-token-fallback', env: 'ALLOW_HUB_TOKEN_FALLBACK', schema: bool().default(false), help: 'Send --hub-token for hub adapters a request names without api_token (any caller can then read what that token can)', boolean: true },
  allowAbsoluteAdapterPaths: { flag: 'allow-absolute-adapter-paths', env: 'ALLOW_ABSOLUTE_ADAPTER_PATHS', schema: bool().default(false), help: 'Let local adapter ids be absolute paths anywhere on disk (default: only ids inside --adapter-root)', boolean: true },
  blockSize: { flag: 'block-size', env: 'BLOCK_SIZE', schema: int(1).default(16), help: 'Tokens per KV cache block' },
  prefixCaching: { flag: 'prefix-caching', env: 'PREFIX_CACHING', schema: bool().default(true), help: 'Share the KV blocks of common prompt prefixes between requests of the same adapter and tenant (true/false, as LoRAX\'s --prefix-caching)' },
  device: { flag: 'device', env: 'SWITCHBOARD_DEVICE', schema: z.enum(['auto', 'cpu', 'cuda']).default('auto'), help: 'Engine: cuda where a GPU works (auto), or force cpu / cuda' },
  dtype: { flag: 'dtype', env: 'DTYPE', schema: z.enum(['auto', 'float32', 'float16', 'bfloat16']).default('auto'), help: 'CUDA engine element type (auto: the checkpoint\'s 16-bit type)' },
  threads: { flag: 'threads', env: 'SWITCHBOARD_THREADS', schema: int(1).optional(), help: 'CPU engine threads (default: all cores)' },
  serviceKey: { flag: 'service-key', env: 'SWITCHBOARD_SERVICE_KEY', schema: z.string().optional(), help: 'Verify gateway service tokens (HS256 secret or PEM public key); unsigned requests are refused', secret: true },
  json: { flag: 'json-output', env: 'JSON_OUTPUT', schema: bool().default(false), help: 'Log JSON lines (access log included) instead of text', boolean: true, aliases: ['json-logs'] },
} satisfies Record<string, OptionDef>;

type Options = typeof OPTIONS;
export type ServeConfig = { [K in keyof Options]: z.output<Options[K]['schema']> };

export class ConfigError extends Error {}

export interface ParseOptions {
  /** Told once per secret given on the command line. */
  warn?: (msg: string) => void;
}

/** A secret's file: its text without the trailing newline editors and `echo` add. */
function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf-8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * Parses `--flag value` / `--flag=value` arguments, then the environment, then defaults. A
 * secret comes from `--flag-file <path>`, `ENV_FILE`, `ENV`, or (with a warning) `--flag <value>`.
 */
export function parseServeConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, parse: ParseOptions = {}): ServeConfig {
  const byFlag = new Map<string, string>();
  for (const [k, o] of Object.entries(OPTIONS) as [string, OptionDef][]) {
    byFlag.set(o.flag, k);
    for (const a of o.aliases ?? []) byFlag.set(a, k);
  }
  const secretFiles = new Map<string, string>();
  const raw: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const flag = arg.slice(2, eq < 0 ? undefined : eq);
    const fileOf = flag.endsWith('-file') ? byFlag.get(flag.slice(0, -5)) : undefined;
    if (fileOf && (OPTIONS as Record<string, OptionDef>)[fileOf]!.secret) {
      const file = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (file === undefined) throw new ConfigError(`--${flag} needs a value`);
      secretFiles.set(fileOf, readSecretFile(file, `--${flag}`));
      continue;
    }
    const key = byFlag.get(flag);
    if (!key) throw new ConfigError(`unknown option --${flag} (see --help)`);
    if ((OPTIONS as Record<string, OptionDef>)[key]!.secret) parse.warn?.(`--${flag} on the command line shows in \`ps\` to every user of this machine: use --${flag}-file <path> or the ${(OPTIONS as Record<string, OptionDef>)[key]!.env} environment variable`);
    const isBool = (OPTIONS as Record<string, OptionDef>)[key]!.boolean === true;
    let value: string | boolean;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (isBool) value = true;
    else {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`--${flag} needs a value`);
      value = next;
    }
    raw[key] = value;
  }
  const out: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(OPTIONS) as [keyof Options, OptionDef][]) {
    const fromEnvFile = o.secret && env[`${o.env}_FILE`] ? readSecretFile(env[`${o.env}_FILE`]!, `${o.env}_FILE`) : undefined;
    const value = raw[key] ?? secretFiles.get(key) ?? fromEnvFile ?? (env[o.env] !== undefined && env[o.env] !== '' ? env[o.env] : undefined);
    const r = o.schema.safeParse(value);
    if (!r.success) {
      const why = value === undefined ? 'is required' : `got "${String(value)}": ${r.error.issues[0]?.message ?? 'invalid'}`;
      throw new ConfigError(`--${o.flag} (or ${o.env}) ${why}`);
    }
    out[key] = r.data;
  }
  return out as ServeConfig;
}

export function serveHelp(): string {
  const rows = Object.values(OPTIONS as Record<string, OptionDef>).map((o) => {
    const def = o.schema instanceof z.ZodDefault ? ` [default: ${JSON.stringify((o.schema as z.ZodDefault).def.defaultValue)}]` : '';
    const secret = o.secret ? `\n  --${`${o.flag}-file`.padEnd(26)} ... read from this file (or ${o.env}_FILE); preferred: a value given on the command line shows in \`ps\`` : '';
    const alias = o.aliases?.length ? ` (also --${o.aliases.join(', --')})` : '';
    return `  --${o.flag.padEnd(26)} ${o.help}${alias}${def}\n  ${''.padEnd(28)} env: ${o.env}${secret}`;
  });
  return `Usage: switchboard serve --model-id <dir> [options]\n\nOptions:\n${rows.join('\n')}\n`;
}
