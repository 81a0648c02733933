// `switchboard serve` options. Flag names follow LoRAX's launcher (--max-input-length, ...), and
// each can also come from the environment variable LoRAX uses for it (MAX_INPUT_LENGTH, ...).
// One table drives parsing, environment lookup, defaults and --help.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { QUANTIZE_METHODS, refuseQuantizeValue } from '../native/quantized/scheme.ts';
import { DEFAULT_ADAPTER_SOURCE, SERVED_ADAPTER_SOURCES } from '../protocol/index.ts';

/** Headings of `serve --help`, in the order LoRAX's launcher lists its flags. */
const GROUPS = {
  model: 'Model',
  adapters: 'Adapters',
  limits: 'Request limits and batching',
  device: 'Device and memory',
  server: 'Server',
  hub: 'Hub and caches',
  telemetry: 'Logs and telemetry',
  cors: 'CORS',
  refused: 'LoRAX flags refused here (accepted only at the value that changes nothing; any other value stops the start, naming the flag)',
} as const;

interface OptionDef {
  flag: string;
  /** The environment variable (LoRAX's name); null where that name is too generic to read safely. */
  env: string | null;
  schema: z.ZodType;
  help: string;
  group: keyof typeof GROUPS;
  /** A switch: `--flag` alone means true. */
  boolean?: true;
  /**
   * A credential: also read from a file (`--flag-file`, `ENV_FILE`), and a warning when given on
   * the command line, where every user of the machine sees it in `ps`.
   */
  secret?: true;
  /** Other accepted spellings of the flag. */
  aliases?: string[];
  /** One-letter form (`-p 8080`), as LoRAX's launcher has. */
  short?: string;
  /** Repeatable (`--flag a --flag b`), also comma-separated (flag or environment). */
  list?: true;
  /** Why a given value cannot be served here (undefined: it can). Only asked about given values. */
  refuse?: (value: never) => string | undefined;
}

const int = (min = 0) => z.coerce.number().int().min(min);
const num = () => z.coerce.number();
const bool = () => z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);
const list = () => z.union([z.array(z.string()), z.string()]).default([]).transform((v) => (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean));
/** A LoRAX flag with no counterpart here: any value given is refused with `why`. */
const refused = (why: string) => ({ schema: z.unknown().optional(), group: 'refused' as const, refuse: () => why });

const OPTIONS = {
  // Model
  modelId: { flag: 'model-id', env: 'MODEL_ID', group: 'model', schema: z.string().min(1), help: 'Model: a directory (config.json, *.safetensors, tokenizer.json), a Hub repo id (org/name) or org/name@revision' },
  revision: { flag: 'revision', env: 'REVISION', group: 'model', schema: z.string().min(1).optional(), help: 'Hub revision of --model-id: branch, tag or commit (default: main)' },
  source: { flag: 'source', env: 'SOURCE', group: 'model', schema: z.string().default('hub'), help: 'Where --model-id comes from: hub (a directory or the Hub); s3 is refused', refuse: (v: string) => (v === 'hub' ? undefined : `models load from a directory or the Hub only ("${v}" is not supported: download the model, then pass its directory)`) },
  dtype: { flag: 'dtype', env: 'DTYPE', group: 'model', schema: z.enum(['auto', 'float32', 'float16', 'bfloat16']).default('auto'), help: 'CUDA engine element type (auto: the checkpoint\'s 16-bit type)' },
  quantize: { flag: 'quantize', env: 'QUANTIZE', group: 'model', schema: z.string().optional(), help: `Quantized base: ${QUANTIZE_METHODS.join(', ')} (none or absent: follow config.json's quantization_config). awq/gptq/fp8 load pre-quantized checkpoints; bitsandbytes(-nf4/-fp4) and fp8 on a 16-bit checkpoint quantize at load. The CUDA engine keeps the projections packed (4 or 8 bits a weight on the device); the CPU engine dequantises them at load`, refuse: (v: string) => refuseQuantizeValue(v) },
  tokenizerConfigPath: { flag: 'tokenizer-config-path', env: 'TOKENIZER_CONFIG_PATH', ...refused('a tokenizer_config.json elsewhere than in the model directory is not supported: put it (with its chat_template) in the model directory'), help: 'Refused: the model directory\'s tokenizer_config.json is used' },
  downloadOnly: { flag: 'download-only', env: 'DOWNLOAD_ONLY', group: 'model', schema: bool().default(false), help: 'Download --model-id into the hub cache, then exit', boolean: true },
  // Adapters
  adapterId: { flag: 'adapter-id', env: 'ADAPTER_ID', group: 'adapters', schema: z.string().min(1).optional(), help: 'An adapter loaded before /health turns ready (from --adapter-source), as LoRAX\'s static adapter' },
  adapterSource: { flag: 'adapter-source', env: 'ADAPTER_SOURCE', group: 'adapters', schema: z.enum(SERVED_ADAPTER_SOURCES).default(DEFAULT_ADAPTER_SOURCE), help: 'Source of --adapter-id, and of every adapter_id unless --default-adapter-source: hub, local or s3' },
  defaultAdapterSource: { flag: 'default-adapter-source', env: 'DEFAULT_ADAPTER_SOURCE', group: 'adapters', schema: z.enum(SERVED_ADAPTER_SOURCES).optional(), help: 'Source of adapter_ids that requests name without adapter_source (default: --adapter-source)' },
  preloadedAdapterIds: { flag: 'preloaded-adapter-ids', env: 'PRELOADED_ADAPTER_IDS', group: 'adapters', schema: list(), list: true, help: 'Adapters loaded before /health turns ready (repeat the flag, or comma-separate)' },
  preloadedAdapterSource: { flag: 'preloaded-adapter-source', env: 'PRELOADED_ADAPTER_SOURCE', group: 'adapters', schema: z.enum(SERVED_ADAPTER_SOURCES).optional(), help: 'Source of --preloaded-adapter-ids (default: --adapter-source)' },
  maxActiveAdapters: { flag: 'max-active-adapters', env: 'MAX_ACTIVE_ADAPTERS', group: 'adapters', schema: int(1).default(128), help: 'Adapters resident in the engine at once (engine slots)' },
  maxCpuAdapters: { flag: 'max-cpu-adapters', env: 'MAX_CPU_ADAPTERS', group: 'adapters', schema: int(0).optional(), help: 'Idle adapters kept prepared in host memory beyond those in engine slots, as vLLM\'s max_cpu_loras (default: max(16, --max-active-adapters))', aliases: ['max-cpu-loras'] },
  adapterCycleTimeS: { flag: 'adapter-cycle-time-s', env: 'ADAPTER_CYCLE_TIME_S', group: 'adapters', schema: num().min(0).default(2), help: 'Seconds an adapter keeps its slot while others wait for one' },
  adapterMemoryFraction: { flag: 'adapter-memory-fraction', env: 'ADAPTER_MEMORY_FRACTION', group: 'adapters', schema: num().min(0).max(1).default(0.1), help: 'Share of the device\'s total memory reserved for adapters in engine slots (absolute, as LoRAX): taken out of the KV cache\'s default size, and loads past it evict idle adapters; on the CPU engine, the same share of host memory (slots stay capped by --max-active-adapters)' },
  adapterRoot: { flag: 'adapter-root', env: 'ADAPTER_ROOT', group: 'adapters', schema: z.string().optional(), help: 'Directory that relative local adapter ids resolve against' },
  allowAbsoluteAdapterPaths: { flag: 'allow-absolute-adapter-paths', env: 'ALLOW_ABSOLUTE_ADAPTER_PATHS', group: 'adapters', schema: bool().default(false), help: 'Let local adapter ids be absolute paths anywhere on disk (default: only ids inside --adapter-root)', boolean: true },
  maxUploadsPerTenant: { flag: 'max-uploads-per-tenant', env: 'MAX_UPLOADS_PER_TENANT', group: 'adapters', schema: int(1).default(4), help: 'Tenant adapter uploads one tenant may have in flight on this server at once (429 past it)' },
  s3Buckets: { flag: 's3-buckets', env: 'S3_BUCKETS', group: 'adapters', schema: z.string().default('').transform((v) => v.split(',').map((b) => b.trim()).filter(Boolean)), help: 'S3 buckets adapter_source "s3" may read with this server\'s AWS credentials, comma-separated ("*": any); every caller can name them' },
  s3Endpoint: { flag: 's3-endpoint', env: 'AWS_ENDPOINT_URL_S3', group: 'adapters', schema: z.string().url().optional(), help: 'S3-compatible endpoint for adapter_source "s3" (MinIO, R2, ...; path-style addressing)' },
  // Request limits and batching
  maxConcurrentRequests: { flag: 'max-concurrent-requests', env: 'MAX_CONCURRENT_REQUESTS', group: 'limits', schema: int(1).default(128), help: 'Requests in flight before new ones get 429' },
  maxBestOf: { flag: 'max-best-of', env: 'MAX_BEST_OF', group: 'limits', schema: int(1).default(2), help: 'Largest best_of a request may ask for' },
  maxStopSequences: { flag: 'max-stop-sequences', env: 'MAX_STOP_SEQUENCES', group: 'limits', schema: int(0).default(4), help: 'Stop sequences per request' },
  maxInputLength: { flag: 'max-input-length', env: 'MAX_INPUT_LENGTH', group: 'limits', schema: int(1).optional(), help: 'Prompt tokens (default: min(max_position_embeddings, 4096) - 1)' },
  maxTotalTokens: { flag: 'max-total-tokens', env: 'MAX_TOTAL_TOKENS', group: 'limits', schema: int(2).optional(), help: 'Prompt + generated tokens per request (default: min(max_position_embeddings, 4096))' },
  waitingServedRatio: { flag: 'waiting-served-ratio', env: 'WAITING_SERVED_RATIO', group: 'limits', schema: num().min(0).default(1.2), help: 'Admit new requests into a running batch when waiting/running reaches this ratio' },
  maxBatchPrefillTokens: { flag: 'max-batch-prefill-tokens', env: 'MAX_BATCH_PREFILL_TOKENS', group: 'limits', schema: int(1).default(4096), help: 'Prefill tokens per step over the whole batch (longer prompts are chunked)' },
  maxBatchTotalTokens: { flag: 'max-batch-total-tokens', env: 'MAX_BATCH_TOTAL_TOKENS', group: 'limits', schema: int(1).optional(), help: 'KV cache size in tokens (default: CUDA: what the device has left after weights and the adapter reservation, as LoRAX; CPU: 16 x max-total-tokens)' },
  maxWaitingTokens: { flag: 'max-waiting-tokens', env: 'MAX_WAITING_TOKENS', group: 'limits', schema: int(0).default(20), help: '... or after this many decode steps' },
  maxBatchSize: { flag: 'max-batch-size', env: 'MAX_BATCH_SIZE', group: 'limits', schema: int(1).default(256), help: 'Sequences per step' },
  eagerPrefill: { flag: 'eager-prefill', env: 'EAGER_PREFILL', group: 'limits', schema: bool().default(true), help: 'Admit waiting prompts as soon as they fit (true; false is refused: there is no latency-first mode)', refuse: (v: boolean) => (v ? undefined : 'false is not supported: waiting prompts always join the batch as soon as they fit (tune --waiting-served-ratio and --max-waiting-tokens instead)') },
  chunkedPrefill: { flag: 'chunked-prefill', env: 'CHUNKED_PREFILL', group: 'limits', schema: bool().optional(), help: 'Prompts longer than --max-batch-prefill-tokens run in chunks beside decodes (always on; false is refused)', refuse: (v: boolean) => (v ? undefined : 'false is not supported: prompts are always chunked at --max-batch-prefill-tokens (raise it for fewer chunks)') },
  prefixCaching: { flag: 'prefix-caching', env: 'PREFIX_CACHING', group: 'limits', schema: bool().default(true), help: 'Share the KV blocks of common prompt prefixes between requests of the same adapter and tenant (true/false, as LoRAX\'s --prefix-caching)' },
  blockSize: { flag: 'block-size', env: 'BLOCK_SIZE', group: 'limits', schema: int(1).default(16), help: 'Tokens per KV cache block' },
  validationWorkers: { flag: 'validation-workers', env: 'VALIDATION_WORKERS', group: 'limits', schema: int(1).optional(), help: 'Threads that tokenize large prompts off the request loop (default: 2, or 1 below 4 cores)' },
  // Device and memory
  device: { flag: 'device', env: 'SWITCHBOARD_DEVICE', group: 'device', schema: z.enum(['auto', 'cpu', 'cuda']).default('auto'), help: 'Engine: cuda where a GPU works (auto), or force cpu / cuda' },
  numShard: { flag: 'num-shard', env: 'NUM_SHARD', group: 'device', schema: int(1).optional(), help: 'GPUs to shard the model over: 1 (tensor parallelism is not supported yet; more is refused)', refuse: (v: number) => (v === 1 ? undefined : `${v} is not supported: this server runs the model on one GPU (tensor parallelism is not implemented); run one server per GPU behind the gateway instead`) },
  sharded: { flag: 'sharded', env: 'SHARDED', group: 'device', schema: bool().optional(), help: 'Shard over every GPU: false (true is refused, as --num-shard > 1)', refuse: (v: boolean) => (v ? 'true is not supported: this server runs the model on one GPU (tensor parallelism is not implemented)' : undefined) },
  cudaMemoryFraction: { flag: 'cuda-memory-fraction', env: 'CUDA_MEMORY_FRACTION', group: 'device', schema: num().gt(0).max(1).default(1), help: 'Share of the GPU\'s total memory this server may use: bounds the KV cache\'s default size' },
  memoryWiggleRoom: { flag: 'memory-wiggle-room', env: 'MEMORY_WIGGLE_ROOM', group: 'device', schema: num().gt(0).max(1).default(0.9), help: 'Share of the memory left after weights and adapters that the KV cache takes by default (the rest: activations, CUDA graphs)' },
  eager: { flag: 'eager', env: 'EAGER', group: 'device', schema: bool().default(false), boolean: true, help: 'No CUDA graphs: every decode step launches its kernels (less memory, slower decode)' },
  compile: { flag: 'compile', env: 'COMPILE', group: 'device', schema: bool().default(false), boolean: true, help: 'Decode through captured CUDA graphs (the default already; conflicts with --eager)' },
  threads: { flag: 'threads', env: 'SWITCHBOARD_THREADS', group: 'device', schema: int(1).optional(), help: 'CPU engine threads (default: all cores)' },
  // Server
  port: { flag: 'port', env: 'PORT', group: 'server', short: 'p', schema: int(0).max(65535).default(8080), help: 'HTTP port' },
  hostname: { flag: 'hostname', env: 'SWITCHBOARD_HOSTNAME', group: 'server', schema: z.string().default('127.0.0.1'), help: 'Address to listen on (0.0.0.0 for every interface; HOSTNAME is not read: containers set it to their name)' },
  serviceKey: { flag: 'service-key', env: 'SWITCHBOARD_SERVICE_KEY', group: 'server', schema: z.string().optional(), help: 'Verify gateway service tokens (HS256 secret or PEM public key); unsigned requests are refused', secret: true },
  // Hub and caches
  adapterCacheDir: { flag: 'huggingface-hub-cache', env: 'HUGGINGFACE_HUB_CACHE', group: 'hub', schema: z.string().optional(), help: 'Hub cache shared with huggingface_hub, for the model and hub adapters (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)', aliases: ['adapter-cache-dir'] },
  hubEndpoint: { flag: 'hub-endpoint', env: 'HF_ENDPOINT', group: 'hub', schema: z.string().url().default('https://huggingface.co'), help: 'Hugging Face Hub (or compatible) endpoint' },
  hubOffline: { flag: 'hub-offline', env: 'HF_HUB_OFFLINE', group: 'hub', schema: z.union([z.boolean(), z.string().regex(/^(1|0|true|false|yes|no|on|off)$/i, 'expected 1/0, true/false, yes/no or on/off').transform((v) => /^(1|true|yes|on)$/i.test(v))]).default(false), help: 'Never contact the Hub: the model (and hub adapters) come from the hub cache alone', boolean: true },
  hubToken: { flag: 'hub-token', env: 'HF_TOKEN', group: 'hub', schema: z.string().optional(), help: 'The operator\'s hub token: for --model-id (default: the file huggingface-cli login writes), and for adapters only with --allow-hub-token-fallback', secret: true },
  allowHubTokenFallback: { flag: 'allow-hub-token-fallback', env: 'ALLOW_HUB_TOKEN_FALLBACK', group: 'hub', schema: bool().default(false), help: 'Send --hub-token for hub adapters a request names without api_token (any caller can then read what that token can)', boolean: true },
  // Logs and telemetry
  json: { flag: 'json-output', env: 'JSON_OUTPUT', group: 'telemetry', schema: bool().default(false), help: 'Log JSON lines (access log included) instead of text', boolean: true, aliases: ['json-logs'] },
  printEnv: { flag: 'env', env: null, short: 'e', group: 'telemetry', schema: bool().default(false), boolean: true, help: 'Print the runtime environment (Node, platform, engine builds, CUDA devices) at start' },
  otlpEndpoint: { flag: 'otlp-endpoint', env: 'OTLP_ENDPOINT', group: 'telemetry', schema: z.string().optional(), help: 'Refused: no OpenTelemetry exporter is bundled; register an SDK with `node --import` (spans go through @opentelemetry/api)', refuse: () => 'no OpenTelemetry exporter is bundled with the backend: register an OpenTelemetry SDK with an OTLP exporter through `node --import <setup file>` (the backend\'s spans go through @opentelemetry/api), or trace at the gateway' },
  // CORS (LoRAX's flags; none given: no CORS headers)
  corsAllowOrigin: { flag: 'cors-allow-origin', env: 'CORS_ALLOW_ORIGIN', group: 'cors', schema: list(), list: true, help: 'Origins allowed to call the API from a browser ("*": any)' },
  corsAllowHeader: { flag: 'cors-allow-header', env: 'CORS_ALLOW_HEADER', group: 'cors', schema: list(), list: true, help: 'Request headers allowed (default: those the preflight asks for)' },
  corsExposeHeader: { flag: 'cors-expose-header', env: 'CORS_EXPOSE_HEADER', group: 'cors', schema: list(), list: true, help: 'Response headers a browser may read' },
  corsAllowMethod: { flag: 'cors-allow-method', env: 'CORS_ALLOW_METHOD', group: 'cors', schema: list(), list: true, help: 'Methods allowed (default: GET, POST, PUT, DELETE, HEAD, OPTIONS)' },
  corsAllowCredentials: { flag: 'cors-allow-credentials', env: 'CORS_ALLOW_CREDENTIALS', group: 'cors', schema: bool().default(false), help: 'Let browsers send credentials (true/false)' },
  // LoRAX flags with no counterpart: refused by name.
  compileMaxBatchSize: { flag: 'compile-max-batch-size', env: 'COMPILE_MAX_BATCH_SIZE', ...refused('not supported: CUDA graphs are captured per batch size as batches appear (--eager turns them off)'), help: 'Refused (CUDA graphs are sized automatically)' },
  compileMaxRank: { flag: 'compile-max-rank', env: 'COMPILE_MAX_RANK', ...refused('not supported: CUDA graphs serve adapters of any rank'), help: 'Refused (graphs serve any rank)' },
  compileBatchSize: { flag: 'compile-batch-size', env: 'COMPILE_BATCH_SIZE', ...refused('not supported: CUDA graphs are captured per batch size as batches appear'), help: 'Refused' },
  speculativeTokens: { flag: 'speculative-tokens', env: 'SPECULATIVE_TOKENS', group: 'refused', schema: int(0).optional(), help: 'Refused above 0 (no speculative decoding)', refuse: (v: number) => (v === 0 ? undefined : `${v} is not supported: there is no speculative decoding here`) },
  speculationMaxBatchSize: { flag: 'speculation-max-batch-size', env: 'SPECULATION_MAX_BATCH_SIZE', ...refused('not supported: there is no speculative decoding here'), help: 'Refused (no speculative decoding)' },
  predibaseApiToken: { flag: 'predibase-api-token', env: 'PREDIBASE_API_TOKEN', ...refused('not supported: adapter_source "pbase" (Predibase\'s hosted registry) is not served; use hub, s3 or local adapters'), help: 'Refused (no pbase source)' },
  trustRemoteCode: { flag: 'trust-remote-code', env: 'TRUST_REMOTE_CODE', group: 'refused', schema: bool().default(false), boolean: true, help: 'Refused: no model code is ever run (llama, mistral and qwen2 are built in)', refuse: (v: boolean) => (v ? 'not supported: this server never runs a model\'s Python code; only its built-in architectures (llama, mistral, qwen2) load' : undefined) },
  mergeAdapterWeights: { flag: 'merge-adapter-weights', env: 'MERGE_ADAPTER_WEIGHTS', group: 'refused', schema: bool().default(false), boolean: true, help: 'Refused: adapters are always applied per request', refuse: (v: boolean) => (v ? 'not supported: adapters are applied per request (SGMV), never merged into the base weights; serve the merged model as --model-id instead' : undefined) },
  disableCustomKernels: { flag: 'disable-custom-kernels', env: 'DISABLE_CUSTOM_KERNELS', group: 'refused', schema: bool().default(false), boolean: true, help: 'Refused: the engine\'s kernels are its only ones (--device cpu avoids them)', refuse: (v: boolean) => (v ? 'not supported: the CUDA engine has no fallback kernels (use --device cpu to avoid CUDA entirely)' : undefined) },
  disableSgmv: { flag: 'disable-sgmv', env: 'DISABLE_SGMV', group: 'refused', schema: bool().default(false), boolean: true, help: 'Refused: adapters always run through SGMV', refuse: (v: boolean) => (v ? 'not supported: mixed-adapter batches always run through the SGMV kernels' : undefined) },
  backend: { flag: 'backend', env: null, group: 'refused', schema: z.string().optional(), help: 'fa2 or flashinfer: refused (the engine has its own attention kernels); BACKEND is not read', refuse: (v: string) => `"${v}" is not supported: the engine has its own paged attention kernels` },
  embeddingDim: { flag: 'embedding-dim', env: 'EMBEDDING_DIM', ...refused('not supported: this server generates text; there are no embedding endpoints'), help: 'Refused (no embeddings)' },
  weightsCacheOverride: { flag: 'weights-cache-override', env: 'WEIGHTS_CACHE_OVERRIDE', ...refused('not supported: weights are read from --huggingface-hub-cache or the --model-id directory'), help: 'Refused (use --huggingface-hub-cache)' },
  watermarkGamma: { flag: 'watermark-gamma', env: 'WATERMARK_GAMMA', ...refused('not supported: there is no watermarking here'), help: 'Refused (no watermarking)' },
  watermarkDelta: { flag: 'watermark-delta', env: 'WATERMARK_DELTA', ...refused('not supported: there is no watermarking here'), help: 'Refused (no watermarking)' },
  ngrok: { flag: 'ngrok', env: 'NGROK', group: 'refused', schema: bool().default(false), boolean: true, help: 'Refused (no ngrok tunnel)', refuse: (v: boolean) => (v ? 'not supported: there is no ngrok tunnel; put the gateway in front instead' : undefined) },
  ngrokAuthtoken: { flag: 'ngrok-authtoken', env: 'NGROK_AUTHTOKEN', ...refused('not supported: there is no ngrok tunnel'), help: 'Refused (no ngrok)' },
  ngrokEdge: { flag: 'ngrok-edge', env: 'NGROK_EDGE', ...refused('not supported: there is no ngrok tunnel'), help: 'Refused (no ngrok)' },
  shardUdsPath: { flag: 'shard-uds-path', env: null, ...refused('not supported: there are no shard processes (the engine runs in this process)'), help: 'Refused (no shard processes; SHARD_UDS_PATH is not read)' },
  masterAddr: { flag: 'master-addr', env: null, ...refused('not supported: there is no torch.distributed group here'), help: 'Refused (no torch.distributed; MASTER_ADDR is not read: torchrun sets it)' },
  masterPort: { flag: 'master-port', env: null, ...refused('not supported: there is no torch.distributed group here'), help: 'Refused (no torch.distributed; MASTER_PORT is not read)' },
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
 * Parses `--flag value` / `--flag=value` / `-p value` arguments, then the environment, then
 * defaults. A secret comes from `--flag-file <path>`, `ENV_FILE`, `ENV`, or (with a warning)
 * `--flag <value>`. A LoRAX flag this server cannot honour stops the start, naming the flag and
 * the variable, whichever of the two gave it.
 */
export function parseServeConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, parse: ParseOptions = {}): ServeConfig {
  const defs = OPTIONS as Record<string, OptionDef>;
  const byFlag = new Map<string, string>();
  for (const [k, o] of Object.entries(defs)) {
    byFlag.set(o.flag, k);
    if (o.short) byFlag.set(o.short, k);
    for (const a of o.aliases ?? []) byFlag.set(a, k);
  }
  const secretFiles = new Map<string, string>();
  const raw: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const short = /^-[a-zA-Z]$/.test(arg);
    if (!arg.startsWith('--') && !short) throw new ConfigError(`unexpected argument "${arg}"`);
    const eq = short ? -1 : arg.indexOf('=');
    const flag = short ? arg.slice(1) : arg.slice(2, eq < 0 ? undefined : eq);
    const dashes = short ? '-' : '--';
    const fileOf = flag.endsWith('-file') ? byFlag.get(flag.slice(0, -5)) : undefined;
    if (fileOf && defs[fileOf]!.secret) {
      const file = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (file === undefined) throw new ConfigError(`--${flag} needs a value`);
      secretFiles.set(fileOf, readSecretFile(file, `--${flag}`));
      continue;
    }
    const key = byFlag.get(flag);
    if (!key || (short && defs[key]!.short !== flag)) throw new ConfigError(`unknown option ${dashes}${flag} (see --help)`);
    const o = defs[key]!;
    if (o.secret) parse.warn?.(`--${flag} on the command line shows in \`ps\` to every user of this machine: use --${flag}-file <path> or the ${o.env} environment variable`);
    let value: string | boolean;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (o.boolean) value = true;
    else {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`${dashes}${flag} needs a value`);
      value = next;
    }
    if (o.list) raw[key] = [...((raw[key] as string[] | undefined) ?? []), String(value)];
    else raw[key] = value;
  }
  const out: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(defs)) {
    const name = o.env ? `--${o.flag} (or ${o.env})` : `--${o.flag}`;
    const fromEnv = o.env !== null && env[o.env] !== undefined && env[o.env] !== '' ? env[o.env] : undefined;
    const fromEnvFile = o.secret && o.env && env[`${o.env}_FILE`] ? readSecretFile(env[`${o.env}_FILE`]!, `${o.env}_FILE`) : undefined;
    const value = raw[key] ?? secretFiles.get(key) ?? fromEnvFile ?? fromEnv;
    const r = o.schema.safeParse(value);
    if (!r.success) {
      const why = value === undefined ? 'is required' : `got "${String(value)}": ${r.error.issues[0]?.message ?? 'invalid'}`;
      throw new ConfigError(`${name} ${why}`);
    }
    if (value !== undefined && o.refuse) {
      const why = o.refuse(r.data as never);
      if (why) throw new ConfigError(`${raw[key] !== undefined ? `--${o.flag}` : o.env} ${why}`);
    }
    out[key] = r.data;
  }
  if (out.eager && out.compile) throw new ConfigError('--eager and --compile (or EAGER and COMPILE) contradict each other: give one (CUDA graphs are on unless --eager)');
  return out as ServeConfig;
}

/** `serve --help`: the options under LoRAX's headings, each with its environment variable. */
export function serveHelp(): string {
  const defs = Object.values(OPTIONS as Record<string, OptionDef>);
  const row = (o: OptionDef) => {
    const def = o.schema instanceof z.ZodDefault ? ` [default: ${JSON.stringify((o.schema as z.ZodDefault).def.defaultValue)}]` : '';
    const secret = o.secret ? `\n  --${`${o.flag}-file`.padEnd(26)} ... read from this file (or ${o.env}_FILE); preferred: a value given on the command line shows in \`ps\`` : '';
    const alias = o.aliases?.length ? ` (also --${o.aliases.join(', --')})` : '';
    const short = o.short ? `-${o.short}, ` : '';
    return `  ${short}--${o.flag.padEnd(26 - short.length)} ${o.help}${alias}${def}\n  ${''.padEnd(28)} env: ${o.env ?? '(none)'}${secret}`;
  };
  const sections = (Object.entries(GROUPS) as [keyof typeof GROUPS, string][]).map(([g, title]) => `${title}:\n${defs.filter((o) => o.group === g).map(row).join('\n')}`);
  return `Usage: switchboard serve --model-id <dir | org/name[@revision]> [options]\n\n${sections.join('\n\n')}\n`;
}
