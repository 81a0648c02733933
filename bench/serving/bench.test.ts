// Smoke test of the serving benchmark: the whole pipeline (checkpoint and adapters written, the
// real server started as its own process, closed loops, Poisson arrivals, adapter loading under
// load, /metrics read, results and plot written) at a tiny shape on the CPU engine, with the
// output's structure and sanity checked. The numbers themselves are not judged here.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = join(import.meta.dirname, '..', '..');
const BENCH = join(import.meta.dirname, 'bench.ts');

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, ['--import', 'tsx', BENCH, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => p.once('exit', (code) => resolve({ code, stdout, stderr })));
}

interface Row {
  phase: string;
  adapters: string;
  load: string;
  requests: number;
  errors: number;
  outTokS: number;
  reqS: number;
  ttftP50: number;
  ttftP99: number;
  itlP50: number;
  itlP99: number;
  decodeStepMs: number;
  engineTokS: number;
  prefixHitRate: number | null;
}

test('serving bench runs end to end at a tiny shape and reports sane figures', { timeout: 120_000 }, async () => {
  const out = await mkdtemp(join(tmpdir(), 'sb-serving-test-'));
  try {
    const r = await run([
      '--shape', 'tiny', '--adapters', '2', '--clients', '2', '--requests', '4', '--poisson-requests', '3', '--rates', '0.5,1',
      '--load-adapters', '1', '--phase-seconds', '0.8', '--new-tokens', '3,6', '--prompt-words', '4,8', '--system-words', '40', '--threads', '1', '--out', out,
    ]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const res = JSON.parse(await readFile(join(out, 'results.json'), 'utf-8')) as { device: string; rows: Row[]; targets: { name: string; value: number; met: boolean }[] };
    assert.match(res.device, /cpu/);
    assert.deepEqual(
      res.rows.map((x) => `${x.phase}/${x.adapters}`),
      ['closed loop/none', 'closed loop/2 uniform', 'closed loop/2 Zipf s=1', 'prefix caching/2 uniform, one 40-word system prompt',
        'prefix caching/2 uniform, unique prompts as long', 'poisson/2 uniform', 'poisson/2 uniform', 'adapter loading/2 warm', 'adapter loading/2 warm', 'adapter loading/2 warm'],
    );
    // The shared system prompt is served from the prefix cache after each adapter's first request; the
    // unique prompts share nothing (JSON has no NaN: a phase that looked nothing up reads null).
    const [shared, unique] = res.rows.filter((x) => x.phase === 'prefix caching');
    assert.ok(shared!.prefixHitRate! > 0.2, `shared system prompt: hit rate ${shared!.prefixHitRate}`);
    assert.ok(unique!.prefixHitRate === null || unique!.prefixHitRate < 0.05, `unique prompts: hit rate ${unique!.prefixHitRate}`);
    for (const x of res.rows) {
      const what = `${x.phase} ${x.adapters} ${x.load}`;
      assert.equal(x.errors, 0, what);
      assert.ok(x.outTokS > 0, what);
      // A loading window on a busy machine may see no request start inside it; its streams' tokens and gaps still count.
      if (x.phase !== 'adapter loading' || x.requests > 0) assert.ok(x.reqS > 0 && x.ttftP50 > 0 && x.ttftP99 >= x.ttftP50, what);
      assert.ok(x.itlP50 >= 0 && x.itlP99 >= x.itlP50, what);
      // Every phase ran engine steps, and the engine alone is never slower than serving through it.
      assert.ok(x.decodeStepMs > 0 && x.engineTokS >= x.outTokS * 0.5, what);
    }
    for (const x of res.rows.filter((y) => y.phase !== 'adapter loading')) assert.equal(x.requests, x.phase === 'poisson' ? 3 : 4);
    const md0 = await readFile(join(out, 'results.md'), 'utf-8');
    assert.match(md0, /Prefix caching \(issue 20[^\n]*one 40-word system prompt[^\n]*% of prompt tokens from the cache/);
    assert.equal(res.rows.filter((x) => x.phase === 'poisson').length, 2);
    assert.equal(res.targets.length, 3);
    for (const t of res.targets) assert.ok(Number.isFinite(t.value) && t.value > 0, t.name);

    // The printed table: a header and one line per phase, same columns throughout.
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('| '));
    const header = lines.find((l) => l.startsWith('| phase |'))!;
    const cols = header.split('|').length;
    const body = lines.slice(lines.indexOf(header) + 1, lines.indexOf(header) + 1 + res.rows.length);
    assert.equal(body.length, 10);
    for (const l of body) assert.equal(l.split('|').length, cols, l);
    assert.match(r.stdout, /\| throughput with 2 adapters \/ without \| [\d.]+ \| >= 0\.85 \| (yes|no) \|/);

    const md = await readFile(join(out, 'results.md'), 'utf-8');
    assert.ok(md.includes(header) && md.includes('## Serving targets'));
    const svg = await readFile(join(out, 'plot.svg'), 'utf-8');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal((svg.match(/<polyline /g) ?? []).length, 4);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('serving bench refuses a bad command line in one line', async () => {
  for (const [args, msg] of [
    [['--shape', 'nope'], /unknown --shape nope/],
    [['--new-tokens', '9,3'], /--new-tokens takes min,max/],
    [['--frobnicate'], /Unknown option '--frobnicate'/],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), msg);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});
