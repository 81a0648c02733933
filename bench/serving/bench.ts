// Serving benchmark (not a test): serving speed as users see it, through the real HTTP server.
// Writes a random-weight checkpoint of a given shape and N rank-16 adapters on all projections
// (checkpoint.ts), starts `switchboard serve` as its own process (and `switchboard gateway` in
// front with --gateway), and drives /generate_stream (SSE) with:
//   - closed loops of --clients clients: no adapter, N adapters drawn uniformly, N drawn Zipf(--zipf);
//   - Poisson arrivals at several rates (--rates: fractions of the uniform closed loop's request rate);
//   - adapter loading under load: the uniform closed loop in three windows (before, while a side
//     client requests --load-adapters adapters never loaded before, after).
// Prompt words and output tokens are drawn per request (uniform in --prompt-words / --new-tokens;
// ignore_eos_token, so each output has its drawn length). Per phase: output tokens/s, time to
// first token and inter-token latency p50/p99 (client-side, from SSE arrival times), beside the
// engine's own step times for the same batches (lorax_batch_inference_duration and
// lorax_tokens_generated_total from the server's /metrics, deltas over the phase). Then the issue's
// serving targets as ratios. Writes results.md, results.json and plot.svg (plot.png too where
// rsvg-convert exists) to --out (default: this directory).
//
//   node --import tsx bench/serving/bench.ts --shape small --adapters 8 --clients 8 --threads 2
//   node --import tsx bench/serving/bench.ts --shape mistral-7b --adapters 32 --clients 64   (GPU machine)
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ServiceTokenSigner } from '../../gateway/service-token.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { spawnServer, type ServerProcess } from '../../test/helpers/spawn-server.ts';
import { SHAPES, writeAdapter, writeCheckpoint, type Dtype } from './checkpoint.ts';
import { svgPlot } from './plot.ts';
import { quantile } from '../../test/helpers/quantile.ts';

const HERE = import.meta.dirname;
const ROOT = join(HERE, '..', '..');
const SERVICE_KEY = 'bench-service-key-0123456789abcdef-0123456789';
const ADMIN_TOKEN = 'bench-admin-token';

/** A bad command line: one line on stderr, exit 2. */
function fail(msg: string): never {
  process.stderr.write(`serving bench: ${msg}\n`);
  process.exit(2);
}

const OPTIONS = {
  shape: { type: 'string', default: 'small' },
  dtype: { type: 'string' },
  adapters: { type: 'string', default: '8' },
  rank: { type: 'string', default: '16' },
  clients: { type: 'string', default: '8' },
  requests: { type: 'string' },
  rates: { type: 'string', default: '0.4,0.7,0.9' },
  'poisson-requests': { type: 'string' },
  zipf: { type: 'string', default: '1.0' },
  'prompt-words': { type: 'string', default: '150,250' },
  'new-tokens': { type: 'string', default: '96,160' },
  'load-adapters': { type: 'string' },
  'system-words': { type: 'string', default: '400' },
  'phase-seconds': { type: 'string', default: '10' },
  threads: { type: 'string' },
  device: { type: 'string', default: 'auto' },
  gateway: { type: 'boolean', default: false },
  'work-dir': { type: 'string' },
  out: { type: 'string', default: HERE },
  seed: { type: 'string', default: '1' },
  note: { type: 'string', default: '' },
} as const;
let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>;
try {
  parsed = parseArgs({ options: OPTIONS });
} catch (err) {
  fail((err as Error).message);
}
const a = parsed.values;

function num(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number >= ${min} (got ${v})`);
  return n;
}
function range(name: string, v: string): [number, number] {
  const [lo, hi] = v.split(',').map((x) => num(name, x, 1));
  if (lo === undefined || hi === undefined || hi < lo) fail(`--${name} takes min,max (got ${v})`);
  return [lo, hi];
}

if (!SHAPES[a.shape!]) fail(`unknown --shape ${a.shape} (one of ${Object.keys(SHAPES).join(', ')})`);
const N = num('adapters', a.adapters, 1);
const RANK = num('rank', a.rank, 1);
const C = num('clients', a.clients, 1);
const R = a.requests ? num('requests', a.requests, 1) : 4 * C;
const RATES = a.rates!.split(',').map((x) => num('rates', x, 0.01));
const PR = a['poisson-requests'] ? num('poisson-requests', a['poisson-requests'], 1) : R;
const ZIPF = num('zipf', a.zipf, 0);
const PROMPT_WORDS = range('prompt-words', a['prompt-words']!);
const NEW_TOKENS = range('new-tokens', a['new-tokens']!);
const LOAD_N = a['load-adapters'] ? num('load-adapters', a['load-adapters'], 1) : Math.max(2, Math.ceil(N / 4));
const WINDOW_S = num('phase-seconds', a['phase-seconds'], 0.1);
const SYSTEM_WORDS = num('system-words', a['system-words'], 0);
const DTYPE: Dtype = (a.dtype ?? (a.shape!.startsWith('mistral') ? 'BF16' : 'F32')) as Dtype;
if (DTYPE !== 'F32' && DTYPE !== 'BF16') fail('--dtype is F32 or BF16');
const SEED = num('seed', a.seed, 0);
const rand = mulberry32(SEED);

const WORDS = (
  'the a of and to in is was for on that with as by at from his her it an which or be are this had not but what all were when we there can ' +
  'bread river market winter engine letter garden silver window morning doctor island castle pencil rocket mirror forest ticket violin harbor'
).split(' ');

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------


async function stop(p: ServerProcess | null): Promise<void> {
  if (!p || p.proc.exitCode !== null) return;
  const exited = new Promise((r) => p.proc.once('exit', r));
  p.proc.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

interface Req {
  adapter: string | null;
  words: number;
  newTokens: number;
  /** Starts with the run's one system prompt (the prefix-caching phase). */
  system?: boolean;
}

interface Rec {
  req: Req;
  /** performance.now() at send, and at each SSE token event's arrival. */
  t0: number;
  times: number[];
  promptTokens: number;
  outTokens: number;
  error: string | null;
}

const randInt = ([lo, hi]: [number, number]) => lo + Math.floor(rand() * (hi - lo + 1));
const prompt = (words: number) => Array.from({ length: words }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ');
// One system prompt for the whole run, the prefix every request of the prefix-caching phase shares
// (drawn from its own generator: the other phases' prompts stay what they were before it existed).
const SYSTEM = (() => {
  const r = mulberry32(SEED + 0x5157);
  return Array.from({ length: SYSTEM_WORDS }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
})();

function zipfPicker(ids: string[], s: number): () => string {
  const w = ids.map((_, k) => 1 / Math.pow(k + 1, s));
  const total = w.reduce((x, y) => x + y, 0);
  return () => {
    let u = rand() * total;
    for (let k = 0; k < ids.length; k++) if ((u -= w[k]!) <= 0) return ids[k]!;
    return ids[ids.length - 1]!;
  };
}

let target = { url: '', key: null as string | null };

async function send(req: Req): Promise<Rec> {
  const rec: Rec = { req, t0: performance.now(), times: [], promptTokens: 0, outTokens: 0, error: null };
  try {
    const res = await fetch(`${target.url}/generate_stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(target.key ? { authorization: `Bearer ${target.key}` } : {}) },
      body: JSON.stringify({
        inputs: (req.system ? `${SYSTEM} ` : '') + prompt(req.words),
        parameters: { max_new_tokens: req.newTokens, ignore_eos_token: true, details: true, ...(req.adapter ? { adapter_id: req.adapter } : {}) },
      }),
    });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const now = performance.now();
      buf += value;
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (!data) continue;
        const msg = JSON.parse(data) as { token?: unknown; error?: string; details?: { generated_tokens: number; prompt_tokens: number } | null };
        if (msg.error) throw new Error(`stream error: ${msg.error}`);
        if (msg.token) rec.times.push(now);
        if (msg.details) {
          rec.outTokens = msg.details.generated_tokens;
          rec.promptTokens = msg.details.prompt_tokens;
        }
      }
    }
    if (rec.outTokens !== req.newTokens) throw new Error(`${rec.outTokens} tokens generated, ${req.newTokens} asked for with ignore_eos_token`);
  } catch (err) {
    rec.error = (err as Error).message;
  }
  return rec;
}

// ---------------------------------------------------------------------------------------------
// Server-side step times
// ---------------------------------------------------------------------------------------------

interface Counters {
  decodeSteps: number;
  decodeSeconds: number;
  prefillSteps: number;
  prefillSeconds: number;
  tokens: number;
  /** Prompt tokens looked up in the prefix cache, and those found there. */
  prefixQueries: number;
  prefixHits: number;
}

let metricsUrl = '';
// Behind the gateway the backend answers /metrics and /info only to gateway-signed tokens: the
// bench signs its own with the shared service key, as the gateway does.
let signer: ServiceTokenSigner | null = null;

async function backendGet(path: string): Promise<Response> {
  const res = await fetch(`${metricsUrl}${path}`, signer ? { headers: { authorization: `Bearer ${await signer.token('bench')}` } } : {});
  if (res.status !== 200) throw new Error(`backend ${path}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
  return res;
}

async function counters(): Promise<Counters> {
  const text = await (await backendGet('/metrics')).text();
  const get = (name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.slice(name.length + 1)) : 0;
  };
  return {
    decodeSteps: get('lorax_batch_inference_duration_count{method="decode"}'),
    decodeSeconds: get('lorax_batch_inference_duration_sum{method="decode"}'),
    prefillSteps: get('lorax_batch_inference_duration_count{method="prefill"}'),
    prefillSeconds: get('lorax_batch_inference_duration_sum{method="prefill"}'),
    tokens: get('lorax_tokens_generated_total'),
    prefixQueries: get('switchboard_prefix_cache_queries_total'),
    prefixHits: get('switchboard_prefix_cache_hits_total'),
  };
}

const minus = (x: Counters, y: Counters): Counters => ({
  decodeSteps: x.decodeSteps - y.decodeSteps, decodeSeconds: x.decodeSeconds - y.decodeSeconds,
  prefillSteps: x.prefillSteps - y.prefillSteps, prefillSeconds: x.prefillSeconds - y.prefillSeconds, tokens: x.tokens - y.tokens,
  prefixQueries: x.prefixQueries - y.prefixQueries, prefixHits: x.prefixHits - y.prefixHits,
});

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

const q = quantile;

export interface PhaseResult {
  phase: string;
  adapters: string;
  load: string;
  requests: number;
  errors: number;
  firstError: string | null;
  wallS: number;
  outTokS: number;
  reqS: number;
  promptTokensMean: number;
  ttftP50: number;
  ttftP99: number;
  itlP50: number;
  itlP99: number;
  latencyP50: number;
  /** Server side, over the phase: mean decode step (ms), steps, mean sequences per decode step. */
  decodeStepMs: number;
  prefillStepMs: number;
  decodeBatch: number;
  /** Tokens over the engine's step time alone: what the same batches give with no serving overhead. */
  engineTokS: number;
  /** Share of the phase's wall time the engine spent in steps. */
  engineBusy: number;
  /** Prompt tokens served from the prefix cache / looked up, over the phase (NaN: none looked up). */
  prefixHitRate: number;
}

function summarise(phase: string, adapters: string, load: string, recs: Rec[], wallS: number, c: Counters, itlWindow?: [number, number]): PhaseResult {
  const ok = recs.filter((r) => !r.error);
  const ttft = ok.map((r) => r.times[0]! - r.t0);
  const itl: number[] = [];
  for (const r of ok) {
    for (let i = 1; i < r.times.length; i++) {
      if (!itlWindow || (r.times[i]! >= itlWindow[0] && r.times[i]! < itlWindow[1])) itl.push(r.times[i]! - r.times[i - 1]!);
    }
  }
  const out = ok.reduce((s, r) => s + r.outTokens, 0);
  const stepS = c.decodeSeconds + c.prefillSeconds;
  return {
    phase, adapters, load,
    requests: recs.length,
    errors: recs.length - ok.length,
    firstError: recs.find((r) => r.error)?.error ?? null,
    wallS,
    outTokS: out / wallS,
    reqS: ok.length / wallS,
    promptTokensMean: ok.reduce((s, r) => s + r.promptTokens, 0) / Math.max(1, ok.length),
    ttftP50: q(ttft, 0.5), ttftP99: q(ttft, 0.99),
    itlP50: q(itl, 0.5), itlP99: q(itl, 0.99),
    latencyP50: q(ok.map((r) => r.times.at(-1)! - r.t0), 0.5),
    decodeStepMs: (1000 * c.decodeSeconds) / Math.max(1, c.decodeSteps),
    prefillStepMs: (1000 * c.prefillSeconds) / Math.max(1, c.prefillSteps),
    // A prefill step emits each finishing prompt's first token; the rest come from decode steps.
    decodeBatch: Math.max(0, c.tokens - c.prefillSteps) / Math.max(1, c.decodeSteps),
    engineTokS: stepS > 0 ? c.tokens / stepS : NaN,
    engineBusy: stepS / wallS,
    prefixHitRate: c.prefixQueries > 0 ? c.prefixHits / c.prefixQueries : NaN,
  };
}

const draw = (adapter: () => string | null): Req => ({ adapter: adapter(), words: randInt(PROMPT_WORDS), newTokens: randInt(NEW_TOKENS) });

async function closedLoop(phase: string, label: string, adapter: () => string | null, count: number, make: (adapter: () => string | null) => Req = draw): Promise<PhaseResult> {
  const c0 = await counters();
  const t0 = performance.now();
  const recs: Rec[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: C }, async () => {
    while (next < count) {
      next++;
      recs.push(await send(make(adapter)));
    }
  }));
  const wallS = (performance.now() - t0) / 1000;
  const r = summarise(phase, label, `closed, ${C} clients`, recs, wallS, minus(await counters(), c0));
  report(r);
  return r;
}

async function poisson(rate: number, label: string, adapter: () => string | null, count: number): Promise<PhaseResult> {
  const c0 = await counters();
  const t0 = performance.now();
  const inflight: Promise<Rec>[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    at += -Math.log(1 - rand()) / rate;
    const wait = t0 + at * 1000 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    inflight.push(send(draw(adapter)));
  }
  const recs = await Promise.all(inflight);
  const wallS = (performance.now() - t0) / 1000;
  const r = summarise('poisson', label, `Poisson ${rate.toFixed(2)} req/s`, recs, wallS, minus(await counters(), c0));
  report(r);
  return r;
}

/**
 * The uniform closed loop for three windows of WINDOW_S: before, during and after a side client
 * requests fresh adapters one after another. Inter-token latency is counted per window over the
 * warm adapters' requests only (the fresh ones' own first tokens wait for their load).
 */
async function loadingUnderLoad(warm: () => string | null, fresh: string[]): Promise<{ windows: PhaseResult[]; loadMs: number[] }> {
  const recs: Rec[] = [];
  const t0 = performance.now();
  const end = t0 + 3 * WINDOW_S * 1000;
  const marks: number[] = [t0];
  const cs: Counters[] = [await counters()];
  const loops = Promise.all(Array.from({ length: C }, async () => {
    while (performance.now() < end) recs.push(await send(draw(warm)));
  }));
  const at = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - performance.now())));
  await at(t0 + WINDOW_S * 1000);
  marks.push(performance.now());
  cs.push(await counters());
  const loadMs: number[] = [];
  const loadEnd = t0 + 2 * WINDOW_S * 1000;
  const freshRecs: Rec[] = [];
  for (const id of fresh) {
    if (performance.now() >= loadEnd) break;
    const r = await send({ adapter: id, words: PROMPT_WORDS[0], newTokens: 1 });
    freshRecs.push(r);
    if (!r.error) loadMs.push(r.times[0]! - r.t0);
  }
  await at(loadEnd);
  marks.push(performance.now());
  cs.push(await counters());
  await at(end);
  marks.push(performance.now());
  cs.push(await counters());
  await loops;
  const names = ['before loading', 'loading new adapters', 'after loading'];
  const windows = names.map((name, i) => {
    // A window's requests: those that started in it; its ITL: token gaps that ended in it.
    const mine = recs.filter((r) => r.t0 >= marks[i]! && r.t0 < marks[i + 1]!);
    const r = summarise('adapter loading', `${N} warm`, name, mine, (marks[i + 1]! - marks[i]!) / 1000, minus(cs[i + 1]!, cs[i]!), [marks[i]!, marks[i + 1]!]);
    // ITL over every warm request's gaps inside the window, including requests that began earlier.
    const gaps: number[] = [];
    for (const x of recs) if (!x.error) for (let k = 1; k < x.times.length; k++) if (x.times[k]! >= marks[i]! && x.times[k]! < marks[i + 1]!) gaps.push(x.times[k]! - x.times[k - 1]!);
    r.itlP50 = q(gaps, 0.5);
    r.itlP99 = q(gaps, 0.99);
    // Throughput likewise from the tokens that arrived inside the window (one SSE event per token).
    r.outTokS = recs.reduce((n, x) => n + (x.error ? 0 : x.times.filter((tt) => tt >= marks[i]! && tt < marks[i + 1]!).length), 0) / r.wallS;
    if (i === 1) {
      r.load += ` (${loadMs.length} loaded, ${freshRecs.filter((x) => x.error).length} failed)`;
      r.errors += freshRecs.filter((x) => x.error).length;
      r.firstError ??= freshRecs.find((x) => x.error)?.error ?? null;
    }
    report(r);
    return r;
  });
  return { windows, loadMs };
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');

function report(r: PhaseResult): void {
  process.stderr.write(`${r.phase} | ${r.adapters} | ${r.load}: ${f1(r.outTokS)} tok/s, TTFT p50 ${f0(r.ttftP50)} p99 ${f0(r.ttftP99)} ms, ITL p50 ${f1(r.itlP50)} p99 ${f1(r.itlP99)} ms, decode step ${f2(r.decodeStepMs)} ms, ${r.errors} errors${r.firstError ? ` (${r.firstError})` : ''}\n`);
}

export const TABLE_HEADER =
  '| phase | adapters | load | requests | errors | output tok/s | req/s | TTFT p50 (ms) | TTFT p99 (ms) | ITL p50 (ms) | ITL p99 (ms) | engine decode step (ms) | engine prefill step (ms) | mean decode batch | engine-only tok/s | engine busy | prefix cache hits |';

function table(rows: PhaseResult[]): string {
  return [
    TABLE_HEADER,
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.phase} | ${r.adapters} | ${r.load} | ${r.requests} | ${r.errors} | ${f1(r.outTokS)} | ${f2(r.reqS)} | ${f0(r.ttftP50)} | ${f0(r.ttftP99)} | ${f1(r.itlP50)} | ${f1(r.itlP99)} | ${f2(r.decodeStepMs)} | ${f2(r.prefillStepMs)} | ${f1(r.decodeBatch)} | ${f1(r.engineTokS)} | ${(100 * r.engineBusy).toFixed(0)}% | ${Number.isFinite(r.prefixHitRate) ? `${(100 * r.prefixHitRate).toFixed(0)}%` : '-'} |`),
  ].join('\n');
}

export interface Target {
  name: string;
  value: number;
  goal: string;
  met: boolean;
  detail: string;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const loadStart = os.loadavg();
  const work = await mkdtemp(join(a['work-dir'] ?? os.tmpdir(), 'sb-serving-'));
  let backend: ServerProcess | null = null;
  let gateway: ServerProcess | null = null;
  try {
    let t = performance.now();
    const ck = await writeCheckpoint(join(work, 'model'), a.shape!, DTYPE, 7);
    const adapters: string[] = [];
    // Ids relative to --adapter-root: the form a gateway forwards as well (absolute paths are an operator-only opt-in).
    for (let i = 0; i < N + LOAD_N; i++) {
      await writeAdapter(join(work, 'adapters', `a${i}`), ck.spec, DTYPE, RANK, 1000 + i);
      adapters.push(`a${i}`);
    }
    const writeS = (performance.now() - t) / 1000;
    process.stderr.write(`checkpoint ${a.shape} ${DTYPE} (${(ck.bytes / 1e9).toFixed(2)} GB) and ${N + LOAD_N} adapters written in ${writeS.toFixed(1)} s\n`);
    const warm = adapters.slice(0, N);
    const fresh = adapters.slice(N);

    t = performance.now();
    backend = await spawnServer(
      ['serve', '--model-id', ck.dir, '--port', '0', '--device', a.device!, '--adapter-source', 'local', '--adapter-root', join(work, 'adapters'),
        '--max-active-adapters', String(N + LOAD_N + 1), '--max-concurrent-requests', String(Math.max(128, 4 * C)),
        ...(a.threads ? ['--threads', a.threads] : [])],
      { SWITCHBOARD_SERVICE_KEY: a.gateway ? SERVICE_KEY : '' },
    );
    metricsUrl = backend.url;
    target = { url: backend.url, key: null };
    if (a.gateway) {
      gateway = await spawnServer(['gateway', '--backend', backend.url, '--port', '0'], { SWITCHBOARD_SERVICE_KEY: SERVICE_KEY, SWITCHBOARD_ADMIN_TOKEN: ADMIN_TOKEN });
      const res = await fetch(`${gateway.url}/admin/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ tenant: 'bench' }) });
      if (res.status >= 300) throw new Error(`gateway key: HTTP ${res.status} ${await res.text()}`);
      target = { url: gateway.url, key: ((await res.json()) as { key: string }).key };
      // The gateway forwards only adapters it knows: each one registered as a shared adapter of the backend's root.
      for (const id of adapters) {
        const reg = await fetch(`${gateway.url}/admin/shared-adapters/${id}`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ source: 'local', adapter_id: id }) });
        if (reg.status >= 300) throw new Error(`gateway shared adapter ${id}: HTTP ${reg.status} ${await reg.text()}`);
      }
    }
    if (a.gateway) signer = await ServiceTokenSigner.create(SERVICE_KEY);
    const info = (await (await backendGet('/info')).json()) as { device_name: string; model_device_type: string };
    const startS = (performance.now() - t) / 1000;
    // The CPU engine's device name already says its thread count ("cpu (2 threads)").
    const device = info.device_name.toLowerCase().includes(info.model_device_type) ? info.device_name : `${info.device_name} (${info.model_device_type})`;
    process.stderr.write(`server up in ${startS.toFixed(1)} s on ${device}${a.gateway ? ', through the gateway' : ''}\n`);

    // Warm-up, not measured: V8 compiles the serving path and the CUDA engine captures its graphs
    // for the batch sizes met (a closed loop of the phases' own lengths, so the first measured
    // phase does not pay for it); then one request per adapter moves each into an engine slot.
    let wi = 0;
    await Promise.all(Array.from({ length: C }, async () => {
      while (wi++ < 2 * C) await send(draw(() => null));
    }));
    const warmRecs = await Promise.all(warm.map((id) => send({ adapter: id, words: PROMPT_WORDS[0], newTokens: 2 })));
    const warmErr = warmRecs.find((r) => r.error);
    if (warmErr) throw new Error(`warm-up request for adapter ${warmErr.req.adapter} failed: ${warmErr.error}`);

    const uniform = () => warm[Math.floor(rand() * warm.length)]!;
    const zipf = zipfPicker(warm, ZIPF);
    const rows: PhaseResult[] = [];
    const base = await closedLoop('closed loop', 'none', () => null, R);
    rows.push(base);
    const uni = await closedLoop('closed loop', `${N} uniform`, uniform, R);
    rows.push(uni);
    rows.push(await closedLoop('closed loop', `${N} Zipf s=${ZIPF}`, zipf, R));
    // Prefix caching (on by default): every prompt starts with the same SYSTEM_WORDS-word system prompt,
    // then prompts of the same lengths without a shared start. Blocks are shared per adapter, so each
    // adapter's first request pays the whole prefill.
    let prefix: { shared: PhaseResult; unique: PhaseResult } | null = null;
    if (SYSTEM_WORDS > 0) {
      const shared = await closedLoop('prefix caching', `${N} uniform, one ${SYSTEM_WORDS}-word system prompt`, uniform, R, (ad) => ({ ...draw(ad), system: true }));
      const unique = await closedLoop('prefix caching', `${N} uniform, unique prompts as long`, uniform, R, (ad) => {
        const r = draw(ad);
        return { ...r, words: r.words + SYSTEM_WORDS };
      });
      rows.push(shared, unique);
      prefix = { shared, unique };
    }
    for (const f of RATES) rows.push(await poisson(f * uni.reqS, `${N} uniform`, uniform, PR));
    const loading = await loadingUnderLoad(uniform, fresh);
    rows.push(...loading.windows);

    const [before, during, after] = loading.windows as [PhaseResult, PhaseResult, PhaseResult];
    const controlItlP99 = (before.itlP99 + after.itlP99) / 2;
    const targets: Target[] = [
      {
        name: `throughput with ${N} adapters / without`, value: uni.outTokS / base.outTokS, goal: '>= 0.85', met: uni.outTokS / base.outTokS >= 0.85,
        detail: `${f1(uni.outTokS)} / ${f1(base.outTokS)} output tok/s (closed loop, ${C} clients); the engine alone over the same batches: ${f1(uni.engineTokS)} / ${f1(base.engineTokS)} tok/s = ${f2(uni.engineTokS / base.engineTokS)}`,
      },
      {
        name: `TTFT p99 / p50 with ${N} adapters`, value: uni.ttftP99 / uni.ttftP50, goal: '<= 3', met: uni.ttftP99 / uni.ttftP50 <= 3,
        detail: `${f0(uni.ttftP99)} / ${f0(uni.ttftP50)} ms (closed loop, ${C} clients, uniform adapters)`,
      },
      {
        name: 'warm adapters\' step p99 while others load / without', value: during.itlP99 / controlItlP99, goal: '<= 1.05', met: during.itlP99 / controlItlP99 <= 1.05,
        detail: `inter-token p99 of the warm adapters' streams ${f1(during.itlP99)} ms while ${loading.loadMs.length} new adapters loaded (first token of each after ${loading.loadMs.map(f0).join(', ')} ms) vs ${f1(controlItlP99)} ms (mean of the windows before and after); engine decode step mean ${f2(during.decodeStepMs)} vs ${f2(before.decodeStepMs)} / ${f2(after.decodeStepMs)} ms`,
      },
    ];

    const tbl = table(rows);
    const tgt = ['| target | measured | goal | met | detail |', '|---|---|---|---|---|', ...targets.map((x) => `| ${x.name} | ${f2(x.value)} | ${x.goal} | ${x.met ? 'yes' : 'no'} | ${x.detail} |`)].join('\n');
    process.stdout.write(`\n${tbl}\n\n${tgt}\n`);

    const out = a.out!;
    await mkdir(out, { recursive: true });
    const cpu = `${os.cpus()[0]?.model.trim() ?? 'CPU'}, ${os.cpus().length} cores`;
    const cmd = `node --import tsx bench/serving/bench.ts ${process.argv.slice(2).map((x) => (/^[\w.,:/=@+-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`)).join(' ')}`;
    // Other work on the machine moves every figure here: the load average says how much there was.
    const load = `load average ${loadStart.map((x) => x.toFixed(1)).join(' / ')} at the start, ${os.loadavg().map((x) => x.toFixed(1)).join(' / ')} at the end (1 / 5 / 15 min)`;
    const results = {
      date: new Date().toISOString(), device, host: cpu, shape: a.shape, dtype: DTYPE, spec: ck.spec, weightBytes: ck.bytes, adapters: N, rank: RANK,
      clients: C, requestsPerPhase: R, poissonRequests: PR, rateFractions: RATES, zipf: ZIPF, promptWords: PROMPT_WORDS, newTokens: NEW_TOKENS,
      loadAdapters: LOAD_N, systemWords: SYSTEM_WORDS, windowS: WINDOW_S, gateway: a.gateway, loadAverage: { start: loadStart, end: os.loadavg() }, writeS, startS, rows, targets, note: a.note, command: cmd,
    };
    await writeFile(join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');
    const md = [
      `# Serving benchmark`,
      '',
      ...(a.note ? [`**${a.note}**`, ''] : []),
      `${new Date().toISOString().slice(0, 10)}. Device: ${device}; host: ${cpu}, ${load}. Through ${a.gateway ? 'the gateway in front of the backend' : 'the backend directly'} (\`switchboard serve\` as its own process), over /generate_stream.`,
      '',
      `Model: random-weight ${a.shape} shape (hidden ${ck.spec.hiddenSize}, ${ck.spec.numLayers} layers, ${ck.spec.numHeads} heads / ${ck.spec.numKvHeads} KV heads, vocab ${ck.spec.vocabSize}), ${DTYPE}, ${(ck.bytes / 1e9).toFixed(2)} GB; ` +
        `${N} rank-${RANK} adapters on all seven projections (+${LOAD_N} loaded mid-run). Each request: ${PROMPT_WORDS.join('-')} random words ` +
        `(${f0(uni.promptTokensMean)} prompt tokens on average), ${NEW_TOKENS.join('-')} new tokens drawn uniformly, ignore_eos_token. ` +
        `Closed loops: ${R} requests, ${C} clients. Poisson: ${PR} requests at ${RATES.join(', ')} x the uniform closed loop's request rate. ` +
        `Adapter loading: the uniform closed loop in three ${WINDOW_S} s windows; in the middle one a side client requests adapters never loaded before, one after another.` +
        (SYSTEM_WORDS > 0 ? ` Prefix caching: the uniform closed loop with one ${SYSTEM_WORDS}-word system prompt before every prompt, then with unique prompts ${SYSTEM_WORDS} words longer (the same lengths, nothing shared).` : ''),
      '',
      `TTFT and ITL are client-side (SSE arrival times; each token is sent as soon as its text is settled, so TTFT covers the prefill and its first token). ` +
        `Engine columns come from the server's /metrics over the same phase (lorax_batch_inference_duration: engine.step wall time; mixed steps count as prefill): ` +
        `engine-only tok/s = tokens generated / time in steps, what the same batches give without serving overhead; engine busy = time in steps / wall time.`,
      '',
      tbl,
      '',
      '## Serving targets (issue 20)',
      '',
      tgt,
      '',
      ...(prefix
        ? [
            `Prefix caching (issue 20: KV blocks shared per adapter and tenant, on by default): with one ${SYSTEM_WORDS}-word system prompt before every prompt, ` +
              `TTFT p50 ${f0(prefix.shared.ttftP50)} ms (p99 ${f0(prefix.shared.ttftP99)}), ${f1(prefix.shared.outTokS)} output tok/s, ` +
              `${Number.isFinite(prefix.shared.prefixHitRate) ? (100 * prefix.shared.prefixHitRate).toFixed(0) : '-'}% of prompt tokens from the cache; ` +
              `unique prompts of the same lengths: TTFT p50 ${f0(prefix.unique.ttftP50)} ms (p99 ${f0(prefix.unique.ttftP99)}), ${f1(prefix.unique.outTokS)} output tok/s, ` +
              `${Number.isFinite(prefix.unique.prefixHitRate) ? (100 * prefix.unique.prefixHitRate).toFixed(0) : '-'}% from the cache.`,
            '',
          ]
        : []),
      `Command: \`${cmd}\``,
      '',
    ].join('\n');
    await writeFile(join(out, 'results.md'), md);
    const svg = svgPlot(results);
    await writeFile(join(out, 'plot.svg'), svg);
    const png = spawnSync('rsvg-convert', ['-b', 'white', '-o', join(out, 'plot.png'), join(out, 'plot.svg')]);
    if (png.status !== 0) process.stderr.write(`plot.svg written${png.error ? ' (no rsvg-convert here for plot.png)' : `; rsvg-convert failed: ${png.stderr}`}\n`);
  } finally {
    await stop(gateway);
    await stop(backend);
    await rm(work, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (err) {
  process.stderr.write(`serving bench failed: ${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
}
