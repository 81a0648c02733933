// No request can hold the event loop (issue 15): while 4 MB prompts arrive (refused at the token
// bound) and while a 1 MB prompt with `truncate` is encoded in full (on the tokenizer pool), a
// concurrent /health keeps answering promptly. The backend runs as its own process, as deployed,
// so the client's work here never counts against it. The bound is generous, and scaled by the
// machine's own latency without the large prompts (shared CI machines can be very busy): before
// the pool and the off-loop body parser, the same /health calls waited for seconds.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, spawnServer, stopServer } from '../helpers/spawn-server.ts';

const MODEL = join(ROOT, 'test', 'fixtures', 'models', 'llama');
const agent = new Agent({ keepAlive: true });

function post(url: string, body: Buffer): Promise<{ status: number; text: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Probes GET /health back to back until `until` settles; returns each probe's latency. */
async function probeWhile(url: string, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => (done = true));
  const ms: number[] = [];
  while (!done) {
    const t0 = performance.now();
    const res = await fetch(`${url}/health`);
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    ms.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 10));
  }
  return ms;
}

const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(0.99 * xs.length))]!;
/** 300 ms, or three times what /health takes on this machine right now without large prompts (before: 5-43 s). */
let bound = 300;
const words = 'the quick brown fox jumps over the lazy dog and runs far away ';
const prompt = (bytes: number) => words.repeat(Math.ceil(bytes / words.length)).slice(0, bytes);

describe('large prompts do not stall other requests', () => {
  let child: ChildProcess;
  let url: string;
  before(async () => {
    ({ proc: child, url } = await spawnServer(['serve', '--model-id', MODEL, '--port', '0', '--threads', '1']));
    // Warm the worker threads (tokenizer, JSON body parser) so their start-up is not measured.
    await post(`${url}/generate`, Buffer.from(JSON.stringify({ inputs: prompt(100_000), parameters: { max_new_tokens: 1, truncate: 8 } })));
    const quiet = await probeWhile(url, new Promise((r) => setTimeout(r, 2000)));
    bound = Math.max(300, 3 * p99(quiet));
  });
  after(() => stopServer(child));

  it('a 4 MB prompt (LoRAX, then chat) is refused at the token bound without holding /health', async () => {
    const body = Buffer.from(JSON.stringify({ inputs: prompt(4_000_000), parameters: { max_new_tokens: 4 } }));
    const chat = Buffer.from(JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: prompt(4_000_000) }], max_tokens: 4 }));
    const burst = (async () => {
      const out = [];
      out.push(await post(`${url}/generate`, body));
      await new Promise((r) => setTimeout(r, 300));
      out.push(await post(`${url}/v1/chat/completions`, chat));
      await new Promise((r) => setTimeout(r, 300));
      return out;
    })();
    const health = await probeWhile(url, burst);
    for (const [i, r] of (await burst).entries()) {
      assert.equal(r.status, i % 2 === 0 ? 422 : 400, r.text.slice(0, 300)); // LoRAX's status, then OpenAI's
      assert.match(r.text, /must have less than 511 tokens\. Given: at least \d+/);
    }
    assert.ok(health.length >= 5, `${health.length} probes`);
    assert.ok(p99(health) < bound, `/health p99 ${p99(health).toFixed(0)} ms (bound ${bound.toFixed(0)}) over ${health.length} probes beside 4 MB prompts`);
  });

  it('a 1 MB prompt with truncate is encoded in full off the event loop', async () => {
    // Digits only: nowhere to cut (no space, no punctuation after a letter), so truncation cannot start from the
    // prompt's end (encode-tail.ts) and the whole is encoded.
    const big = post(`${url}/generate`, Buffer.from(JSON.stringify({ inputs: '0123456789'.repeat(100_000), parameters: { max_new_tokens: 2, truncate: 32, details: true } })));
    const health = await probeWhile(url, big);
    const r = await big;
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.equal((JSON.parse(r.text) as { details: { prompt_tokens: number } }).details.prompt_tokens, 32);
    assert.ok(health.length >= 5, `${health.length} probes while the prompt took ${r.ms.toFixed(0)} ms`);
    assert.ok(p99(health) < bound, `/health p99 ${p99(health).toFixed(0)} ms (bound ${bound.toFixed(0)}) over ${health.length} probes while a 1 MB prompt took ${r.ms.toFixed(0)} ms`);
  });
});
