// `switchboard serve ...` (and `switchboard start`): parse options, bind the port, load the model
// with progress on the terminal, serve HTTP, and shut down cleanly on SIGINT/SIGTERM.
// bin/switchboard.mjs calls cliMain(); tests and scripts import startServer().
import { createAdaptorServer } from '@hono/node-server';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import type { Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loraxError, openaiError } from '../protocol/index.ts';
import { serviceKeyFrom } from './auth.ts';
import { ConfigError, parseServeConfig, serveHelp, type ServeConfig } from './config.ts';
import type { Runtime } from './runtime.ts';
import { formatAccess, jsonAccess, type AccessEntry } from './access-log.ts';
import { boundedLineWriter } from './log-sink.ts';
// The engine, the routes and the hub client load on first use, so that `--help`, `--version` and
// a port in use answer at once.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/**
 * What `switchboard start` serves: the bundled demo model (a tiny Llama scripts/train-demo-model.py
 * trained on synthetic stories) and its style adapters as a local adapter root.
 */
export const DEFAULT_MODEL = path.join(repoRoot, 'demo', 'tiny-story-llama');
export const DEFAULT_ADAPTER_ROOT = path.join(repoRoot, 'demo', 'adapters');

/** The package version (`switchboard --version`). */
export function version(): string {
  return (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf-8')) as { version: string }).version;
}

/** A start-up failure the operator can fix; the CLI prints its message as one line. */
export class StartupError extends Error {}

function log(msg: string): void {
  process.stderr.write(`[switchboard] ${msg}\n`);
}

/** --json-output: every log line a JSON object (what log shippers parse), else plain text. */
function logger(json: boolean): (msg: string) => void {
  return json ? (msg) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg })}\n`) : log;
}

/**
 * Listens on `port` and turns the usual failures into one line naming the port and the option
 * that sets it (Node's own 'error' event would otherwise be an unhandled stack trace).
 */
export function listen(server: Server, port: number, hostname: string, flag: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const where = `${hostname}:${port}`;
      if (err.code === 'EADDRINUSE') reject(new StartupError(`port ${port} is already in use on ${hostname}: stop what holds it or pick another with ${flag}`));
      else if (err.code === 'EACCES') reject(new StartupError(`no permission to listen on ${where}: pick a port above 1023 with ${flag}`));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') reject(new StartupError(`cannot listen on ${where}: no such local address (check --hostname)`));
      else reject(new StartupError(`cannot listen on ${where}: ${err.message}`));
    };
    server.once('error', onError);
    server.listen(port, hostname, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

export interface StartOptions {
  /** Where to say what happens while loading (default: stderr). */
  log?: (msg: string) => void;
  /** Show weight loading progress on stderr: a bar on a terminal, else plain lines (default: off). */
  progress?: boolean;
  /** One access log line per request on stderr (text, or JSON with --json-output) (default: off). */
  accessLog?: boolean;
  /** Test-only settings that are no flags (runtime.ts's RuntimeInternals). */
  internal?: import('./runtime.ts').RuntimeInternals;
}

/**
 * Binds the port first (a port in use fails in milliseconds, not after the model loaded), answers
 * 503 while the model loads, then serves the app.
 */
export async function startServer(config: ServeConfig, opts: StartOptions = {}) {
  const say = opts.log ?? logger(config.json);
  const key = config.serviceKey ? await serviceKeyFrom(config.serviceKey) : null;
  let handler: ((req: Request, env: unknown) => Response | Promise<Response>) | null = null;
  const loading = (req: Request) => {
    const body = loraxError('the model is still loading', 'overloaded');
    return new Response(JSON.stringify(new URL(req.url).pathname.startsWith('/v1/') ? openaiError(body.error, 'server_error') : body), {
      status: 503,
      headers: { 'content-type': 'application/json', 'retry-after': '5' },
    });
  };
  // Host is optional in HTTP/1.0 and some probes omit it: Node would answer an empty 400 of its
  // own, so the request is taken with a stand-in host (the URL's host is never used for routing).
  const server = createAdaptorServer({
    // env carries Node's IncomingMessage, which readJsonBody reads large bodies from directly.
    fetch: (req: Request, env: unknown) => (handler ? handler(req, env) : loading(req)),
    hostname: 'localhost',
    serverOptions: { requireHostHeader: false },
  }) as Server;
  const port = await listen(server, config.port, config.hostname, '--port (or PORT)');
  const url = `http://${config.hostname.includes(':') ? `[${config.hostname}]` : config.hostname}:${port}`;
  const stopHttp = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  let rt: Runtime;
  let createApp: typeof import('./server.ts').createApp;
  try {
    const [{ Runtime }, routes] = await Promise.all([import('./runtime.ts'), import('./server.ts')]);
    createApp = routes.createApp;
    rt = await Runtime.start(config, say, opts.progress, opts.internal);
  } catch (err) {
    await stopHttp();
    throw err;
  }
  const line = opts.accessLog ? boundedLineWriter() : null;
  const accessLog = line ? (e: AccessEntry) => line(config.json ? `${jsonAccess(e)}\n` : `[switchboard] ${formatAccess(e)}\n`) : null;
  handler = createApp(rt, key, { accessLog }).fetch;
  return {
    rt,
    port,
    url,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await rt.close();
    },
  };
}

/** LoRAX's --env: what an issue report needs about this machine, in one block. */
export async function runtimeEnv(): Promise<string> {
  const { cudaAddonBuilt, cudaUnavailableReason, loadCudaAddon } = await import('../native/engine.ts');
  const cuda = loadCudaAddon();
  const rows = [
    ['switchboard', version()],
    ['node', process.version],
    ['platform', `${process.platform} ${process.arch}`],
    ['cpus', `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`],
    ['memory', `${(totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['cuda engine', cuda ? `built, ${cuda.cudaDeviceCount()} device(s)` : cudaAddonBuilt() ? `built, unusable: ${cudaUnavailableReason()}` : 'not built (CPU engine only)'],
    ['CUDA_VISIBLE_DEVICES', process.env.CUDA_VISIBLE_DEVICES ?? '(unset)'],
  ];
  return `runtime environment:\n${rows.map(([k, v]) => `  ${k!.padEnd(22)} ${v}`).join('\n')}`;
}

const TOP_HELP = `switchboard <command>

Commands:
  serve     run the inference server (see switchboard serve --help)
  gateway   run the edge gateway (see switchboard gateway --help)
  start     serve the bundled demo model (a tiny Llama trained on synthetic children's stories,
            with its "pirate" and "shout" style adapters; backend only: npm start adds the gateway)

  --version print the version
`;

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(`switchboard ${version()}\n`);
    return;
  }
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(TOP_HELP);
    return;
  }
  if (cmd !== 'serve' && cmd !== 'start') throw new ConfigError(`unknown command "${cmd}" (try: switchboard --help)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(serveHelp());
    return;
  }
  if (rest.includes('--version')) {
    process.stdout.write(`switchboard ${version()}\n`);
    return;
  }
  const isDemo = cmd === 'start' && !rest.some((a) => a.startsWith('--model-id')) && !process.env.MODEL_ID;
  const adapterFlags = rest.some((a) => a.startsWith('--adapter-root') || a.startsWith('--adapter-source')) ? [] : ['--adapter-source', 'local', '--adapter-root', DEFAULT_ADAPTER_ROOT];
  const args = isDemo ? ['--model-id', DEFAULT_MODEL, ...adapterFlags, ...rest] : rest;
  const config = parseServeConfig(args, process.env, { warn: (m) => log(`warning: ${m}`) });
  const say = logger(config.json);
  if (config.printEnv) say(await runtimeEnv());
  if (config.downloadOnly) {
    // Fill the hub cache (for an image build or an air-gapped start later), check it opens, exit.
    const [{ resolveServedModel }, { openModelDir }] = await Promise.all([import('./hub/download.ts'), import('../native/model-dir.ts')]);
    const { dir, hub } = await resolveServedModel(config, say);
    const model = await openModelDir(dir, { quantize: config.quantize });
    say(hub ? `${hub.repoId}@${hub.revision} (commit ${hub.commit}, ${(model.weightBytes / 1e9).toFixed(2)} GB of weights) is in the cache` : `${dir} is a local directory: nothing to download`);
    process.stdout.write(`${dir}\n`);
    return;
  }
  if (isDemo) say(`serving the bundled demo model: a tiny Llama trained on synthetic children's stories (demo/README.md), with the style adapters of ${DEFAULT_ADAPTER_ROOT}; it writes short simple stories and nothing else`);
  const server = await startServer(config, { progress: !config.json, accessLog: true, log: say });
  say(`listening on ${server.url}`);
  const model = server.rt.modelName;
  const auth = config.serviceKey ? ` (send a gateway service token: this server has --service-key)` : '';
  process.stdout.write(
    `\nTry it${auth}:\n  curl ${server.url}/generate -H 'content-type: application/json' -d '{"inputs": "${isDemo ? 'Once upon a time' : 'The quick brown fox'}", "parameters": {"max_new_tokens": 20}}'\n` +
      `  curl ${server.url}/v1/chat/completions -H 'content-type: application/json' -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'\n` +
      (isDemo ? `  curl ${server.url}/generate -H 'content-type: application/json' -d '{"inputs": "Once upon a time", "parameters": {"max_new_tokens": 40, "adapter_id": "pirate"}}'\n` : '') +
      '\n',
  );
  let closing = false;
  const stop = async (sig: string) => {
    if (closing) process.exit(1);
    closing = true;
    say(`${sig}: shutting down`);
    await server.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

/** The `switchboard` command (everything but `gateway`): every failure is one line on stderr. */
export async function cliMain(argv: string[]): Promise<void> {
  try {
    await main(argv);
  } catch (err) {
    process.stderr.write(`switchboard: ${(err as Error).message}\n`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  }
}
