// The only door to the native addon. It opens a model directory (validated in TypeScript, see
// model-dir.ts), picks the engine, fills defaults into each step's batch and keeps the JS side
// typed. Steps, weight loads and adapter loads all run off the JS thread.
import { createRequire } from 'node:module';
import type {
  NativeAdapterSpec,
  NativeEngine,
  NativeEngineInfo,
  NativeSampling,
  NativeSeqInput,
  NativeSeqOutput,
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
  tokens: Int32Array | readonly number[];
  position: number;
  blockTable: Int32Array | readonly number[];
  adapterSlot?: number;
  promptLogprobs?: boolean;
  nextToken?: number;
  sample?: boolean;
  topLogprobs?: number;
  sampling?: Partial<NativeSampling>;
  penaltyTokens?: Int32Array | readonly number[];
  mask?: Uint32Array;
}

export const GREEDY: NativeSampling = { temperature: 0, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, seed: 0 };

const EMPTY_I32 = new Int32Array(0);
const EMPTY_U32 = new Uint32Array(0);
const i32 = (a: Int32Array | readonly number[] | undefined) =>
  a === undefined ? EMPTY_I32 : a instanceof Int32Array ? a : Int32Array.from(a);

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
    const native: NativeSeqInput[] = batch.map((s) => ({
      tokens: i32(s.tokens),
      position: s.position,
      blockTable: i32(s.blockTable),
      adapterSlot: s.adapterSlot ?? -1,
      promptLogprobs: s.promptLogprobs ?? false,
      nextToken: s.nextToken ?? -1,
      sample: s.sample ?? true,
      topLogprobs: s.topLogprobs ?? 0,
      sampling: { ...GREEDY, ...s.sampling },
      penaltyTokens: i32(s.penaltyTokens),
      mask: s.mask ?? EMPTY_U32,
    }));
    return this.native.step(native);
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
