// Black-box fuzzing of the whole stack over real HTTP (issue 14, item 9): a real backend on the
// tiny Llama fixture, the gateway in front of it, a real redis-server, and two tenants with API
// keys. A seeded stream of requests, 16 in flight, mixes mutated valid bodies of every route,
// odd methods and URLs, wrong content types, truncated, oversized and deeply nested JSON, tenant
// adapter calls, and streams aborted mid-way. Invariants, checked on every answer or throughout:
// - no 5xx at all: nothing here overloads a backend or stops the store, so the documented 502/503
//   (no replica, store down) and the backend's 503 overloaded cannot be right answers;
// - every error body is in its path's API shape (LoRAX {error, error_type}, OpenAI {error:{...}});
// - every request answers within a bound (no hang), and SSE bodies are well-formed events;
// - the gateway's /health stays 200 with its backend healthy the whole time;
// - afterwards, no KV block is held and the process heap is roughly where it started;
// - tenant B never sees tenant A's adapter name unless B's own request carried it.
// The request count and the wall time are both bounded (a 2-core CI machine finishes in ~40 s).
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import type { RunningGateway } from '../../gateway/node.ts';
import { apiKindOfPath, errorShapeProblem } from '../helpers/api-shape.ts';
import { mulberry32 } from '../helpers/prng.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { issueKey, makeAdapterRoot, startBackend, startTestGateway, uploadFixtureAdapter, type Backend } from './helpers/stack.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 1414);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 2000);
const CONCURRENCY = 16;
const WALL_MS = Number(process.env.FUZZ_WALL_MS ?? 40_000);
/** No single answer may take longer (the slowest legitimate one is a few hundred tokens). */
const ANSWER_BOUND_MS = 20_000;
const SECRET = 'zq-acme-private-7731';
const BOB_OWN = 'bob-own-hub';

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

const ROUTES = ['/generate', '/generate_stream', '/', '/v1/completions', '/v1/chat/completions', '/tokenize'] as const;
type Route = (typeof ROUTES)[number];

function baseBody(r: Rand, route: Route, adapter: string | null): Record<string, unknown> {
  const prompt = pick(r, ['Hello', 'The quick brown fox', 'a b c d e f', '{"x": 1}', 'Ünïcödé ✓ 日本語', '']);
  const n = int(r, 1, 6);
  switch (route) {
    case '/generate':
    case '/generate_stream':
    case '/':
      return { inputs: prompt, parameters: { max_new_tokens: n, ...(adapter ? { adapter_id: adapter } : {}), ...(r() < 0.3 ? { details: true } : {}) }, ...(route === '/' && r() < 0.5 ? { stream: true } : {}) };
    case '/v1/completions':
      return { model: adapter ?? 'llama', prompt, max_tokens: n, ...(r() < 0.4 ? { stream: true } : {}) };
    case '/v1/chat/completions':
      return { model: adapter ?? 'llama', messages: [{ role: 'user', content: prompt }], max_tokens: n, ...(r() < 0.4 ? { stream: true } : {}), ...(r() < 0.2 ? { response_format: { type: 'json_object' } } : {}) };
    case '/tokenize':
      return { inputs: prompt, ...(adapter && r() < 0.3 ? { parameters: { adapter_id: adapter } } : {}) };
  }
}

function oddValue(r: Rand): unknown {
  return pick(r, [null, -1, 0, 1e308, 2 ** 53 + 1, 0.5, '', 'x'.repeat(int(r, 1, 3000)), [], [1, 'a'], {}, { a: { b: [null] } }, true, false, '\u0000', 'NaN', -0]);
}

/** Mutates a JSON object in place: drop, retype, add, or nest a key somewhere in it. */
function mutate(r: Rand, v: Record<string, unknown>, depth = 0): void {
  const keys = Object.keys(v);
  const op = r();
  if (keys.length > 0 && op < 0.25) delete v[pick(r, keys)];
  else if (keys.length > 0 && op < 0.6) {
    const k = pick(r, keys);
    const cur = v[k];
    if (cur && typeof cur === 'object' && !Array.isArray(cur) && depth < 3 && r() < 0.6) mutate(r, cur as Record<string, unknown>, depth + 1);
    else v[k] = oddValue(r);
  } else if (op < 0.8) {
    v[pick(r, ['temperature', 'top_p', 'top_k', 'seed', 'stop', 'n', 'best_of', 'logprobs', 'ignore_eos', 'response_format', 'merged_adapters', 'adapter_source', 'api_token', 'truncate', 'repetition_penalty', 'decoder_input_details', 'watermark', 'tools', 'unknown_field_' + int(r, 0, 9)])] = oddValue(r);
  } else {
    v[pick(r, keys.length ? keys : ['x'])] = nested(int(r, 2, 60), r() < 0.5 ? '[' : '{');
  }
}

function nested(depth: number, open: '[' | '{'): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = open === '[' ? [v] : { a: v };
  return v;
}

/** Spellings a hostile tenant tries for another tenant's adapter. */
const crossSpellings = (name: string) => [`tenants/acme/${name}`, `./tenants/acme/${name}`, `tenants//acme/${name}`, `tenants/bob/../acme/${name}`, `/tenants/acme/${name}`, `acme/${name}`, `acme:${name}`, name, `%2e%2e/acme/${name}`];

interface Planned {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** Read this many bytes of the answer, then abort. */
  abortAfterBytes?: number;
  /** The tenant who sent it (null: no or a bad credential). */
  tenant: 'acme' | 'bob' | null;
  what: string;
}

function plan(r: Rand, keys: { acme: string; bob: string }): Planned {
  const tenant: Planned['tenant'] = r() < 0.05 ? null : r() < 0.5 ? 'acme' : 'bob';
  const auth: Record<string, string> = tenant ? { authorization: `Bearer ${keys[tenant]}` } : r() < 0.5 ? { authorization: `Bearer sk-${'0'.repeat(int(r, 0, 60))}` } : {};
  const json = { 'content-type': 'application/json', ...auth };
  const route = pick(r, ROUTES);
  const adapter =
    r() < 0.5 ? null : tenant === 'acme' ? pick(r, [SECRET, 'r8-qv', 'missing-one']) : tenant === 'bob' ? pick(r, [BOB_OWN, 'r8-qv', 'missing-one', ...crossSpellings(SECRET)]) : 'r8-qv';
  const kind = r();
  if (kind < 0.4) {
    const body = baseBody(r, route, adapter);
    for (let i = int(r, 0, 3); i > 0; i--) mutate(r, body);
    return { method: 'POST', path: route, headers: json, body: JSON.stringify(body), tenant, what: 'mutated body' };
  }
  if (kind < 0.48) {
    const body = baseBody(r, route === '/tokenize' ? '/generate_stream' : route, adapter);
    if (route === '/v1/completions' || route === '/v1/chat/completions') (body as { stream?: boolean }).stream = true;
    if ('parameters' in body) Object.assign(body.parameters as object, { max_new_tokens: int(r, 20, 200), ignore_eos: true });
    else Object.assign(body, { max_tokens: int(r, 20, 200) });
    const path = route === '/tokenize' || route === '/generate' ? '/generate_stream' : route;
    return { method: 'POST', path, headers: json, body: JSON.stringify(body), abortAfterBytes: int(r, 1, 400), tenant, what: 'stream aborted mid-way' };
  }
  if (kind < 0.56) {
    const method = pick(r, ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'PROPFIND']);
    const path = pick(r, [...ROUTES, '/info', '/health', '/metrics', '/v1/models', '/v1/adapters', '/admin/keys']);
    return { method, path, headers: json, ...(method !== 'GET' && method !== 'HEAD' && r() < 0.7 ? { body: JSON.stringify(baseBody(r, route, adapter)) } : {}), tenant, what: 'odd method' };
  }
  if (kind < 0.64) {
    const path = pick(r, [
      '/generate/../admin/keys',
      '/%2e%2e/admin/keys',
      '/v1/chat/completions/',
      '//generate',
      '/generate?adapter_id=x',
      '/v1/adapters/' + encodeURIComponent(`../acme/${SECRET}`),
      '/v1/adapters/%00',
      '/v1/' + 'a'.repeat(int(r, 1, 6000)),
      '/admin/tenants/acme/adapters',
      '/v1/models/' + SECRET,
      '/generate%00',
      '/\u00e9',
    ]);
    return { method: pick(r, ['GET', 'POST', 'DELETE']), path, headers: json, body: r() < 0.5 ? JSON.stringify(baseBody(r, '/generate', null)) : undefined, tenant, what: 'odd URL' };
  }
  if (kind < 0.72) {
    const ct = pick(r, ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/jsonx', '']);
    const headers: Record<string, string> = { ...auth };
    if (ct) headers['content-type'] = ct;
    return { method: 'POST', path: route, headers, body: r() < 0.7 ? JSON.stringify(baseBody(r, route, adapter)) : 'a=1&b=2', tenant, what: `content-type ${ct || 'none'}` };
  }
  if (kind < 0.8) {
    const text = JSON.stringify(baseBody(r, route, adapter));
    const body = pick(r, [text.slice(0, int(r, 0, text.length - 1)), text + '}', text.replace(/"/, "'"), '\uFEFF' + text, '[]', '"str"', '12', 'null', '\x00\xff\xfe', Buffer.from([0xff, 0xfe, 0x80, 0x7b])]);
    return { method: 'POST', path: route, headers: json, body, tenant, what: 'malformed JSON' };
  }
  if (kind < 0.85) {
    const depth = pick(r, [200, 1000, 5000, 20_000]);
    const body = baseBody(r, route, adapter);
    const arr = r() < 0.5;
    const deep = (arr ? '[' : '{"a":').repeat(depth) + '1' + (arr ? ']' : '}').repeat(depth);
    const text = JSON.stringify(body).replace(/}$/, `,"deep":${deep}}`);
    return { method: 'POST', path: route, headers: json, body: text, tenant, what: `nested ${depth}` };
  }
  if (kind < 0.87) {
    const body = baseBody(r, route, adapter);
    const big = 'word '.repeat(int(r, 220_000, 260_000)); // 1.1-1.3 MB: over the gateway's 1 MiB body limit
    if ('inputs' in body) body.inputs = big;
    else if ('prompt' in body) body.prompt = big;
    else (body as { messages: { content: string }[] }).messages[0]!.content = big;
    return { method: 'POST', path: route, headers: json, body: JSON.stringify(body), tenant, what: 'oversized body' };
  }
  // Tenant adapter routes.
  const own = tenant === 'acme' ? pick(r, ['acme-tmp', 'r8-qv', 'missing-one']) : pick(r, [BOB_OWN, 'bob-tmp', ...crossSpellings(SECRET).map(encodeURIComponent)]);
  const op = r();
  if (op < 0.3) return { method: 'GET', path: '/v1/adapters', headers: auth, tenant, what: 'list adapters' };
  if (op < 0.5) return { method: 'GET', path: `/v1/adapters/${own}`, headers: auth, tenant, what: 'get adapter' };
  if (op < 0.7) {
    const body: Record<string, unknown> = { name: tenant === 'acme' ? 'acme-tmp' : 'bob-tmp', repo: pick(r, ['org/repo', '../../etc', 'a'.repeat(300), 'x/y/z', '']) };
    if (r() < 0.5) mutate(r, body);
    return { method: 'POST', path: '/v1/adapters', headers: json, body: JSON.stringify(body), tenant, what: 'register adapter' };
  }
  if (op < 0.85) {
    const name = tenant === 'acme' ? 'acme-tmp' : pick(r, ['bob-tmp', encodeURIComponent(`../acme/${SECRET}`)]);
    const file = pick(r, ['adapter_config.json', 'adapter_model.safetensors', 'evil.bin', '..%2Fx']);
    const body = pick(r, ['{"r": 8, "target_modules": ["q_proj"]}', '{"target_modules": "(a+)+$"}', 'not json', '']);
    return { method: 'PUT', path: `/v1/adapters/${name}/${file}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, body, tenant, what: 'upload file' };
  }
  const victim = tenant === 'acme' ? 'acme-tmp' : pick(r, ['bob-tmp', encodeURIComponent(`tenants/acme/${SECRET}`), SECRET]);
  return { method: 'DELETE', path: `/v1/adapters/${victim}`, headers: auth, tenant, what: 'delete adapter' };
}

interface Outcome {
  status: number;
  text: string;
  ms: number;
  aborted: boolean;
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2 });

/** One raw HTTP/1.1 request (node:http sends the path as written: dot segments, %00, a GET with a body). */
function send(base: string, p: Planned): Promise<Outcome> {
  const t0 = performance.now();
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const body = p.body === undefined ? undefined : typeof p.body === 'string' ? Buffer.from(p.body) : p.body;
    const req = request({ host: u.hostname, port: u.port, method: p.method, path: p.path, agent, headers: { ...p.headers, ...(body ? { 'content-length': body.length } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      res.on('data', (d: Buffer) => {
        chunks.push(d);
        got += d.length;
        if (p.abortAfterBytes !== undefined && res.statusCode === 200 && got >= p.abortAfterBytes) {
          clearTimeout(timer);
          req.destroy();
          resolve({ status: 200, text: Buffer.concat(chunks).toString(), ms: performance.now() - t0, aborted: true });
        }
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), ms: performance.now() - t0, aborted: false });
      });
      res.on('error', () => {});
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`hang: no complete answer in ${ANSWER_BOUND_MS} ms`));
    }, ANSWER_BOUND_MS);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(body);
  });
}

function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe('gateway fuzz: hostile tenants over real HTTP', () => {
  let redis: TestRedis;
  let root: Awaited<ReturnType<typeof makeAdapterRoot>>;
  let be: Backend;
  let gw: RunningGateway;
  const keys = { acme: '', bob: '' };

  before(async () => {
    redis = await startRedis();
    root = await makeAdapterRoot();
    be = await startBackend(root.dir);
    gw = await startTestGateway({ backends: [be.url], redisUrl: redis.url });
    keys.acme = await issueKey(gw, 'acme');
    keys.bob = await issueKey(gw, 'bob');
    await uploadFixtureAdapter(gw, keys.acme, 'r8-qv', SECRET);
    await uploadFixtureAdapter(gw, keys.bob, 'r8-qv-b', BOB_OWN);
  });
  after(async () => {
    await gw?.close();
    await be?.close();
    await redis?.stop();
    await root?.cleanup();
  });

  it(`${REQUESTS} seeded requests, ${CONCURRENCY} at a time: no 5xx, errors in the API's shape, no hang, no leak`, { timeout: WALL_MS + 60_000 }, async () => {
    const rand = mulberry32(SEED);
    const plans = Array.from({ length: REQUESTS }, () => plan(rand, keys));
    const problems: string[] = [];
    const note = (p: Planned, msg: string) => {
      if (problems.length < 40) problems.push(`${msg} <- [${p.tenant ?? 'anon'}] ${p.what}: ${p.method} ${p.path.slice(0, 80)} ${typeof p.body === 'string' ? p.body.slice(0, 160) : p.body ? '<bytes>' : ''}`);
    };

    // Warm up (worker threads, adapter loads) before the heap is measured.
    for (const p of plans.slice(0, 32)) await send(gw.url, p);
    const heap0 = heapAfterGc();

    // The gateway's /health, polled throughout.
    let fuzzing = true;
    const healthBad: string[] = [];
    let healthProbes = 0;
    const poller = (async () => {
      while (fuzzing) {
        const res = await fetch(`${gw.url}/health`, { signal: AbortSignal.timeout(5000) }).catch((e: Error) => e);
        healthProbes++;
        if (res instanceof Error) healthBad.push(`/health failed: ${res.message}`);
        else {
          const text = await res.text();
          if (res.status !== 200) healthBad.push(`/health ${res.status} ${text}`);
        }
        // The backend's own probe (a one-token generation) keeps passing under the fuzz too.
        const direct = await fetch(`${be.url}/health`, { signal: AbortSignal.timeout(5000) }).catch((e: Error) => e);
        if (direct instanceof Error) healthBad.push(`backend /health failed: ${direct.message}`);
        else if (direct.status !== 200) healthBad.push(`backend /health ${direct.status} ${await direct.text()}`);
        else await direct.arrayBuffer();
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    const deadline = performance.now() + WALL_MS;
    let next = 0;
    let done = 0;
    const statuses = new Map<number, number>();
    let slowest = 0;
    let abortedStreams = 0;
    const kinds = new Map<string, number>();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < plans.length && performance.now() < deadline) {
          const p = plans[next++]!;
          let o: Outcome;
          try {
            o = await send(gw.url, p);
          } catch (e) {
            note(p, `no answer: ${(e as Error).message}${(e as Error).cause ? ` (${(e as { cause: Error }).cause.message})` : ''}`);
            continue;
          }
          done++;
          if (o.aborted) abortedStreams++;
          kinds.set(p.what.split(' ')[0]!, (kinds.get(p.what.split(' ')[0]!) ?? 0) + 1);
          slowest = Math.max(slowest, o.ms);
          statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1);
          if (o.status >= 500) note(p, `${o.status} ${o.text.slice(0, 200)}`);
          if (o.status >= 400 && p.method !== 'HEAD') {
            // The shape follows the route the URL names once dot segments are resolved (as the gateway does).
            const why = errorShapeProblem(apiKindOfPath(new URL(p.path, 'http://h').pathname), o.text);
            if (why) note(p, `${o.status} ${why}`);
          }
          if (o.status === 200 && !o.aborted && o.text.startsWith('data:')) {
            for (const ev of o.text.split(/\n\n/).filter((b) => b.startsWith('data:'))) {
              const d = ev.slice(5).trim();
              if (d !== '[DONE]') {
                try {
                  JSON.parse(d);
                } catch {
                  note(p, `SSE event not JSON: ${d.slice(0, 120)}`);
                }
              }
            }
          }
          const carried = (typeof p.body === 'string' && p.body.includes(SECRET)) || decodeURIComponent(p.path.replace(/%(?![0-9a-f]{2})/gi, '%25')).includes(SECRET);
          if (p.tenant !== 'acme' && !carried && o.text.includes(SECRET)) note(p, `${o.status} leaks acme's adapter name: ${o.text.slice(0, 200)}`);
        }
      }),
    );
    fuzzing = false;
    await poller;

    // Settle: every aborted stream must give its KV blocks back.
    let blocks = -1;
    for (let i = 0; i < 50; i++) {
      blocks = (await be.rt.metrics.kvBlocksUsed.get()).values[0]?.value ?? 0;
      if (blocks === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const heap1 = heapAfterGc();
    const summary = `${done} answered in ${WALL_MS / 1000} s max, slowest ${slowest.toFixed(0)} ms, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${healthProbes} health probes, heap ${(heap0 / 1e6).toFixed(0)} -> ${(heap1 / 1e6).toFixed(0)} MB, ${abortedStreams} streams aborted`;
    console.log(summary);

    assert.deepEqual(problems, [], summary);
    assert.deepEqual(healthBad, [], summary);
    assert.ok(done >= Math.min(REQUESTS, 400), `only ${done} requests answered: ${summary}`);
    assert.ok(healthProbes >= 5, summary);
    // The mix really was exercised: streams cut mid-way, and every kind of request answered.
    assert.ok(abortedStreams >= 10, `${abortedStreams} streams aborted mid-way: ${summary}`);
    for (const k of ['mutated', 'stream', 'odd', 'content-type', 'malformed', 'nested', 'oversized', 'list', 'register', 'upload', 'delete']) {
      assert.ok((kinds.get(k) ?? 0) >= Math.floor(done / 500), `only ${kinds.get(k) ?? 0} '${k}' requests answered: ${JSON.stringify(Object.fromEntries(kinds))}`);
    }
    assert.equal(blocks, 0, `KV blocks still held after the fuzz: ${summary}`);
    assert.ok(heap1 - heap0 < 150e6, `heap grew by ${((heap1 - heap0) / 1e6).toFixed(0)} MB: ${summary}`);
    // Tenant B's own listing never names A's adapter.
    const list = await fetch(`${gw.url}/v1/adapters`, { headers: { authorization: `Bearer ${keys.bob}` } });
    assert.doesNotMatch(await list.text(), new RegExp(SECRET));
    // And both tenants' adapters still serve.
    for (const [who, name] of [['acme', SECRET], ['bob', BOB_OWN]] as const) {
      const r = await fetch(`${gw.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${keys[who]}` }, body: JSON.stringify({ inputs: 'Hi', parameters: { max_new_tokens: 2, adapter_id: name } }) });
      assert.equal(r.status, 200, await r.text());
    }
  });

  it("long lists inside a body under the size limit are refused fast, without holding the gateway's /health", { timeout: 60_000 }, async () => {
    const H = { 'content-type': 'application/json', authorization: `Bearer ${keys.bob}` };
    const lists: [string, string, unknown][] = [
      // 50,000 merged ids: each was resolved against the store at once (7 s of /health held, 8.6 s to a 404).
      ['/generate', 'merged_adapters', { inputs: 'Hi', parameters: { max_new_tokens: 2, merged_adapters: { ids: Array.from({ length: 50_000 }, (_, i) => `a${i}`) } } }],
      ['/generate', 'stop sequences', { inputs: 'Hi', parameters: { max_new_tokens: 2, stop: Array.from({ length: 100_000 }, (_, i) => `s${i}`) } }],
      ['/v1/chat/completions', 'logit_bias', { model: 'llama', max_tokens: 2, messages: [{ role: 'user', content: 'x' }], logit_bias: Object.fromEntries(Array.from({ length: 60_000 }, (_, i) => [String(i), 1])) }],
    ];
    for (const [path, what, body] of lists) {
      let done = false;
      const health: number[] = [];
      const answer = (async () => {
        try {
          const t0 = performance.now();
          const r = await fetch(gw.url + path, { method: 'POST', headers: H, body: JSON.stringify(body), signal: AbortSignal.timeout(ANSWER_BOUND_MS) });
          return { status: r.status, text: await r.text(), ms: performance.now() - t0 };
        } finally {
          done = true;
        }
      })();
      while (!done) {
        const t0 = performance.now();
        await (await fetch(`${gw.url}/health`, { signal: AbortSignal.timeout(ANSWER_BOUND_MS) })).arrayBuffer();
        health.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 10));
      }
      const a = await answer;
      assert.ok(a.status >= 400 && a.status < 500, `${what}: ${a.status} ${a.text.slice(0, 200)}`);
      assert.equal(errorShapeProblem(apiKindOfPath(path), a.text), null, a.text.slice(0, 200));
      // Generous for a loaded 2-core machine; the bug held both for 7-9 s.
      assert.ok(a.ms < 2500, `${what}: answered in ${a.ms.toFixed(0)} ms`);
      assert.ok(Math.max(...health) < 1500, `${what}: /health waited ${Math.max(...health).toFixed(0)} ms`);
    }
  });

  it('sampling values past f32 / i32 are validation errors, not engine failures (were 424)', async () => {
    const H = { 'content-type': 'application/json', authorization: `Bearer ${keys.bob}` };
    const cases: [string, unknown, number][] = [
      ['/generate', { inputs: 'Hi', parameters: { max_new_tokens: 2, do_sample: true, top_k: 2 ** 31 } }, 422],
      ['/generate', { inputs: 'Hi', parameters: { max_new_tokens: 2, repetition_penalty: 1e308 } }, 422],
      ['/generate', { inputs: 'Hi', parameters: { max_new_tokens: 2, do_sample: true, temperature: 1e300 } }, 422],
      ['/v1/completions', { model: 'llama', prompt: 'Hi', max_tokens: 2, top_k: 2 ** 31 }, 400],
      ['/v1/completions', { model: 'llama', prompt: 'Hi', max_tokens: 2, repetition_penalty: 1e308 }, 400],
    ];
    for (const [path, body, status] of cases) {
      const r = await fetch(gw.url + path, { method: 'POST', headers: H, body: JSON.stringify(body) });
      const text = await r.text();
      assert.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${text}`);
      assert.equal(errorShapeProblem(apiKindOfPath(path), text), null, text);
    }
    // The largest representable values still pass validation.
    const ok = await fetch(gw.url + '/generate', { method: 'POST', headers: H, body: JSON.stringify({ inputs: 'Hi', parameters: { max_new_tokens: 2, do_sample: true, top_k: 2 ** 31 - 1 } }) });
    assert.equal(ok.status, 200, await ok.text());
  });
});
