// The backend's OpenAPI document, generated from protocol/'s zod schemas (the one description of
// the API) by @asteasolutions/zod-to-openapi, never written by hand: a field added to a request
// schema shows up here with no other change. Built once, on the first /docs request.
import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
import type { z } from 'zod';
import {
  ChatCompletionRequest,
  CompatGenerateRequest,
  CompatGenerateResponse,
  CompletionRequest,
  ErrorResponse,
  GenerateRequest,
  GenerateResponse,
  GenerateStreamRequest,
  OpenAIErrorResponse,
  StreamResponse,
  TokenizeRequest,
} from '../protocol/index.ts';

type Method = 'get' | 'post';

interface Op {
  method: Method;
  path: string;
  tag: 'LoRAX' | 'OpenAI' | 'Operations';
  summary: string;
  body?: z.ZodType;
  ok?: { schema: z.ZodType; sse?: true } | { text: string };
  error?: z.ZodType;
}

const OPS: Op[] = [
  { method: 'post', path: '/generate', tag: 'LoRAX', summary: 'Generate tokens', body: GenerateRequest, ok: { schema: GenerateResponse }, error: ErrorResponse },
  { method: 'post', path: '/generate_stream', tag: 'LoRAX', summary: 'Generate a stream of tokens (server-sent events)', body: GenerateStreamRequest, ok: { schema: StreamResponse, sse: true }, error: ErrorResponse },
  { method: 'post', path: '/', tag: 'LoRAX', summary: 'Generate, streamed when `stream` is true (lorax-client\'s route)', body: CompatGenerateRequest, ok: { schema: CompatGenerateResponse }, error: ErrorResponse },
  { method: 'post', path: '/invocations', tag: 'LoRAX', summary: 'SageMaker\'s route: as POST /', body: CompatGenerateRequest, ok: { schema: CompatGenerateResponse }, error: ErrorResponse },
  { method: 'post', path: '/v1/completions', tag: 'OpenAI', summary: 'OpenAI completions', body: CompletionRequest, error: OpenAIErrorResponse },
  { method: 'post', path: '/v1/chat/completions', tag: 'OpenAI', summary: 'OpenAI chat completions', body: ChatCompletionRequest, error: OpenAIErrorResponse },
  { method: 'post', path: '/tokenize', tag: 'Operations', summary: 'Tokenize a text', body: TokenizeRequest, error: ErrorResponse },
  { method: 'get', path: '/health', tag: 'Operations', summary: 'Whether the engine can generate (503 when not)', error: ErrorResponse },
  { method: 'get', path: '/ping', tag: 'Operations', summary: 'As /health (SageMaker)', error: ErrorResponse },
  { method: 'get', path: '/startup', tag: 'Operations', summary: 'Startup probe: as /health', error: ErrorResponse },
  { method: 'get', path: '/info', tag: 'Operations', summary: 'Model and server limits' },
  { method: 'get', path: '/metrics', tag: 'Operations', summary: 'Prometheus metrics', ok: { text: 'text/plain' } },
];

let doc: unknown;

/** The OpenAPI 3.1 document of the backend's public routes. */
export function openApiDocument(version: string): unknown {
  if (doc) return doc;
  const registry = new OpenAPIRegistry();
  for (const op of OPS) {
    const ok = op.ok && 'schema' in op.ok ? { content: { [op.ok.sse ? 'text/event-stream' : 'application/json']: { schema: op.ok.schema } } } : op.ok ? { content: { [op.ok.text]: { schema: { type: 'string' as const } } } } : {};
    registry.registerPath({
      method: op.method,
      path: op.path,
      tags: [op.tag],
      summary: op.summary,
      ...(op.body ? { request: { body: { required: true, content: { 'application/json': { schema: op.body } } } } } : {}),
      responses: {
        200: { description: 'OK', ...ok },
        ...(op.error ? { '4XX': { description: 'Refused (the API\'s own error shape)', content: { 'application/json': { schema: op.error } } }, '5XX': { description: 'Failed', content: { 'application/json': { schema: op.error } } } } : {}),
      },
    });
  }
  doc = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'Switchboard backend', version, description: 'LoRAX- and OpenAI-compatible multi-LoRA inference (generated from protocol/\'s zod schemas)' },
  });
  return doc;
}
