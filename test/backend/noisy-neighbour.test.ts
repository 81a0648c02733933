// Noisy neighbour on every endpoint (issues 14 and 15): while one client sends pathological
// requests, another client's small requests on each endpoint (/health, /generate,
// /generate_stream, /v1/completions, /v1/chat/completions, /tokenize) keep their latency. stall.test.ts
// covers /health beside 4 MB prompts; this covers every endpoint beside each kind of abuse a
// tenant can send: 1 MB prompts on every route, the longest generations the model allows with
// ignore_eos, large JSON schemas, backtracking-prone patterns in response_format, and swarms of
// streams aborted after their first event. The backend runs as its own process, as deployed, with
// one engine thread. Each scenario measures its own quiet baseline just before its noisy phase, and
// the bound is generous (p95 under max(4x the quiet p95, quiet p95 + 500 ms)): on a 2-core machine
// shared with other jobs, plain CPU contention from the abusive client adds up to ~400 ms at p95,
// while the stalls this guards against (a large prompt encoded on the event loop, a regex
// backtracking on it) held every request for 4-43 s. The abusive requests themselves must answer 2xx or a 4xx in
// the API's shape, and no KV block may stay held once they stop.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, spawnServer, stopServer } from '../helpers/spawn-server.ts';
import { apiKindOfPath, errorShapeProblem, quantile } from '../helpers/api-shape.ts';

const MODEL = join(ROOT, 'test', 'fixtures', 'models', 'llama');
const QUIET_MS = 2500;
const NOISY_MS = 4500;
const smallAgent = new Agent({ keepAlive: true, maxSockets: 8 });
const noisyAgent = new Agent({ keepAlive: true, maxSockets: 64 });

interface Answer {
  status: number;
  text: string;
  ms: number;
}

/** A POST (or GET without a body); `abortAfterBytes` cuts the answer once that much arrived. */
function call(url: string, path: string, body: Buffer | null, agent: Agent, abortAfterBytes?: number): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: body ? 'POST' : 'GET', agent, headers: body ? { 'content-type': 'application/json', 'content-length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      res.on('data', (d: Buffer) => {
        chunks.push(d);
        got += d.length;
        if (abortAfterBytes !== undefined && got >= abortAfterBytes) {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), ms: performance.now() - t0 });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), ms: performance.now() - t0 }));
      res.on('error', () => {});
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

/** The small requests, one of each endpoint per round. */
const SMALL: { name: string; path: string; body: Buffer | null }[] = [
  { name: 'GET /health', path: '/health', body: null },
  { name: '/generate', path: '/generate', body: json({ inputs: 'The quick brown fox', parameters: { max_new_tokens: 4 } }) },
  { name: '/generate_stream', path: '/generate_stream', body: json({ inputs: 'The quick brown fox', parameters: { max_new_tokens: 4 } }) },
  { name: '/v1/completions', path: '/v1/completions', body: json({ model: 'llama', prompt: 'The quick brown fox', max_tokens: 4 }) },
  { name: '/v1/chat/completions', path: '/v1/chat/completions', body: json({ model: 'llama', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 4 }) },
  { name: '/tokenize', path: '/tokenize', body: json({ inputs: 'The quick brown fox' }) },
];

/** Small requests for `ms`, two loops, cycling through every endpoint; latencies by endpoint. */
async function smallClient(url: string, ms: number): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>(SMALL.map((s) => [s.name, []]));
  const end = performance.now() + ms;
  await Promise.all(
    [0, 3].map(async (offset) => {
      for (let i = offset; performance.now() < end; i++) {
        const s = SMALL[i % SMALL.length]!;
        const a = await call(url, s.path, s.body, smallAgent);
        assert.equal(a.status, 200, `${s.name}: ${a.status} ${a.text.slice(0, 200)}`);
        out.get(s.name)!.push(a.ms);
      }
    }),
  );
  return out;
}

/** One abusive request; its answer must be a success or a 4xx in the API's shape. */
type Abuse = (url: string) => Promise<{ path: string; a: Answer; cut?: boolean }>;

const words = 'the quick brown fox jumps over the lazy dog and runs far away ';
const text = (bytes: number) => words.repeat(Math.ceil(bytes / words.length)).slice(0, bytes);

describe('noisy neighbour: every endpoint keeps its latency beside abusive requests', () => {
  let child: ChildProcess;
  let url: string;
  let maxTotal = 512;

  before(async () => {
    ({ proc: child, url } = await spawnServer(['serve', '--model-id', MODEL, '--port', '0', '--threads', '1']));
    const info = JSON.parse((await call(url, '/info', null, smallAgent)).text) as { max_total_tokens?: number };
    maxTotal = info.max_total_tokens ?? maxTotal;
    // Warm every path (worker threads, schema compiler) so start-up is not measured.
    await smallClient(url, 600);
    await call(url, '/generate', json({ inputs: text(100_000), parameters: { max_new_tokens: 1, truncate: 8 } }), smallAgent);
    await call(url, '/generate', json({ inputs: 'x', parameters: { max_new_tokens: 2, response_format: { type: 'json_object', schema: { type: 'object', properties: { a: { type: 'string', pattern: '^a+$' } } } } } }), smallAgent);
  });
  after(() => stopServer(child));

  async function kvBlocksUsed(): Promise<number> {
    const m = /^lorax_kv_blocks_used\s+(\d+)/m.exec((await call(url, '/metrics', null, smallAgent)).text);
    return m ? Number(m[1]) : -1;
  }

  /** Runs `loops` abusive clients beside the small one; returns the most KV blocks seen in use meanwhile. */
  async function scenario(name: string, loops: number, abuse: Abuse, minAbuses: number): Promise<number> {
    const quiet = await smallClient(url, QUIET_MS);
    let stop = false;
    const answers: { path: string; a: Answer; cut?: boolean }[] = [];
    const noise = Promise.all(
      Array.from({ length: loops }, async () => {
        while (!stop) answers.push(await abuse(url));
      }),
    );
    await new Promise((r) => setTimeout(r, 150)); // the noise is under way before measuring
    let peakBlocks = 0;
    const sampler = (async () => {
      while (!stop) {
        peakBlocks = Math.max(peakBlocks, await kvBlocksUsed());
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const noisy = await smallClient(url, NOISY_MS);
    stop = true;
    await noise;
    await sampler;

    const lines: string[] = [];
    const failures: string[] = [];
    for (const s of SMALL) {
      const q = quiet.get(s.name)!;
      const n = noisy.get(s.name)!;
      const qp = quantile(q, 0.95);
      const np = quantile(n, 0.95);
      const bound = Math.max(4 * qp, qp + 500);
      lines.push(`${s.name}: quiet p95 ${qp.toFixed(0)} ms (${q.length}), noisy p95 ${np.toFixed(0)} ms (${n.length}), max ${Math.max(...n).toFixed(0)}, bound ${bound.toFixed(0)}`);
      if (n.length < 3) failures.push(`${s.name}: only ${n.length} answers in ${NOISY_MS} ms`);
      if (!(np < bound)) failures.push(`${s.name}: p95 ${np.toFixed(0)} ms >= ${bound.toFixed(0)} ms`);
    }
    const statuses = new Map<number, number>();
    for (const { path, a, cut } of answers) {
      statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      if (a.status >= 500) failures.push(`abuse on ${path} got ${a.status}: ${a.text.slice(0, 200)}`);
      else if (a.status >= 400) {
        const why = errorShapeProblem(apiKindOfPath(path), a.text);
        if (why) failures.push(`abuse on ${path}: ${why}`);
      } else if (a.status !== 200 || (!cut && a.text.length === 0)) failures.push(`abuse on ${path}: ${a.status} with ${a.text.length} bytes`);
    }
    const summary = `${name}: ${answers.length} abusive requests ${JSON.stringify(Object.fromEntries(statuses))}, peak ${peakBlocks} KV blocks in use\n  ${lines.join('\n  ')}`;
    console.log(summary);
    assert.ok(answers.length >= minAbuses, `the abuse did not run: ${summary}`);
    assert.deepEqual(failures.slice(0, 10), [], summary);
    // Nothing the abuse started holds KV blocks once it stops (aborted streams included).
    let used = -1;
    for (let i = 0; i < 50 && used !== 0; i++) {
      used = await kvBlocksUsed();
      if (used !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(used, 0, `KV blocks still held after ${name}`);
    return peakBlocks;
  }

  it('1 MB prompts on every route (refused at the token bound, or truncated)', async () => {
    const big = text(1_000_000);
    const bodies = [
      { path: '/generate', body: json({ inputs: big, parameters: { max_new_tokens: 4 } }) },
      { path: '/v1/chat/completions', body: json({ model: 'llama', messages: [{ role: 'system', content: big.slice(0, 500_000) }, { role: 'user', content: big.slice(500_000) }], max_tokens: 4 }) },
      { path: '/v1/completions', body: json({ model: 'llama', prompt: big, max_tokens: 4 }) },
      { path: '/tokenize', body: json({ inputs: big }) },
      { path: '/generate_stream', body: json({ inputs: big, parameters: { max_new_tokens: 2, truncate: 16 } }) },
    ];
    let i = 0;
    await scenario('1 MB prompts', 1, async (u) => {
      const b = bodies[i++ % bodies.length]!;
      return { path: b.path, a: await call(u, b.path, b.body, noisyAgent) };
    }, 3);
  });

  it('the longest generations the model allows, with ignore_eos, and absurd max_new_tokens', async () => {
    let i = 0;
    await scenario('long generations', 4, async (u) => {
      const absurd = i++ % 4 === 3;
      const body = absurd
        ? json({ inputs: 'Go on', parameters: { max_new_tokens: 2_000_000_000, ignore_eos: true } })
        : json({ inputs: 'Go on', parameters: { max_new_tokens: maxTotal - 16, ignore_eos: true } });
      return { path: '/generate', a: await call(u, '/generate', body, noisyAgent) };
    }, 4);
  });

  it('large JSON schemas and backtracking-prone patterns in response_format', async () => {
    const props: Record<string, unknown> = {};
    for (let k = 0; k < 200; k++) props[`field_${k}`] = k % 3 === 0 ? { type: 'integer' } : k % 3 === 1 ? { type: 'string', maxLength: 12 } : { enum: Array.from({ length: 20 }, (_, j) => `v${k}_${j}`) };
    const bigSchema = { type: 'object', properties: props, required: Object.keys(props).slice(0, 50) };
    const patterns = ['^(a+)+$', '^(a|aa)*c$', '^(.*a){25}$', '^((a*)*)*b$', '^(\\w+\\s?)*$', '^([a-z]+)*[0-9]{1,500}$', 'a{1000}{1000}'];
    let i = 0;
    await scenario('schemas and patterns', 2, async (u) => {
      const k = i++;
      if (k % 3 === 0) {
        return { path: '/generate', a: await call(u, '/generate', json({ inputs: 'JSON:', parameters: { max_new_tokens: 8, response_format: { type: 'json_object', schema: bigSchema } } }), noisyAgent) };
      }
      const schema = { type: 'object', properties: { s: { type: 'string', pattern: patterns[k % patterns.length] } }, required: ['s'] };
      if (k % 3 === 1) {
        return { path: '/generate', a: await call(u, '/generate', json({ inputs: 'JSON:', parameters: { max_new_tokens: 8, response_format: { type: 'json_object', schema } } }), noisyAgent) };
      }
      const body = json({ model: 'llama', messages: [{ role: 'user', content: 'JSON please' }], max_tokens: 8, response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } });
      return { path: '/v1/chat/completions', a: await call(u, '/v1/chat/completions', body, noisyAgent) };
    }, 4);
  });

  it('swarms of long streams aborted after their first event', async () => {
    let i = 0;
    const loops = 4;
    const peak = await scenario('aborted streams', loops, async (u) => {
      const chat = i++ % 2 === 0;
      const path = chat ? '/v1/chat/completions' : '/generate_stream';
      const body = chat
        ? json({ model: 'llama', messages: [{ role: 'user', content: 'Tell me' }], max_tokens: maxTotal - 32, stream: true })
        : json({ inputs: 'Tell me', parameters: { max_new_tokens: maxTotal - 16, ignore_eos: true } });
      return { path, a: await call(u, path, body, noisyAgent, 1), cut: true };
    }, 48);
    // A stream whose client left is cancelled at once: in use at any moment are about one block per
    // live stream (and the small client's), not the hundreds that abandoned 500-token generations would fill.
    assert.ok(peak <= loops * 4 + 8, `${peak} KV blocks in use at once beside ${loops} aborting clients`);
  });
});
