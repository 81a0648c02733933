// Starts a real backend (the same code `switchboard serve` runs) on a free loopback port.
import { parseServeConfig } from '../../backend/config.ts';
import { startServer, type StartOptions } from '../../backend/cli.ts';

export type TestServer = Awaited<ReturnType<typeof startServer>>;

export async function startBackend(args: string[] = [], env: NodeJS.ProcessEnv = {}, opts: StartOptions = {}): Promise<TestServer> {
  const hasModel = args.some((a) => a.startsWith('--model-id'));
  const fixtures = new URL('../fixtures/models/llama', import.meta.url).pathname;
  const config = parseServeConfig([...(hasModel ? [] : ['--model-id', fixtures]), '--port', '0', '--hostname', '127.0.0.1', ...args], env);
  return startServer(config, opts);
}

/** Reads a whole SSE response into its `data:` payloads. */
export async function readSSE(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split(/\r?\n\r?\n/)
    .map((block) => block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'))
    .filter((d) => d.length > 0);
}

export function postJson(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
}
