// The gateway's own forwarding behaviour, over real HTTP, against stand-in upstreams that fail on
// purpose: a backend dying mid-stream becomes an error event (never a clean end), retries happen
// only before the first byte, a client that leaves cancels the upstream request, and a slow
// client slows the upstream down (backpressure) instead of being buffered for.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ADMIN_TOKEN, issueKey, post, sseData, startTestGateway } from '../test/gateway/helpers/stack.ts';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import type { GatewayAccessEntry, RunningGateway } from './node.ts';
import type { AdapterSelection } from './adapters.ts';
import { parseLorax } from './endpoints/lorax.ts';
import { parseChat } from './endpoints/openai.ts';
import { SseFramer, type StreamInspector } from './forward.ts';
import { MemoryStore } from './store/memory-store.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(10);
  }
}

describe('SSE framing', () => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  /** Feeds `bytes` to a framer in pieces cut at `cuts`, returns all it sent, decoded. */
  const feed = (f: SseFramer, bytes: Uint8Array, cuts: number[]) => {
    const out: Uint8Array[] = [];
    let at = 0;
    for (const c of [...cuts, bytes.length]) {
      const o = f.push(bytes.subarray(at, c));
      if (o) out.push(o);
      at = c;
    }
    const t = f.flush();
    if (t) out.push(t);
    return out.map((o) => dec.decode(o)).join('');
  };

  it('re-frames events split across chunks, with LF or CRLF, and drops what the inspector drops', () => {
    const seen: string[] = [];
    const f = new SseFramer({ event: (d) => (seen.push(d), d === 'drop' ? null : d === 'x' ? 'X' : d), end: () => null });
    const text = 'data: a\n\ndata: drop\r\n\r\ndata: x\n\n: comment\n\ndata: {"é":1}\n\n';
    const bytes = enc.encode(text);
    const out = feed(f, bytes, [11, 54, 55]); // cuts inside "data", inside "é" (2 bytes) and after it
    assert.deepEqual(seen, ['a', 'drop', 'x', '{"é":1}']);
    assert.equal(out, 'data: a\n\ndata: X\n\n: comment\n\ndata: {"é":1}\n\n');
  });

  it('gives the same events and bytes however the stream is cut (every byte boundary: CRLF, CR, multi-byte UTF-8, a BOM)', () => {
    const text = '\ufeffdata: {"t":"é"}\r\n\r\ndata: {"t":"😀"}\r\rdata: a\ndata: b\n\nevent: x\ndata: {"t":"漢"}\n\n\ndata: last';
    const bytes = enc.encode(text);
    const run = (cuts: number[]) => {
      const seen: string[] = [];
      const out = feed(new SseFramer({ event: (d) => (seen.push(d), d), end: () => null }), bytes, cuts);
      return { seen, out };
    };
    const whole = run([]);
    assert.deepEqual(whole.seen, ['{"t":"é"}', '{"t":"😀"}', 'a\nb', '{"t":"漢"}', 'last']);
    assert.ok(!whole.out.includes('\ufeff'), 'the BOM is not part of the first event');
    for (let i = 1; i < bytes.length; i++) assert.deepEqual(run([i]), whole, `cut at byte ${i}`);
    assert.deepEqual(run(Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)), whole, 'one byte at a time');
  });

  it('a long event arriving in many small pieces comes out whole and unchanged', () => {
    const seen: string[] = [];
    const big = `{"t":"${'é漢'.repeat(40_000)}"}`;
    const bytes = enc.encode(`data: a\n\ndata: ${big}\r\n\r\ndata: b\n\n`);
    const cuts = Array.from({ length: Math.floor(bytes.length / 97) }, (_, i) => (i + 1) * 97);
    const out = feed(new SseFramer({ event: (d) => (seen.push(d), d), end: () => null }), bytes, cuts);
    assert.deepEqual(seen, ['a', big, 'b']);
    assert.equal(out, `data: a\n\ndata: ${big}\n\ndata: b\n\n`);
  });

  it('passes a chunk of whole events it need not change as the chunk itself (no copy, no decode)', () => {
    let decoded = 0;
    const f = new SseFramer({
      quick: () => true,
      event: (d) => (decoded++, d),
      end: () => null,
    });
    const chunk = enc.encode('data: {"a":1}\n\ndata: {"b":2}\n\n');
    const out = f.push(chunk)!;
    assert.equal(out, chunk);
    assert.equal(decoded, 0);
    // A multi-line event is not one-line data: it is read as text.
    assert.equal(dec.decode(f.push(enc.encode('data: x\ndata: y\n\n'))!), 'data: x\ndata: y\n\n');
    assert.equal(decoded, 1);
  });

  /** The endpoints' quick paths must answer exactly as their event(): same bytes out, same counts. */
  const sel = { kind: 'single', target: { name: 'mine', id: 'tenants/acme/mine', source: 'local', apiToken: null, replicas: null }, affinity: 'a' } as unknown as AdapterSelection;
  const both = (inspector: () => StreamInspector & { usage(): unknown; events: number }, text: string) => {
    const bytes = enc.encode(text);
    const fast = inspector();
    const slow = inspector();
    const slowOnly: StreamInspector = { event: (d) => slow.event(d), end: (x) => slow.end(x) };
    for (const cuts of [[], [37], Array.from({ length: 40 }, (_, i) => i * 7 + 3)]) {
      const a = inspector();
      const b = inspector();
      const outFast = feed(new SseFramer(a), bytes, cuts);
      const outSlow = feed(new SseFramer({ event: (d) => b.event(d), end: (x) => b.end(x) }), bytes, cuts);
      assert.equal(outFast, outSlow, `cuts ${cuts.length}`);
      assert.deepEqual([a.usage(), a.events], [b.usage(), b.events]);
    }
    const out = feed(new SseFramer(fast), bytes, []);
    feed(new SseFramer(slowOnly), bytes, []);
    return { out, usage: fast.usage(), events: fast.events };
  };

  it('OpenAI chunks: the quick path renames the model, cuts usage:null and counts as event() does', () => {
    const chunk = (c: string, model = 'tenants/acme/mine') => `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"${model}","choices":[{"index":0,"delta":{"content":"${c}"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n`;
    const stream = chunk('é') + chunk('😀') + chunk('x', 'other') + 'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"tenants/acme/mine","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}\n\ndata: [DONE]\n\n';
    const parsed = (usage: boolean) => {
      const r = parseChat({ model: 'mine', messages: [{ role: 'user', content: 'hi' }], stream: true, ...(usage ? { stream_options: { include_usage: true } } : {}) });
      assert.ok(r.ok);
      return () => r.req.inspector(sel);
    };
    const plain = both(parsed(false), stream);
    assert.deepEqual([plain.usage, plain.events], [{ promptTokens: 3, completionTokens: 3 }, 3]);
    assert.ok(!plain.out.includes('"usage"'), plain.out);
    assert.ok(!plain.out.includes('tenants/acme'), 'the backend id never reaches the client');
    assert.equal((plain.out.match(/"model":"mine"/g) ?? []).length, 2);
    const withUsage = both(parsed(true), stream);
    assert.equal((withUsage.out.match(/,"usage":null\}/g) ?? []).length, 3);
    assert.ok(withUsage.out.includes('"completion_tokens":3'));
  });

  it('LoRAX events: the quick path passes token events and counts as event() does; details trimmed unless asked', () => {
    const tok = (i: number) => `data: {"token":{"id":${i},"text":"é${i}","logprob":-1,"special":false},"generated_text":null,"details":null}\n\n`;
    const stream = tok(0) + tok(1) + 'data: {"token":{"id":2,"text":"x","logprob":-1,"special":false},"generated_text":"é01x","details":{"finish_reason":"length","prompt_tokens":4,"generated_tokens":3,"seed":null}}\n\n';
    const parsed = (details: boolean) => {
      const r = parseLorax('/generate_stream', { inputs: 'hi', parameters: { details } });
      assert.ok(r.ok);
      return () => r.req.inspector(sel);
    };
    const plain = both(parsed(false), stream);
    assert.deepEqual([plain.usage, plain.events], [{ promptTokens: 4, completionTokens: 3 }, 3]);
    assert.ok(plain.out.endsWith('"details":null}\n\n'));
    assert.ok(both(parsed(true), stream).out.includes('"generated_tokens":3'));
  });
});

describe('forwarding (stand-in upstreams)', () => {
  let good: StandIn;
  let gw: RunningGateway;
  let key: string;
  let store: MemoryStore;
  before(async () => {
    good = await startStandIn();
    store = new MemoryStore();
    gw = await startTestGateway({ backends: [good.url], store, options: { exposeBackend: true } });
    key = await issueKey(gw, 'acme');
  });
  after(async () => {
    await gw.close();
    await good.close();
  });

  it('LoRAX: a backend dying mid-stream reaches the client as an error event', async () => {
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'die-mid' }, key);
    assert.equal(res.status, 200);
    const events = sseData(await res.text());
    assert.equal(events.length, 3);
    const last = JSON.parse(events[2]!);
    assert.equal(last.error_type, 'incomplete_generation');
    assert.match(last.error, /mid-stream/);
  });

  it('LoRAX: a stream that ends without its final event is not a clean end either', async () => {
    const res = await post(`${gw.url}/`, { inputs: 'end-early', stream: true }, key);
    const events = sseData(await res.text());
    assert.equal(JSON.parse(events.at(-1)!).error_type, 'incomplete_generation');
  });

  it('OpenAI: mid-stream failure is a {"error": {...}} event and no [DONE]', async () => {
    const res = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'die-mid' }], stream: true }, key);
    const events = sseData(await res.text());
    assert.ok(!events.includes('[DONE]'));
    const last = JSON.parse(events.at(-1)!);
    assert.equal(last.error.type, 'server_error');
    assert.equal(last.error.code, 'stream_interrupted');
  });

  it('a normal stream passes through; what the gateway added for counting is trimmed', async () => {
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'ok' }, key);
    const events = sseData(await res.text()).map((e) => JSON.parse(e));
    assert.equal(events.length, 3);
    assert.equal(events[2].details, null, 'details were not requested');
    assert.equal(good.lastBody.get('/generate_stream').parameters.details, true, 'but asked for upstream');
    const chat = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'ok' }], stream: true }, key);
    const ev = sseData(await chat.text());
    assert.deepEqual(ev.at(-1), '[DONE]');
    assert.ok(ev.every((e) => !e.includes('"usage"')), 'no usage chunk or usage:null fields when the client did not ask');
    assert.equal(good.lastBody.get('/v1/chat/completions').stream_options.include_usage, true);
  });

  it('events and characters cut across upstream chunks reach the client whole; the final usage is what gets counted', async () => {
    const tenant = 'split-counts';
    const k = await issueKey(gw, tenant);
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'split', parameters: { details: true } }, k);
    const events = sseData(await res.text()).map((e) => JSON.parse(e));
    assert.deepEqual(events.map((e) => e.token.text), ['é', '😀', 't3']);
    assert.equal(events[2].generated_text, 'é😀漢');
    assert.equal(events[2].details.generated_tokens, 3);
    const chat = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'split' }], stream: true }, k);
    const ev = sseData(await chat.text());
    assert.deepEqual(ev.slice(0, 3).map((e) => JSON.parse(e).choices[0].delta.content), ['é', '😀', '漢字']);
    assert.deepEqual(ev.slice(3), ['[DONE]'], 'the usage chunk the client did not ask for is dropped');
    await sleep(50);
    const usage = await store.getUsage(tenant, []);
    assert.deepEqual([usage.total.prompt_tokens, usage.total.completion_tokens], [14, 6], 'both streams settled with the backend\'s own counts');
  });

  it('a client that disconnects cancels the upstream request', async () => {
    const ac = new AbortController();
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'slow-forever' }, key, {}, ac.signal);
    const reader = res.body!.getReader();
    await reader.read();
    const t0 = Date.now();
    ac.abort();
    await until(() => good.closed.has('slow-forever'));
    assert.ok(good.closed.get('slow-forever')!.at - t0 < 1000);
    // The abandoned stream is settled with what was seen: usage recorded, no reservation left.
    await until(() => true);
    await sleep(50);
    const usage = await store.getUsage('acme', []);
    assert.ok(usage.total.completion_tokens >= 1);
  });

  it('a slow client slows the upstream down (backpressure, no unbounded buffering)', async () => {
    const ac = new AbortController();
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'flood' }, key, {}, ac.signal);
    const reader = res.body!.getReader();
    await reader.read();
    await sleep(700); // the client reads nothing for a while
    ac.abort();
    await until(() => good.closed.has('flood'));
    const c = good.closed.get('flood')!;
    assert.equal(c.blocked, true, 'the upstream had to wait for the client');
    assert.ok(c.bytes < 48 * 1024 * 1024, `upstream wrote ${(c.bytes / 1e6).toFixed(1)} MB for a client that read one chunk`);
  });
});

describe('streams through the access log wrapper', () => {
  it('events arrive whole, the line is written with the stream\'s counts, a client that leaves still cancels the upstream', async () => {
    const up = await startStandIn();
    const entries: GatewayAccessEntry[] = [];
    const gw = await startTestGateway({ backends: [up.url], store: new MemoryStore(), accessLog: (e) => entries.push(e) });
    try {
      const key = await issueKey(gw, 'logged');
      const res = await post(`${gw.url}/generate_stream`, { inputs: 'split' }, key);
      assert.deepEqual(sseData(await res.text()).map((e) => JSON.parse(e).token.text), ['é', '😀', 't3']);
      await until(() => entries.some((e) => e.route === '/generate_stream'));
      const line = entries.find((e) => e.route === '/generate_stream')!;
      assert.deepEqual([line.stream, line.status, line.tokensIn, line.tokensOut], [true, 200, 7, 3]);
      const ac = new AbortController();
      const slow = await post(`${gw.url}/generate_stream`, { inputs: 'slow-forever' }, key, {}, ac.signal);
      const reader = slow.body!.getReader();
      await reader.read();
      const t0 = Date.now();
      ac.abort();
      await until(() => up.closed.has('slow-forever'));
      assert.ok(up.closed.get('slow-forever')!.at - t0 < 1000);
    } finally {
      await gw.close();
      await up.close();
    }
  });
});

describe('retries (stand-in upstreams)', () => {
  let dead: StandIn;
  let good: StandIn;
  let gw: RunningGateway;
  let key: string;
  before(async () => {
    dead = await startStandIn({ dieBeforeFirstByte: true });
    good = await startStandIn();
    // Health checks far apart: the dead replica still looks healthy, so requests do reach it first.
    gw = await startTestGateway({ backends: [dead.url, good.url], healthIntervalMs: 60_000, options: { exposeBackend: true } });
    key = await issueKey(gw, 'acme');
  });
  after(async () => {
    await gw.close();
    await Promise.all([dead.close(), good.close()]);
  });

  it('a replica that fails before the first byte is replaced by another one', async () => {
    for (let i = 0; i < 4; i++) {
      gw.router.backends[0]!.healthy = true; // as if the failure had not been noticed yet
      const res = await post(`${gw.url}/generate_stream`, { inputs: 'ok', parameters: { max_new_tokens: 3 } }, key);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-switchboard-backend'), '1');
      const events = sseData(await res.text());
      assert.ok(JSON.parse(events.at(-1)!).generated_text);
      const plain = await post(`${gw.url}/generate`, { inputs: 'ok' }, key);
      assert.equal(plain.status, 200);
    }
    assert.ok((dead.hits.get('/generate_stream') ?? 0) + (dead.hits.get('/generate') ?? 0) >= 1, 'the dead replica was tried');
    assert.equal(gw.router.backends[0]!.healthy, false);
  });

  it('after the first byte there is no retry: the failure is the client\'s error event', async () => {
    gw.router.backends[0]!.healthy = false;
    const before = good.hits.get('/generate_stream') ?? 0;
    const res = await post(`${gw.url}/generate_stream`, { inputs: 'die-mid' }, key);
    const events = sseData(await res.text());
    assert.equal(JSON.parse(events.at(-1)!).error_type, 'incomplete_generation');
    assert.equal((good.hits.get('/generate_stream') ?? 0) - before, 1, 'sent exactly once');
  });

  it('no replica reachable: 502 in the API\'s shape', async () => {
    const gw2 = await startTestGateway({ backends: [dead.url], healthIntervalMs: 60_000 });
    try {
      const k = await issueKey(gw2, 'acme');
      gw2.router.backends[0]!.healthy = true;
      // /info first fails too: the gateway cannot even learn the model.
      const res = await post(`${gw2.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }] }, k);
      assert.equal(res.status, 502);
      const body = (await res.json()) as { error: { type: string } };
      assert.equal(body.error.type, 'server_error');
      const lorax = await post(`${gw2.url}/generate`, { inputs: 'x' }, k);
      assert.equal(lorax.status, 502);
      assert.ok(typeof ((await lorax.json()) as { error: string }).error === 'string');
    } finally {
      await gw2.close();
    }
  });

  it('admin token is required for the admin API', async () => {
    const res = await fetch(`${gw.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } });
    assert.equal(res.status, 401);
  });
});
