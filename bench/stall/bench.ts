// Stall benchmark (not a test): do 1-4 MB prompts slow down everyone else's small requests?
//
//   node --import tsx bench/stall/bench.ts [--seconds 8] [--rounds 3] [--concurrency 4] [--gap-ms 250] [--only NAME-PART]
//
// Processes: the backend (`switchboard serve`, tiny Llama fixture, one engine thread), the gateway
// (`switchboard gateway`) for the gateway scenarios, a client sending small requests (GET /health
// and a 4-token /generate, `--concurrency` loops) and, in the "with" phases, a second client
// sending large prompts one after another, `--gap-ms` apart (0: back to back). Each scenario alternates phases without and with the large
// prompts, `--rounds` times, and compares the small requests' latency (p50 / p99 of all rounds).
// Large prompts come plain (refused at the token bound before they are encoded) and with
// `truncate`: prose is encoded from a window of its end (backend/text/encode-tail.ts); digits
// ("unbroken": no space, no punctuation after a letter) have nowhere to cut, so they are encoded
// in full, on the tokenizer pool: the worst case for the pool. The "inline" scenario sets
// SWITCHBOARD_TOKENIZE_INLINE_MAX_CHARS=Infinity: every prompt encodes on the event loop, as
// before the pool existed. The "floor" scenario sends no large prompt: a separate process at
// nice 19 keeps one core busy with arithmetic, which is what any CPU-bound work beside the
// server costs the small requests on this machine, however it is scheduled.
// Prints a table and writes bench/stall/results.md and results.json.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantile } from '../../test/helpers/quantile.ts';

const HERE = import.meta.dirname;
const ROOT = join(HERE, '..', '..');
const MODEL = join(ROOT, 'test', 'fixtures', 'models', 'llama');
const SERVICE_KEY = 'bench-service-key-0123456789abcdef-0123456789';
const ADMIN_TOKEN = 'bench-admin-token';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function call(url: string, method: string, body: string | null, key: string | null): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers: { ...(body !== null ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}), ...(key ? { authorization: `Bearer ${key}` } : {}) } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------------------------

/** Small requests for `seconds`: prints {health: ms[], generate: ms[], errors}. */
async function runSmall(): Promise<void> {
  const url = arg('url', '');
  const key = arg('key', '') || null;
  const seconds = Number(arg('seconds', '8'));
  const concurrency = Number(arg('concurrency', '4'));
  const out = { health: [] as number[], generate: [] as number[], errors: 0 };
  const gen = JSON.stringify({ inputs: 'The quick brown fox', parameters: { max_new_tokens: 4 } });
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      let i = w;
      while (performance.now() < end) {
        const health = i++ % 2 === 0;
        const r = await call(`${url}${health ? '/health' : '/generate'}`, health ? 'GET' : 'POST', health ? null : gen, key);
        if (r.status !== 200) out.errors++;
        else (health ? out.health : out.generate).push(r.ms);
      }
    }),
  );
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/** The floor scenario: one core kept busy with arithmetic (no allocation, no I/O) until SIGTERM. */
function runBurn(): void {
  os.setPriority(19);
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  process.stdout.write('READY\n');
  let x = 0;
  const spin = () => {
    const t = performance.now();
    while (performance.now() - t < 50) x += Math.sqrt(x + 1);
    if (stop) process.stdout.write(`${JSON.stringify({ sent: 0, statuses: {}, ms: [], x })}\n`);
    else setImmediate(spin);
  };
  spin();
}

/** Large prompts back to back until SIGTERM: prints {sent, statuses, ms[]} on the way out. */
async function runBig(): Promise<void> {
  const url = arg('url', '');
  const key = arg('key', '') || null;
  const truncate = arg('mode', 'plain') === 'truncate';
  const sizes = arg('sizes', '1,2,3,4').split(',').map(Number);
  const unit = arg('unit', 'MB') === 'MB' ? 1_000_000 : 1;
  const words = process.argv.includes('--unbroken') ? '0123456789' : 'the quick brown fox jumps over the lazy dog and runs far away ';
  const bodies = sizes.map((n) => {
    const inputs = words.repeat(Math.ceil((n * unit) / words.length)).slice(0, n * unit);
    return JSON.stringify({ inputs, parameters: { max_new_tokens: 1, ...(truncate ? { truncate: 64 } : {}) } });
  });
  const gap = Number(arg('gap-ms', '250'));
  const stats = { sent: 0, statuses: {} as Record<string, number>, ms: [] as number[] };
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  process.stdout.write('READY\n');
  for (let i = 0; !stop; i++) {
    const r = await call(`${url}/generate`, 'POST', bodies[i % bodies.length]!, key).catch(() => ({ status: 0, ms: 0 }));
    stats.sent++;
    stats.statuses[r.status] = (stats.statuses[r.status] ?? 0) + 1;
    stats.ms.push(r.ms);
    if (gap > 0 && !stop) await new Promise((res) => setTimeout(res, gap));
  }
  process.stdout.write(`${JSON.stringify(stats)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------------

const self = fileURLToPath(import.meta.url);

function child(args: string[], env: NodeJS.ProcessEnv = {}): { proc: ChildProcess; out: Promise<string>; waitFor: (re: RegExp, stream?: 'stdout' | 'stderr') => Promise<RegExpExecArray> } {
  const proc = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const out = new Promise<string>((r) => proc.once('exit', () => r(stdout)));
  const waitFor = (re: RegExp, stream: 'stdout' | 'stderr' = 'stderr') =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(stream === 'stdout' ? stdout : stderr);
        if (m) {
          proc[stream]!.off('data', check);
          resolve(m);
        }
      };
      proc[stream]!.on('data', check);
      proc.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr.slice(-2000)}`)));
      check();
    });
  return { proc, out, waitFor };
}

const tsx = ['--import', 'tsx'];

interface Phase {
  health: number[];
  generate: number[];
  errors: number;
  big?: { sent: number; statuses: Record<string, number>; ms: number[] };
}

async function phase(url: string, key: string | null, seconds: number, concurrency: number, big: { url: string; key: string | null; mode: string; sizes: string; unit: string; unbroken: boolean; burn: boolean } | null): Promise<Phase> {
  let bigChild: ReturnType<typeof child> | null = null;
  if (big) {
    if (big.burn) bigChild = child([...tsx, self, '--role', 'burn']);
    else bigChild = child([...tsx, self, '--role', 'big', '--url', big.url, '--key', big.key ?? '', '--mode', big.mode, '--sizes', big.sizes, '--unit', big.unit, '--gap-ms', arg('gap-ms', '250'), ...(big.unbroken ? ['--unbroken'] : [])]);
    await bigChild.waitFor(/READY/, 'stdout');
    await new Promise((r) => setTimeout(r, 300)); // the first large body is on its way
  }
  const small = child([...tsx, self, '--role', 'small', '--url', url, '--key', key ?? '', '--seconds', String(seconds), '--concurrency', String(concurrency)]);
  const res = JSON.parse((await small.out).trim().split('\n').pop()!) as Phase;
  if (bigChild) {
    bigChild.proc.kill('SIGTERM');
    res.big = JSON.parse((await bigChild.out).trim().split('\n').pop()!) as Phase['big'];
  }
  return res;
}

interface Scenario {
  name: string;
  via: 'backend' | 'gateway';
  mode: 'plain' | 'truncate';
  sizes: string;
  unit: 'MB' | 'chars';
  inline?: boolean;
  /** Prompts without a space (truncation must encode them in full). */
  unbroken?: boolean;
  /** No large prompts: a process at nice 19 burns one core (the floor). */
  burn?: boolean;
  /** Extra `switchboard gateway` flags (--json-threads 0: the gateway parses every body on its loop, as before). */
  gatewayArgs?: string[];
  /** Limits of the large-prompt tenant: a tpm below one prompt's budget makes the gateway refuse it itself (the backend never sees it). */
  largeLimits?: Record<string, number>;
}

async function orchestrate(): Promise<void> {
  const seconds = Number(arg('seconds', '8'));
  const rounds = Number(arg('rounds', '3'));
  const concurrency = Number(arg('concurrency', '4'));
  const scenarios: Scenario[] = [
    { name: 'floor: no large prompts, one core busy with arithmetic in another process at nice 19', via: 'backend', mode: 'plain', sizes: '1', unit: 'MB', burn: true },
    { name: 'backend, 1-4 MB prompts (refused at the token bound)', via: 'backend', mode: 'plain', sizes: '1,2,3,4', unit: 'MB' },
    { name: 'backend, 1-4 MB prompts with truncate (encoded from a window of their end)', via: 'backend', mode: 'truncate', sizes: '1,2,3,4', unit: 'MB' },
    { name: 'backend, 1-4 MB prompts with truncate and no space to cut at (encoded in full on the pool)', via: 'backend', mode: 'truncate', sizes: '1,2,3,4', unit: 'MB', unbroken: true },
    { name: 'gateway, 1,000,000-char prompts from another tenant', via: 'gateway', mode: 'plain', sizes: '1000000', unit: 'chars' },
    { name: 'gateway, 1,000,000-char prompts with truncate, another tenant', via: 'gateway', mode: 'truncate', sizes: '1000000', unit: 'chars' },
    { name: 'backend, 1 MB prompts with truncate and no space to cut at, pool OFF (encoded in full inline, as before)', via: 'backend', mode: 'truncate', sizes: '1', unit: 'MB', inline: true, unbroken: true },
    { name: 'gateway, 1,000,000-char prompts refused by the gateway (tpm), bodies parsed on its worker thread', via: 'gateway', mode: 'plain', sizes: '1000000', unit: 'chars', largeLimits: { tpm: 100 } },
    { name: 'gateway, 1,000,000-char prompts refused by the gateway (tpm), --json-threads 0 (parsed on its loop, as before)', via: 'gateway', mode: 'plain', sizes: '1000000', unit: 'chars', largeLimits: { tpm: 100 }, gatewayArgs: ['--json-threads', '0'] },
  ];
  const only = process.argv.includes('--only') ? arg('only', '') : null;
  if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((sc) => sc.name.includes(only)));
  const results: { scenario: Scenario; without: Phase[]; with: Phase[] }[] = [];
  for (const sc of scenarios) {
    const backend = child([join(ROOT, 'bin', 'switchboard.mjs'), 'serve', '--model-id', MODEL, '--port', '0', '--threads', '1'], {
      SWITCHBOARD_SERVICE_KEY: sc.via === 'gateway' ? SERVICE_KEY : '',
      ...(sc.inline ? { SWITCHBOARD_TOKENIZE_INLINE_MAX_CHARS: 'Infinity' } : {}),
    });
    const backendUrl = (await backend.waitFor(/listening on (\S+)/))[1]!;
    let gateway: ReturnType<typeof child> | null = null;
    let url = backendUrl;
    let keys: [string | null, string | null] = [null, null];
    if (sc.via === 'gateway') {
      gateway = child([join(ROOT, 'bin', 'switchboard.mjs'), 'gateway', '--backend', backendUrl, '--port', '0', ...(sc.gatewayArgs ?? [])], { SWITCHBOARD_SERVICE_KEY: SERVICE_KEY, SWITCHBOARD_ADMIN_TOKEN: ADMIN_TOKEN });
      url = (await gateway.waitFor(/listening on (\S+)/))[1]!;
      const issue = async (tenant: string) => {
        const r = await fetch(`${url}/admin/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ tenant }) });
        return ((await r.json()) as { key: string }).key;
      };
      if (sc.largeLimits) {
        await fetch(`${url}/admin/tenants/large`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ limits: sc.largeLimits }) });
      }
      keys = [await issue('small'), await issue('large')];
    }
    const without: Phase[] = [];
    const withBig: Phase[] = [];
    for (let r = 0; r < rounds; r++) {
      without.push(await phase(url, keys[0], seconds, concurrency, null));
      withBig.push(await phase(url, keys[0], seconds, concurrency, { url, key: keys[1], mode: sc.mode, sizes: sc.sizes, unit: sc.unit, unbroken: sc.unbroken === true, burn: sc.burn === true }));
    }
    for (const c of [gateway, backend]) {
      if (!c) continue;
      c.proc.kill('SIGTERM');
      await c.out;
    }
    results.push({ scenario: sc, without, with: withBig });
    report(results, seconds, rounds, concurrency, false);
  }
  // A partial run (--only) prints its table but leaves the committed results alone.
  report(results, seconds, rounds, concurrency, !only);
}

const GAP = arg('gap-ms', '250');
/** The machine's load when the run began (other work on shared cores shows in every latency). */
const LOAD_START = os.loadavg().map((x) => x.toFixed(1)).join(' / ');

function report(results: { scenario: Scenario; without: Phase[]; with: Phase[] }[], seconds: number, rounds: number, concurrency: number, write: boolean): void {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const pct = (a: number, b: number) => `${b >= a ? '+' : ''}${(((b - a) / a) * 100).toFixed(0)}%`;
  const rows: string[] = [];
  const json: unknown[] = [];
  for (const { scenario, without, with: w } of results) {
    const pool = (ps: Phase[], k: 'health' | 'generate') => ps.flatMap((p) => p[k]);
    const big = w.flatMap((p) => p.big?.ms ?? []);
    const statuses: Record<string, number> = {};
    for (const p of w) for (const [s, n] of Object.entries(p.big?.statuses ?? {})) statuses[s] = (statuses[s] ?? 0) + n;
    const entry: Record<string, unknown> = { scenario: scenario.name, large_prompts: { sent: big.length, statuses, p50_ms: quantile(big, 0.5) } };
    for (const k of ['health', 'generate'] as const) {
      const a = pool(without, k);
      const b = pool(w, k);
      const row = { n_without: a.length, n_with: b.length, p50_without: quantile(a, 0.5), p50_with: quantile(b, 0.5), p99_without: quantile(a, 0.99), p99_with: quantile(b, 0.99), max_with: quantile(b, 1) };
      entry[k] = row;
      rows.push(
        `| ${scenario.name} | ${k === 'health' ? 'GET /health' : 'POST /generate (4 tokens)'} | ${f(row.p50_without)} / ${f(row.p99_without)} | ${f(row.p50_with)} / ${f(row.p99_with)} | ${pct(row.p99_without, row.p99_with)} | ${f(row.max_with)} | ${k === 'health' ? `${big.length} (${Object.entries(statuses).map(([s, n]) => `${n}x${s}`).join(', ')}), p50 ${f(quantile(big, 0.5))} ms` : ''} |`,
      );
    }
    json.push(entry);
  }
  const cpus = os.cpus();
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' / ');
  const md =
    `# Stall benchmark: small requests beside 1-4 MB prompts\n\n` +
    `\`node --import tsx bench/stall/bench.ts --seconds ${seconds} --rounds ${rounds} --concurrency ${concurrency} --gap-ms ${GAP}\` on ${cpus.length} x ${cpus[0]?.model ?? 'cpu'}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}, load average at the start ${LOAD_START}, at the end ${load} (1 / 5 / 15 min).\n` +
    `Backend: tiny Llama fixture (max input 511 tokens), CPU engine with 1 thread. Small requests: ${concurrency} loops alternating GET /health and a 4-token /generate, ` +
    `${rounds} rounds of ${seconds} s without and ${seconds} s with one client sending large prompts one after another, ${GAP} ms apart. Latencies in ms (p50 / p99 over all rounds).\n\n` +
    `| scenario | small request | without: p50 / p99 | with: p50 / p99 | p99 change | max with | large prompts answered |\n|---|---|---|---|---|---|---|\n${rows.join('\n')}\n\n` +
    `How to read it: the "floor" row sends no large prompt: a separate process at nice 19 keeps one core busy with arithmetic, and\n` +
    `the small requests' p99 moves by that much on this machine whatever the scheduler does (other rows cannot do better while they\n` +
    `make the machine work). "pool OFF" is the backend as it was before the tokenizer pool (every prompt encoded on the event loop):\n` +
    `each 1 MB prompt held every other request for seconds. Now no request holds a loop for seconds: the backend reads a body over\n` +
    `64 KiB from the socket straight to its JSON parser thread, chunk by chunk, and keeps the prompt there (the loop gets its length,\n` +
    `enough for the token bound; the tokenizer thread fetches the text, only its end when it is to be truncated); a truncated prompt\n` +
    `is encoded from a window of its end (backend/text/encode-tail.ts), and only a text with no space to cut at is encoded in full,\n` +
    `on the tokenizer pool. The gateway parses bodies over 64 KiB on its worker thread. The two "refused by the gateway" scenarios\n` +
    `isolate the gateway: the large tenant's tpm is below one prompt's budget, so the gateway parses, validates and refuses every\n` +
    `1 MB body itself (the backend never sees it), once on its worker thread and once with --json-threads 0 (parsed on its loop, as\n` +
    `before). What a large body still costs a loop: the socket chunks themselves (Node's HTTP parser, about 64 KiB each, each posted\n` +
    `to the parser thread), a few to ~15 ms of main-thread CPU per 3.5 MB body on this machine (bench/stall/loop.ts measures it per\n` +
    `request). The "with" columns measure CPU contention on ${cpus.length} cores shared by the large-prompt client, the worker threads,\n` +
    `the engine thread, the gateway and the small-request client (with other work on the machine, see the load average; the p99 of\n` +
    `the same phase moves by tens of percent between runs), so the threads that parse and encode large inputs run at nice 10\n` +
    `(backend/worker-priority.ts).\n`;
  process.stdout.write(`\n${md}\n`);
  if (write) {
    writeFileSync(join(HERE, 'results.md'), md);
    writeFileSync(join(HERE, 'results.json'), `${JSON.stringify({ seconds, rounds, concurrency, cpus: cpus.length, node: process.version, results: json }, null, 2)}\n`);
  }
}

const role = arg('role', 'orchestrate');
if (role === 'small') await runSmall();
else if (role === 'big') await runBig();
else if (role === 'burn') runBurn();
else await orchestrate();
