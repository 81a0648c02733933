// Gateway overhead benchmark (not a test): the latency the gateway adds (p50/p99), the requests/s
// it sustains and the CPU it spends per request, with a real redis-server, on this machine, side
// by side with Portkey's open-source gateway (npm @portkey-ai/gateway, also Hono) proxying the
// same chat completion to the same upstream in the same run.
//
//   node --import tsx bench/gateway/bench.ts [--workers 2] [--client wrk|node] [--requests 2000] [--seconds 3] [--windows 3] [--concurrency 32] [--real] [--profile DIR] [--only NAME-PART]
//
// --client: the load generator, wrk by default (installed with apt-get when missing, wrk.ts), node:http
// in this process with `node` (--requests then counts the sequential latency requests).
//
// --workers N: the gateway's processes in the Redis scenarios, as `switchboard gateway --workers N`
// runs them (node:cluster, gateway/cluster.ts; the in-process store scenario always has 1). Its CPU
// figure is the primary's and every worker's, summed.
//
// Processes: an upstream (a stub that answers instantly, so only the gateway is measured; with
// --real also the real backend on the tiny Llama fixture), the gateway under test (one process per
// scenario; --profile writes its --cpu-prof there), and this process as the client (keep-alive
// node:http). Each scenario is measured directly against the upstream too, and "added" is the
// difference. CPU per request of every process (client, gateway, upstream, redis-server) is read
// from /proc over the throughput window: on a machine whose cores the processes share, that says
// what each one would sustain on a core of its own (the ceilings beside the req/s figures).
// Prints a table and writes bench/gateway/results.md.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantile } from '../../test/helpers/quantile.ts';
import { closedLoopWindow, cpuMicros, redisPid, runCannedStub, runPortkey, spawnRole } from './processes.ts';
import { ensureWrk, runWrk } from './wrk.ts';

const HERE = import.meta.dirname;
const ROOT = join(HERE, '..', '..');
const SERVICE_KEY = 'bench-service-key-0123456789abcdef-0123456789';
const ADMIN_TOKEN = 'bench-admin-token';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

// ---------------------------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------------------------

const GEN = JSON.stringify({
  generated_text: ' world',
  details: { finish_reason: 'length', prompt_tokens: 5, generated_tokens: 4, skipped_tokens: 0, seed: null, prefill: [], tokens: [] },
});
const CHAT = JSON.stringify({
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'stub',
  choices: [{ index: 0, message: { role: 'assistant', content: ' world' }, logprobs: null, finish_reason: 'length' }],
  usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 },
});
const tokenEvent = (i: number, last: boolean) =>
  `data: ${JSON.stringify({
    token: { id: i, text: ` t${i}`, logprob: -0.5, special: false, skipped: false },
    generated_text: last ? 'x' : null,
    details: last ? { finish_reason: 'length', prompt_tokens: 5, generated_tokens: i + 1, seed: null } : null,
  })}\n\n`;

async function runStub(): Promise<void> {
  let events = '';
  for (let i = 0; i < 16; i++) events += tokenEvent(i, i === 15);
  await runCannedStub({
    '/generate': { contentType: 'application/json', body: GEN },
    '/v1/chat/completions': { contentType: 'application/json', body: CHAT },
    '/generate_stream': { contentType: 'text/event-stream', body: events },
  });
}

async function runReal(): Promise<void> {
  const { startServer } = await import('../../backend/cli.ts');
  const { parseServeConfig } = await import('../../backend/config.ts');
  const s = await startServer(parseServeConfig(['--model-id', join(ROOT, 'test', 'fixtures', 'models', 'llama'), '--port', '0', '--hostname', '127.0.0.1', '--service-key', SERVICE_KEY, '--threads', '1'], {}));
  process.stdout.write(`READY ${s.url}\n`);
}

async function runGateway(): Promise<void> {
  const { startGateway } = await import('../../gateway/node.ts');
  const backend = process.env.BENCH_BACKEND!;
  const redisUrl = process.env.BENCH_REDIS || null;
  const jwtSecret = process.env.BENCH_JWT_SECRET;
  const workers = Number(process.env.BENCH_WORKERS || 1);
  const cluster = (await import('node:cluster')).default;
  const { runPrimary, tellPrimary } = await import('../../gateway/cluster.ts');
  if (workers > 1 && cluster.isPrimary) {
    // The shipped primary (gateway/cluster.ts), as `switchboard gateway --workers N` runs it.
    await runPrimary({
      workers,
      metricsPort: null,
      hostname: '127.0.0.1',
      log: () => {},
      fail: (message) => {
        process.stderr.write(`gateway: ${message}\n`);
        process.exit(1);
      },
      ready: (url) => process.stdout.write(`READY ${url}\n`),
    });
    process.exit(0);
  }
  const gw = await startGateway({
    clusterWorker: workers > 1,
    backends: [backend],
    serviceKey: SERVICE_KEY,
    adminToken: ADMIN_TOKEN,
    redisUrl,
    port: 0,
    log: () => {},
    ...(jwtSecret ? { jwt: { issuer: 'bench', audience: 'bench', secret: jwtSecret } } : {}),
  });
  // A normal exit, so that --cpu-prof writes its profile.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(0));
  if (workers > 1) tellPrimary({ sb: 'ready', url: gw.url, store: gw.store.kind });
  else process.stdout.write(`READY ${gw.url}\n`);
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

function child(role: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<{ url: string; proc: ChildProcess }> {
  return spawnRole(fileURLToPath(import.meta.url), role, ROOT, env, nodeArgs);
}

interface Target {
  url: string;
  path: string;
  body: string;
  headers: Record<string, string>;
}

function once(agent: Agent, t: Target): Promise<number> {
  const u = new URL(t.path, t.url);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      { agent, hostname: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(t.body), ...t.headers } },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`status ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(t.body);
  });
}

const pct = (xs: number[], p: number) => quantile(xs, p / 100);

/** The load generator: wrk where it can be had (wrk.ts), else this process over node:http. */
let useWrk = false;

async function latency(t: Target, n: number, seconds: number): Promise<{ p50: number; p99: number }> {
  if (useWrk) {
    const { p50, p99 } = await runWrk(t, 1, seconds);
    return { p50, p99 };
  }
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < Math.min(200, n / 5); i++) await once(agent, t);
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await once(agent, t));
  agent.destroy();
  return { p50: pct(xs, 50), p99: pct(xs, 99) };
}

/** Every process warm (JIT, connections, Redis scripts) before anything is measured, as a serving gateway is. */
async function warmUp(t: Target, concurrency: number, seconds: number): Promise<void> {
  if (useWrk) {
    await runWrk(t, concurrency, seconds);
    return;
  }
  await throughputWindow(t, seconds, concurrency, {});
}

interface Throughput {
  rps: number;
  /** CPU µs per request of each measured process (client: this process). */
  cpu: Record<string, number>;
}

/** `windows` throughput windows of `seconds` each; the median window (by req/s) is reported. */
async function throughput(t: Target, seconds: number, concurrency: number, pids: Record<string, number>, windows = 1): Promise<Throughput> {
  const all: Throughput[] = [];
  for (let i = 0; i < windows; i++) all.push(await throughputWindow(t, seconds, concurrency, pids));
  all.sort((a, b) => a.rps - b.rps);
  return all[Math.floor(all.length / 2)]!;
}

async function throughputWindow(t: Target, seconds: number, concurrency: number, pids: Record<string, number>): Promise<Throughput> {
  if (useWrk) {
    const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMicros(pid)]));
    const r = await runWrk(t, concurrency, seconds);
    const cpu: Record<string, number> = { client: r.clientMicros };
    for (const [k, pid] of Object.entries(pids)) cpu[k] = (cpuMicros(pid) - before[k]!) / r.requests;
    return { rps: r.perSecond, cpu };
  }
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  for (let i = 0; i < concurrency * 4; i++) await once(agent, t); // connections open, code warm
  const w = await closedLoopWindow(() => once(agent, t), seconds, concurrency, pids);
  agent.destroy();
  return { rps: w.perSecond, cpu: w.cpu };
}

interface Scenario {
  name: string;
  /** 'switchboard' (this repository's gateway) or 'portkey'. */
  gateway: 'switchboard' | 'portkey';
  env: Record<string, string>;
  auth: 'key' | 'jwt' | 'none';
  limits: boolean;
  api: 'lorax' | 'openai' | 'lorax-stream';
}

async function main(): Promise<void> {
  const n = arg('requests', 2000);
  const seconds = arg('seconds', 3);
  const windows = arg('windows', 3);
  const concurrency = arg('concurrency', 32);
  const workers = arg('workers', 1);
  const real = process.argv.includes('--real');
  const clientArg = process.argv.includes('--client') ? process.argv[process.argv.indexOf('--client') + 1]! : 'wrk';
  if (clientArg !== 'wrk' && clientArg !== 'node') throw new Error(`--client takes wrk or node, not ${clientArg}`);
  useWrk = clientArg === 'wrk' && ensureWrk((line) => process.stdout.write(`${line}\n`));
  const profileDir = process.argv.includes('--profile') ? process.argv[process.argv.indexOf('--profile') + 1]! : null;
  const { startRedis } = await import('../../test/gateway/helpers/redis.ts');
  const redis = await startRedis();
  const rpid = redisPid(redis.url);
  const procs: ChildProcess[] = [];
  const rows: string[][] = [];
  const { SignJWT } = await import('jose');
  const jwtSecret = 'bench-jwt-secret-0123456789abcdef-0123456789';
  const fmt = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));

  try {
    const upstreams: Array<{ name: string; url: string; pid: number; lorax: string; stream: string; chat: string }> = [];
    const stub = await child('stub');
    procs.push(stub.proc);
    const chat = JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 });
    upstreams.push({ name: 'stub upstream', url: stub.url, pid: stub.proc.pid!, lorax: '{"inputs":"Hello","parameters":{"max_new_tokens":4}}', stream: '{"inputs":"Hello","parameters":{"max_new_tokens":16}}', chat });
    if (real) {
      const be = await child('real');
      procs.push(be.proc);
      upstreams.push({ name: 'real backend (tiny Llama, CPU, 1 token)', url: be.url, pid: be.proc.pid!, lorax: '{"inputs":"Hello","parameters":{"max_new_tokens":1}}', stream: '', chat: '' });
    }
    const { ServiceTokenSigner } = await import('../../gateway/service-token.ts');
    const direct = `Bearer ${await (await ServiceTokenSigner.create(SERVICE_KEY, { ttlS: 3600 })).token('bench')}`;

    for (const up of upstreams) {
      const redisEnv = { BENCH_REDIS: redis.url, BENCH_WORKERS: String(workers) };
      const scenarios: Scenario[] = [
        { name: 'Switchboard gateway, Redis, API key, rpm+tpm limits, /generate', gateway: 'switchboard', env: redisEnv, auth: 'key', limits: true, api: 'lorax' },
        { name: 'Switchboard gateway, in-process store, API key, /generate', gateway: 'switchboard', env: {}, auth: 'key', limits: false, api: 'lorax' },
        { name: 'Switchboard gateway, Redis, tenant JWT, rpm+tpm limits, /generate', gateway: 'switchboard', env: { ...redisEnv, BENCH_JWT_SECRET: jwtSecret }, auth: 'jwt', limits: true, api: 'lorax' },
      ];
      if (up.chat) {
        scenarios.push({ name: 'Switchboard gateway, Redis, API key, rpm+tpm limits, /v1/chat/completions', gateway: 'switchboard', env: redisEnv, auth: 'key', limits: true, api: 'openai' });
        scenarios.push({ name: 'Portkey gateway 1.15.2 (no auth, no limits), /v1/chat/completions', gateway: 'portkey', env: {}, auth: 'none', limits: false, api: 'openai' });
      }
      if (up.stream) scenarios.push({ name: 'Switchboard gateway, Redis, API key, limits, SSE stream of 16 events', gateway: 'switchboard', env: redisEnv, auth: 'key', limits: true, api: 'lorax-stream' });
      const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1]! : null;
      if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((sc) => sc.name.includes(only)));
      const baselines = new Map<string, { lat: { p50: number; p99: number }; tp: Throughput }>();
      for (const sc of scenarios) {
        const path = sc.api === 'openai' ? '/v1/chat/completions' : sc.api === 'lorax-stream' ? '/generate_stream' : '/generate';
        const body = sc.api === 'openai' ? up.chat : sc.api === 'lorax-stream' ? up.stream : up.lorax;
        // The upstream alone, with the same request, measured before each gateway (the machine's load drifts).
        const alone = { url: up.url, path, body, headers: { authorization: direct } };
        await warmUp(alone, concurrency, 3);
        const base = {
          lat: await latency(alone, Math.min(n, 1000), seconds),
          tp: await throughput(alone, seconds, concurrency, { upstream: up.pid }, windows),
        };
        if (!baselines.has(path)) {
          baselines.set(path, base);
          const row = [up.name, `the upstream alone (direct, ${path})`, '-', fmt(base.lat.p50, 3), '-', fmt(base.lat.p99, 3), '-', fmt(base.tp.rps), '-', '-', fmt(base.tp.cpu.client), fmt(base.tp.cpu.upstream), '-'];
          rows.push(row);
          process.stdout.write(`${row.join(' | ')}\n`);
        }
        const gw =
          sc.gateway === 'portkey'
            ? await child('portkey', {}, profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}/portkey`] : [])
            : await child('gateway', { BENCH_BACKEND: up.url, ...sc.env }, profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}/switchboard-${rows.length}`] : []);
        procs.push(gw.proc);
        let headers: Record<string, string>;
        if (sc.gateway === 'portkey') {
          headers = { authorization: direct, 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${up.url.replace('127.0.0.1', 'localhost')}/v1` };
        } else {
          const tenant = `bench-${rows.length}`;
          const adm = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
          if (sc.limits) await fetch(`${gw.url}/admin/tenants/${tenant}`, { method: 'PUT', headers: adm, body: JSON.stringify({ limits: { rpm: 100_000_000, tpm: 1_000_000_000 } }) });
          if (sc.auth === 'key') {
            const r = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: adm, body: JSON.stringify({ tenant }) });
            headers = { authorization: `Bearer ${((await r.json()) as { key: string }).key}` };
          } else {
            headers = { authorization: `Bearer ${await new SignJWT({ tenant }).setProtectedHeader({ alg: 'HS256' }).setIssuer('bench').setAudience('bench').setExpirationTime('1h').sign(new TextEncoder().encode(jwtSecret))}` };
          }
        }
        const t: Target = { url: gw.url, path, body, headers };
        await warmUp(t, concurrency, 6);
        const lat = await latency(t, n, seconds);
        const pids: Record<string, number> = { gateway: gw.proc.pid!, upstream: up.pid };
        if (rpid) pids.redis = rpid;
        const tp = await throughput(t, seconds, concurrency, pids, windows);
        gw.proc.kill('SIGTERM');
        await new Promise((r) => gw.proc.once('exit', r));
        const row = [
          up.name,
          sc.name,
          sc.gateway === 'portkey' ? '1' : sc.env.BENCH_WORKERS ?? '1',
          fmt(lat.p50, 3),
          fmt(lat.p50 - base.lat.p50, 3),
          fmt(lat.p99, 3),
          fmt(lat.p99 - base.lat.p99, 3),
          fmt(tp.rps),
          `${fmt((tp.rps / base.tp.rps) * 100)}%`,
          fmt(tp.cpu.gateway),
          fmt(tp.cpu.client),
          fmt(tp.cpu.upstream),
          fmt(tp.cpu.redis),
        ];
        rows.push(row);
        process.stdout.write(`${row.join(' | ')}\n`);
      }
    }
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await redis.stop();
  }

  const header = [
    'upstream',
    'path through',
    'gateway processes',
    'p50 ms',
    'added p50 ms',
    'p99 ms',
    'added p99 ms',
    `req/s (c=${concurrency})`,
    'of the upstream alone',
    'gateway CPU µs/req',
    'client CPU µs/req',
    'upstream CPU µs/req',
    'redis CPU µs/req',
  ];
  const table = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i < 3 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  // Issue 20's target, for the full path (Redis, API key, rpm+tpm limits, /generate, stub upstream).
  const full = rows.find((r) => r[0] === 'stub upstream' && r[1]!.startsWith('Switchboard gateway, Redis, API key, rpm+tpm limits, /generate'));
  const portkey = rows.find((r) => r[1]!.startsWith('Portkey'));
  const chat = rows.find((r) => r[1]!.startsWith('Switchboard gateway, Redis, API key, rpm+tpm limits, /v1/chat'));
  const target = full
    ? `\n**Against issue 20's target** (>= 5,000 req/s on these 2 cores through API key + Redis limits + validation + forwarding, added p99 <= 3 ms): ` +
      `${full[7]} req/s with ${full[2]} gateway process(es) = ${((Number(full[7]) / 5000) * 100).toFixed(0)}% of 5,000; added p99 ${full[6]} ms against 3 ms; the gateway's own CPU, ${full[9]} µs/req, ` +
      `would sustain ${fmt(1e6 / Number(full[9]))} req/s on one core of its own.` +
      (portkey && chat ? ` Beside Portkey on /v1/chat/completions in the same run: ${chat[7]} against ${portkey[7]} req/s (${(Number(chat[7]) / Number(portkey[7])).toFixed(1)}x), ${chat[9]} against ${portkey[9]} µs of gateway CPU per request.` : '') +
      ` Where the microseconds go: bench/gateway/PROFILE.md.\n`
    : '';
  const cpu = os.cpus();
  const load = os.loadavg().map((x) => x.toFixed(1)).join(', ');
  const md = `# Gateway overhead benchmark

Generated by \`node --import tsx bench/gateway/bench.ts${workers > 1 ? ` --workers ${workers}` : ''}${real ? ' --real' : ''}${useWrk ? '' : ' --client node'}\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC.

Machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.type()} ${os.release()}, Node ${process.version}, redis-server on loopback.
Load average when the run ended: ${load} (other work shared the cores: absolute req/s are noisy; the ratios and CPU per request less so).

- Client (${useWrk ? 'wrk 4.1, one thread, keep-alive: bench/gateway/wrk.ts' : 'this script: keep-alive node:http'}), gateway, upstream (a raw TCP stub with canned answers) and redis-server are separate processes sharing the machine's cores.
- **Warm-up**: every target first serves ${concurrency} clients (the upstream alone 3 s, each gateway 6 s: V8 sizes its heap and optimises the hot code over the first tens of thousands of requests), so JIT, connections and Redis scripts are warm, as in a serving gateway.
- **Latency**: ${useWrk ? `requests one at a time over one keep-alive connection for ${seconds} s (wrk -c1: every request in the histogram)` : `${n} sequential requests over one keep-alive connection`}; "added" is
  the p50/p99 minus the same request sent straight to the upstream, measured just before.
- **Throughput**: ${concurrency} concurrent keep-alive clients, ${windows} windows of ${seconds} s each, the median window
  (by req/s) reported, with its CPU figures. "of the upstream alone" is the
  gateway's req/s as a share of the same client driving the upstream directly, measured just before (the
  ceiling on this machine: the client and the upstream use the same cores the gateway does).
- **Gateway processes**: the Redis scenarios run \`switchboard gateway --workers ${workers}\`'s way (node:cluster: a primary
  handing connections to ${workers} worker(s)); the in-process store allows only 1; Portkey runs as one process.
- **CPU µs/req** of each process over the throughput window (/proc; the gateway: its primary and workers summed): 1e6 / (gateway CPU µs/req) is what the
  gateway sustains on one core of its own; 1e6 / (client CPU µs/req) is the load generator's own limit.
- The stub upstream answers instantly, so its rows measure only the gateway: auth (API-key hash
  lookup in the store, or JWT verification), body parsing + zod validation, adapter resolution,
  the rate-limit reservation (one Lua script), forwarding, token counting and trimming, and the
  settlement (a second Lua script, after the answer).
- Portkey's open-source gateway (npm \`@portkey-ai/gateway\`, Hono on @hono/node-server like this one) proxies the same
  chat completion to the same stub (\`x-portkey-provider: openai\`, \`x-portkey-custom-host\`); it has no API keys or
  quotas of its own, so its row is a proxy without auth, limits or token counting.
${real ? '- The real-backend rows put the same gateway in front of the CPU engine (tiny Llama fixture, one generated token).\n' : ''}
${table}
${target}`;
  writeFileSync(join(HERE, 'results.md'), md);
  process.stdout.write(`\n${table}\n\nwrote bench/gateway/results.md\n`);
}

const role = process.argv.includes('--role') ? process.argv[process.argv.indexOf('--role') + 1] : null;
if (role === 'stub') void runStub();
else if (role === 'portkey') void runPortkey(ROOT);
else if (role === 'real') void runReal();
else if (role === 'gateway') void runGateway();
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
