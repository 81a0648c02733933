// A/B comparison of gateway builds (not a test): the same redis-server and stub upstream, each
// build's gateway started from its own checkout (bench.ts --role gateway there), then alternating
// throughput windows so that the machine's drifting load falls on every build alike. Prints the
// gateway's CPU µs per request (/proc) and req/s, median and every window.
//
//   git worktree add /tmp/before <commit>   (or git archive <commit> | tar -x -C /tmp/before; link node_modules)
//   node --import tsx bench/gateway/ab.ts /tmp/before . [--windows 5] [--seconds 3] [--concurrency 32]
//        [--path /generate|/generate_stream|/v1/chat/completions] [--in-process] [--profile DIR]
//
// A checkout may carry variants after commas: `.,workers=2` (the shipped cluster, CPU summed over
// the primary and its workers), `.,node=--max-semi-space-size=32` (a node flag; repeatable),
// `.,env=NAME=VALUE` (an environment variable; repeatable), so one checkout can be compared with
// itself run another way. The client is wrk (wrk.ts); `--client node` drives from this process.
import type { ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { resolve } from 'node:path';
import { closedLoopWindow, cpuMicros, spawnRole } from './processes.ts';
import { ensureWrk, runWrk } from './wrk.ts';

const argv = process.argv.slice(2);
const opt = (name: string, def: string) => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1]! : def);
const flags = new Set(['--windows', '--seconds', '--concurrency', '--path', '--profile', '--client']);
const specs = argv.filter((a, i) => !a.startsWith('--') && !flags.has(argv[i - 1] ?? ''));
const roots = specs.map((r) => resolve(r.split(',')[0]!));
const variants = specs.map((r) => {
  const parts = r.split(',').slice(1);
  const workers = parts.find((p) => p.startsWith('workers='))?.slice(8) ?? '1';
  const env = Object.fromEntries(parts.filter((p) => p.startsWith('env=')).map((p) => [p.slice(4, p.indexOf('=', 4)), p.slice(p.indexOf('=', 4) + 1)]));
  return { workers, node: parts.filter((p) => p.startsWith('node=')).map((p) => p.slice(5)), env };
});
const windows = Number(opt('windows', '5'));
const seconds = Number(opt('seconds', '3'));
const conc = Number(opt('concurrency', '32'));
const path = opt('path', '/generate');
const profile = argv.includes('--profile') ? opt('profile', '') : null;
const body =
  path === '/generate_stream'
    ? '{"inputs":"Hello","parameters":{"max_new_tokens":16}}'
    : path === '/generate'
      ? '{"inputs":"Hello","parameters":{"max_new_tokens":4}}'
      : JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 });
const useWrk = opt('client', 'wrk') === 'wrk' && ensureWrk((line) => process.stdout.write(`${line}\n`));
const ADMIN = { authorization: 'Bearer bench-admin-token', 'content-type': 'application/json' };

function child(root: string, role: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<{ url: string; proc: ChildProcess }> {
  return spawnRole(`${root}/bench/gateway/bench.ts`, role, root, env, nodeArgs);
}

function once(agent: Agent, url: string, key: string): Promise<void> {
  const u = new URL(url);
  return new Promise((res, rej) => {
    const req = request({ agent, hostname: u.hostname, port: u.port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}` } }, (r) => {
      r.on('data', () => {});
      r.on('end', () => (r.statusCode === 200 ? res() : rej(new Error(`status ${r.statusCode}`))));
    });
    req.on('error', rej);
    req.end(body);
  });
}

async function window(g: { url: string; proc: ChildProcess; key: string }, secs: number): Promise<{ rps: number; us: number }> {
  if (useWrk) {
    const before = cpuMicros(g.proc.pid!);
    const r = await runWrk({ url: g.url, path, body, headers: { authorization: `Bearer ${g.key}` } }, conc, secs);
    return { rps: r.perSecond, us: (cpuMicros(g.proc.pid!) - before) / r.requests };
  }
  const agent = new Agent({ keepAlive: true, maxSockets: conc });
  for (let i = 0; i < conc * 4; i++) await once(agent, g.url, g.key);
  const w = await closedLoopWindow(() => once(agent, g.url, g.key), secs, conc, { gateway: g.proc.pid! });
  agent.destroy();
  return { rps: w.perSecond, us: w.cpu.gateway! };
}

async function main(): Promise<void> {
  if (roots.length === 0) throw new Error('name at least one checkout');
  const { startRedis } = await import('../../test/gateway/helpers/redis.ts');
  const redis = await startRedis();
  const procs: ChildProcess[] = [];
  try {
    const stub = await child(roots[0]!, 'stub');
    procs.push(stub.proc);
    const gws: { root: string; url: string; proc: ChildProcess; key: string }[] = [];
    for (const [i, root] of roots.entries()) {
      const env = { ...variants[i]!.env, BENCH_BACKEND: stub.url, BENCH_REDIS: argv.includes('--in-process') ? '' : redis.url, BENCH_WORKERS: variants[i]!.workers };
      const g = await child(root, 'gateway', env, [...variants[i]!.node, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}/${i}`] : [])]);
      procs.push(g.proc);
      const tenant = `ab-${i}`;
      await fetch(`${g.url}/admin/tenants/${tenant}`, { method: 'PUT', headers: ADMIN, body: JSON.stringify({ limits: { rpm: 100_000_000, tpm: 1_000_000_000 } }) });
      const r = await fetch(`${g.url}/admin/keys`, { method: 'POST', headers: ADMIN, body: JSON.stringify({ tenant }) });
      gws.push({ root: specs[i]!, ...g, key: ((await r.json()) as { key: string }).key });
    }
    for (const g of gws) await window(g, 2); // warm-up
    const res = gws.map(() => [] as { rps: number; us: number }[]);
    for (let w = 0; w < windows; w++) for (const [i, g] of gws.entries()) res[i]!.push(await window(g, seconds));
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    for (const [i, g] of gws.entries()) {
      const r = res[i]!;
      process.stdout.write(
        `${g.root}: gateway CPU ${med(r.map((x) => x.us)).toFixed(0)} µs/req [${r.map((x) => x.us.toFixed(0)).join(' ')}], ${med(r.map((x) => x.rps)).toFixed(0)} req/s [${r.map((x) => x.rps.toFixed(0)).join(' ')}] (${path}, c=${conc})\n`,
      );
    }
  } finally {
    for (const p of procs.reverse()) {
      if (p.exitCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    await redis.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
