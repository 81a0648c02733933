// `switchboard gateway --workers N`: N gateway processes behind one port (node:cluster; the primary
// accepts and hands connections round-robin, which spreads keep-alive clients evenly). Workers share
// nothing but Redis, as separate gateway instances do (gateway/README.md, "Per-instance caches"),
// which is why more than one worker needs --redis-url. The primary serves nothing itself: it starts
// the workers, reports the first startup failure as one line, restarts a worker that dies (logged),
// forwards SIGTERM/SIGINT to every worker, and serves /metrics summed over all workers.
import cluster, { type Worker } from 'node:cluster';
import { createServer, type Server } from 'node:http';
import { AggregatorRegistry } from 'prom-client';
import { listenFailure } from './listen.ts';

/** Messages a worker sends its primary. */
export type WorkerMessage = { sb: 'ready'; url: string; store: string } | { sb: 'failed'; message: string; config: boolean };

export interface ClusterOptions {
  workers: number;
  metricsPort: number | null;
  hostname: string;
  log: (msg: string) => void;
  /** The one-line startup failure (a port in use...), told once; `config`: a usage error (exit 2). */
  fail: (message: string, config: boolean) => void;
  /** Told once every worker listens: the URL, the store's kind and the metrics URL. */
  ready: (url: string, store: string, metricsUrl: string | null) => void;
}

/** The primary. Resolves once the whole gateway has stopped (or failed to start). */
export async function runPrimary(o: ClusterOptions): Promise<void> {
  let metricsServer: Server | null = null;
  let metricsUrl: string | null = null;
  if (o.metricsPort !== null) {
    const aggregator = new AggregatorRegistry();
    metricsServer = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      aggregator.clusterMetrics().then(
        (text) => res.writeHead(200, { 'content-type': aggregator.contentType }).end(text),
        (err: Error) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${err.message}\n`),
      );
    });
    const listening = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      metricsServer!.once('error', (err: NodeJS.ErrnoException) => resolve(err));
      metricsServer!.listen(o.metricsPort!, o.hostname, () => resolve(null));
    });
    if (listening) {
      o.fail(listenFailure(listening, o.metricsPort!, o.hostname, '--metrics-port'), listening.code === 'EADDRINUSE');
      return;
    }
    const addr = metricsServer.address();
    const port = typeof addr === 'object' && addr ? addr.port : o.metricsPort;
    metricsUrl = `http://${o.hostname.includes(':') ? `[${o.hostname}]` : o.hostname}:${port}/metrics`;
  }

  let stopping = false;
  let started = false;
  const live = new Set<Worker>();
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stopAll = (sig: NodeJS.Signals) => {
    stopping = true;
    for (const w of live) if (!w.isDead()) w.process.kill(sig);
    if (live.size === 0) finish();
  };
  const finish = () => {
    if (metricsServer) metricsServer.close(() => done());
    else done();
  };

  let readyCount = 0;
  const fork = (): Worker => {
    const w = cluster.fork();
    live.add(w);
    w.on('message', (m: WorkerMessage) => {
      if (m?.sb === 'ready') {
        if (!started && ++readyCount === o.workers) {
          started = true;
          o.ready(m.url, m.store, metricsUrl);
        } else if (started) o.log(`worker ${w.process.pid} is serving again`);
      } else if (m?.sb === 'failed' && !stopping) {
        // The first worker to fail says why (each would say the same); the rest are stopped.
        o.fail(m.message, m.config);
        stopAll('SIGTERM');
      }
    });
    w.on('exit', (code, signal) => {
      live.delete(w);
      if (stopping) {
        if (live.size === 0) finish();
        return;
      }
      if (!started) {
        o.fail(`a gateway worker exited while starting (${signal ?? `code ${code}`})`, false);
        stopAll('SIGTERM');
        return;
      }
      o.log(`worker ${w.process.pid} exited (${signal ?? `code ${code}`}): starting another`);
      fork();
    });
    return w;
  };
  for (let i = 0; i < o.workers; i++) fork();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) process.exit(1);
      o.log(`${sig}: shutting down ${live.size} worker(s)`);
      stopAll(sig);
    });
  }
  await finished;
}

/** In a worker: tells the primary how startup went. */
export function tellPrimary(m: WorkerMessage): void {
  process.send?.(m);
}

/** In a worker: its metrics registry is what the primary's /metrics sums. */
export function aggregateRegistry(registry: import('prom-client').Registry): void {
  // prom-client answers the primary's requests from the listener its constructor installs.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}
