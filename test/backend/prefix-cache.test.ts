// Prefix caching through real HTTP on the CPU engine with the fixture model: the same tokens and
// logprobs with and without the cache (a repeated request, a shared system prompt with different
// questions, prompt logprobs), no sharing across adapters or tenants (the hit counters say so),
// and correct outputs while cached blocks are reclaimed under a small KV cache.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { ADAPTERS_WRITE_SCOPE, SERVICE_AUDIENCE, SERVICE_ISSUER } from '../../protocol/index.ts';
import { parseServeConfig } from '../../backend/config.ts';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const adapterDir = (name: string) => join(FIXTURES, 'adapters', 'llama', name);
const SECRET = 'prefix-cache-test-service-key-0123456789';

const SYSTEM =
  'You are a careful assistant for a small bakery. Answer in one short sentence, mention prices in euros, ' +
  'never invent opening hours, and keep a friendly tone. The bakery sells bread, croissants and cakes.';
const QUESTIONS = ['What does a croissant cost?', 'Do you sell rye bread?', 'Can I order a birthday cake for Sunday?', 'Are you open on Mondays?'];
// Small blocks: the fixture prompts span many of them, so partial hits and block edges are exercised.
const ARGS = ['--block-size', '4', '--adapter-source', 'local', '--allow-absolute-adapter-paths', '--waiting-served-ratio', '0'];

interface Out {
  ids: number[];
  logprobs: number[];
  top: number[][];
  prefill: (number | null)[];
}

async function gen(url: string, inputs: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<Out> {
  const res = await postJson(`${url}/generate`, { inputs, parameters: { max_new_tokens: 8, details: true, return_k_alternatives: 3, ...params } }, headers);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const d = (JSON.parse(text) as {
    details: { tokens: { id: number; logprob: number; alternative_tokens?: { logprob: number }[] }[]; prefill: { logprob: number | null }[] };
  }).details;
  return {
    ids: d.tokens.map((t) => t.id),
    logprobs: d.tokens.map((t) => t.logprob),
    top: d.tokens.map((t) => (t.alternative_tokens ?? []).map((a) => a.logprob)),
    prefill: d.prefill.map((p) => p.logprob),
  };
}

async function metrics(url: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!/^(switchboard_prefix_cache|lorax_preemptions|lorax_kv_blocks)/.test(line)) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
async function hits(url: string, headers: Record<string, string> = {}): Promise<number> {
  const n = (await metrics(url, headers)).get('switchboard_prefix_cache_hits_total');
  assert.ok(n !== undefined && Number.isFinite(n), 'switchboard_prefix_cache_hits_total in /metrics');
  return n;
}

/** Same tokens, and logprobs equal to float32 rounding (the cached K/V came from another step's batch). */
function assertSame(got: Out, want: Out, what: string): void {
  assert.deepEqual(got.ids, want.ids, `${what}: token ids`);
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));
  got.logprobs.forEach((lp, i) => assert.ok(close(lp, want.logprobs[i]!), `${what}: logprob ${i}: ${lp} vs ${want.logprobs[i]}`));
  got.top.forEach((row, i) => row.forEach((lp, j) => assert.ok(close(lp, want.top[i]![j]!), `${what}: alternative ${i}.${j}`)));
}

describe('prefix caching over HTTP (CPU engine)', () => {
  let cached: TestServer;
  let plain: TestServer;
  before(async () => {
    [cached, plain] = await Promise.all([startBackend(ARGS), startBackend([...ARGS, '--prefix-caching', 'false'])]);
  });
  after(async () => {
    await Promise.all([cached.close(), plain.close()]);
  });

  it('is on by default; --prefix-caching false turns it off', async () => {
    const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseServeConfig(['--model-id', 'm', ...argv], env).prefixCaching;
    assert.deepEqual([parse([]), parse(['--prefix-caching', 'false']), parse(['--prefix-caching=0']), parse([], { PREFIX_CACHING: 'false' }), parse(['--prefix-caching', 'true'], { PREFIX_CACHING: 'false' })], [true, false, false, false, true]);
    assert.throws(() => parse(['--prefix-caching', 'maybe']), /--prefix-caching \(or PREFIX_CACHING\)/);
    assert.equal(cached.rt.scheduler.prefixCaching, true);
    assert.equal(plain.rt.scheduler.prefixCaching, false);
    await gen(plain.url, SYSTEM);
    await gen(plain.url, SYSTEM);
    assert.equal(await hits(plain.url), 0);
    const m = await metrics(plain.url);
    assert.equal(m.get('switchboard_prefix_cache_queries_total'), 0);
  });

  it('a repeated request hits the cache and gets the same tokens and logprobs as without it', async () => {
    const prompt = `${SYSTEM} Question: ${QUESTIONS[0]}`;
    const want = await gen(plain.url, prompt);
    const h0 = await hits(cached.url);
    const first = await gen(cached.url, prompt);
    assert.equal(await hits(cached.url), h0, 'first time: nothing cached');
    const second = await gen(cached.url, prompt);
    const m = await metrics(cached.url);
    assert.ok(m.get('switchboard_prefix_cache_hits_total')! > h0, 'second time: its blocks were cached');
    assertSame(first, want, 'first');
    assertSame(second, want, 'second');
    assert.ok(m.get('switchboard_prefix_cache_blocks{state="idle"}')! > 0);
    assert.equal(cached.rt.scheduler.blocks.used, 0, 'every block released (cached ones are idle, not held)');
  });

  it('a shared system prompt with different questions: each hits the system prompt, answers match the uncached server', async () => {
    await gen(cached.url, `${SYSTEM} Question: warm-up`);
    const before = await metrics(cached.url);
    for (const q of QUESTIONS.slice(1)) {
      const prompt = `${SYSTEM} Question: ${q}`;
      assertSame(await gen(cached.url, prompt), await gen(plain.url, prompt), q);
    }
    const after = await metrics(cached.url);
    const hit = after.get('switchboard_prefix_cache_hits_total')! - before.get('switchboard_prefix_cache_hits_total')!;
    const queried = after.get('switchboard_prefix_cache_queries_total')! - before.get('switchboard_prefix_cache_queries_total')!;
    const systemTokens = (await (await postJson(`${cached.url}/tokenize`, { inputs: SYSTEM })).json()) as unknown[];
    // Each question hits at least the full blocks of the system prompt (the last may straddle the question).
    assert.ok(hit >= 3 * 4 * Math.floor((systemTokens.length - 4) / 4), `${hit} of ${queried} tokens hit`);
    assert.ok(hit / queried > 0.6, `hit rate ${hit / queried}`);
  });

  it('concurrent requests sharing a prefix get the same answers as one at a time', async () => {
    const prompts = QUESTIONS.flatMap((q) => [`${SYSTEM} Question: ${q}`, `${SYSTEM} Q: ${q}`]);
    const want = await Promise.all(prompts.map((p) => gen(plain.url, p)));
    const got = await Promise.all(prompts.map((p) => gen(cached.url, p)));
    got.forEach((g, i) => assertSame(g, want[i]!, prompts[i]!));
    assert.equal(cached.rt.scheduler.blocks.used, 0);
  });

  it('prompt logprobs (decoder_input_details) compute the whole prompt: same values as without the cache, no lookup counted', async () => {
    const prompt = `${SYSTEM} Question: ${QUESTIONS[0]}`;
    await gen(cached.url, prompt);
    const before = await metrics(cached.url);
    const got = await gen(cached.url, prompt, { decoder_input_details: true });
    const want = await gen(plain.url, prompt, { decoder_input_details: true });
    const after = await metrics(cached.url);
    assert.equal(after.get('switchboard_prefix_cache_queries_total'), before.get('switchboard_prefix_cache_queries_total'));
    assertSame(got, want, 'generated');
    assert.equal(got.prefill.length, want.prefill.length);
    assert.equal(got.prefill[0], null);
    got.prefill.slice(1).forEach((lp, i) => assert.ok(Math.abs(lp! - want.prefill[i + 1]!) <= 1e-5, `prefill ${i + 1}`));
  });

  it('never shares blocks across adapters: the same prompt under another adapter misses, then hits its own', async () => {
    const prompt = `Adapters first. ${SYSTEM}`; // a prefix no earlier test cached
    const order = [null, 'r8-qv', 'r16-all', 'merged'] as const;
    const params = (a: (typeof order)[number]) =>
      a === null ? {} : a === 'merged' ? { merged_adapters: { ids: [adapterDir('r8-qv'), adapterDir('r8-qv-b')], weights: [0.5, 0.5], merge_strategy: 'linear' } } : { adapter_id: adapterDir(a) };
    for (const a of order) {
      const h = await hits(cached.url);
      const got = await gen(cached.url, prompt, params(a));
      assert.equal(await hits(cached.url), h, `${a ?? 'base'}: no hit from another adapter's blocks`);
      assertSame(got, await gen(plain.url, prompt, params(a)), `${a ?? 'base'}`);
    }
    for (const a of order) {
      const h = await hits(cached.url);
      assertSame(await gen(cached.url, prompt, params(a)), await gen(plain.url, prompt, params(a)), `${a ?? 'base'} again`);
      assert.ok((await hits(cached.url)) > h, `${a ?? 'base'}: hits its own blocks`);
    }
  });
});

describe('prefix caching between tenants', () => {
  let srv: TestServer;
  let root: string;
  const as = async (tenant: string, scope?: string) => ({
    authorization: `Bearer ${await new SignJWT({ tenant, ...(scope ? { scope } : {}) }).setProtectedHeader({ alg: 'HS256' }).setIssuer(SERVICE_ISSUER).setAudience(SERVICE_AUDIENCE).setIssuedAt().setExpirationTime('60s').sign(new TextEncoder().encode(SECRET))}`,
  });
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'sb-prefix-'));
    await cp(adapterDir('r8-qv'), join(root, 'shared'), { recursive: true });
    srv = await startBackend(['--block-size', '4', '--adapter-source', 'local', '--adapter-root', root, '--service-key', SECRET]);
  });
  after(async () => {
    await srv.close();
    await rm(root, { recursive: true, force: true });
  });

  for (const adapter of [null, 'shared']) {
    it(`identical prompts of two tenants never share blocks (${adapter ?? 'base model'}); each tenant hits its own`, async () => {
      const prompt = `${SYSTEM} Tenant question about ${adapter ?? 'base'}.`;
      const params = adapter ? { adapter_id: adapter } : {};
      const h0 = await hits(srv.url, await as('ops'));
      const a1 = await gen(srv.url, prompt, params, await as('acme'));
      const b1 = await gen(srv.url, prompt, params, await as('globex'));
      assert.equal(await hits(srv.url, await as('ops')), h0, 'globex found nothing of acme in the cache');
      const b2 = await gen(srv.url, prompt, params, await as('globex'));
      const h1 = await hits(srv.url, await as('ops'));
      assert.ok(h1 > h0, 'globex hits its own blocks');
      const a2 = await gen(srv.url, prompt, params, await as('acme'));
      assert.ok((await hits(srv.url, await as('ops'))) > h1, 'acme hits its own blocks');
      for (const o of [b1, a2, b2]) assertSame(o, a1, 'same answer for everyone');
    });
  }

  it('a re-uploaded adapter never hits the blocks of its old weights', async () => {
    const prompt = `${SYSTEM} Re-upload check.`;
    const upload = async (from: string) => {
      for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
        const res = await fetch(`${srv.url}/adapters/tenants/acme/mine/${f}`, { method: 'PUT', headers: await as('acme', ADAPTERS_WRITE_SCOPE), body: await readFile(join(adapterDir(from), f)) });
        assert.equal(res.status, 200, await res.text());
      }
    };
    const params = { adapter_id: 'tenants/acme/mine' };
    await upload('r8-qv');
    const old = await gen(srv.url, prompt, params, await as('acme'));
    assertSame(await gen(srv.url, prompt, params, await as('acme')), old, 'same weights, cached');
    await upload('r16-all');
    const h = await hits(srv.url, await as('ops'));
    const fresh = await gen(srv.url, prompt, params, await as('acme'));
    assert.equal(await hits(srv.url, await as('ops')), h, 'new weights: nothing cached yet');
    assert.notDeepEqual(fresh.logprobs, old.logprobs, 'the new adapter answers differently');
    // What r16-all gives on a server that never saw the old upload.
    const other = await startBackend(['--block-size', '4', '--adapter-source', 'local', '--allow-absolute-adapter-paths', '--prefix-caching', 'false']);
    try {
      assertSame(fresh, await gen(other.url, prompt, { adapter_id: adapterDir('r16-all') }), 'fresh');
    } finally {
      await other.close();
    }
  });
});

describe('prefix caching under memory pressure', () => {
  let tiny: TestServer;
  let plain: TestServer;
  before(async () => {
    // 72 blocks of 4 tokens; a request (about 130 prompt tokens + 10) needs 35: two run at once
    // (more when they share their system prompt), decode growth preempts, and cached blocks are
    // reclaimed all the time.
    const small = ['--max-batch-total-tokens', '288', '--max-total-tokens', '160', '--max-input-length', '150'];
    [tiny, plain] = await Promise.all([startBackend([...ARGS, ...small]), startBackend([...ARGS, ...small, '--prefix-caching', 'false'])]);
  });
  after(async () => {
    await Promise.all([tiny.close(), plain.close()]);
  });

  it('reclaims idle cached blocks (LRU) and preempts when it must, and every answer stays right', async () => {
    const prompts = [...QUESTIONS, 'What is in the cake?', 'Is the bread organic?'].flatMap((q, i) => [`${SYSTEM} Question: ${q}`, `Customer ${i}: ${q} ${SYSTEM}`]);
    const want: Out[] = [];
    for (const p of prompts) want.push(await gen(plain.url, p, { max_new_tokens: 10 }));
    for (let round = 0; round < 2; round++) {
      const got = await Promise.all(prompts.map((p) => gen(tiny.url, p, { max_new_tokens: 10 })));
      got.forEach((g, i) => assertSame(g, want[i]!, `round ${round}: ${prompts[i]}`));
    }
    const m = await metrics(tiny.url);
    assert.ok(m.get('switchboard_prefix_cache_evictions_total')! > 0, 'cached blocks were reclaimed');
    assert.ok(m.get('switchboard_prefix_cache_hits_total')! > 0, 'and some were hit before that');
    assert.ok(m.get('lorax_preemptions_total')! > 0, 'and sequences were preempted (recomputed, mostly from the cache)');
    // Read at the scrape, so they show the idle server: nothing held, what is cached is idle.
    assert.equal(m.get('lorax_kv_blocks_used'), 0);
    assert.equal(m.get('switchboard_prefix_cache_blocks{state="in_use"}'), 0);
    assert.ok(m.get('switchboard_prefix_cache_blocks{state="idle"}')! > 0);
    assert.equal(tiny.rt.scheduler.blocks.used, 0);
  });
});
