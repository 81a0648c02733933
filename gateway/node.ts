// The gateway on Node: `startGateway(options)` for code and tests, `gatewayMain(argv)` for the
// CLI (`switchboard gateway --backend <url>[,<url>...] [--port 8000] [--redis-url ...]`).
// Redis (ioredis) when --redis-url is given, else the in-process store (one instance only).
import { createAdaptorServer, type serve } from '@hono/node-server';
import type { Server } from 'node:http';
import { answerClientError } from './body.ts';
import { createWriteStream, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGateway, type GatewayOptions, type RequestUsage } from './app.ts';
import { JwtVerifier, type JwtConfig } from './auth/jwt.ts';
import { JsonOffload, type JsonOffloadOptions } from './json-offload.ts';
import { GatewayMetrics } from './metrics.ts';
import { createNodeFetch } from './node-fetch.ts';
import { Router } from './routing.ts';
import { ServiceTokenSigner } from './service-token.ts';
import { IoRedisClient } from './store/ioredis-client.ts';
import { MemoryStore } from './store/memory-store.ts';
import { RedisStore } from './store/redis-store.ts';
import type { GatewayStore, Limits } from './store/types.ts';
import { SecretBox } from './lib/crypto.ts';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { aggregateRegistry, runPrimary, tellPrimary } from './cluster.ts';
import { listenFailure } from './listen.ts';

export interface StartGatewayOptions {
  backends: string[];
  /** Shared secret (>= 32 bytes) or PEM PKCS#8 private key; the backend gets the secret / public key. */
  serviceKey: string;
  port?: number;
  hostname?: string;
  redisUrl?: string | null;
  /** Use this store instead of building one (tests). */
  store?: GatewayStore;
  adminToken?: string | null;
  jwt?: JwtConfig | null;
  /** Seals tenants' hub tokens at rest (default: derived from the service key). */
  secret?: string;
  healthIntervalMs?: number;
  loadFactor?: number;
  /** In-flight requests per replica below which it never counts as overloaded. */
  minLoad?: number;
  options?: Partial<GatewayOptions>;
  /** Serves Prometheus metrics at GET /metrics on this port (same hostname); absent: no metrics. */
  metricsPort?: number | null;
  /** JSON bodies over inlineMaxBytes (default 64 KiB) are parsed on worker threads; null: all inline. */
  jsonOffload?: (JsonOffloadOptions & { warm?: boolean }) | null;
  log?: (msg: string) => void;
  /** Told once per answered request (method, path pattern, status, time): the access log. */
  accessLog?: ((e: GatewayAccessEntry) => void) | null;
  /** A node:cluster worker: metrics (when metricsPort is set) are recorded for the primary to serve, not served here. */
  clusterWorker?: boolean;
}

export interface GatewayAccessEntry {
  method: string;
  /** The API route (`/v1/chat/completions`), or "other": never a raw path with ids in it. */
  route: string;
  status: number;
  /** For generations: the tenant, its adapter name (null: base model), tokens in and out. */
  tenant: string | null;
  adapter: string | null;
  tokensIn: number | null;
  tokensOut: number | null;
  ms: number;
  stream: boolean;
}

// Access log lines never hold the event loop: process.stderr is written synchronously when it is a
// pipe (Linux), so a reader that stops reading would stop every request. They go through an
// asynchronous stream on fd 2, at most 1 MiB unwritten; past that they are dropped and counted.
// backend/log-sink.ts does the same for the backend (the gateway never imports the backend).
function boundedLineWriter(limit = 1 << 20): (line: string) => void {
  const out = createWriteStream('', { fd: 2, autoClose: false });
  out.on('error', () => {}); // a reader that went away (EPIPE) loses the lines, never the process
  let dropped = 0;
  return (line) => {
    if (out.destroyed || out.writableLength + line.length > limit) return void dropped++;
    if (dropped > 0) out.write(`[gateway] ${dropped} log line(s) dropped: stderr was not being read\n`);
    dropped = 0;
    out.write(line);
  };
}

// The routes the access log names; anything else is "other", so a log line never carries a raw
// path (adapter names, ids) and the set of values stays small.
const LOGGED_ROUTES: [RegExp, string][] = [
  [/^\/(generate|generate_stream|tokenize|health|info|metrics)?$/, ''],
  [/^\/v1\/(chat\/completions|completions|models)$/, ''],
  [/^\/v1\/adapters(\/[^/]+)?(\/[^/]+)?$/, '/v1/adapters/:name/:file'],
  [/^\/admin\/.*/, '/admin/*'],
];

function routeOf(pathname: string): string {
  for (const [re, pattern] of LOGGED_ROUTES) {
    if (!re.test(pathname)) continue;
    if (pattern === '/v1/adapters/:name/:file') {
      const depth = pathname.split('/').length - 1;
      return depth === 2 ? '/v1/adapters' : depth === 3 ? '/v1/adapters/:name' : pattern;
    }
    return pattern || pathname;
  }
  return 'other';
}

/**
 * Wraps the app: one access log entry per request, when its answer (a stream: its end) is done,
 * with what the generation used (`usage`, filled by the app's onUsage when it settles).
 */
function withAccessLog(fetchFn: (req: Request) => Response | Promise<Response>, log: (e: GatewayAccessEntry) => void, usage: WeakMap<Request, RequestUsage>) {
  return async (req: Request): Promise<Response> => {
    const t0 = performance.now();
    const res = await fetchFn(req);
    const entry = (stream: boolean): GatewayAccessEntry => {
      const u = usage.get(req);
      return {
        method: req.method,
        route: routeOf(new URL(req.url).pathname),
        status: res.status,
        tenant: u?.tenant ?? null,
        adapter: u?.adapter ?? null,
        tokensIn: u ? u.promptTokens : null,
        tokensOut: u ? u.completionTokens : null,
        ms: performance.now() - t0,
        stream,
      };
    };
    const stream = res.headers.get('content-type')?.startsWith('text/event-stream') === true && res.body !== null;
    if (!stream) {
      log(entry(false));
      return res;
    }
    let done = false;
    const once = () => {
      if (done) return;
      done = true;
      log(entry(true));
    };
    req.signal.addEventListener('abort', once, { once: true });
    return new Response(res.body!.pipeThrough(new TransformStream({ flush: once })), res);
  };
}

/** The access log line: text, or one JSON object (--json-output). */
export function formatGatewayAccess(e: GatewayAccessEntry, json: boolean): string {
  if (json) {
    return JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'request', method: e.method, route: e.route, status: e.status, tenant: e.tenant, adapter: e.adapter, tokens_in: e.tokensIn, tokens_out: e.tokensOut, duration_ms: Number(e.ms.toFixed(3)), stream: e.stream });
  }
  const parts = [e.method, e.route, String(e.status)];
  if (e.tenant !== null) parts.push(`tenant=${e.tenant}`);
  if (e.adapter !== null) parts.push(`adapter=${e.adapter}`);
  if (e.tokensIn !== null) parts.push(`in=${e.tokensIn}`, `out=${e.tokensOut}`);
  return `[gateway] ${parts.join(' ')} ${e.ms.toFixed(1)}ms${e.stream ? ' (stream)' : ''}`;
}

export interface RunningGateway {
  url: string;
  port: number;
  /** The metrics endpoint, when metricsPort was given. */
  metricsUrl: string | null;
  store: GatewayStore;
  router: Router;
  close(): Promise<void>;
}

export async function startGateway(o: StartGatewayOptions): Promise<RunningGateway> {
  const log = o.log ?? ((msg: string) => process.stderr.write(`[gateway] ${msg}\n`));
  const signer = await ServiceTokenSigner.create(o.serviceKey);
  const jwt = o.jwt ? await JwtVerifier.create(o.jwt) : null;
  let store = o.store;
  if (!store) {
    if (o.redisUrl) {
      const client = new IoRedisClient(o.redisUrl, { log });
      if (!(await client.connect())) log(`redis at ${o.redisUrl} is not reachable yet: answering 503 until it is (fail closed)`);
      store = new RedisStore(client, { log });
    } else {
      store = new MemoryStore();
    }
  }
  const f = createNodeFetch();
  const json = o.jsonOffload === null ? null : new JsonOffload(o.jsonOffload ?? {}, log);
  if (o.jsonOffload?.warm) json?.warm();
  const metrics = o.metricsPort != null ? new GatewayMetrics() : null;
  if (metrics && o.clusterWorker) aggregateRegistry(metrics.registry);
  const accessLog = o.accessLog ?? null;
  const usage = new WeakMap<Request, RequestUsage>();
  const router = new Router(o.backends, { healthIntervalMs: o.healthIntervalMs ?? 2000, loadFactor: o.loadFactor ?? 1.25, minLoad: o.minLoad ?? 16, log, fetch: f });
  await router.checkAll();
  router.start();
  const app = createGateway({
    store,
    router,
    signer,
    secretBox: await SecretBox.fromSecret(o.secret ?? o.serviceKey),
    adminToken: o.adminToken ?? null,
    jwt,
    options: o.options ?? {},
    log,
    fetch: f,
    runtime: 'node',
    json,
    metrics,
    onUsage: accessLog ? (req, u) => usage.set(req, u) : null,
  });
  const hostname = o.hostname ?? '127.0.0.1';
  // Node reports a port in use as an 'error' event (a stack trace when unhandled): one line instead.
  const listen = (fetchFn: (req: Request) => Response | Promise<Response>, wanted: number, flag: string) =>
    new Promise<{ server: ReturnType<typeof serve>; port: number }>((resolve, reject) => {
      // Host is optional in HTTP/1.0: without it Node answers an empty 400 of its own, so the
      // request is taken with a stand-in host (routing never reads the URL's host).
      const s = createAdaptorServer({ fetch: fetchFn, hostname: 'localhost', serverOptions: { requireHostHeader: false } }) as Server;
      s.once('error', (err: NodeJS.ErrnoException) => reject(new GatewayConfigError(listenFailure(err, wanted, hostname, flag))));
      s.listen(wanted, hostname, () => {
        const addr = s.address();
        resolve({ server: s, port: typeof addr === 'object' && addr ? addr.port : wanted });
      });
    });
  const urlOf = (p: number) => `http://${hostname.includes(':') ? `[${hostname}]` : hostname}:${p}`;
  const fetchFn = accessLog ? withAccessLog(app.fetch, accessLog, usage) : app.fetch;
  let main: Awaited<ReturnType<typeof listen>>;
  try {
    main = await listen(fetchFn, o.port ?? 8000, '--port (or PORT)');
  } catch (err) {
    router.stop();
    await json?.close();
    if (!o.store) await store.close();
    throw err;
  }
  // Requests Node's parser refuses get a JSON error too, not Node's empty 400.
  main.server.on('clientError', answerClientError);
  const scrape = metrics && !o.clusterWorker
    ? await listen(async (req) => {
        if (new URL(req.url).pathname !== '/metrics' || req.method !== 'GET') return new Response('not found\n', { status: 404 });
        return new Response(await metrics.registry.metrics(), { headers: { 'content-type': metrics.registry.contentType } });
      }, o.metricsPort!, '--metrics-port').catch(async (err: unknown) => {
        router.stop();
        await json?.close();
        await new Promise<void>((r) => main.server.close(() => r()));
        if (!o.store) await store!.close();
        throw err;
      })
    : null;
  const ownStore = !o.store;
  const stop = (server: ReturnType<typeof serve>) =>
    new Promise<void>((r) => {
      server.close(() => r());
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    });
  return {
    url: urlOf(main.port),
    port: main.port,
    metricsUrl: scrape ? `${urlOf(scrape.port)}/metrics` : null,
    store,
    router,
    async close() {
      router.stop();
      await Promise.all([stop(main.server), ...(scrape ? [stop(scrape.server)] : [])]);
      await json?.close();
      if (ownStore) await store!.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

export class GatewayConfigError extends Error {}

interface Flag {
  env: string;
  help: string;
  boolean?: true;
  /** A credential: `--flag-file` / `ENV_FILE` read it from a file; on the command line it warns (ps shows it). */
  secret?: true;
}

const FLAGS: Record<string, Flag> = {
  backend: { env: 'SWITCHBOARD_BACKENDS', help: 'Backend URL(s), comma separated or repeated (required)' },
  port: { env: 'PORT', help: 'HTTP port [default: 8000]' },
  'metrics-port': { env: 'SWITCHBOARD_GATEWAY_METRICS_PORT', help: 'Serve Prometheus metrics at /metrics on this port (default: no metrics)' },
  hostname: { env: 'SWITCHBOARD_HOSTNAME', help: 'Address to listen on [default: 127.0.0.1; 0.0.0.0 for every interface]' },
  workers: { env: 'SWITCHBOARD_GATEWAY_WORKERS', help: 'Gateway processes sharing the port (node:cluster), or "auto" (one per available core); more than 1 needs --redis-url [default: 1]' },
  'redis-url': { env: 'REDIS_URL', help: 'Redis for keys, limits and usage shared by every gateway instance (default: in-process, one instance); may hold a password', secret: true },
  'service-key': { env: 'SWITCHBOARD_SERVICE_KEY', help: 'Signs service tokens: shared secret (>= 32 bytes) or PEM private key (file path or text) (required)', secret: true },
  'admin-token': { env: 'SWITCHBOARD_ADMIN_TOKEN', help: 'Bearer token of the admin API (absent: admin API disabled)', secret: true },
  'jwt-issuer': { env: 'SWITCHBOARD_JWT_ISSUER', help: 'Accept tenant JWTs from this issuer' },
  'jwt-audience': { env: 'SWITCHBOARD_JWT_AUDIENCE', help: 'Required JWT audience' },
  'jwt-jwks-url': { env: 'SWITCHBOARD_JWT_JWKS_URL', help: 'JWKS URL of the issuer' },
  'jwt-public-key': { env: 'SWITCHBOARD_JWT_PUBLIC_KEY', help: 'PEM or JWK public key (file path or text)' },
  'jwt-secret': { env: 'SWITCHBOARD_JWT_SECRET', help: 'HS256 secret of tenant JWTs', secret: true },
  'jwt-tenant-claim': { env: 'SWITCHBOARD_JWT_TENANT_CLAIM', help: 'Claim naming the tenant [default: tenant]' },
  'default-rpm': { env: 'SWITCHBOARD_DEFAULT_RPM', help: 'Requests per minute of a tenant without its own limits' },
  'default-tpm': { env: 'SWITCHBOARD_DEFAULT_TPM', help: 'Tokens per minute of a tenant without its own limits' },
  'default-concurrent-streams': { env: 'SWITCHBOARD_DEFAULT_CONCURRENT_STREAMS', help: 'Concurrent streams of a tenant without its own limits' },
  'max-body-bytes': { env: 'SWITCHBOARD_MAX_BODY_BYTES', help: 'Largest JSON request body [default: 1048576]' },
  'json-threads': { env: 'SWITCHBOARD_GATEWAY_JSON_THREADS', help: 'Worker threads that parse JSON bodies over 64 KiB off the event loop; 0: parse every body inline [default: 1 below 4 cores, else 2]' },
  'max-uploads-per-tenant': { env: 'SWITCHBOARD_MAX_UPLOADS_PER_TENANT', help: 'Adapter uploads one tenant may have in flight through this instance (429 past it) [default: 2]' },
  'health-interval-ms': { env: 'SWITCHBOARD_HEALTH_INTERVAL_MS', help: 'Backend health check period [default: 2000]' },
  'load-factor': { env: 'SWITCHBOARD_LOAD_FACTOR', help: 'Bounded-load factor of adapter affinity [default: 1.25]' },
  'min-load': { env: 'SWITCHBOARD_MIN_LOAD', help: 'In-flight requests per replica before it can count as overloaded [default: 16]' },
  'json-output': { env: 'JSON_OUTPUT', help: 'Log JSON lines (access log included) instead of text', boolean: true },
  help: { env: '', help: 'This help', boolean: true },
  version: { env: '', help: 'Print the version', boolean: true },
};

export function gatewayHelp(): string {
  const rows = Object.entries(FLAGS).map(
    ([k, f]) =>
      `  --${k.padEnd(28)} ${f.help}${f.env ? `\n  ${''.padEnd(30)} env: ${f.env}` : ''}` +
      (f.secret ? `\n  --${`${k}-file`.padEnd(28)} ... read from this file (or ${f.env}_FILE); preferred: a value given on the command line shows in \`ps\`` : ''),
  );
  return `Usage: switchboard gateway --backend <url>[,<url>...] --service-key <key> [options]\n\nOptions:\n${rows.join('\n')}\n`;
}

function fileOrText(v: string): string {
  if (v.includes('-----BEGIN') || v.trim().startsWith('{')) return v;
  try {
    return readFileSync(v, 'utf-8');
  } catch {
    return v;
  }
}

function loadFactor(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 1) throw new GatewayConfigError(`--load-factor: "${v}" must be a number >= 1`);
  return n;
}

/** A secret's file: its text without the trailing newline editors and `echo` add. */
function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf-8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new GatewayConfigError(`${what}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * `warn` is told once per secret given on the command line. A secret comes from `--x-file`,
 * `ENV_FILE`, `ENV`, or (with that warning) `--x <value>`.
 */
export function parseGatewayArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  warn: (msg: string) => void = () => {},
): StartGatewayOptions & { help: boolean; version: boolean; json: boolean; workers: number } {
  const raw: Record<string, string[]> = {};
  const secretFiles: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new GatewayConfigError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const fileOf = name.endsWith('-file') ? name.slice(0, -5) : null;
    if (fileOf && FLAGS[fileOf]?.secret) {
      const file = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (file === undefined) throw new GatewayConfigError(`--${name} needs a value`);
      secretFiles[fileOf] = readSecretFile(file, `--${name}`);
      continue;
    }
    const flag = FLAGS[name];
    if (!flag) throw new GatewayConfigError(`unknown option --${name} (see --help)`);
    const value0 = eq >= 0 ? arg.slice(eq + 1) : argv[i + 1];
    // A Redis URL is a secret only when it carries a password (redis://user:pass@host).
    if (flag.secret && (name !== 'redis-url' || /^[a-z]+:\/\/[^/]*@/i.test(value0 ?? ''))) warn(`--${name} on the command line shows in \`ps\` to every user of this machine: use --${name}-file <path> or the ${flag.env} environment variable`);
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (flag.boolean) value = 'true';
    else {
      const next = argv[++i];
      if (next === undefined) throw new GatewayConfigError(`--${name} needs a value`);
      value = next;
    }
    (raw[name] ??= []).push(value);
  }
  const get = (name: string): string | undefined => {
    const f = FLAGS[name]!;
    const fromFlag = raw[name]?.at(-1) ?? secretFiles[name];
    if (fromFlag !== undefined) return fromFlag;
    if (f.secret && env[`${f.env}_FILE`]) return readSecretFile(env[`${f.env}_FILE`]!, `${f.env}_FILE`);
    return f.env && env[f.env] ? env[f.env] : undefined;
  };
  const num = (name: string): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new GatewayConfigError(`--${name}: "${v}" is not a non-negative integer`);
    return n;
  };
  const help = raw.help !== undefined || raw.version !== undefined;
  const backends = (raw.backend ?? (get('backend') ? [get('backend')!] : []))
    .flatMap((v) => v.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  if (!help && backends.length === 0) throw new GatewayConfigError('--backend (or SWITCHBOARD_BACKENDS) is required');
  for (const b of backends) {
    try {
      new URL(b);
    } catch {
      throw new GatewayConfigError(`--backend: "${b}" is not a URL`);
    }
  }
  const serviceKey = get('service-key');
  if (!help && !serviceKey) throw new GatewayConfigError('--service-key (or SWITCHBOARD_SERVICE_KEY) is required: the backend trusts only signed requests');
  let jwt: JwtConfig | null = null;
  const issuer = get('jwt-issuer');
  if (issuer) {
    const audience = get('jwt-audience');
    if (!audience) throw new GatewayConfigError('--jwt-audience is required with --jwt-issuer');
    const jwksUrl = get('jwt-jwks-url');
    const publicKey = get('jwt-public-key');
    const secret = get('jwt-secret');
    jwt = {
      issuer,
      audience,
      ...(jwksUrl ? { jwksUrl } : {}),
      ...(publicKey ? { publicKey: fileOrText(publicKey) } : {}),
      ...(secret ? { secret } : {}),
      ...(get('jwt-tenant-claim') ? { tenantClaim: get('jwt-tenant-claim')! } : {}),
    };
  }
  const defaults: Limits = {};
  if (num('default-rpm')) defaults.rpm = num('default-rpm')!;
  if (num('default-tpm')) defaults.tpm = num('default-tpm')!;
  if (num('default-concurrent-streams')) defaults.concurrent_streams = num('default-concurrent-streams')!;
  const options: Partial<GatewayOptions> = {};
  if (Object.keys(defaults).length) options.defaultTenantLimits = defaults;
  if (num('max-body-bytes')) options.maxBodyBytes = num('max-body-bytes')!;
  const uploads = num('max-uploads-per-tenant');
  if (uploads !== undefined) {
    if (uploads < 1) throw new GatewayConfigError('--max-uploads-per-tenant: must be at least 1 (0 would refuse every upload)');
    options.maxUploadsPerTenant = uploads;
  }
  const jsonThreads = num('json-threads');
  const workersRaw = get('workers');
  let workers = 1;
  if (workersRaw !== undefined) {
    workers = workersRaw === 'auto' ? availableParallelism() : Number(workersRaw);
    if (!Number.isInteger(workers) || workers < 1) throw new GatewayConfigError(`--workers: "${workersRaw}" must be a whole number >= 1 or "auto"`);
  }
  // The in-process store lives in one process: two workers would each keep their own keys and limits.
  if (workers > 1 && !get('redis-url')) throw new GatewayConfigError(`--workers ${workersRaw}: more than one worker needs --redis-url (the in-process store is per process, so keys and limits would not be shared)`);
  return {
    workers,
    help: raw.help !== undefined,
    version: raw.version !== undefined,
    json: /^(1|true)$/i.test(get('json-output') ?? ''),
    backends,
    serviceKey: serviceKey ? fileOrText(serviceKey) : '',
    port: num('port') ?? 8000,
    metricsPort: num('metrics-port') ?? null,
    hostname: get('hostname') ?? '127.0.0.1',
    redisUrl: get('redis-url') ?? null,
    adminToken: get('admin-token') ?? null,
    jwt,
    ...(num('health-interval-ms') ? { healthIntervalMs: num('health-interval-ms')! } : {}),
    ...(get('load-factor') ? { loadFactor: loadFactor(get('load-factor')!) } : {}),
    ...(num('min-load') !== undefined ? { minLoad: num('min-load')! } : {}),
    ...(jsonThreads !== undefined ? { jsonOffload: jsonThreads === 0 ? null : { threads: jsonThreads } } : {}),
    options,
  };
}

/** `switchboard gateway ...`: runs until SIGINT/SIGTERM. `argv` excludes the word "gateway". */
export async function gatewayMain(argv: readonly string[]): Promise<void> {
  let parsed: ReturnType<typeof parseGatewayArgs>;
  try {
    parsed = parseGatewayArgs(argv, process.env, (m) => process.stderr.write(`[gateway] warning: ${m}\n`));
  } catch (err) {
    if (err instanceof GatewayConfigError) {
      process.stderr.write(`switchboard gateway: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  if (parsed.version) {
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf-8')) as { version: string };
    process.stdout.write(`switchboard ${pkg.version}\n`);
    return;
  }
  if (parsed.help) {
    process.stdout.write(gatewayHelp());
    return;
  }
  const json = parsed.json;
  const log = (msg: string) => process.stderr.write(json ? `${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg })}\n` : `[gateway] ${msg}\n`);
  const listening = (url: string, store: string, metricsUrl: string | null) =>
    log(
      `listening on ${url} -> ${parsed.backends.join(', ')} (store: ${store}${parsed.workers > 1 ? `, ${parsed.workers} workers` : ''}${parsed.adminToken ? ', admin API on' : ''}${parsed.jwt ? ', tenant JWTs on' : ''}${metricsUrl ? `, metrics at ${metricsUrl}` : ''})`,
    );
  const worker = parsed.workers > 1 && cluster.isWorker;
  if (parsed.workers > 1 && cluster.isPrimary) {
    await runPrimary({
      workers: parsed.workers,
      metricsPort: parsed.metricsPort ?? null,
      hostname: parsed.hostname ?? '127.0.0.1',
      log,
      fail: (message, config) => {
        process.stderr.write(`switchboard gateway: ${message}\n`);
        process.exitCode = config ? 2 : 1;
      },
      ready: listening,
    });
    return;
  }
  let gw: RunningGateway;
  try {
    gw = await startGateway({ ...parsed, clusterWorker: worker, jsonOffload: parsed.jsonOffload === null ? null : { ...parsed.jsonOffload, warm: true }, log, accessLog: ((line) => (e: GatewayAccessEntry) => line(`${formatGatewayAccess(e, json)}\n`))(boundedLineWriter()) });
  } catch (err) {
    // A bad key, a port in use, an unreachable Redis URL: one line, no stack trace (a worker leaves
    // the line to its primary, so N workers failing alike print it once).
    if (worker) {
      tellPrimary({ sb: 'failed', message: (err as Error).message, config: err instanceof GatewayConfigError });
      process.exitCode = 1;
      process.disconnect?.();
      return;
    }
    process.stderr.write(`switchboard gateway: ${(err as Error).message}\n`);
    process.exitCode = err instanceof GatewayConfigError ? 2 : 1;
    return;
  }
  if (worker) tellPrimary({ sb: 'ready', url: gw.url, store: gw.store.kind });
  else listening(gw.url, gw.store.kind, gw.metricsUrl);
  let closing = false;
  const stop = async (sig: string) => {
    // A second signal forces the exit; a worker ignores it, since Ctrl-C reaches it both from the
    // terminal and forwarded by its primary (which, told twice, exits, and its workers with it).
    if (closing) {
      if (worker) return;
      process.exit(1);
    }
    closing = true;
    if (!worker) log(`${sig}: shutting down`);
    await gw.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

// `node --import tsx gateway/node.ts --backend ...` works too (bin/switchboard.mjs gateway calls gatewayMain).
const entry = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (entry === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  gatewayMain(args[0] === 'gateway' ? args.slice(1) : args).catch((err: Error) => {
    process.stderr.write(`switchboard gateway: ${err.message}\n`);
    process.exit(1);
  });
}
