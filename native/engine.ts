// The only door to the native addon. It opens a model directory (validated in TypeScript, see
// model-dir.ts), picks the engine, fills defaults into each step's batch and keeps the JS side
// typed. Steps, weight loads and adapter loads all run off the JS thread.
import { createRequire } from 'node:module';
import type {
  NativeAdapterSpec,
  NativeEngine,
  NativeEngineInfo,
  NativeModelSpec,
  NativeSampling,
  NativeSeqOutput,
  NativeStepLayout,
  NativeStepResult,
  NativeTopLogprobs,
} from './addon.d.ts';
import { openModelDir, type ModelDir } from './model-dir.ts';
import { openPeftAdapter, type PeftAdapter } from './peft-adapter.ts';

export type { NativeSeqOutput as SeqOutput, NativeSampling as Sampling };

interface Addon {
  NativeEngine: new (...args: ConstructorParameters<typeof NativeEngine>) => NativeEngine;
  cudaAvailable: boolean;
  cudaDeviceCount(): number;
  stepLayout: NativeStepLayout;
}

let addon: Addon | undefined;
let cudaAddon: Addon | null | undefined;
let cudaUnavailable = '';
let cudaBuilt = false;

/** Loads the compiled CPU addon once; a missing build is a clear error, not a stack of require frames. */
export function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  let a: Addon;
  try {
    a = require('./build/Release/switchboard_native.node') as Addon;
  } catch (err) {
    throw new Error(
      `the native engine is not built (${(err as Error).message.split('\n')[0]}); run \`npm run build:native\``,
    );
  }
  stepLayoutOf(a, 'switchboard_native.node');
  return (addon = a);
}

/** The CUDA addon, or null (with the reason in cudaUnavailableReason()) where it cannot run. */
export function loadCudaAddon(): Addon | null {
  if (cudaAddon !== undefined) return cudaAddon;
  const require = createRequire(import.meta.url);
  try {
    const a = require('./build/Release/switchboard_cuda.node') as Addon;
    cudaBuilt = true;
    stepLayoutOf(a, 'switchboard_cuda.node');
    const n = a.cudaDeviceCount();
    if (n > 0) return (cudaAddon = a);
    cudaUnavailable = 'no CUDA device (or no driver)';
  } catch (err) {
    // Not built at all is a CPU-only install; any other failure (a missing CUDA library) is a
    // CUDA build that cannot start.
    const e = err as NodeJS.ErrnoException;
    cudaBuilt = !(e.code === 'MODULE_NOT_FOUND' && e.message.includes('switchboard_cuda.node'));
    cudaUnavailable = `the CUDA engine is not available (${e.message.split('\n')[0]})`;
  }
  return (cudaAddon = null);
}

/**
 * Free and total bytes of the CUDA device the engine would use, or null (no usable CUDA addon,
 * or one built before it could say). The server sizes the KV cache from it (kv-budget.ts).
 */
export function cudaMemory(): { free: number; total: number } | null {
  const a = loadCudaAddon() as (Addon & { cudaMemory?: () => { free: number; total: number } | null }) | null;
  return a?.cudaMemory?.() ?? null;
}

export function cudaUnavailableReason(): string {
  loadCudaAddon();
  return cudaUnavailable;
}

/** Whether a CUDA engine build is present (usable or not). */
export function cudaAddonBuilt(): boolean {
  loadCudaAddon();
  return cudaBuilt;
}

export type Device = 'auto' | 'cpu' | 'cuda';
export type ComputeDtype = 'auto' | 'float32' | 'float16' | 'bfloat16';

export interface EngineOptions {
  /** KV cache size in blocks of `blockSize` tokens. */
  numBlocks?: number;
  blockSize?: number;
  /** Adapter slots resident in the engine at once. */
  maxAdapters?: number;
  /** CPU engine worker threads (default: all cores). */
  threads?: number;
  /** auto: the CUDA engine where a GPU works, else the CPU engine (default: SWITCHBOARD_DEVICE, else auto). */
  device?: Device;
  /** CUDA engine element type; auto: the checkpoint's 16-bit type (bfloat16 for fp32 checkpoints). */
  dtype?: ComputeDtype;
  /** CUDA engine: decode steps replay captured CUDA graphs (default: SWITCHBOARD_CUDA_GRAPHS, else true). */
  cudaGraphs?: boolean;
  /** CUDA engine: prompt chunks attend on tensor cores (default: SWITCHBOARD_PREFILL_ATTENTION, else true). */
  prefillAttention?: boolean;
  /** CUDA engine: quantized projections of steps up to this many rows (0..256) read the packed weights directly (default 64). */
  quantGemvRows?: number;
  /** Where fallbacks are reported (default: console.warn). */
  log?: (msg: string) => void;
}

/** One sequence's work in a step; omitted fields take the values of a plain greedy decode. */
export interface SeqInput {
  /** Tokens to run this step (a prefill chunk, or one decode token). */
  tokens: Int32Array | readonly number[];
  /** Absolute position of tokens[0]; the KV cache holds positions [0, position). */
  position: number;
  /** KV block ids covering positions [0, position + tokens.length). */
  blockTable: Int32Array | readonly number[];
  /** Adapter slot, or -1 (the default) for the base model. */
  adapterSlot?: number;
  /** Return logprobs of tokens[1..] given their prefixes (and of nextToken if given). */
  promptLogprobs?: boolean;
  /** The token that follows this chunk (a later prefill chunk's first token), scored at the last position. */
  nextToken?: number;
  /** Sample one token after the last position (default true). */
  sample?: boolean;
  /** How many top alternatives to return per scored position (0 = none). */
  topLogprobs?: number;
  sampling?: Partial<NativeSampling>;
  /** Tokens seen so far, for the repetition penalty (omit when it is off). */
  penaltyTokens?: Int32Array | readonly number[];
  /**
   * Added to the logits of these tokens before sampling (after the repetition penalty, before
   * temperature): OpenAI's logit_bias and frequency/presence penalties. Distinct tokens.
   */
  bias?: { tokens: Int32Array | readonly number[]; values: Float32Array | readonly number[] };
  /** Allowed-token bitset (bit t of word t>>5), or omitted for no constraint. */
  mask?: Uint32Array;
}

export const GREEDY: NativeSampling = { temperature: 0, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, seed: 0 };

// The packed step layout (NativeEngine.step) is defined once, in src/addon.cc, which exports its
// field names in slot order; every index below comes from there when an addon loads. These are
// the names this file packs and unpacks: an addon with other names is a stale build, refused.
const SEQ_NAMES = [
  'position', 'adapterSlot', 'promptLogprobs', 'nextToken', 'sample', 'topLogprobs',
  'sampling.temperature', 'sampling.topK', 'sampling.topP', 'sampling.typicalP', 'sampling.repetitionPenalty', 'sampling.seed',
  'tokens', 'blockTable', 'penaltyTokens', 'bias', 'mask',
] as const;
const OUT_NAMES = ['token', 'top', 'prompt', 'promptTop'] as const;

/** Slot of each field in a sequence's numbers (seq) and in a result's ints per sequence (out). */
export interface StepLayout {
  seq: Record<(typeof SEQ_NAMES)[number], number>;
  seqFields: number;
  out: Record<(typeof OUT_NAMES)[number], number>;
  outFields: number;
}

const layouts = new WeakMap<object, StepLayout>();

/**
 * The step layout of an addon (as loaded), checked against the names engine.ts packs. A mismatch
 * means the addon was built from other sources than this file: a clear error, never garbled steps.
 */
export function stepLayoutOf(a: { stepLayout?: unknown }, file: string): StepLayout {
  const known = layouts.get(a);
  if (known) return known;
  const rebuild = `${file} was built for another step layout than native/engine.ts packs; rebuild it with \`npm run build:native\``;
  const raw = a.stepLayout as Partial<NativeStepLayout> | undefined;
  const index = <N extends string>(got: unknown, want: readonly N[], what: string): Record<N, number> => {
    if (!Array.isArray(got) || !got.every((n) => typeof n === 'string')) throw new Error(`${rebuild} (it exports no ${what} layout)`);
    const missing = want.filter((n) => !got.includes(n));
    const unknown = got.filter((n) => !(want as readonly string[]).includes(n) || got.indexOf(n) !== got.lastIndexOf(n));
    if (missing.length || unknown.length || got.length !== want.length)
      throw new Error(`${rebuild} (${what} fields: ${[...missing.map((n) => `missing ${n}`), ...unknown.map((n) => `unexpected ${n}`)].join(', ')})`);
    return Object.fromEntries(want.map((n) => [n, got.indexOf(n)])) as Record<N, number>;
  };
  const layout: StepLayout = {
    seq: index(raw?.seq, SEQ_NAMES, 'sequence'),
    seqFields: SEQ_NAMES.length,
    out: index(raw?.out, OUT_NAMES, 'result'),
    outFields: OUT_NAMES.length,
  };
  layouts.set(a, layout);
  return layout;
}

// Reused from step to step (saves three allocations a step, ~20 us at batch 64): packing and the
// addon's call are synchronous and the addon copies everything before returning, so no two steps
// ever hold these at once. They only grow, to twice the largest batch seen.
const scratch = { seqs: new Float64Array(0), ints: new Int32Array(0), masks: new Uint32Array(0) };

/**
 * Packs a batch into the addon's arrays. Caller values go in unconverted (numbers as doubles,
 * booleans as 0/1), so the addon still rejects a fractional position or a bad seed with a TypeError.
 */
function packBatch(batch: readonly SeqInput[], layout: StepLayout): [Float64Array, Int32Array, Uint32Array] {
  const { seq: SEQ, seqFields } = layout;
  const numSeqs = batch.length * seqFields;
  let numInts = 0;
  let numWords = 0;
  for (const s of batch) {
    numInts += s.tokens.length + s.blockTable.length + (s.penaltyTokens?.length ?? 0) + 2 * (s.bias?.tokens.length ?? 0);
    numWords += s.mask?.length ?? 0;
  }
  if (scratch.seqs.length < numSeqs) scratch.seqs = new Float64Array(2 * numSeqs);
  if (scratch.ints.length < numInts) scratch.ints = new Int32Array(2 * numInts);
  if (scratch.masks.length < numWords) scratch.masks = new Uint32Array(2 * numWords);
  const seqs = scratch.seqs.subarray(0, numSeqs);
  const ints = scratch.ints.subarray(0, numInts);
  const masks = scratch.masks.subarray(0, numWords);
  let at = 0;
  let word = 0;
  const putInts = (values: ArrayLike<number> | undefined) => {
    if (!values) return 0;
    ints.set(values, at);
    at += values.length;
    return values.length;
  };
  // A bias is its token ids, then its values as float32 bit patterns, in `ints` (addon.cc).
  const putBias = (bias: SeqInput['bias']) => {
    if (!bias) return 0;
    const n = bias.tokens.length;
    if (bias.values.length !== n) throw new TypeError(`bias: ${n} tokens but ${bias.values.length} values`);
    ints.set(bias.tokens, at);
    new Float32Array(ints.buffer, ints.byteOffset + (at + n) * 4, n).set(bias.values);
    at += 2 * n;
    return n;
  };
  const putMask = (mask: Uint32Array | undefined) => {
    if (!mask) return 0;
    masks.set(mask, word);
    word += mask.length;
    return mask.length;
  };
  // Every field is written, every step: the arrays hold the previous step's numbers.
  for (let i = 0; i < batch.length; i++) {
    const s = batch[i]!;
    const p = s.sampling;
    const f = i * seqFields;
    seqs[f + SEQ.position] = s.position;
    seqs[f + SEQ.adapterSlot] = s.adapterSlot ?? -1;
    seqs[f + SEQ.promptLogprobs] = Number(s.promptLogprobs ?? false);
    seqs[f + SEQ.nextToken] = s.nextToken ?? -1;
    seqs[f + SEQ.sample] = Number(s.sample ?? true);
    seqs[f + SEQ.topLogprobs] = s.topLogprobs ?? 0;
    seqs[f + SEQ['sampling.temperature']] = p?.temperature ?? GREEDY.temperature;
    seqs[f + SEQ['sampling.topK']] = p?.topK ?? GREEDY.topK;
    seqs[f + SEQ['sampling.topP']] = p?.topP ?? GREEDY.topP;
    seqs[f + SEQ['sampling.typicalP']] = p?.typicalP ?? GREEDY.typicalP;
    seqs[f + SEQ['sampling.repetitionPenalty']] = p?.repetitionPenalty ?? GREEDY.repetitionPenalty;
    seqs[f + SEQ['sampling.seed']] = p?.seed ?? GREEDY.seed;
    seqs[f + SEQ.tokens] = putInts(s.tokens);
    seqs[f + SEQ.blockTable] = putInts(s.blockTable);
    seqs[f + SEQ.penaltyTokens] = putInts(s.penaltyTokens);
    seqs[f + SEQ.bias] = putBias(s.bias);
    seqs[f + SEQ.mask] = putMask(s.mask);
  }
  return [seqs, ints, masks];
}

/** Rebuilds the per-sequence outputs from a packed step result (layout: NativeStepResult). */
function unpackOutputs(r: NativeStepResult, n: number, layout: StepLayout): NativeSeqOutput[] {
  const { seqs, logprobs, altIds, altLogprobs } = r;
  const { out: OUT, outFields } = layout;
  let groupLen = n * outFields;
  let prompt = n;
  let alt = 0;
  // Copies, not views: an output kept by a caller must not pin or alias the whole batch's arrays.
  const alternatives = (k: number): NativeTopLogprobs => {
    const top = { ids: altIds.slice(alt, alt + k), logprobs: altLogprobs.slice(alt, alt + k) };
    alt += k;
    return top;
  };
  const outs: NativeSeqOutput[] = [];
  for (let i = 0; i < n; i++) {
    const h = i * outFields;
    const topLen = seqs[h + OUT.top]!;
    const promptLen = seqs[h + OUT.prompt]!;
    const top = topLen < 0 ? null : alternatives(topLen);
    let promptLogprobs: Float32Array | null = null;
    let promptTop: NativeTopLogprobs[] | null = null;
    if (promptLen >= 0) {
      promptLogprobs = logprobs.slice(prompt, prompt + promptLen);
      prompt += promptLen;
      const groups = seqs[h + OUT.promptTop]!;
      if (groups > 0) {
        promptTop = [];
        for (let g = 0; g < groups; g++) promptTop.push(alternatives(seqs[groupLen++]!));
      }
    }
    outs.push({ token: seqs[h + OUT.token]!, logprob: logprobs[i]!, top, promptLogprobs, promptTop });
  }
  return outs;
}

/** An on/off engine option's environment default: 1/true/on or 0/false/off, unset = undefined. */
function envFlag(name: string): boolean | undefined {
  const v = process.env[name]?.trim().toLowerCase();
  if (!v) return undefined;
  if (['1', 'true', 'on'].includes(v)) return true;
  if (['0', 'false', 'off'].includes(v)) return false;
  throw new Error(`${name} must be 1 or 0 (true/false, on/off), got "${process.env[name]}"`);
}

/**
 * EngineOptions with every default filled in, the environment's included: read here, once per
 * open, never by the engine during a step. An explicit option beats the environment.
 */
export function resolveEngineOptions(options: EngineOptions = {}) {
  const device = options.device ?? ((process.env.SWITCHBOARD_DEVICE || undefined) as Device | undefined) ?? 'auto';
  if (!['auto', 'cpu', 'cuda'].includes(device)) throw new Error(`device must be auto, cpu or cuda, got "${device}"`);
  return {
    numBlocks: options.numBlocks ?? 256,
    blockSize: options.blockSize ?? 16,
    maxAdapters: options.maxAdapters ?? 8,
    device,
    cudaGraphs: options.cudaGraphs ?? envFlag('SWITCHBOARD_CUDA_GRAPHS') ?? true,
    prefillAttention: options.prefillAttention ?? envFlag('SWITCHBOARD_PREFILL_ATTENTION') ?? true,
  };
}

export class Engine {
  private constructor(
    readonly model: ModelDir,
    private readonly native: NativeEngine,
    private readonly layout: StepLayout,
    readonly options: { numBlocks: number; blockSize: number; maxAdapters: number },
  ) {}

  /** Opens a model directory (or one already validated by openModelDir) and loads its weights. */
  static async open(modelDir: string | ModelDir, options: EngineOptions = {}): Promise<Engine> {
    const { device, cudaGraphs, prefillAttention, ...opts } = resolveEngineOptions(options);
    const model = typeof modelDir === 'string' ? await openModelDir(modelDir) : modelDir;
    const log = options.log ?? ((m: string) => console.warn(`[switchboard] ${m}`));
    if (device !== 'cpu') {
      const cuda = loadCudaAddon();
      if (cuda) {
        const dtype = resolveDtype(options.dtype ?? 'auto', model.config.dtype);
        try {
          const native = new cuda.NativeEngine(model.spec, { ...opts, dtype, cudaGraphs, prefillAttention, ...(options.quantGemvRows !== undefined ? { quantGemvRows: options.quantGemvRows } : {}) });
          await native.load();
          return new Engine(model, native, stepLayoutOf(cuda, 'switchboard_cuda.node'), opts);
        } catch (err) {
          // A CUDA build that cannot start (driver, architecture, memory) must not take the server down.
          if (device === 'cuda') throw err;
          log(`CUDA engine failed to start (${(err as Error).message}); falling back to the CPU engine`);
        }
      } else if (device === 'cuda') {
        throw new Error(cudaUnavailableReason());
      } else if (cudaBuilt) {
        log(`CUDA engine built but not usable here (${cudaUnavailable}); running on the CPU engine`);
      }
    }
    const cpu = loadAddon();
    const native = new cpu.NativeEngine(model.spec, { ...opts, ...(options.threads ? { threads: options.threads } : {}) });
    await native.load();
    return new Engine(model, native, stepLayoutOf(cpu, 'switchboard_native.node'), opts);
  }

  info(): NativeEngineInfo {
    return this.native.info();
  }

  /** Reads a PEFT adapter directory (validated against this model) into `slot`. */
  async loadAdapterDir(slot: number, dir: string): Promise<PeftAdapter> {
    const adapter = await openPeftAdapter(dir, this.model);
    await this.loadAdapter(slot, adapter.spec);
    return adapter;
  }

  /** Loads already-resolved LoRA modules (e.g. a merge computed in JS) into `slot`. */
  async loadAdapter(slot: number, spec: NativeAdapterSpec): Promise<void> {
    return this.native.loadAdapter(slot, spec);
  }

  unloadAdapter(slot: number): void {
    this.native.unloadAdapter(slot);
  }

  step(batch: readonly SeqInput[]): Promise<NativeSeqOutput[]> {
    return this.native.step(...packBatch(batch, this.layout)).then((r) => unpackOutputs(r, batch.length, this.layout));
  }

  close(): void {
    this.native.close();
  }
}

/** The CUDA engine's element type for a checkpoint stored as `stored`. */
function resolveDtype(requested: ComputeDtype, stored: string | null): 'float32' | 'float16' | 'bfloat16' {
  if (requested !== 'auto') return requested;
  return stored === 'float16' ? 'float16' : 'bfloat16';
}
