// The gateway benches' load generator: wrk (C, epoll), so that the client's own CPU does not crowd
// the gateway on a machine whose cores everything shares. node:http as a client spends ~60-75 µs per
// request (a quarter of the gateway's own cost); wrk spends ~10. The figure a bench reports is then
// the gateway's, not the load generator's. Falls back to node:http (bench.ts) where wrk cannot be had.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface WrkTarget {
  url: string;
  path: string;
  body: string;
  headers: Record<string, string>;
}

export interface WrkResult {
  requests: number;
  perSecond: number;
  /** Latency quantiles in ms (wrk's histogram: every request, not a sample). */
  p50: number;
  p99: number;
  /** wrk's own CPU (user + system), µs per request. */
  clientMicros: number;
}

const has = () => spawnSync('wrk', ['--version'], { encoding: 'utf8' }).error === undefined;

/**
 * True when wrk is there, installing it first (Debian's package) where this process may: the
 * benches say in one line what they install, and fall back to node:http otherwise.
 */
export function ensureWrk(say: (line: string) => void): boolean {
  if (has()) return true;
  if (process.getuid?.() !== 0 || spawnSync('apt-get', ['--version']).error) {
    say('wrk is not installed and cannot be installed here (needs root and apt-get): the client is node:http');
    return false;
  }
  say('installing wrk (apt-get install wrk) for the load generator');
  const r = spawnSync('sh', ['-c', 'apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1)']);
  if (r.status !== 0 || !has()) {
    say('apt-get install wrk failed: the client is node:http');
    return false;
  }
  return true;
}

const luaString = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

function script(t: WrkTarget): string {
  const lines = ['wrk.method = "POST"', `wrk.body = ${luaString(t.body)}`, 'wrk.headers["content-type"] = "application/json"'];
  for (const [k, v] of Object.entries(t.headers)) lines.push(`wrk.headers[${luaString(k)}] = ${luaString(v)}`);
  // One machine-readable line: latencies in µs from wrk's own histogram.
  lines.push(
    'done = function(s, lat, req)',
    '  local e = s.errors',
    '  io.write(string.format("SBWRK %d %d %d %d %d %d\\n", s.requests, s.duration, e.connect + e.read + e.write + e.timeout, e.status, lat:percentile(50), lat:percentile(99)))',
    'end',
  );
  return `${lines.join('\n')}\n`;
}

/**
 * A closed loop of `connections` keep-alive connections for `seconds`, from one wrk thread. Its CPU is
 * read from the shell that waited for it (cutime + cstime of /proc/<sh>/stat, clock ticks of 1/100 s).
 * Rejects when any request failed (a socket error, a timeout, or an answer that was not 2xx/3xx): a
 * bench figure over failed requests would measure the failure.
 */
export function runWrk(t: WrkTarget, connections: number, seconds: number): Promise<WrkResult> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-wrk-'));
  const lua = join(dir, 'request.lua');
  writeFileSync(lua, script(t));
  const url = new URL(t.path, t.url).toString();
  const cmd = `wrk -t1 -c${connections} -d${seconds}s --timeout 10s -s '${lua}' '${url}' && echo "SBCPU $(cut -d' ' -f16,17 /proc/$$/stat)"`;
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('error', (err) => {
      rmSync(dir, { recursive: true, force: true });
      reject(err);
    });
    p.once('exit', (code) => {
      rmSync(dir, { recursive: true, force: true });
      const m = /SBWRK (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(out);
      const cpu = /SBCPU (\d+) (\d+)/.exec(out);
      if (code !== 0 || !m || !cpu) return reject(new Error(`wrk failed (exit ${code}): ${(err || out).trim().split('\n').slice(-3).join(' / ')}`));
      const [requests, durationUs, errors, badStatus, p50, p99] = m.slice(1).map(Number) as [number, number, number, number, number, number];
      if (requests === 0) return reject(new Error(`wrk completed no request against ${url}`));
      if (errors || badStatus) return reject(new Error(`${errors} socket errors and ${badStatus} non-2xx answers from ${url}`));
      resolve({
        requests,
        perSecond: requests / (durationUs / 1e6),
        p50: p50 / 1000,
        p99: p99 / 1000,
        clientMicros: ((Number(cpu[1]) + Number(cpu[2])) * 1e4) / requests,
      });
    });
  });
}
