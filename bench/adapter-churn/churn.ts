// Adapter churn (not a test; issue 17): far more distinct adapters than fit in engine slots,
// requested in a loop through the real server, to show that --adapter-memory-fraction bounds the
// adapters' device memory (no out-of-memory, whatever the number asked for) and that evictions
// show in /metrics. Writes a random-weight checkpoint of --shape and --adapters PEFT adapters,
// starts `switchboard serve` with a slot count above the adapter count (so the byte budget, not
// the slot count, is what binds), then sends --rounds passes over all adapters from --clients
// concurrent clients, each request a short /generate. Prints and writes (--out) a table: requests,
// errors, adapter loads and evictions by tier, adapter bytes in slots against the budget, and
// request latency p50/p99 for hits (adapter already in a slot) and misses.
//
//   node --import tsx bench/adapter-churn/churn.ts --shape small --adapters 200 --threads 2   (CPU smoke)
//   node --import tsx bench/adapter-churn/churn.ts --shape mistral-7b --adapters 1000          (GPU machine)
//
// Adapter weights: --distinct different weight files (default 16), each shared by hard links among
// the --adapters adapter directories. Every directory is its own adapter id, loaded, accounted and
// evicted on its own (the server keys adapters by id and never by content), and 1,000 rank-16
// Mistral-7B adapters would otherwise be 42 GB of disk to write before the first request.
import { link, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { spawnServer, stopServer, type ServerProcess } from '../../test/helpers/spawn-server.ts';
import { writeAdapter, writeCheckpoint, type Dtype } from '../serving/checkpoint.ts';
import { quantile } from '../../test/helpers/quantile.ts';

const { values: a } = parseArgs({
  options: {
    shape: { type: 'string', default: 'small' },
    adapters: { type: 'string', default: '1000' },
    distinct: { type: 'string', default: '16' },
    rank: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
    clients: { type: 'string', default: '16' },
    'new-tokens': { type: 'string', default: '4' },
    'adapter-memory-fraction': { type: 'string' },
    device: { type: 'string', default: 'auto' },
    threads: { type: 'string' },
    'work-dir': { type: 'string' },
    out: { type: 'string', default: import.meta.dirname },
    note: { type: 'string', default: '' },
  },
});

function int(name: keyof typeof a, min: number): number {
  const n = Number(a[name]);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer >= ${min} (got ${a[name]})\n`);
    process.exit(2);
  }
  return n;
}
const N = int('adapters', 1), DISTINCT = Math.min(N, int('distinct', 1)), RANK = int('rank', 1);
const ROUNDS = int('rounds', 1), C = int('clients', 1), NEW = int('new-tokens', 1);
const DTYPE: Dtype = a.shape === 'small' ? 'F32' : 'BF16';

/** Sums of every sample of `name` in a Prometheus text page, by the value of `label` ('' when none). */
function metric(text: string, name: string, label = ''): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line[name.length] !== '{' && line[name.length] !== ' ') continue;
    const m = new RegExp(`${label}="([^"]*)"`).exec(line);
    const key = label && m ? m[1]! : '';
    out.set(key, (out.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}

const pct = (xs: number[], p: number) => quantile(xs, p / 100);

async function main(): Promise<void> {
  const work = await mkdtemp(join(a['work-dir'] ?? os.tmpdir(), 'sb-churn-'));
  let server: ServerProcess | null = null;
  try {
    let t = performance.now();
    const ck = await writeCheckpoint(join(work, 'model'), a.shape!, DTYPE, 3);
    for (let i = 0; i < N; i++) {
      const dir = join(work, 'adapters', `c${i}`);
      if (i < DISTINCT) {
        await writeAdapter(dir, ck.spec, DTYPE, RANK, 5000 + i);
      } else {
        const from = join(work, 'adapters', `c${i % DISTINCT}`);
        await mkdir(dir, { recursive: true });
        for (const f of ['adapter_model.safetensors', 'adapter_config.json']) await link(join(from, f), join(dir, f));
      }
    }
    process.stderr.write(`checkpoint ${a.shape} ${DTYPE} (${(ck.bytes / 1e9).toFixed(2)} GB) and ${N} adapters (${DISTINCT} distinct weight files) written in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);

    t = performance.now();
    server = await spawnServer([
      'serve', '--model-id', ck.dir, '--port', '0', '--device', a.device!, '--adapter-source', 'local', '--adapter-root', join(work, 'adapters'),
      '--max-active-adapters', String(N + 1), '--max-concurrent-requests', String(Math.max(128, 4 * C)),
      ...(a['adapter-memory-fraction'] ? ['--adapter-memory-fraction', a['adapter-memory-fraction']] : []),
      ...(a.threads ? ['--threads', a.threads] : []),
    ]);
    const url = server.url;
    const info = (await (await fetch(`${url}/info`)).json()) as { device_name: string };
    process.stderr.write(`server up in ${((performance.now() - t) / 1000).toFixed(1)} s on ${info.device_name}\n`);

    const before = await (await fetch(`${url}/metrics`)).text();
    // The order of a pass: every adapter once, shuffled per round so slots see no fixed pattern.
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const order: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const p = Array.from({ length: N }, (_, i) => i);
      for (let i = p.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [p[i], p[j]] = [p[j]!, p[i]!];
      }
      order.push(...p);
    }
    const lat: number[] = [];
    const errors: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: C }, async () => {
      while (next < order.length) {
        const id = `c${order[next++]!}`;
        const s = performance.now();
        try {
          const res = await fetch(`${url}/generate`, {
            method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ inputs: 'the quick brown fox jumps over', parameters: { adapter_id: id, adapter_source: 'local', max_new_tokens: NEW, ignore_eos_token: true } }),
          });
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const body = await res.text();
          if (res.status !== 200) errors.push(`${id}: HTTP ${res.status} ${body.slice(0, 200)}`);
          else lat.push(performance.now() - s);
        } catch (e) {
          errors.push(`${id}: ${(e as Error).message}`);
        }
      }
    }));
    const wallS = (performance.now() - t0) / 1000;
    const after = await (await fetch(`${url}/metrics`)).text();
    const health = await fetch(`${url}/health`);

    const delta = (name: string, label = '') => {
      const b = metric(before, name, label), x = metric(after, name, label);
      return new Map([...x].map(([k, v]) => [k, v - (b.get(k) ?? 0)]));
    };
    const loads = delta('lorax_adapter_loads_total', 'tier');
    const evictions = delta('lorax_adapter_evictions_total').get('') ?? 0;
    const failures = delta('lorax_adapter_load_failures_total').get('') ?? 0;
    const mem = metric(after, 'switchboard_adapter_memory_bytes', 'state');
    const active = metric(after, 'lorax_active_adapters').get('') ?? NaN;
    const mib = (x: number | undefined) => (x === undefined ? '-' : (x / 2 ** 20).toFixed(1));
    const rows: [string, string][] = [
      ['device', info.device_name],
      ['adapters requested (distinct ids)', `${N} (rank ${RANK}, all 7 projections, ${DISTINCT} distinct weight files)`],
      ['requests', `${order.length} from ${C} clients in ${wallS.toFixed(1)} s (${(order.length / wallS).toFixed(1)} req/s), ${NEW} new tokens each`],
      ['HTTP statuses', [...statuses].map(([k, v]) => `${k}: ${v}`).join(', ')],
      ['errors', `${errors.length}${errors.length ? ` (first: ${errors[0]})` : ''}`],
      ['adapter loads', [...loads].map(([k, v]) => `${k || 'all'}: ${v}`).join(', ') || '0'],
      ['adapter evictions (from engine slots)', String(evictions)],
      ['adapter load failures', String(failures)],
      ['adapters in slots at the end', String(active)],
      ['adapter memory in slots (MiB)', `used ${mib(mem.get('used'))} of budget ${mib(mem.get('budget'))}`],
      ['latency p50 / p99 (ms)', `${pct(lat, 50).toFixed(0)} / ${pct(lat, 99).toFixed(0)}`],
      ['/health after', String(health.status)],
    ];
    const md = [
      `# Adapter churn: ${N} adapters on ${info.device_name}`,
      '',
      a.note ? `${a.note}\n` : '',
      '| what | measured |',
      '|---|---|',
      ...rows.map(([k, v]) => `| ${k} | ${v} |`),
      '',
      `Run: \`node --import tsx bench/adapter-churn/churn.ts ${process.argv.slice(2).join(' ')}\` on ${new Date().toISOString().slice(0, 10)}.`,
      '',
    ].join('\n');
    process.stdout.write(`\n${md}`);
    await mkdir(a.out!, { recursive: true });
    const name = `results-${a.shape}-${N}`;
    await writeFile(join(a.out!, `${name}.md`), md);
    await writeFile(join(a.out!, `${name}.json`), JSON.stringify({ rows: Object.fromEntries(rows), errors: errors.slice(0, 20), latencyMs: { p50: pct(lat, 50), p99: pct(lat, 99) } }, null, 2));
    if (errors.length || health.status !== 200) process.exitCode = 1;
  } finally {
    if (server) await stopServer(server.proc);
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
