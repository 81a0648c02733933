// Bodies of the gateway's own APIs (admin, tenant adapters), validated with zod and refused in
// OpenAI's error shape. The inference bodies are protocol/'s; these exist only at the gateway.
import { z } from 'zod';
import { parseOpenAIRequest, SERVED_ADAPTER_SOURCES, TENANT_ID } from '../../protocol/index.ts';
import { SCOPES } from '../auth/api-keys.ts';
import { ShapedError } from '../errors.ts';

const limit = () => z.int().min(1).nullable().optional();
export const LimitsInput = z.strictObject({ rpm: limit(), tpm: limit(), concurrent_streams: limit() });

const Tenant = z.string().regex(TENANT_ID, { error: 'must be 1-63 lowercase letters, digits or "-", starting with a letter or digit' });

export const IssueKeyInput = z.strictObject({
  tenant: Tenant,
  name: z.string().max(200).nullable().optional(),
  scopes: z.array(z.enum(SCOPES)).nullable().optional(),
  limits: LimitsInput.nullable().optional(),
  expires_at: z.iso.datetime({ offset: true }).nullable().optional(),
});

export const TenantInput = z.strictObject({ limits: LimitsInput.nullable() });

export const HubAdapterInput = z.strictObject({
  name: z.string(),
  repo: z.string(),
  token: z.string().min(1).nullable().optional(),
});

export const SharedAdapterInput = z.strictObject({
  source: z.enum(SERVED_ADAPTER_SOURCES),
  adapter_id: z.string().min(1).max(512),
  api_token: z.string().min(1).nullable().optional(),
});

export function parseInput<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = parseOpenAIRequest(schema, body);
  if (!r.success) throw new ShapedError(r.status, r.error);
  return r.data;
}

/** Shared adapters may look like hub repos ("org/name"). */
export const SHARED_ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(\/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$/;
