// The backends' model and limits (the same on every replica), fetched from a replica's /info once
// per instance and shared by every request that needs them (budgets, base-model names, /v1/models).
import type { Context as OtelContext } from '@opentelemetry/api';
import type { BackendInfo } from './adapters.ts';
import { GatewayError } from './errors.ts';
import { callUpstream } from './forward.ts';
import type { Services } from './services.ts';

export class BackendInfoCache {
  private info: BackendInfo | null = null;
  private pending: Promise<BackendInfo> | null = null;

  constructor(private readonly svc: Services) {}

  get(tenant: string, ctx: OtelContext): Promise<BackendInfo> {
    if (this.info) return Promise.resolve(this.info);
    this.pending ??= this.fetch(tenant, ctx).finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  private async fetch(tenant: string, ctx: OtelContext): Promise<BackendInfo> {
    const { router } = this.svc;
    const up = await callUpstream(router, { path: '/info', method: 'GET', headers: await this.svc.serviceHeaders(tenant, ctx), affinity: null, waitFirstByte: false, maxAttempts: router.backends.length }, this.svc.fetch);
    try {
      if (!up.res.ok) throw new GatewayError(502, `backend /info answered ${up.res.status}`, { type: 'server_error', code: 'backend_error' });
      const j = (await up.res.json()) as { model_id?: string; max_total_tokens?: number; max_input_length?: number };
      const modelId = String(j.model_id ?? '');
      this.info = {
        modelId,
        modelName: modelId.split('/').filter(Boolean).pop() ?? modelId,
        maxTotalTokens: Number(j.max_total_tokens ?? 4096),
        maxInputLength: Number(j.max_input_length ?? Number(j.max_total_tokens ?? 4096) - 1),
      };
      return this.info;
    } finally {
      up.end();
    }
  }
}
