// The public API of Switchboard, as data: zod schemas and the types inferred
// from them. Imported by the gateway, the backend and the client; imports
// none of them (and nothing HTTP).
//
// Flat exports have distinct names across the two APIs (LoRAX keeps its own
// names — GenerateRequest, ErrorResponse, FinishReason, ResponseFormat —
// and the OpenAI side is prefixed where they would clash). The namespaces
// `lorax` and `openai` are there for call sites that prefer qualification.
export * from './common.ts';
export * from './lorax.ts';
export * from './openai.ts';
export { formatPath, formatZodError, formatZodIssue, protocolErrorMap, REQUIRED_MESSAGE, type SimpleIssue } from './issue-format.ts';
export * from './error-bodies.ts';
export * from './parse-request.ts';
export * from './contract.ts';

export * as lorax from './lorax.ts';
export * as openai from './openai.ts';
export * from './request-schemas.ts';
