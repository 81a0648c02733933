// Prefix-caching benchmark (not a test): requests that share a long system prompt, each with its
// own question, against the real server (`switchboard serve`) with --prefix-caching true and
// false. Runs on the CPU engine (a random-weight Llama-shaped model with the fixture tokenizer,
// bigger than the test fixture so that prefill dominates), so absolute numbers are CPU numbers;
// the ratio between the two runs and the hit rate are what it measures.
//
//   node --import tsx bench/prefix-cache/bench.ts [--requests 24] [--concurrency 1,4] [--adapters 0,4]
//       [--system-words 300] [--new-tokens 8] [--threads 1] [--hidden 256] [--layers 4] [--note "..."]
//
// Each run: one warm-up request per adapter (it computes the system prompt once), then
// --requests requests (system prompt + a distinct question, adapters round-robin) with
// --concurrency clients in a closed loop, over /generate_stream. Reported: time to first token
// p50 / p90, request latency p50, the prompt tokens served from the cache (hits / queries from
// /metrics, warm-up excluded). Prints a table; writes bench/prefix-cache/results.md and .json.
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { writeRandomAdapter, writeRandomModel } from '../../test/helpers/random-model.ts';
import { spawnServer, type ServerProcess } from '../../test/helpers/spawn-server.ts';

const HERE = import.meta.dirname;
const ROOT = join(HERE, '..', '..');
const TOKENIZER_FROM = join(ROOT, 'test', 'fixtures', 'models', 'llama');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const list = (s: string) => s.split(',').map(Number);

const REQUESTS = Number(arg('requests', '24'));
const CONCURRENCY = list(arg('concurrency', '1,4'));
const ADAPTERS = list(arg('adapters', '0,4'));
const SYSTEM_WORDS = Number(arg('system-words', '300'));
const NEW_TOKENS = Number(arg('new-tokens', '8'));
const THREADS = arg('threads', '1');
const SHAPE = { hidden: Number(arg('hidden', '256')), intermediate: Number(arg('hidden', '256')) * 11 / 4, layers: Number(arg('layers', '4')), heads: 8, kvHeads: 4 };

const WORDS = 'bread croissant cake flour butter oven morning price euro order delivery sunday rye wheat sugar custom friendly short answer shop'.split(' ');
const SYSTEM = `System: ${Array.from({ length: SYSTEM_WORDS }, (_, i) => WORDS[(i * 7 + (i >> 3)) % WORDS.length]).join(' ')}.`;
const question = (i: number) => ` Question ${i}: is the ${WORDS[i % WORDS.length]} ready at ${7 + (i % 5)} o'clock?`;

/** A random-weight model of SHAPE with the fixture's tokenizer (vocab 576), and `n` adapters. */
async function writeModel(n: number): Promise<{ dir: string; adapters: string[] }> {
  const dir = await writeRandomModel({ ...SHAPE, vocab: 576, seed: 7 });
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf-8')) as Record<string, unknown>;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: 4096, bos_token_id: 562, eos_token_id: [563, 566] }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(TOKENIZER_FROM, f), join(dir, f));
  const adapters: string[] = [];
  for (let i = 0; i < n; i++) {
    adapters.push(await writeRandomAdapter(dir, `a${i}`, { r: 16, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], seed: 100 + i, ...SHAPE }));
  }
  return { dir, adapters };
}

function serve(model: string, caching: boolean): Promise<ServerProcess> {
  return spawnServer(
    ['serve', '--model-id', model, '--port', '0', '--threads', THREADS, '--adapter-source', 'local', '--allow-absolute-adapter-paths', '--prefix-caching', String(caching), '--waiting-served-ratio', '0', '--max-batch-total-tokens', '32768'],
    { SWITCHBOARD_SERVICE_KEY: '' },
  );
}

/** One streamed request: ms to the first token and to the end. */
async function one(url: string, inputs: string, adapter: string | null): Promise<{ ttft: number; total: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/generate_stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs, parameters: { max_new_tokens: NEW_TOKENS, ignore_eos_token: true, ...(adapter ? { adapter_id: adapter } : {}) } }),
  });
  if (res.status !== 200) throw new Error(`${res.status}: ${await res.text()}`);
  let ttft = NaN;
  const reader = res.body!.getReader();
  for (;;) {
    const { done } = await reader.read();
    if (Number.isNaN(ttft)) ttft = performance.now() - t0;
    if (done) break;
  }
  return { ttft, total: performance.now() - t0 };
}

async function counters(url: string): Promise<{ hits: number; queries: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name: string) => Number(/^(\S+) (\S+)$/m.exec(text.split('\n').find((l) => l.startsWith(`${name} `)) ?? '')?.[2] ?? NaN);
  return { hits: get('switchboard_prefix_cache_hits_total'), queries: get('switchboard_prefix_cache_queries_total') };
}

const q = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

interface Row {
  adapters: number;
  concurrency: number;
  caching: boolean;
  ttftP50: number;
  ttftP90: number;
  latencyP50: number;
  hitRate: number;
  wallS: number;
}

let promptTokens = 0;

async function run(model: string, adapterDirs: string[], nAdapters: number, concurrency: number, caching: boolean): Promise<Row> {
  const { proc, url } = await serve(model, caching);
  try {
    promptTokens ||= ((await (await fetch(`${url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: SYSTEM + question(0) }) })).json()) as unknown[]).length;
    const use = adapterDirs.slice(0, nAdapters);
    const adapterOf = (i: number) => (nAdapters === 0 ? null : use[i % use.length]!);
    for (let a = 0; a < Math.max(1, nAdapters); a++) await one(url, SYSTEM + question(10_000 + a), adapterOf(a));
    const c0 = await counters(url);
    const results: { ttft: number; total: number }[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < REQUESTS) {
          const i = next++;
          results.push(await one(url, SYSTEM + question(i), adapterOf(i)));
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    const c1 = await counters(url);
    return {
      adapters: nAdapters,
      concurrency,
      caching,
      ttftP50: q(results.map((r) => r.ttft), 0.5),
      ttftP90: q(results.map((r) => r.ttft), 0.9),
      latencyP50: q(results.map((r) => r.total), 0.5),
      hitRate: caching ? (c1.hits - c0.hits) / (c1.queries - c0.queries) : 0,
      wallS,
    };
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
}

async function main(): Promise<void> {
  const { dir, adapters } = await writeModel(Math.max(0, ...ADAPTERS));
  const rows: Row[] = [];
  try {
    for (const n of ADAPTERS) {
      for (const c of CONCURRENCY) {
        for (const caching of [false, true]) {
          const r = await run(dir, adapters, n, c, caching);
          rows.push(r);
          process.stderr.write(`${JSON.stringify(r)}\n`);
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const tokens = promptTokens;
  const header = '| adapters | clients | prefix caching | TTFT p50 (ms) | TTFT p90 (ms) | latency p50 (ms) | prompt tokens from cache | wall (s) | TTFT p50 cached / uncached |\n|---|---|---|---|---|---|---|---|---|\n';
  const lines = rows.map((r) => {
    const base = rows.find((x) => x.adapters === r.adapters && x.concurrency === r.concurrency && !x.caching)!;
    return `| ${r.adapters} | ${r.concurrency} | ${r.caching ? 'on' : 'off'} | ${r.ttftP50.toFixed(0)} | ${r.ttftP90.toFixed(0)} | ${r.latencyP50.toFixed(0)} | ${r.caching ? `${(100 * r.hitRate).toFixed(1)}%` : '-'} | ${r.wallS.toFixed(1)} | ${r.caching ? (r.ttftP50 / base.ttftP50).toFixed(2) : ''} |`;
  });
  const table = header + lines.join('\n') + '\n';
  const md =
    `# Prefix caching benchmark (CPU engine)\n\n` +
    `${os.cpus()[0]?.model ?? 'CPU'}, ${THREADS} engine thread(s), ${new Date().toISOString().slice(0, 10)}. Random-weight Llama shape ` +
    `(hidden ${SHAPE.hidden}, ${SHAPE.layers} layers, ${SHAPE.heads} heads / ${SHAPE.kvHeads} KV heads), fixture tokenizer, block size 16. ` +
    `Each request: a shared system prompt + its own question (${tokens} prompt tokens), ${NEW_TOKENS} new tokens, ${REQUESTS} requests ` +
    `after one warm-up request per adapter; adapters (0: the base model; else rank 16 on q/k/v/o) round-robin; each adapter has its own cached system prompt.\n\n` +
    table +
    (arg('note', '') ? `\n${arg('note', '')}\n` : '') +
    `\nCommand: \`node --import tsx bench/prefix-cache/bench.ts ${process.argv.slice(2).join(' ')}\`\n`;
  process.stdout.write(`\n${table}`);
  await writeFile(join(HERE, 'results.md'), md);
  await writeFile(join(HERE, 'results.json'), JSON.stringify({ shape: SHAPE, threads: THREADS, promptTokens: tokens, newTokens: NEW_TOKENS, requests: REQUESTS, rows }, null, 2) + '\n');
}

await main();
