// The only door to the native addon. It opens a model directory (validated in TypeScript, see
// model-dir.ts), picks the engine, fills defaults into each step's batch and keeps the JS side
// typed. Steps, weight loads and adapter loads all run off the JS thread.
import { createRequire } from 'node:module';
import type {
  NativeAdapterSpec,
  NativeEngine,
  NativeEngineInfo,
  NativeSampling,
  NativeSeqOutput,
  NativeStepResult,
  NativeTopLogprobs,
} from './addon.d.ts';
import { openModelDir, type ModelDir } from './model-dir.ts';
import { openPeftAdapter, type PeftAdapter } from './peft-adapter.ts';

export type { NativeSeqOutput as SeqOutput, NativeSampling as Sampling, NativeEngineInfo as EngineInfo };

interface Addon {
  NativeEngine: new (...args: ConstructorParameters<typeof NativeEngine>) => NativeEngine;
  cudaAvailable: boolean;
  cudaDeviceCount(): number;
}

let addon: Addon | undefined;
let cudaAddon: Addon | null | undefined;
let cudaUnavailable = '';
let cudaBuilt = false;

/** Loads the compiled CPU addon once; a missing build is a clear error, not a stack of require frames. */
export function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  try {
    addon = require('./build/Release/switchboard_native.node') as Addon;
  } catch (err) {
    throw new Error(
      `the native engine is not built (${(err as Error).message.split('\n')[0]}); run \`npm run build:native\``,
    );
  }
  return addon;
}

/** The CUDA addon, or null (with the reason in cudaUnavailableReason()) where it cannot run. */
export function loadCudaAddon(): Addon | null {
  if (cudaAddon !== undefined) return cudaAddon;
  const require = createRequire(import.meta.url);
  try {
    const a = require('./build/Release/switchboard_cuda.node') as Addon;
    cudaBuilt = true;
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
  /** auto: the CUDA engine where a GPU works, else the CPU engine (SWITCHBOARD_DEVICE overrides). */
  device?: Device;
  /** CUDA engine element type; auto: the checkpoint's 16-bit type (bfloat16 for fp32 checkpoints). */
  dtype?: ComputeDtype;
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
  /** Allowed-token bitset (bit t of word t>>5), or omitted for no constraint. */
  mask?: Uint32Array;
}

export const GREEDY: NativeSampling = { temperature: 0, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, seed: 0 };

// Index of each number in a sequence's SEQ_FIELDS slots of the packed `seqs` array (see
// NativeEngine.step); the order is SeqField's in src/addon.cc.
const SEQ = {
  position: 0, adapterSlot: 1, promptLogprobs: 2, nextToken: 3, sample: 4, topLogprobs: 5,
  temperature: 6, topK: 7, topP: 8, typicalP: 9, repetitionPenalty: 10, seed: 11,
  tokens: 12, blockTable: 13, penaltyTokens: 14, mask: 15,
} as const;
const SEQ_FIELDS = 16;
// A step result's ints per sequence (OutField in src/addon.cc).
const OUT = { token: 0, top: 1, prompt: 2, promptTop: 3 } as const;
const OUT_FIELDS = 4;

// Reused from step to step (saves three allocations a step, ~20 us at batch 64): packing and the
// addon's call are synchronous and the addon copies everything before returning, so no two steps
// ever hold these at once. They only grow, to twice the largest batch seen.
const scratch = { seqs: new Float64Array(0), ints: new Int32Array(0), masks: new Uint32Array(0) };

/**
 * Packs a batch into the addon's arrays. Caller values go in unconverted (numbers as doubles,
 * booleans as 0/1), so the addon still rejects a fractional position or a bad seed with a TypeError.
 */
function packBatch(batch: readonly SeqInput[]): [Float64Array, Int32Array, Uint32Array] {
  const numSeqs = batch.length * SEQ_FIELDS;
  let numInts = 0;
  let numWords = 0;
  for (const s of batch) {
    numInts += s.tokens.length + s.blockTable.length + (s.penaltyTokens?.length ?? 0);
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
    const f = i * SEQ_FIELDS;
    seqs[f + SEQ.position] = s.position;
    seqs[f + SEQ.adapterSlot] = s.adapterSlot ?? -1;
    seqs[f + SEQ.promptLogprobs] = Number(s.promptLogprobs ?? false);
    seqs[f + SEQ.nextToken] = s.nextToken ?? -1;
    seqs[f + SEQ.sample] = Number(s.sample ?? true);
    seqs[f + SEQ.topLogprobs] = s.topLogprobs ?? 0;
    seqs[f + SEQ.temperature] = p?.temperature ?? GREEDY.temperature;
    seqs[f + SEQ.topK] = p?.topK ?? GREEDY.topK;
    seqs[f + SEQ.topP] = p?.topP ?? GREEDY.topP;
    seqs[f + SEQ.typicalP] = p?.typicalP ?? GREEDY.typicalP;
    seqs[f + SEQ.repetitionPenalty] = p?.repetitionPenalty ?? GREEDY.repetitionPenalty;
    seqs[f + SEQ.seed] = p?.seed ?? GREEDY.seed;
    seqs[f + SEQ.tokens] = putInts(s.tokens);
    seqs[f + SEQ.blockTable] = putInts(s.blockTable);
    seqs[f + SEQ.penaltyTokens] = putInts(s.penaltyTokens);
    seqs[f + SEQ.mask] = putMask(s.mask);
  }
  return [seqs, ints, masks];
}

/** Rebuilds the per-sequence outputs from a packed step result (layout: NativeStepResult). */
function unpackOutputs(r: NativeStepResult, n: number): NativeSeqOutput[] {
  const { seqs, logprobs, altIds, altLogprobs } = r;
  let groupLen = n * OUT_FIELDS;
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
    const h = i * OUT_FIELDS;
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

export class Engine {
  private constructor(
    readonly model: ModelDir,
    private readonly native: NativeEngine,
    readonly options: { numBlocks: number; blockSize: number; maxAdapters: number },
  ) {}

  /** Opens a model directory (or one already validated by openModelDir) and loads its weights. */
  static async open(modelDir: string | ModelDir, options: EngineOptions = {}): Promise<Engine> {
    const model = typeof modelDir === 'string' ? await openModelDir(modelDir) : modelDir;
    const opts = { numBlocks: options.numBlocks ?? 256, blockSize: options.blockSize ?? 16, maxAdapters: options.maxAdapters ?? 8 };
    const log = options.log ?? ((m: string) => console.warn(`[switchboard] ${m}`));
    const device = (process.env.SWITCHBOARD_DEVICE as Device | undefined) || options.device || 'auto';
    if (!['auto', 'cpu', 'cuda'].includes(device)) throw new Error(`device must be auto, cpu or cuda, got "${device}"`);
    if (device !== 'cpu') {
      const cuda = loadCudaAddon();
      if (cuda) {
        const dtype = resolveDtype(options.dtype ?? 'auto', model.config.dtype);
        try {
          const native = new cuda.NativeEngine(model.spec, { ...opts, dtype });
          await native.load();
          return new Engine(model, native, opts);
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
    const { NativeEngine } = loadAddon();
    const native = new NativeEngine(model.spec, { ...opts, ...(options.threads ? { threads: options.threads } : {}) });
    await native.load();
    return new Engine(model, native, opts);
  }

  info(): NativeEngineInfo {
    return this.native.info();
  }

  /** Reads a PEFT adapter directory (validated against this model) into `slot`. */
  async loadAdapterDir(slot: number, dir: string): Promise<PeftAdapter> {
    const adapter = await openPeftAdapter(dir, this.model);
    await this.native.loadAdapter(slot, adapter.spec);
    return adapter;
  }

  /** Loads already-resolved LoRA modules (e.g. a merge computed in JS) into `slot`. */
  loadAdapter(slot: number, spec: NativeAdapterSpec): Promise<void> {
    return this.native.loadAdapter(slot, spec);
  }

  unloadAdapter(slot: number): void {
    this.native.unloadAdapter(slot);
  }

  step(batch: readonly SeqInput[]): Promise<NativeSeqOutput[]> {
    return this.native.step(...packBatch(batch)).then((r) => unpackOutputs(r, batch.length));
  }

  close(): void {
    this.native.close();
  }
}

/** The CUDA engine's element type for a checkpoint stored as `stored`. */
export function resolveDtype(requested: ComputeDtype, stored: string | null): 'float32' | 'float16' | 'bfloat16' {
  if (requested !== 'auto') return requested;
  return stored === 'float16' ? 'float16' : 'bfloat16';
}
