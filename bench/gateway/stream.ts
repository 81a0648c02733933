// Streaming benchmark of the gateway (not a test): what proxying an SSE stream costs per event and
// per stream, for /generate_stream and /v1/chat/completions with stream=true, from an instant
// upstream that emits N tokens, beside Portkey's open-source gateway (npm @portkey-ai/gateway)
// proxying the same chat stream in the same run.
//
//   node --import tsx bench/gateway/stream.ts [--tokens 128] [--streams 40] [--gap-ms 1] [--seconds 3]
//        [--windows 3] [--concurrency 16] [--before DIR] [--only NAME-PART] [--out FILE] [--profile DIR]
//
// Two phases per row:
// - Latency: one stream at a time over one keep-alive connection; the upstream writes one event
//   every --gap-ms (a decode step, shortened) and stamps each with process.hrtime (CLOCK_MONOTONIC,
//   the same clock in every process of the machine), so the client reads, per token, how long it
//   took from the upstream's write to the client's read. "added" is the p50/p99 over all tokens
//   minus the same through no gateway, measured just before; TTFT likewise (request sent -> first token).
// - Throughput: --concurrency streams at a time, the upstream writing every event in its own
//   write, one per turn of its event loop (as fast as it can); streams/s and the CPU of each
//   process per stream and per event (/proc), the median of --windows windows.
// --before DIR adds rows for the gateway of another checkout (bench.ts --role gateway there: the
// same redis-server and stub), so a change is compared in one run on the same machine load.
// Prints a table and writes bench/gateway/results-stream.md (or --out).
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Agent, request, type IncomingMessage } from 'node:http';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantile } from '../../test/helpers/quantile.ts';
import { closedLoopWindow, redisPid, runPortkey, runStubServer, spawnRole } from './processes.ts';

const HERE = import.meta.dirname;
const ROOT = join(HERE, '..', '..');
const SERVICE_KEY = 'bench-service-key-0123456789abcdef-0123456789';
const ADMIN_TOKEN = 'bench-admin-token';
const argv = process.argv.slice(2);
const opt = (name: string, def: string) => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1]! : def);
const num = (name: string, def: number) => Number(opt(name, String(def)));

/** Microseconds on CLOCK_MONOTONIC: comparable between processes of one machine. */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

// ---------------------------------------------------------------------------------------------
// The upstream: N tokens, each event stamped with the time it was written
// ---------------------------------------------------------------------------------------------

function loraxEvents(n: number): (i: number) => string {
  return (i) => {
    const last = i === n - 1;
    return `data: ${JSON.stringify({
      token: { id: i, text: ` @${nowUs()}`, logprob: -0.5, special: false },
      generated_text: last ? 'done' : null,
      details: last ? { finish_reason: 'length', prompt_tokens: 5, generated_tokens: n, seed: null } : null,
    })}\n\n`;
  };
}

/** What the backend sends when asked include_usage: `"usage":null` on every chunk, a usage chunk, [DONE]. */
function chatEvents(n: number): (i: number) => string {
  const head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"stub","choices":';
  return (i) => {
    const delta = i === 0 ? { role: 'assistant', content: ` @${nowUs()}` } : { content: ` @${nowUs()}` };
    let out = `data: ${head}${JSON.stringify([{ index: 0, delta, logprobs: null, finish_reason: i === n - 1 ? 'length' : null }])},"usage":null}\n\n`;
    if (i === n - 1) out += `data: ${head}[],"usage":{"prompt_tokens":5,"completion_tokens":${n},"total_tokens":${n + 5}}}\n\ndata: [DONE]\n\n`;
    return out;
  };
}

async function runStub(): Promise<void> {
  let gapMs = 0;
  await runStubServer((req, res, raw) => {
    if (req.url === '/__gap') {
      gapMs = Number(raw.toString());
      return res.writeHead(204).end();
    }
    const body = JSON.parse(raw.toString() || '{}') as { parameters?: { max_new_tokens?: number }; max_tokens?: number };
    const chat = req.url!.endsWith('/chat/completions');
    const n = (chat ? body.max_tokens : body.parameters?.max_new_tokens) ?? 16;
    const ev = chat ? chatEvents(n) : loraxEvents(n);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let i = 0;
    let gone = false;
    res.on('close', () => (gone = true));
    const gap = gapMs;
    const step = () => {
      if (gone) return;
      res.write(ev(i));
      if (++i === n) res.end();
      else if (gap > 0) setTimeout(step, gap);
      else setImmediate(step);
    };
    step();
  });
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

function child(script: string, role: string, env: Record<string, string> = {}, nodeArgs: string[] = [], cwd = ROOT): Promise<{ url: string; proc: ChildProcess }> {
  return spawnRole(script, role, cwd, env, nodeArgs);
}

interface Target {
  url: string;
  path: string;
  body: string;
  headers: Record<string, string>;
}

interface StreamRead {
  /** Per token: client read time minus the upstream's stamp (µs). */
  delays: number[];
  /** Request sent -> first token read (µs). */
  ttft: number;
  text: string;
}

/** One stream; with `stamps`, the whole text is kept and every token's delay measured. */
function stream(agent: Agent, t: Target, stamps: boolean): Promise<StreamRead | null> {
  const u = new URL(t.path, t.url);
  return new Promise((resolve, reject) => {
    const t0 = nowUs();
    const req = request(
      { agent, hostname: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(t.body), ...t.headers } },
      (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          let e = '';
          res.on('data', (d: Buffer) => (e += d.toString()));
          res.on('end', () => reject(new Error(`status ${res.statusCode}: ${e.slice(0, 300)}`)));
          return;
        }
        if (!stamps) {
          res.on('data', () => {});
          res.on('end', () => resolve(null));
          return;
        }
        const delays: number[] = [];
        let ttft = -1;
        let text = '';
        let scanned = 0;
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          const at = nowUs();
          text += d;
          // Every complete stamp (" @digits" followed by a non-digit) not yet counted.
          for (;;) {
            const i = text.indexOf(' @', scanned);
            if (i < 0) break;
            let j = i + 2;
            while (j < text.length && text.charCodeAt(j) >= 48 && text.charCodeAt(j) <= 57) j++;
            if (j === text.length) break; // the number may go on in the next chunk
            if (ttft < 0) ttft = at - t0;
            delays.push(at - Number(text.slice(i + 2, j)));
            scanned = j;
          }
        });
        res.on('end', () => resolve({ delays, ttft, text }));
      },
    );
    req.on('error', reject);
    req.end(t.body);
  });
}

const setGap = (stubUrl: string, ms: number) => fetch(`${stubUrl}/__gap`, { method: 'POST', body: String(ms) });

/** Checks a stream's text: every token there once, in order, ending as the API says. */
function checkStream(api: 'lorax' | 'openai', text: string, n: number, delays: number): string | null {
  if (delays !== n) return `${delays} tokens read, ${n} sent`;
  if (api === 'lorax' && !text.slice(text.lastIndexOf('data:')).includes('"generated_text":"done"')) return 'no final event';
  if (api === 'openai' && !text.trimEnd().endsWith('data: [DONE]')) return 'no [DONE]';
  return null;
}

interface LatencySamples {
  delays: number[];
  ttfts: number[];
  problem: string | null;
}

/** `streams` streams one after another on one keep-alive connection (after a warm-up), adding to `into`. */
async function latency(t: Target, streams: number, api: 'lorax' | 'openai', n: number, into: LatencySamples): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 3; i++) await stream(agent, t, true);
  for (let i = 0; i < streams; i++) {
    const r = (await stream(agent, t, true))!;
    into.problem ??= checkStream(api, r.text, n, r.delays.length);
    into.delays.push(...r.delays);
    into.ttfts.push(r.ttft);
  }
  agent.destroy();
}

function latencyOf(x: LatencySamples): { p50: number; p99: number; ttft50: number; ttft99: number; problem: string | null } {
  return { p50: quantile(x.delays, 0.5) / 1000, p99: quantile(x.delays, 0.99) / 1000, ttft50: quantile(x.ttfts, 0.5) / 1000, ttft99: quantile(x.ttfts, 0.99) / 1000, problem: x.problem };
}

interface Throughput {
  sps: number;
  cpu: Record<string, number>;
}

async function throughputWindow(t: Target, seconds: number, concurrency: number, pids: Record<string, number>): Promise<Throughput> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  await Promise.all(Array.from({ length: concurrency }, () => stream(agent, t, false)));
  const w = await closedLoopWindow(() => stream(agent, t, false), seconds, concurrency, pids);
  agent.destroy();
  return { sps: w.perSecond, cpu: w.cpu };
}

/** The window with the median streams/s, and each process's median CPU per stream over all windows. */
function medianOf(all: Throughput[]): { median: Throughput; all: Throughput[] } {
  const sorted = [...all].sort((a, b) => a.sps - b.sps);
  const mid = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const cpu: Record<string, number> = {};
  for (const k of Object.keys(all[0]!.cpu)) cpu[k] = mid(all.map((w) => w.cpu[k]!));
  return { median: { sps: sorted[Math.floor(sorted.length / 2)]!.sps, cpu }, all };
}

interface Row {
  name: string;
  path: string;
  lat: ReturnType<typeof latencyOf>;
  base: ReturnType<typeof latencyOf> | null;
  tp: { median: Throughput; all: Throughput[] };
}

async function main(): Promise<void> {
  const n = num('tokens', 128);
  const streams = num('streams', 40);
  const gapMs = num('gap-ms', 1);
  const seconds = num('seconds', 3);
  const windows = num('windows', 3);
  const conc = num('concurrency', 16);
  const beforeRoot = argv.includes('--before') ? resolve(opt('before', '')) : null;
  const only = argv.includes('--only') ? opt('only', '') : null;
  const out = opt('out', join(HERE, 'results-stream.md'));
  const profile = argv.includes('--profile') ? opt('profile', '') : null;
  const load0 = os.loadavg().map((x) => x.toFixed(1)).join(', ');

  const { startRedis } = await import('../../test/gateway/helpers/redis.ts');
  const redis = await startRedis();
  const rpid = redisPid(redis.url);
  const procs: ChildProcess[] = [];
  const rows: Row[] = [];
  try {
    const stub = await child(fileURLToPath(import.meta.url), 'stub');
    procs.push(stub.proc);
    const { ServiceTokenSigner } = await import('../../gateway/service-token.ts');
    const direct = `Bearer ${await (await ServiceTokenSigner.create(SERVICE_KEY, { ttlS: 3600 })).token('bench')}`;
    const bodies = {
      lorax: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: n } }),
      openai: JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'Hello' }], max_tokens: n, stream: true }),
    };
    type Gw = { label: string; kind: 'switchboard' | 'portkey'; root: string };
    const gws: Gw[] = [{ label: 'Switchboard gateway (this checkout)', kind: 'switchboard', root: ROOT }];
    if (beforeRoot) gws.push({ label: `Switchboard gateway (before: ${beforeRoot})`, kind: 'switchboard', root: beforeRoot });
    gws.push({ label: 'Portkey gateway 1.15.2 (no auth, no limits)', kind: 'portkey', root: ROOT });

    // Every gateway of a route runs side by side and they take turns (latency rounds, throughput
    // windows), so the machine's drifting load falls on each alike.
    for (const api of ['lorax', 'openai'] as const) {
      const path = api === 'lorax' ? '/generate_stream' : '/v1/chat/completions';
      const body = bodies[api];
      const entries: Array<{ name: string; t: Target; pids: Record<string, number>; proc: ChildProcess | null; lat: LatencySamples; windows: Throughput[] }> = [];
      const fresh = () => ({ delays: [], ttfts: [], problem: null });
      entries.push({ name: `the upstream alone (direct, ${path})`, t: { url: stub.url, path, body, headers: { authorization: direct } }, pids: { upstream: stub.proc.pid! }, proc: null, lat: fresh(), windows: [] });
      for (const gw of gws) {
        const name = `${gw.label}, ${path}`;
        if (only && !name.includes(only)) continue;
        // Portkey has no LoRAX provider: it proxies the OpenAI route only.
        if (gw.kind === 'portkey' && api === 'lorax') continue;
        const script = gw.kind === 'portkey' ? fileURLToPath(import.meta.url) : join(gw.root, 'bench', 'gateway', 'bench.ts');
        const profArgs = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}/${gw.kind}-${api}-${entries.length}`] : [];
        const g =
          gw.kind === 'portkey'
            ? await child(script, 'portkey', {}, profArgs, gw.root)
            : await child(script, 'gateway', { BENCH_BACKEND: stub.url, BENCH_REDIS: redis.url }, profArgs, gw.root);
        procs.push(g.proc);
        let headers: Record<string, string>;
        if (gw.kind === 'portkey') {
          headers = { authorization: direct, 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${stub.url.replace('127.0.0.1', 'localhost')}/v1` };
        } else {
          const tenant = `bench-${api}-${entries.length}`;
          const adm = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
          await fetch(`${g.url}/admin/tenants/${tenant}`, { method: 'PUT', headers: adm, body: JSON.stringify({ limits: { rpm: 100_000_000, tpm: 1_000_000_000, concurrent_streams: 10_000 } }) });
          const r = await fetch(`${g.url}/admin/keys`, { method: 'POST', headers: adm, body: JSON.stringify({ tenant }) });
          headers = { authorization: `Bearer ${((await r.json()) as { key: string }).key}` };
        }
        const pids: Record<string, number> = { gateway: g.proc.pid!, upstream: stub.proc.pid! };
        if (rpid && gw.kind === 'switchboard') pids.redis = rpid;
        entries.push({ name, t: { url: g.url, path, body, headers }, pids, proc: g.proc, lat: fresh(), windows: [] });
      }
      if (entries.length === 1) continue; // --only left no gateway on this route
      const rounds = Math.max(1, Math.min(4, streams));
      await setGap(stub.url, gapMs);
      for (let r = 0; r < rounds; r++) for (const e of entries) await latency(e.t, Math.ceil(streams / rounds), api, n, e.lat);
      await setGap(stub.url, 0);
      for (let w = 0; w < windows; w++) for (const e of entries) e.windows.push(await throughputWindow(e.t, seconds, conc, e.pids));
      const base = latencyOf(entries[0]!.lat);
      for (const [i, e] of entries.entries()) {
        if (e.proc) {
          e.proc.kill('SIGTERM');
          await new Promise((r) => e.proc!.once('exit', r));
        }
        rows.push({ name: e.name, path, lat: latencyOf(e.lat), base: i === 0 ? null : base, tp: medianOf(e.windows) });
        report(rows.at(-1)!, n);
      }
    }
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await redis.stop();
  }

  const f = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
  const header = ['path through', 'token p50 ms', 'added p50 ms', 'token p99 ms', 'added p99 ms', 'TTFT p50 ms', 'added TTFT p50 ms', `streams/s (c=${conc})`, 'windows (streams/s)', 'gateway CPU µs/stream', 'gateway CPU µs/event', 'client CPU µs/stream', 'upstream CPU µs/stream', 'redis CPU µs/stream', 'check'];
  const lines = rows.map((r) => {
    const m = r.tp.median;
    return [
      r.name,
      f(r.lat.p50, 3),
      r.base ? f(r.lat.p50 - r.base.p50, 3) : '-',
      f(r.lat.p99, 3),
      r.base ? f(r.lat.p99 - r.base.p99, 3) : '-',
      f(r.lat.ttft50, 3),
      r.base ? f(r.lat.ttft50 - r.base.ttft50, 3) : '-',
      f(m.sps),
      r.tp.all.map((w) => f(w.sps)).join(' / '),
      f(m.cpu.gateway),
      m.cpu.gateway === undefined ? '-' : f(m.cpu.gateway / n, 1),
      f(m.cpu.client),
      f(m.cpu.upstream),
      f(m.cpu.redis),
      r.lat.problem ?? 'ok',
    ];
  });
  const table = [`| ${header.join(' | ')} |`, `|---|${header.slice(1).map(() => '---:').join('|')}|`, ...lines.map((l) => `| ${l.join(' | ')} |`)].join('\n');
  const cpu = os.cpus();
  const md = `# Gateway streaming benchmark

Generated by \`node --import tsx bench/gateway/stream.ts ${argv.join(' ')}\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC.

Machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, Node ${process.version}. Load average at the start: ${load0}; at the end: ${os.loadavg().map((x) => x.toFixed(1)).join(', ')} (other work shares these cores).

- Upstream: a stub that streams ${n} tokens per request (LoRAX \`/generate_stream\` events with \`details\` on the last one;
  OpenAI chat chunks with \`"usage":null\`, a usage chunk and \`[DONE]\`, as the backend sends them when asked \`include_usage\`).
- Switchboard rows: Redis, API key, rpm + tpm + stream limits, validation, token counting, trimming of what the gateway
  asked for on the client's behalf (LoRAX \`details\`, OpenAI usage), settlement. Portkey: no auth, no limits (it has no LoRAX route).
- **Latency**: ${streams} streams one after another on one keep-alive connection, the upstream writing one event every
  ${gapMs} ms; per token, the client's read time minus the upstream's write time (one clock: CLOCK_MONOTONIC), p50/p99 over
  all ${streams * n} tokens; "added" is that minus the same through no gateway (first row of each route), measured in the same run.
- **Throughput**: ${conc} streams at a time, the upstream writing each event in its own write as fast as its loop turns;
  ${windows} windows of ${seconds} s each, the median window by streams/s reported (every window listed); CPU per stream of
  each process (/proc), the median over the windows; "per event" is the gateway's CPU per stream / ${n} (it includes the
  per-request part: auth, limits, validation, ~250-300 µs in results.md).
- Every gateway of a route runs at once and they take turns (${Math.max(1, Math.min(4, streams))} latency rounds, then one
  throughput window each in turn), so the machine's drifting load falls on each alike.

${table}
`;
  writeFileSync(out, md);
  process.stdout.write(`\n${table}\n\nwrote ${out}\n`);
}

function report(r: Row, n: number): void {
  const m = r.tp.median;
  process.stdout.write(
    `${r.name}: token p50 ${r.lat.p50.toFixed(3)} p99 ${r.lat.p99.toFixed(3)} ms` +
      (r.base ? ` (added ${(r.lat.p50 - r.base.p50).toFixed(3)} / ${(r.lat.p99 - r.base.p99).toFixed(3)})` : '') +
      `, TTFT p50 ${r.lat.ttft50.toFixed(3)}; ${m.sps.toFixed(0)} streams/s [${r.tp.all.map((w) => w.sps.toFixed(0)).join(' ')}]` +
      (m.cpu.gateway !== undefined ? `, gateway ${m.cpu.gateway.toFixed(0)} µs/stream (${(m.cpu.gateway / n).toFixed(1)}/event)` : '') +
      `, client ${m.cpu.client!.toFixed(0)}, upstream ${m.cpu.upstream!.toFixed(0)}${r.lat.problem ? `; PROBLEM: ${r.lat.problem}` : ''}\n`,
  );
}

const role = argv.includes('--role') ? opt('role', '') : null;
if (role === 'stub') void runStub();
else if (role === 'portkey') void runPortkey(ROOT, true);
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
