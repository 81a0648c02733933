// OpenTelemetry: with an SDK registered (as an operator would), a request that brings a
// traceparent gets its server span under it, generation phases as children, and a traceparent
// back. The backend itself only uses @opentelemetry/api.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { propagation, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';

const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

describe('tracing', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths']);
  });
  after(async () => {
    await srv.close();
  });

  it('continues the caller trace and records queue, prefill, decode and adapter load', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentId = '00f067aa0ba902b7';
    exporter.reset();
    const res = await postJson(
      `${srv.url}/generate`,
      { inputs: 'Hello', parameters: { max_new_tokens: 3, adapter_id: join(import.meta.dirname, '..', 'fixtures', 'adapters', 'llama', 'r8-qv') } },
      { traceparent: `00-${traceId}-${parentId}-01` },
    );
    assert.equal(res.status, 200);
    assert.match(res.headers.get('traceparent') ?? '', new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    await new Promise((r) => setTimeout(r, 20));
    const spans = exporter.getFinishedSpans();
    const byName = new Map(spans.map((s) => [s.name, s]));
    const server = byName.get('POST /generate');
    assert.ok(server, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(server.spanContext().traceId, traceId);
    assert.equal(server.parentSpanContext?.spanId, parentId);
    const gen = byName.get('switchboard.generate')!;
    assert.equal(gen.parentSpanContext?.spanId, server.spanContext().spanId);
    for (const name of ['switchboard.adapter_load', 'switchboard.queue', 'switchboard.prefill', 'switchboard.decode']) {
      const s = byName.get(name);
      assert.ok(s, `missing span ${name}`);
      assert.equal(s.parentSpanContext?.spanId, gen.spanContext().spanId, `${name} parent`);
      assert.equal(s.spanContext().traceId, traceId);
    }
    assert.equal(gen.attributes['switchboard.generated_tokens'], 3);
  });
});
