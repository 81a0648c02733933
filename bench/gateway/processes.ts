// What the gateway benchmarks (bench.ts, stream.ts, ab.ts) share about their processes: each role
// (stub upstream, gateway, Portkey, real backend) runs as its own child process of a bench script and
// prints `READY <url>` once it listens; the driver reads CPU time per process from /proc.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';

/** Starts `script --role role` under tsx in `cwd` and resolves with the URL it printed as READY. */
export function spawnRole(script: string, role: string, cwd: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', script, '--role', role], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, proc });
    });
    proc.once('exit', (code) => reject(new Error(`${role} (${cwd}) exited (${code})`)));
  });
}

/**
 * Portkey's gateway in this process, as its package starts it (no config: provider and host come per
 * request), on a free port; prints READY. `mutableUpstreamHeaders`: its streaming path appends headers
 * to the upstream fetch Response, whose headers are immutable under Node's fetch and the
 * @hono/node-server this repository installs ("TypeError: immutable", a 500 for every stream), so each
 * upstream Response is re-made with mutable headers (one object per request).
 */
export async function runPortkey(root: string, mutableUpstreamHeaders = false): Promise<void> {
  const platformFetch = globalThis.fetch;
  if (mutableUpstreamHeaders) {
    const PlatformResponse = globalThis.Response;
    globalThis.fetch = async (input, init) => {
      const r = await platformFetch(input, init);
      return new PlatformResponse(r.body, { status: r.status, statusText: r.statusText, headers: new Headers(r.headers) });
    };
  }
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  process.argv = [process.argv[0]!, 'start-server.js', `--port=${port}`, '--headless'];
  await import(join(root, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js'));
  for (;;) {
    try {
      await platformFetch(`http://127.0.0.1:${port}/`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(0));
  process.stdout.write(`READY http://127.0.0.1:${port}\n`);
}

/**
 * CPU time (user + system, µs) a process and its live child processes (a gateway's cluster workers)
 * have used so far (Linux /proc, clock ticks of 1/100 s).
 */
export function cpuMicros(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // no children file (older kernels): the process alone
  }
  return (Number(f[11]) + Number(f[12])) * 1e4 + children.reduce((s, c) => s + cpuMicros(c), 0);
}

/** redis-server's pid, from the port it listens on (ss), or null. */
export function redisPid(url: string): number | null {
  try {
    const out = spawnSync('ss', ['-Hltnp', `sport = :${new URL(url).port}`], { encoding: 'utf8' }).stdout ?? '';
    const m = /pid=(\d+)/.exec(out);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * One closed-loop window: `concurrency` loops call `op` back to back for `seconds`; returns the
 * operations per second and each process's CPU µs per operation (`client`: this process).
 */
export async function closedLoopWindow(op: () => Promise<unknown>, seconds: number, concurrency: number, pids: Record<string, number>): Promise<{ perSecond: number; cpu: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMicros(pid)]));
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await op();
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const self = process.cpuUsage(self0);
  const cpu: Record<string, number> = { client: (self.user + self.system) / done };
  for (const [k, pid] of Object.entries(pids)) cpu[k] = (cpuMicros(pid) - before[k]!) / done;
  return { perSecond: done / elapsed, cpu };
}

/** What both stubs answer as the backend would, for the gateway's health checks and its /info fetch. */
const BACKEND_ANSWERS: Record<string, CannedAnswer> = {
  '/health': { contentType: 'application/json', body: '{"status":"ok"}' },
  '/info': { contentType: 'application/json', body: '{"model_id":"/models/stub","max_total_tokens":4096,"max_input_length":4095}' },
};

/**
 * A stub upstream as the benches run it: answers the backend's /health and /info itself, hands every
 * other request to `handle` with its whole body, keeps connections alive, and prints READY.
 */
export async function runStubServer(handle: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<void> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const own = BACKEND_ANSWERS[req.url ?? ''];
      if (own) return res.writeHead(200, { 'content-type': own.contentType }).end(own.body);
      handle(req, res, Buffer.concat(chunks));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  process.stdout.write(`READY http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
}

/** One canned answer of runCannedStub. */
export interface CannedAnswer {
  contentType: string;
  body: string;
}

/**
 * An instant upstream that costs next to nothing: a raw TCP server that reads HTTP/1.1 requests
 * framed by Content-Length (what the gateway sends) and writes a prepared answer per path, so that
 * a gateway bench measures the gateway rather than node:http in the stub (~35-40 µs of CPU per
 * request, against ~10 here). /health and /info answer as runStubServer's do; an unknown path is a
 * 404, a chunked request a 501 and a line on stderr (the bench then fails loudly on the status).
 */
export async function runCannedStub(answers: Record<string, CannedAnswer>): Promise<void> {
  const all: Record<string, CannedAnswer> = { ...BACKEND_ANSWERS, ...answers };
  const wire = (status: string, a: CannedAnswer) =>
    Buffer.from(`HTTP/1.1 ${status}\r\ncontent-type: ${a.contentType}\r\ncontent-length: ${Buffer.byteLength(a.body)}\r\nconnection: keep-alive\r\n\r\n${a.body}`);
  const ready = new Map(Object.entries(all).map(([path, a]) => [path, wire('200 OK', a)]));
  const notFound = wire('404 Not Found', { contentType: 'application/json', body: '{"error":"no such path on the stub"}' });
  const chunked = wire('501 Not Implemented', { contentType: 'application/json', body: '{"error":"the stub reads Content-Length bodies only"}' });
  const server = createNetServer((sock) => {
    sock.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      const out: Buffer[] = [];
      for (;;) {
        const head = buf.indexOf('\r\n\r\n');
        if (head < 0) break;
        const text = buf.toString('latin1', 0, head);
        const sp = text.indexOf(' ');
        const path = text.slice(sp + 1, text.indexOf(' ', sp + 1)).split('?')[0]!;
        const lower = text.toLowerCase();
        if (lower.includes('\r\ntransfer-encoding:')) {
          process.stderr.write(`stub: a chunked request for ${path}; the canned stub reads Content-Length bodies only\n`);
          out.push(chunked);
          buf = Buffer.alloc(0);
          break;
        }
        const cl = /\r\ncontent-length:\s*(\d+)/.exec(lower);
        const end = head + 4 + (cl ? Number(cl[1]) : 0);
        if (buf.length < end) break;
        out.push(ready.get(path) ?? notFound);
        buf = buf.subarray(end);
      }
      if (out.length) sock.write(out.length === 1 ? out[0]! : Buffer.concat(out));
    });
    sock.on('error', () => sock.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  process.stdout.write(`READY http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
}
