// `switchboard serve ...` (and `npm start`): parse options, load the model with progress on the
// terminal, serve HTTP, and shut down cleanly on SIGINT/SIGTERM.
import { serve } from '@hono/node-server';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serviceKeyFrom } from './auth.ts';
import { ConfigError, parseServeConfig, serveHelp, type ServeConfig } from './config.ts';
import { Runtime } from './runtime.ts';
import { createApp } from './server.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The model `npm start` serves: the small Llama bundled with the test fixtures. */
export const DEFAULT_MODEL = path.join(repoRoot, 'test', 'fixtures', 'models', 'llama');

function log(msg: string): void {
  process.stderr.write(`[switchboard] ${msg}\n`);
}

export async function startServer(config: ServeConfig) {
  const key = config.serviceKey ? await serviceKeyFrom(config.serviceKey) : null;
  const rt = await Runtime.start(config, log);
  const app = createApp(rt, key);
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.hostname }, () => resolve(s));
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  return {
    rt,
    port,
    url: `http://${config.hostname.includes(':') ? `[${config.hostname}]` : config.hostname}:${port}`,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await rt.close();
    },
  };
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(
      `switchboard <command>\n\nCommands:\n  serve     run the inference server (see switchboard serve --help)\n  gateway   run the edge gateway (see switchboard gateway --help)\n  start     serve the bundled demo model (backend only; npm start adds the gateway)\n`,
    );
    return;
  }
  if (cmd !== 'serve' && cmd !== 'start') throw new ConfigError(`unknown command "${cmd}" (try: switchboard serve --help)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(serveHelp());
    return;
  }
  const args = cmd === 'start' && !rest.some((a) => a.startsWith('--model-id')) && !process.env.MODEL_ID ? ['--model-id', DEFAULT_MODEL, ...rest] : rest;
  const config = parseServeConfig(args);
  const server = await startServer(config);
  log(`listening on ${server.url}`);
  const model = server.rt.modelName;
  process.stdout.write(
    `\nTry it:\n  curl ${server.url}/generate -H 'content-type: application/json' -d '{"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 20}}'\n` +
      `  curl ${server.url}/v1/chat/completions -H 'content-type: application/json' -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'\n\n`,
  );
  let closing = false;
  const stop = async (sig: string) => {
    if (closing) process.exit(1);
    closing = true;
    log(`${sig}: shutting down`);
    await server.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

// Run only as the entry point (tests import startServer).
const entry = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (entry.endsWith(path.join('bin', 'switchboard.mjs')) || entry === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: Error) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`switchboard: ${err.message}\n`);
    process.exit(1);
  });
}
