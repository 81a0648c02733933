// OpenTelemetry: with a tracer provider registered, a request makes gateway.request >
// gateway.auth, gateway.limit, gateway.forward spans in the caller's trace, and the backend
// receives a traceparent naming the forward span. Without one, the incoming traceparent still
// reaches the backend. (A recording provider stands in for an SDK; the upstream is a stand-in
// because the test reads the headers it receives.)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { trace, type Context, type Span, type SpanContext, type SpanOptions, type Tracer, type TracerProvider } from '@opentelemetry/api';
import { issueKey, post, sseData, startTestGateway } from '../test/gateway/helpers/stack.ts';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import type { RunningGateway } from './node.ts';

interface Recorded {
  name: string;
  ctx: SpanContext;
  parentSpanId: string | undefined;
  attributes: Record<string, unknown>;
  ended: boolean;
}

class RecordingProvider implements TracerProvider {
  spans: Recorded[] = [];
  getTracer(): Tracer {
    const spans = this.spans;
    const startSpan = (name: string, options: SpanOptions = {}, context?: Context): Span => {
      const parent = context ? trace.getSpanContext(context) : undefined;
      const rec: Recorded = {
        name,
        ctx: { traceId: parent?.traceId ?? randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex'), traceFlags: 1 },
        parentSpanId: parent?.spanId,
        attributes: { ...(options.attributes ?? {}) },
        ended: false,
      };
      spans.push(rec);
      const span: Span = {
        spanContext: () => rec.ctx,
        setAttribute: (k, v) => ((rec.attributes[k] = v), span),
        setAttributes: (a) => (Object.assign(rec.attributes, a), span),
        addEvent: () => span,
        addLink: () => span,
        addLinks: () => span,
        setStatus: () => span,
        updateName: () => span,
        end: () => {
          rec.ended = true;
        },
        isRecording: () => true,
        recordException: () => {},
      };
      return span;
    };
    return { startSpan, startActiveSpan: (() => { throw new Error('not used'); }) as Tracer['startActiveSpan'] };
  }
}

describe('tracing', () => {
  let up: StandIn;
  let gw: RunningGateway;
  let key: string;
  const provider = new RecordingProvider();
  before(async () => {
    up = await startStandIn();
    gw = await startTestGateway({ backends: [up.url] });
    key = await issueKey(gw, 'acme');
  });
  after(async () => {
    trace.disable();
    await gw.close();
    await up.close();
  });

  it('without an SDK the caller\'s traceparent still reaches the backend', async () => {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const res = await post(`${gw.url}/generate`, { inputs: 'ok' }, key, { traceparent: tp });
    assert.equal(res.status, 200);
    assert.equal(up.lastHeaders.get('/generate')!.traceparent, tp);
  });

  it('spans auth, limit and forward in the caller\'s trace; traceparent names the forward span', async () => {
    trace.setGlobalTracerProvider(provider);
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'ok' }, key, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
    assert.equal(sseData(await res.text()).length, 3);
    await new Promise((r) => setTimeout(r, 50));
    const byName = (n: string) => provider.spans.find((s) => s.name === n);
    const root = provider.spans.find((s) => s.name.includes('/generate_stream'))!;
    assert.ok(root, provider.spans.map((s) => s.name).join(', '));
    assert.equal(root.ctx.traceId, traceId);
    assert.equal(root.parentSpanId, '00f067aa0ba902b7');
    for (const n of ['gateway.auth', 'gateway.limit', 'gateway.forward']) {
      const s = byName(n);
      assert.ok(s, `span ${n}`);
      assert.equal(s.ctx.traceId, traceId);
      assert.equal(s.parentSpanId, root.ctx.spanId);
      assert.equal(s.ended, true, `${n} ended`);
    }
    assert.equal(byName('gateway.auth')!.attributes['switchboard.tenant'], 'acme');
    assert.equal(byName('gateway.forward')!.attributes['switchboard.stream_outcome'], 'complete');
    const fwd = byName('gateway.forward')!;
    assert.equal(up.lastHeaders.get('/generate_stream')!.traceparent, `00-${traceId}-${fwd.ctx.spanId}-01`);
  });
});
