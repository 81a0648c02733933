// Operational routes: /health (and LoRAX's /, /ping, /startup), /info, /metrics (Prometheus text) and /tokenize.
import { readFileSync } from 'node:fs';
import { Hono, type Context } from 'hono';
import { RequestError } from '../errors.ts';
import { TooManyTokensError } from '../text/tokenize-pool.ts';
import type { Runtime } from '../runtime.ts';
import type { AuthEnv } from '../auth.ts';
import { readRequest } from './common.ts';

/** The package version, as /info and the OpenAPI document report it. */
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf-8')) as { version: string }).version;

export function infoRoutes(rt: Runtime): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();

  // LoRAX's probes: /health (and / and /ping, SageMaker's) answer 503 when the engine cannot
  // generate (health.ts); /startup, the Kubernetes startup probe, is the same check (while the
  // model loads, cli.ts answers 503 on every path).
  const health = async (c: Context<AuthEnv>) => {
    const r = await rt.health.check();
    if (r.ok) return c.json({ status: 'ok' });
    return c.json({ error: `unhealthy: ${r.error ?? 'the engine cannot generate'}`, error_type: 'healthcheck' }, 503);
  };
  for (const path of ['/health', '/', '/ping', '/startup']) app.get(path, health);

  app.get('/info', (c) => {
    const info = rt.engine.info();
    const m = rt.engine.model.config;
    return c.json({
      model_id: rt.config.modelId,
      model_sha: null,
      model_dtype: m.dtype ?? 'float32',
      model_device_type: info.device,
      model_pipeline_tag: 'text-generation',
      architecture: m.architecture,
      max_concurrent_requests: rt.limits.maxConcurrentRequests,
      max_best_of: rt.limits.maxBestOf,
      max_stop_sequences: rt.limits.maxStopSequences,
      max_input_length: rt.limits.maxInputLength,
      max_total_tokens: rt.limits.maxTotalTokens,
      waiting_served_ratio: rt.config.waitingServedRatio,
      max_batch_total_tokens: rt.scheduler.blocks.numBlocks * rt.scheduler.blocks.blockSize,
      max_waiting_tokens: rt.config.maxWaitingTokens,
      max_batch_prefill_tokens: rt.config.maxBatchPrefillTokens,
      max_active_adapters: rt.config.maxActiveAdapters,
      adapter_cycle_time_s: rt.config.adapterCycleTimeS,
      adapter_source: rt.config.defaultAdapterSource ?? rt.config.adapterSource,
      block_size: info.blockSize,
      device_name: info.deviceName,
      version: VERSION,
      sha: null,
      docker_label: null,
      request_logger_url: null,
      eager_prefill: true,
      preloaded_adapters: rt.preloadedAdapters,
      supports_generation: true,
      supports_embeddings: false,
      supports_classification: false,
    });
  });

  // OpenAPI document generated from protocol/'s schemas (openapi.ts); /api-doc/openapi.json is LoRAX's path.
  const docs = async (c: Context<AuthEnv>) => c.json((await import('../openapi.ts')).openApiDocument(VERSION));
  app.get('/docs', docs);
  app.get('/api-doc/openapi.json', docs);

  app.get('/metrics', async (c) => {
    rt.metrics.kvBlocksUsed.set(rt.scheduler.blocks.used);
    return c.text(await rt.metrics.registry.metrics(), 200, { 'content-type': rt.metrics.registry.contentType });
  });

  // TGI's /tokenize: each token with its text and character span in the input.
  app.post('/tokenize', async (c) => {
    const parsed = await readRequest(c, 'lorax.tokenize', rt);
    if (!parsed.ok) return c.json(parsed.error, 422);
    // Encoded and spelled out off the event loop when large; as long as a whole request may be.
    const limit = rt.limits.maxTotalTokens;
    const { ids, texts, special } = await rt.tokenizePool.detail(parsed.data.inputs, parsed.data.add_special_tokens ?? true, limit).catch((err: unknown) => {
      if (err instanceof TooManyTokensError) throw new RequestError(`Input validation error: \`inputs\` must have at most ${limit} tokens to tokenize. Given: at least ${err.atLeast}`, 422);
      throw err;
    });
    let offset = 0;
    return c.json(
      ids.map((id, i) => {
        const start = offset;
        if (!special[i]) offset += texts[i]!.length;
        return { id, text: texts[i]!, start, stop: special[i] ? start : offset };
      }),
    );
  });

  return app;
}
