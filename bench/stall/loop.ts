// Loop-cost probe (not a test): how much of the backend's event loop does ONE large request take?
//
//   node --import tsx bench/stall/loop.ts [--repeat 5] [--sizes 1,3.5] [--only ROUTE-PART] [--profile FILE]
//   node --import tsx bench/stall/loop.ts --pathological [--repeat 5] [--only NAME-PART]
//
// --pathological sends valid-JSON bodies of 1-4 MB that are costly to validate or copy rather
// than long prompts (500,000 token ids, 200,000 logit_bias keys, 100,000 messages, a 100,000-value
// enum, 4 stop strings of 900 KB); every one is refused or served without the loop validating it.
//
// The backend runs in this process (the same startServer `switchboard serve` runs); the client is
// a child process, so its work never counts. For each case (route, size, truncate or not) the
// request is sent `--repeat` times one after another; around each one this process reads its main
// thread's CPU time (Linux schedstat), its event-loop utilisation (performance.eventLoopUtilization:
// the time the loop was not waiting for I/O, which on a busy machine includes waiting for a core), the longest single block (monitorEventLoopDelay at 1 ms resolution) and the
// garbage-collection pauses (PerformanceObserver 'gc'). The loop's active time while idle is
// measured first and subtracted. Prints one line per case (medians over the repeats). bench.ts
// shows what that costs other clients; this shows where a single request's cost is. `--profile`
// records the main thread's CPU profile over the cases only (not the start-up), writes it to FILE
// (open it in Chrome's DevTools) and prints the functions with the most self time.
import { fork, type ChildProcess } from 'node:child_process';
import { request, Agent } from 'node:http';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
import { Session } from 'node:inspector/promises';
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * CPU time of this process's main thread so far, in ms (Linux: /proc schedstat, nanoseconds): unlike
 * the loop's active time it does not count the time the thread waited for a core on a busy machine.
 */
function mainThreadCpuMs(): number {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf-8').split(' ')[0]) / 1e6;
  } catch {
    return NaN;
  }
}

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}

interface Case {
  route: '/generate' | '/v1/completions' | '/v1/chat/completions';
  mb: number;
  truncate: boolean;
  /** One of PATHOLOGICAL's bodies instead of a long prompt. */
  name?: string;
}

const hi = [{ role: 'user', content: 'hi' }];
/** Valid JSON, costly to validate or to copy (issue 15); each one's size in MB is measured, not set. */
const PATHOLOGICAL: Record<string, { route: Case['route']; body: () => unknown }> = {
  prompt_ids_500k: { route: '/v1/completions', body: () => ({ model: 'llama', prompt: Array.from({ length: 500_000 }, (_, i) => i % 100), max_tokens: 2 }) },
  logit_bias_200k: { route: '/v1/completions', body: () => ({ model: 'llama', prompt: 'hi', max_tokens: 2, logit_bias: Object.fromEntries(Array.from({ length: 200_000 }, (_, i) => [String(i), 1])) }) },
  messages_100k: { route: '/v1/chat/completions', body: () => ({ model: 'llama', max_tokens: 2, messages: Array.from({ length: 100_000 }, () => hi[0]) }) },
  schema_enum_100k: {
    route: '/v1/chat/completions',
    body: () => ({ model: 'llama', max_tokens: 2, messages: hi, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', enum: Array.from({ length: 100_000 }, (_, i) => `value${i}`) } } } }),
  },
  stop_4x900KB: { route: '/v1/completions', body: () => ({ model: 'llama', prompt: 'hi', max_tokens: 2, stop: Array.from({ length: 4 }, () => 'x'.repeat(900_000)) }) },
};

const words = 'the quick brown fox jumps over the lazy dog and runs far away ';

function bodyOf(c: Case): string {
  if (c.name) return JSON.stringify(PATHOLOGICAL[c.name]!.body());
  const n = Math.round(c.mb * 1_000_000);
  const text = words.repeat(Math.ceil(n / words.length)).slice(0, n);
  if (c.route === '/generate') return JSON.stringify({ inputs: text, parameters: { max_new_tokens: 1, ...(c.truncate ? { truncate: 64 } : {}) } });
  if (c.route === '/v1/completions') return JSON.stringify({ model: 'llama', prompt: text, max_tokens: 1 });
  return JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: text }], max_tokens: 1 });
}

/** The client: sends the body it is told to, answers {status, ms}. */
function client(): void {
  const agent = new Agent({ keepAlive: true });
  process.on('message', (m: { url: string; c: Case }) => {
    const body = bodyOf(m.c);
    const t0 = performance.now();
    const req = request(`${m.url}${m.c.route}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => process.send!({ status: res.statusCode, ms: performance.now() - t0 }));
    });
    req.end(body);
  });
  process.send!({ ready: true });
}

async function main(): Promise<void> {
  const { startBackend } = await import('../../test/helpers/backend.ts');
  const server = await startBackend(['--threads', '1'], {}, { log: () => {} });
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--role', 'client'], { execArgv: ['--import', 'tsx'] });
  await new Promise<void>((r) => child.once('message', () => r()));
  const send = (c: Case) => new Promise<{ status: number; ms: number }>((r) => {
    child.once('message', (m) => r(m as { status: number; ms: number }));
    child.send({ url: server.url, c });
  });
  let gcMs = 0;
  const gcObs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) gcMs += e.duration;
  });
  gcObs.observe({ entryTypes: ['gc'] });
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const settle = () => new Promise((r) => setTimeout(r, 300));
  // Warm-up: the worker threads start on first use.
  await send({ route: '/generate', mb: 0.1, truncate: true });
  await send({ route: '/v1/completions', mb: 0.1, truncate: false });
  await new Promise((r) => setTimeout(r, 1000));
  // The loop's own active rate while nothing is sent (timers, metrics).
  const e0 = performance.eventLoopUtilization();
  const c0 = mainThreadCpuMs();
  const i0 = performance.now();
  await new Promise((r) => setTimeout(r, 2000));
  const idle = performance.eventLoopUtilization(e0);
  const idleRate = idle.active / (idle.active + idle.idle);
  const idleCpuRate = (mainThreadCpuMs() - c0) / (performance.now() - i0);
  const repeat = Number(arg('repeat', '5'));
  const sizes = arg('sizes', '1,3.5').split(',').map(Number);
  const cases: Case[] = [];
  if (process.argv.includes('--pathological')) {
    for (const [name, p] of Object.entries(PATHOLOGICAL)) cases.push({ route: p.route, mb: Buffer.byteLength(JSON.stringify(p.body())) / 1e6, truncate: false, name });
  } else {
    for (const mb of sizes) cases.push({ route: '/generate', mb, truncate: false }, { route: '/generate', mb, truncate: true }, { route: '/v1/completions', mb, truncate: false }, { route: '/v1/chat/completions', mb, truncate: false });
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const only = process.argv.includes('--only') ? arg('only', '') : null;
  const label = (c: Case) => `${c.name ? `${c.name} ` : ''}${c.route}${c.truncate ? ' truncate' : ''}`;
  if (only) cases.splice(0, cases.length, ...cases.filter((c) => label(c).includes(only)));
  process.stdout.write(`idle loop active rate ${(idleRate * 100).toFixed(2)}%\n`);
  const profileFile = process.argv.includes('--profile') ? arg('profile', 'loop.cpuprofile') : null;
  const session = profileFile ? new Session() : null;
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.start');
  }
  for (const c of cases) {
    const active: number[] = [];
    const cpu: number[] = [];
    const maxBlock: number[] = [];
    const gc: number[] = [];
    const wall: number[] = [];
    let status = 0;
    // The main thread's own CPU rate right now, with nothing sent (timers, metrics, leftovers of the last case).
    await settle();
    const q0 = mainThreadCpuMs();
    const t0q = performance.now();
    await new Promise((r) => setTimeout(r, 1500));
    const quietRate = (mainThreadCpuMs() - q0) / (performance.now() - t0q);
    for (let i = 0; i < repeat; i++) {
      await settle();
      h.reset();
      gcMs = 0;
      const t0 = performance.now();
      const u0 = performance.eventLoopUtilization();
      const c1 = mainThreadCpuMs();
      const r = await send(c);
      await settle(); // what the request leaves behind (garbage, late callbacks) counts too
      const u = performance.eventLoopUtilization(u0);
      const span = performance.now() - t0;
      active.push(u.active - idleRate * span);
      cpu.push(mainThreadCpuMs() - c1 - Math.min(idleCpuRate, quietRate) * span);
      maxBlock.push(h.max / 1e6 - 1);
      gc.push(gcMs);
      wall.push(r.ms);
      status = r.status;
    }
    process.stdout.write(
      `${label(c)} ${c.mb.toFixed(2)} MB -> ${status}: main thread cpu ${med(cpu).toFixed(1)} ms (min ${Math.min(...cpu).toFixed(1)}, max ${Math.max(...cpu).toFixed(1)}), loop active ${med(active).toFixed(1)} ms (min ${Math.min(...active).toFixed(1)}, max ${Math.max(...active).toFixed(1)}), longest block ${med(maxBlock).toFixed(1)} ms (max ${Math.max(...maxBlock).toFixed(1)}), gc ${med(gc).toFixed(1)} ms, request ${med(wall).toFixed(0)} ms\n`,
    );
  }
  if (session) {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(profileFile!, JSON.stringify(profile));
    printSelfTimes(profile);
  }
  h.disable();
  gcObs.disconnect();
  child.kill();
  await server.close();
  process.exit(0);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The 30 functions with the most self time, idle and program (the profiler's own) left out. */
function printSelfTimes(profile: { nodes: ProfileNode[]; samples?: number[]; timeDeltas?: number[] }): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const n = byId.get(samples[i]!)!;
    const f = n.callFrame;
    if (f.functionName === '(idle)' || f.functionName === '(program)') continue;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|work\/main)\//, '')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (deltas[i + 1] ?? 0) / 1000);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  process.stdout.write(`main thread, busy ${total.toFixed(0)} ms in all; most self time:\n`);
  for (const [k, ms] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) process.stdout.write(`  ${ms.toFixed(1).padStart(8)} ms  ${k}\n`);
}

if (arg('role', 'main') === 'client') client();
else await main();
