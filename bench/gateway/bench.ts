// Gateway overhead benchmark (not a test): the latency the gateway adds (p50/p99) and the
// requests/s it sustains, with a real redis-server, on this machine.
//
//   node --import tsx bench/gateway/bench.ts [--requests 2000] [--seconds 5] [--concurrency 32] [--real]
//
// Processes: an upstream (a stub that answers instantly, so only the gateway is measured; with
// --real also the real backend on the tiny Llama fixture), the gateway (one process per
// scenario), and this process as the client (keep-alive node:http). Each scenario is measured
// directly against the upstream too, and "added" is the difference. Prints a table and writes
// bench/gateway/results.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
const tokenEvent = (i: number, last: boolean) =>
  `data: ${JSON.stringify({
    token: { id: i, text: ` t${i}`, logprob: -0.5, special: false, skipped: false },
    generated_text: last ? 'x' : null,
    details: last ? { finish_reason: 'length', prompt_tokens: 5, generated_tokens: i + 1, seed: null } : null,
  })}\n\n`;

async function runStub(): Promise<void> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/health') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      if (req.url === '/info') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"model_id":"/models/stub","max_total_tokens":4096,"max_input_length":4095}');
      if (req.url === '/generate_stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        let out = '';
        for (let i = 0; i < 16; i++) out += tokenEvent(i, i === 15);
        return res.end(out);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(GEN);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  process.stdout.write(`READY http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
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
  const gw = await startGateway({
    backends: [backend],
    serviceKey: SERVICE_KEY,
    adminToken: ADMIN_TOKEN,
    redisUrl,
    port: 0,
    log: () => {},
    ...(jwtSecret ? { jwt: { issuer: 'bench', audience: 'bench', secret: jwtSecret } } : {}),
  });
  process.stdout.write(`READY ${gw.url}\n`);
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

function child(role: string, env: Record<string, string> = {}): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--role', role], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, proc });
    });
    proc.once('exit', (code) => reject(new Error(`${role} exited (${code})`)));
  });
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

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function latency(t: Target, n: number): Promise<{ p50: number; p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < Math.min(200, n / 5); i++) await once(agent, t);
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await once(agent, t));
  agent.destroy();
  return { p50: pct(xs, 50), p99: pct(xs, 99) };
}

async function throughput(t: Target, seconds: number, concurrency: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const end = performance.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await once(agent, t);
        done++;
      }
    }),
  );
  agent.destroy();
  return done / seconds;
}

async function main(): Promise<void> {
  const n = arg('requests', 2000);
  const seconds = arg('seconds', 5);
  const concurrency = arg('concurrency', 32);
  const real = process.argv.includes('--real');
  const { startRedis } = await import('../../test/gateway/helpers/redis.ts');
  const redis = await startRedis();
  const procs: ChildProcess[] = [];
  const rows: string[][] = [];
  const { SignJWT } = await import('jose');
  const jwtSecret = 'bench-jwt-secret-0123456789abcdef-0123456789';

  try {
    const upstreams: Array<{ name: string; url: string; body: string; stream: string; maxNew: number }> = [];
    const stub = await child('stub');
    procs.push(stub.proc);
    upstreams.push({ name: 'stub upstream', url: stub.url, body: '{"inputs":"Hello","parameters":{"max_new_tokens":4}}', stream: '{"inputs":"Hello","parameters":{"max_new_tokens":16}}', maxNew: 4 });
    if (real) {
      const be = await child('real');
      procs.push(be.proc);
      upstreams.push({ name: 'real backend (tiny Llama, CPU, 1 token)', url: be.url, body: '{"inputs":"Hello","parameters":{"max_new_tokens":1}}', stream: '', maxNew: 1 });
    }
    const { ServiceTokenSigner } = await import('../../gateway/service-token.ts');
    const direct = `Bearer ${await (await ServiceTokenSigner.create(SERVICE_KEY, { ttlS: 3600 })).token('bench')}`;

    for (const up of upstreams) {
      const scenarios: Array<{ name: string; env: Record<string, string>; auth: 'key' | 'jwt'; limits: boolean; stream?: boolean }> = [
        { name: 'gateway, in-process store, API key', env: {}, auth: 'key', limits: false },
        { name: 'gateway, Redis, API key, rpm+tpm limits', env: { BENCH_REDIS: redis.url }, auth: 'key', limits: true },
        { name: 'gateway, Redis, tenant JWT, rpm+tpm limits', env: { BENCH_REDIS: redis.url, BENCH_JWT_SECRET: jwtSecret }, auth: 'jwt', limits: true },
      ];
      if (up.stream) scenarios.push({ name: 'gateway, Redis, API key, limits, SSE stream of 16 events', env: { BENCH_REDIS: redis.url }, auth: 'key', limits: true, stream: true });
      for (const sc of scenarios) {
        const path = sc.stream ? '/generate_stream' : '/generate';
        const body = sc.stream ? up.stream : up.body;
        const base = await latency({ url: up.url, path, body, headers: { authorization: direct } }, Math.min(n, 1000));
        const baseRps = await throughput({ url: up.url, path, body, headers: { authorization: direct } }, Math.min(seconds, 3), concurrency);
        const gw = await child('gateway', { BENCH_BACKEND: up.url, ...sc.env });
        procs.push(gw.proc);
        const tenant = `bench-${rows.length}`;
        const adm = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
        if (sc.limits) await fetch(`${gw.url}/admin/tenants/${tenant}`, { method: 'PUT', headers: adm, body: JSON.stringify({ limits: { rpm: 100_000_000, tpm: 1_000_000_000 } }) });
        let auth: string;
        if (sc.auth === 'key') {
          const r = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: adm, body: JSON.stringify({ tenant }) });
          auth = `Bearer ${((await r.json()) as { key: string }).key}`;
        } else {
          auth = `Bearer ${await new SignJWT({ tenant }).setProtectedHeader({ alg: 'HS256' }).setIssuer('bench').setAudience('bench').setExpirationTime('1h').sign(new TextEncoder().encode(jwtSecret))}`;
        }
        const t: Target = { url: gw.url, path, body, headers: { authorization: auth } };
        const lat = await latency(t, n);
        const rps = await throughput(t, seconds, concurrency);
        gw.proc.kill('SIGTERM');
        const row = [
          up.name,
          sc.name,
          base.p50.toFixed(3),
          lat.p50.toFixed(3),
          (lat.p50 - base.p50).toFixed(3),
          base.p99.toFixed(3),
          lat.p99.toFixed(3),
          (lat.p99 - base.p99).toFixed(3),
          baseRps.toFixed(0),
          rps.toFixed(0),
        ];
        rows.push(row);
        process.stdout.write(`${row.join(' | ')}\n`);
      }
    }
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await redis.stop();
  }

  const header = ['upstream', 'path through', 'direct p50 ms', 'gateway p50 ms', 'added p50 ms', 'direct p99 ms', 'gateway p99 ms', 'added p99 ms', `direct req/s (c=${concurrency})`, `gateway req/s (c=${concurrency})`];
  const table = [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  const cpu = os.cpus();
  const md = `# Gateway overhead benchmark

Generated by \`node --import tsx bench/gateway/bench.ts${real ? ' --real' : ''}\` on ${new Date().toISOString().slice(0, 10)}.

Machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.type()} ${os.release()}, Node ${process.version}, redis-server on loopback.
Client, gateway and upstream are separate processes on the same machine (they share its cores).

- **Latency**: ${n} sequential requests over one keep-alive connection (after a warm-up); "added" is
  the gateway's p50/p99 minus the same request sent straight to the upstream (with a service token).
- **Throughput**: ${concurrency} concurrent keep-alive clients for ${seconds} s.
- The stub upstream answers instantly, so its rows measure only the gateway: auth (API-key hash
  lookup in the store, or JWT verification), body parsing + zod validation, adapter resolution,
  the rate-limit reservation (one Lua script), forwarding, token counting and trimming, and the
  settlement (a second Lua script, after the answer).
${real ? '- The real-backend rows put the same gateway in front of the CPU engine (tiny Llama fixture, one generated token).\n' : ''}- With ${cpu.length} cores shared by the client, the gateway, the upstream and redis-server, the
  req/s columns are bounded by the machine as a whole (the direct column has one process less
  in the path), and p99 includes scheduler jitter of those processes.

${table}
`;
  writeFileSync(join(HERE, 'results.md'), md);
  process.stdout.write(`\n${table}\n\nwrote bench/gateway/results.md\n`);
}

const role = process.argv.includes('--role') ? process.argv[process.argv.indexOf('--role') + 1] : null;
if (role === 'stub') void runStub();
else if (role === 'real') void runReal();
else if (role === 'gateway') void runGateway();
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
