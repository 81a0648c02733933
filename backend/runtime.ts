// Everything one backend process holds: the engine, the model's tokenizer, the adapter tiers and
// the scheduler, wired to the metrics. Built once at start-up, shared by every route.
import { randomBytes } from 'node:crypto';
import { homedir, totalmem } from 'node:os';
import { ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api';
import path from 'node:path';
import { Engine } from '../native/engine.ts';
import { openModelDir } from '../native/model-dir.ts';
import { AdapterStore } from './adapters/adapter-store.ts';
import { HubSource } from './adapters/hub-source.ts';
import { LocalSource } from './adapters/local-source.ts';
import { S3Source } from './adapters/s3-source.ts';
import { AdapterResolver } from './adapters/resolve.ts';
import { resolveServedModel } from './hub/download.ts';
import { hubCacheDir } from './hub/hub-cache.ts';
import type { ServeConfig } from './config.ts';
import { watchLoad } from './load-progress.ts';
import { Health } from './health.ts';
import { deviceWeightBytes, elementBytes, kvTokensFromMemory } from './kv-budget.ts';
import { cudaMemory } from '../native/engine.ts';
import type { NativeModelSpec } from '../native/addon.d.ts';
import { Metrics } from './metrics.ts';
import { Scheduler } from './scheduler.ts';
import { TokenizePool } from './text/tokenize-pool.ts';
import { TextTokenizer } from './text/tokenizer.ts';

export interface Limits {
  maxInputLength: number;
  maxTotalTokens: number;
  maxBestOf: number;
  maxStopSequences: number;
  maxConcurrentRequests: number;
}

export class Runtime {
  inFlight = 0;
  readonly startedAt = Date.now();

  private constructor(
    readonly config: ServeConfig,
    readonly engine: Engine,
    readonly tokenizer: TextTokenizer,
    /** Encoding of large inputs, off the request loop (tokenize-pool.ts). */
    readonly tokenizePool: TokenizePool,
    readonly store: AdapterStore,
    readonly adapters: AdapterResolver,
    readonly scheduler: Scheduler,
    readonly metrics: Metrics,
    readonly limits: Limits,
    readonly modelName: string,
    /** --adapter-id and --preloaded-adapter-ids, fetched and validated before the server took requests. */
    readonly preloadedAdapters: readonly string[] = [],
  ) {}

  /** /health's answer: a recent step, else a one-token generation on the base model (LoRAX's check). */
  readonly health = new Health(async (signal) => {
    const { generate } = await import('./generate.ts');
    const events = generate(this, {
      prompt: 'liveness',
      adapter: { kind: 'base' },
      maxNewTokens: 1,
      sampling: { doSample: false },
      stop: [],
      includeStopText: true,
      ignoreEos: true,
      promptLogprobs: false,
      topLogprobs: 0,
      signal,
      // Under an unsampled parent: a load balancer's polling must not fill the trace store.
      traceContext: trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext({ traceId: randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex'), traceFlags: TraceFlags.NONE })),
    });
    for await (const e of events) if (e.type === 'end') return;
    throw new Error('the one-token generation ended without a token');
  });

  /** `progress`: show weight loading progress on stderr (a bar on a terminal, else lines). */
  static async start(config: ServeConfig, log: (msg: string) => void = () => {}, progress = false, internal: RuntimeInternals = {}): Promise<Runtime> {
    const metrics = new Metrics();
    // A directory, or a Hub repo id downloaded into (or found in) the hub cache.
    const resolved = await resolveServedModel(config, log);
    const modelDir = resolved.dir;
    log(`loading tokenizer from ${modelDir}`);
    // Limits follow LoRAX's launcher: 4096 tokens or the model's context, whichever is smaller.
    const probe = await openModelDir(modelDir, { quantize: config.quantize });
    if (probe.quantization) {
      const q = probe.quantization;
      log(`quantized weights: ${q.description}; ${q.layers} linear layers packed (${(q.packedBytes / 1e6).toFixed(1)} MB: the CUDA engine computes with them as they are; the CPU engine dequantises them to ${((q.quantizedValues * 4) / 1e6).toFixed(1)} MB of float32)`);
    }
    const ctx = probe.config.maxPositionEmbeddings ?? 4096;
    const maxTotalTokens = config.maxTotalTokens ?? Math.min(ctx, 4096);
    const maxInputLength = config.maxInputLength ?? maxTotalTokens - 1;
    if (maxInputLength >= maxTotalTokens) throw new Error(`--max-input-length (${maxInputLength}) must be < --max-total-tokens (${maxTotalTokens})`);
    const batchTokens = config.maxBatchTotalTokens ?? deviceKvTokens(config, probe.spec, log) ?? maxTotalTokens * 16;
    const numBlocks = Math.ceil(batchTokens / config.blockSize);
    if (numBlocks * config.blockSize < maxTotalTokens) throw new Error('--max-batch-total-tokens must hold at least one full request (--max-total-tokens)');
    const tokenizer = await TextTokenizer.load(modelDir, probe.config.eosTokenId);
    const tokenizePool = await TokenizePool.create(modelDir, tokenizer, probe.config.eosTokenId, config.validationWorkers ? { size: config.validationWorkers } : {});
    log(`loading weights (${(probe.weightBytes / 1e6).toFixed(1)} MB) ...`);
    const t0 = performance.now();
    const watch = progress ? watchLoad(probe.weightBytes, { tty: process.stderr.isTTY === true, write: (t) => process.stderr.write(t.startsWith('\r') ? t : `[switchboard] ${t}`) }) : null;
    const engine = await Engine.open(probe, {
      numBlocks,
      blockSize: config.blockSize,
      maxAdapters: config.maxActiveAdapters,
      device: config.device,
      dtype: config.dtype,
      // --eager (LoRAX's flag): no CUDA graphs.
      cudaGraphs: !config.eager,
      log,
      ...(config.threads ? { threads: config.threads } : {}),
    }).finally(() => watch?.stop());
    log(`engine ready on ${engine.info().deviceName} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    let scheduler: Scheduler | undefined;
    let runtime: Runtime | undefined;
    const adapterMemory = adapterMemoryBudget(config, engine.info().device, internal.adapterMemoryBytes);
    log(adapterMemory.explain);
    const store = new AdapterStore(
      engine,
      {
        slots: config.maxActiveAdapters,
        cycleTimeS: config.adapterCycleTimeS,
        maxHostAdapters: config.maxCpuAdapters ?? Math.max(16, config.maxActiveAdapters),
        onChange: () => scheduler?.notify(),
        memoryBytes: adapterMemory.bytes,
        memoryBudgetExplain: adapterMemory.source,
        elementBytes: adapterMemory.elementBytes,
      },
      {
        onLoad: (key, s, tier) => {
          log(`adapter ${key.replace(/@[^@]*$/, '')} ${tier === 'host' ? 'fetched and validated' : 'loaded into an engine slot'} in ${(s * 1000).toFixed(0)} ms`);
          metrics.adapterLoads.inc({ tier });
          metrics.adapterLoadDuration.observe({ tier }, s);
          metrics.activeAdapters.set(store.activeCount);
        },
        onLoadError: (key, err) => {
          log(`adapter ${key.replace(/@[^@]*$/, '')} failed to load: ${err.message}`);
          metrics.adapterLoadFailures.inc();
        },
        onEvict: () => {
          metrics.adapterEvictions.inc();
          metrics.activeAdapters.set(store.activeCount);
        },
      },
    );
    metrics.watchAdapterMemory(store);
    const cacheDir = config.adapterCacheDir ?? hubCacheDir();
    const resolver = new AdapterResolver(
      store,
      {
        local: new LocalSource(config.adapterRoot ? path.resolve(config.adapterRoot) : null, { allowAbsolute: config.allowAbsoluteAdapterPaths }),
        // The operator's token goes only where the operator opted in (--allow-hub-token-fallback).
        s3: new S3Source({ cacheDir: path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'switchboard', 's3'), buckets: config.s3Buckets, endpoint: config.s3Endpoint }),
        hub: new HubSource({ endpoint: config.hubEndpoint, cacheDir, offline: config.hubOffline, ...(config.hubToken && config.allowHubTokenFallback ? { defaultToken: config.hubToken } : {}) }),
      },
      engine.model,
    );
    scheduler = new Scheduler(
      engine,
      store,
      {
        numBlocks,
        blockSize: config.blockSize,
        maxBatchPrefillTokens: config.maxBatchPrefillTokens,
        maxBatchSize: config.maxBatchSize,
        maxTotalTokens,
        waitingServedRatio: config.waitingServedRatio,
        maxWaitingTokens: config.maxWaitingTokens,
        prefixCaching: config.prefixCaching,
      },
      {
        onStep: ({ prefillTokens, seconds }) => {
          runtime?.health.noteStep();
          const method = prefillTokens > 0 ? 'prefill' : 'decode';
          metrics.batchInferenceCount.inc({ method });
          metrics.batchInferenceSuccess.inc({ method });
          metrics.batchStepDuration.observe({ method: prefillTokens > 0 ? 'prefill' : 'decode' }, seconds);
        },
        onQueue: (waiting, running) => {
          metrics.queueSize.set(waiting);
          metrics.batchSize.set(running);
        },
        onStepError: ({ prefillTokens }) => {
          const method = prefillTokens > 0 ? 'prefill' : 'decode';
          metrics.batchInferenceCount.inc({ method });
          metrics.batchInferenceFailure.inc({ method });
          runtime?.health.noteFailure();
        },
        onPreempt: () => metrics.preemptions.inc(),
        onPrefixCache: (queried, hit) => {
          metrics.prefixCacheQueries.inc(queried);
          metrics.prefixCacheHits.inc(hit);
        },
      },
    );
    metrics.watchBlocks(scheduler.blocks);
    const preloadedAdapters = await preloadAdapters(config, resolver, log);
    const limits: Limits = {
      maxInputLength,
      maxTotalTokens,
      maxBestOf: config.maxBestOf,
      maxStopSequences: config.maxStopSequences,
      maxConcurrentRequests: config.maxConcurrentRequests,
    };
    runtime = new Runtime(config, engine, tokenizer, tokenizePool, store, resolver, scheduler, metrics, limits, resolved.hub?.repoId ?? path.basename(modelDir), preloadedAdapters);
    return runtime;
  }

  async close(): Promise<void> {
    await this.scheduler.close();
    await this.tokenizePool.close();
    this.engine.close();
  }
}

/** Not flags: settings the tests pass to Runtime.start (through cli.ts's startServer). */
export interface RuntimeInternals {
  /** The adapter memory budget in bytes, instead of --adapter-memory-fraction's. */
  adapterMemoryBytes?: number;
}

/**
 * The bytes adapters in engine slots may take together: --adapter-memory-fraction x the device's
 * total memory on the CUDA engine (LoRAX's meaning), and the same fraction of host memory on the
 * CPU engine, whose adapters live there; each adapter counted at the engine's element size
 * (the CUDA engine's compute type, float32 on the CPU engine).
 */
export function adapterMemoryBudget(config: ServeConfig, device: 'cpu' | 'cuda', override?: number): { bytes: number; elementBytes: number; source: string; explain: string } {
  const elem = device === 'cuda' ? elementBytes(config.dtype) : 4;
  const f = config.adapterMemoryFraction;
  let bytes: number;
  let source: string;
  if (override !== undefined) {
    bytes = override;
    source = 'set by the caller';
  } else if (device === 'cuda' && !cudaMemory()) {
    // A CUDA build too old to say its memory: no budget rather than none at all.
    bytes = Infinity;
    source = 'unlimited: this CUDA build does not report device memory';
  } else if (device === 'cuda') {
    const total = cudaMemory()!.total;
    bytes = Math.floor(f * total);
    source = `--adapter-memory-fraction ${f} x total device memory ${(total / 2 ** 30).toFixed(2)} GiB`;
  } else {
    const total = totalmem();
    bytes = Math.floor(f * total);
    source = `--adapter-memory-fraction ${f} x total host memory ${(total / 2 ** 30).toFixed(2)} GiB (CPU engine)`;
  }
  return { bytes, elementBytes: elem, source, explain: `adapter memory: ${(bytes / 2 ** 20).toFixed(1)} MiB for adapters in engine slots (${source}), ${elem} bytes per weight` };
}

/**
 * LoRAX's --adapter-id and --preloaded-adapter-ids: each adapter fetched, validated and held in
 * the host tier before the port answers anything but 503, so the first request for it does not
 * pay the download. One that cannot load stops the start, naming it.
 */
async function preloadAdapters(config: ServeConfig, resolver: AdapterResolver, log: (msg: string) => void): Promise<string[]> {
  const ids = [...new Set([...(config.adapterId ? [config.adapterId] : []), ...config.preloadedAdapterIds])];
  const loaded: string[] = [];
  for (const id of ids) {
    const source = id === config.adapterId ? config.adapterSource : (config.preloadedAdapterSource ?? config.adapterSource);
    let key: string | null;
    try {
      key = await resolver.acquire({ kind: 'single', ref: { id, source } });
    } catch (err) {
      throw new Error(`${id === config.adapterId ? '--adapter-id' : '--preloaded-adapter-ids'} ${id} (source ${source}) cannot be loaded: ${(err as Error).message}`);
    }
    resolver.release(key);
    log(`preloaded adapter ${id} (${source})`);
    loaded.push(id);
  }
  return loaded;
}

/**
 * LoRAX's default KV cache size on a GPU (kv-budget.ts): null where the engine will not be CUDA
 * (--device cpu, no usable CUDA build), which keeps the CPU default.
 */
function deviceKvTokens(config: ServeConfig, spec: NativeModelSpec, log: (msg: string) => void): number | null {
  if (config.device === 'cpu') return null;
  const device = cudaMemory();
  if (!device) return null;
  const elem = elementBytes(config.dtype);
  const budget = kvTokensFromMemory({
    device,
    cudaMemoryFraction: config.cudaMemoryFraction,
    adapterMemoryFraction: config.adapterMemoryFraction,
    memoryWiggleRoom: config.memoryWiggleRoom,
    weightBytes: deviceWeightBytes(spec.tensors, elem),
    kvBytesPerToken: 2 * spec.numLayers * spec.numKvHeads * spec.headDim * elem,
  });
  log(`${budget.explain}; --max-batch-total-tokens sets it instead`);
  if (budget.tokens <= 0) throw new Error(`the weights leave no device memory for the KV cache (${budget.explain}): lower --adapter-memory-fraction, raise --cuda-memory-fraction, or pass --max-batch-total-tokens`);
  return budget.tokens;
}
