// Prometheus metrics, named as LoRAX/TGI name them (lorax_*), so existing dashboards work.
// One registry per server instance: tests run several in one process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** What the adapter memory gauge reads (adapter-store.ts's AdapterStore). */
interface AdapterBytes {
  readonly usedBytes: number;
  readonly budgetBytes: number;
}

/** What the KV block metrics read (block-manager.ts's BlockManager). */
interface BlockCounts {
  readonly used: number;
  readonly cached: number;
  readonly idleCached: number;
  readonly evictions: number;
  readonly blockSize?: number;
}

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const tokenBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

export class Metrics {
  readonly registry = new Registry();
  readonly requestCount = new Counter({ name: 'lorax_request_count', help: 'Requests received', registers: [this.registry] });
  readonly requestSuccess = new Counter({ name: 'lorax_request_success', help: 'Requests that finished', registers: [this.registry] });
  readonly requestFailure = new Counter({ name: 'lorax_request_failure', help: 'Requests that failed, by error type', labelNames: ['err'], registers: [this.registry] });
  readonly requestDuration = new Histogram({ name: 'lorax_request_duration', help: 'Request latency (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly queueDuration = new Histogram({ name: 'lorax_request_queue_duration', help: 'Time from arrival to first scheduled step (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly timeToFirstToken = new Histogram({ name: 'lorax_request_time_to_first_token', help: 'Time from arrival to the first generated token (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly timePerToken = new Histogram({ name: 'lorax_request_mean_time_per_token_duration', help: 'Mean time between generated tokens (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly inputLength = new Histogram({ name: 'lorax_request_input_length', help: 'Prompt tokens', buckets: tokenBuckets, registers: [this.registry] });
  readonly generatedTokens = new Histogram({ name: 'lorax_request_generated_tokens', help: 'Generated tokens per request', buckets: tokenBuckets, registers: [this.registry] });
  readonly tokensTotal = new Counter({ name: 'lorax_tokens_generated_total', help: 'Tokens generated', registers: [this.registry] });
  readonly queueSize = new Gauge({ name: 'lorax_queue_length', help: 'Requests waiting to join the batch', registers: [this.registry] });
  readonly validationDuration = new Histogram({ name: 'lorax_request_validation_duration', help: 'Time to tokenize and validate a request (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly inferenceDuration = new Histogram({ name: 'lorax_request_inference_duration', help: 'Time from the first scheduled step to the last token (seconds)', buckets: latencyBuckets, registers: [this.registry] });
  readonly batchInferenceCount = new Counter({ name: 'lorax_batch_inference_count', help: 'Engine steps run, by kind (prefill: the step holds prompt tokens; decode: only decode tokens)', labelNames: ['method'], registers: [this.registry] });
  readonly batchInferenceSuccess = new Counter({ name: 'lorax_batch_inference_success', help: 'Engine steps that returned results, by kind', labelNames: ['method'], registers: [this.registry] });
  readonly batchInferenceFailure = new Counter({ name: 'lorax_batch_inference_failure', help: 'Engine steps that failed (their requests failed), by kind', labelNames: ['method'], registers: [this.registry] });
  readonly batchCurrentMaxTokens = new Gauge({ name: 'lorax_batch_current_max_tokens', help: 'KV cache tokens the running batch may reach (blocks held x block size)', registers: [this.registry], collect: () => this.collectBlocks() });
  readonly batchSize = new Gauge({ name: 'lorax_batch_current_size', help: 'Sequences in the running batch', registers: [this.registry] });
  readonly batchStepDuration = new Histogram({ name: 'lorax_batch_inference_duration', help: 'Engine step time (seconds), by kind', labelNames: ['method'], buckets: latencyBuckets, registers: [this.registry] });
  readonly kvBlocksUsed = new Gauge({ name: 'lorax_kv_blocks_used', help: 'KV cache blocks held by running sequences', registers: [this.registry], collect: () => this.collectBlocks() });
  readonly preemptions = new Counter({ name: 'lorax_preemptions_total', help: 'Sequences preempted for lack of KV blocks', registers: [this.registry] });
  readonly adapterLoads = new Counter({ name: 'lorax_adapter_loads_total', help: 'Adapter loads, by tier (host: fetched and validated; device: into an engine slot)', labelNames: ['tier'], registers: [this.registry] });
  readonly adapterLoadDuration = new Histogram({ name: 'lorax_adapter_load_duration', help: 'Adapter load time (seconds), by tier', labelNames: ['tier'], buckets: latencyBuckets, registers: [this.registry] });
  readonly adapterLoadFailures = new Counter({ name: 'lorax_adapter_load_failures_total', help: 'Adapter loads that failed', registers: [this.registry] });
  readonly adapterEvictions = new Counter({ name: 'lorax_adapter_evictions_total', help: 'Adapters moved out of engine slots', registers: [this.registry] });
  readonly activeAdapters = new Gauge({ name: 'lorax_active_adapters', help: 'Adapters resident in engine slots', registers: [this.registry] });
  // Not a LoRAX metric: engine memory of the adapters in slots against --adapter-memory-fraction's budget.
  readonly adapterMemory = new Gauge({ name: 'switchboard_adapter_memory_bytes', help: 'Engine memory of adapters in slots, by state (used: loaded or loading; budget: --adapter-memory-fraction x total device memory, host memory on the CPU engine)', labelNames: ['state'], registers: [this.registry], collect: () => this.collectAdapterMemory() });
  private adapterBytes: AdapterBytes | null = null;
  // Not LoRAX metrics: prefix caching (hit rate = rate(hits) / rate(queries), in prompt tokens).
  readonly prefixCacheQueries = new Counter({ name: 'switchboard_prefix_cache_queries_total', help: 'Prompt tokens looked up in the prefix cache (admissions with prefix caching on, prompt-logprob requests excepted)', registers: [this.registry] });
  readonly prefixCacheHits = new Counter({ name: 'switchboard_prefix_cache_hits_total', help: 'Prompt tokens whose KV came from the prefix cache instead of a prefill', registers: [this.registry] });
  readonly prefixCacheEvictions = new Counter({ name: 'switchboard_prefix_cache_evictions_total', help: 'Cached KV blocks reclaimed for other sequences when no free block was left', registers: [this.registry], collect: () => this.collectBlocks() });
  readonly prefixCacheBlocks = new Gauge({ name: 'switchboard_prefix_cache_blocks', help: 'KV blocks holding a cached prefix, by state (in_use: held by a running sequence; idle: reclaimable)', labelNames: ['state'], registers: [this.registry], collect: () => this.collectBlocks() });
  private blocks: BlockCounts | null = null;
  private evictionsSeen = 0;
  // Not a LoRAX metric: every HTTP answer by route pattern (never a raw path), method and status.
  readonly httpRequests = new Counter({ name: 'switchboard_backend_http_requests_total', help: 'HTTP answers, by route pattern, method and status', labelNames: ['route', 'method', 'status'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** The KV block gauges and the eviction counter read `blocks` (the scheduler's) at each scrape. */
  watchBlocks(blocks: BlockCounts): void {
    this.blocks = blocks;
  }

  /** The adapter memory gauge reads `store` at each scrape. */
  watchAdapterMemory(store: AdapterBytes): void {
    this.adapterBytes = store;
  }

  private collectAdapterMemory(): void {
    const a = this.adapterBytes;
    if (!a) return;
    this.adapterMemory.set({ state: 'used' }, a.usedBytes);
    this.adapterMemory.set({ state: 'budget' }, a.budgetBytes);
  }

  private collectBlocks(): void {
    const b = this.blocks;
    if (!b) return;
    this.kvBlocksUsed.set(b.used);
    this.batchCurrentMaxTokens.set(b.used * (b.blockSize ?? 0));
    this.prefixCacheBlocks.set({ state: 'in_use' }, b.cached - b.idleCached);
    this.prefixCacheBlocks.set({ state: 'idle' }, b.idleCached);
    this.prefixCacheEvictions.inc(b.evictions - this.evictionsSeen);
    this.evictionsSeen = b.evictions;
  }
}
