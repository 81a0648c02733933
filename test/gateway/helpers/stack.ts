// A real stack for gateway end-to-end tests: real backend processes (the code `switchboard serve`
// runs, in this process, on loopback ports) with the tiny Llama fixture and a temporary adapter
// root, a real redis-server, and the gateway over real HTTP.
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../../backend/cli.ts';
import { parseServeConfig } from '../../../backend/config.ts';
import { startGateway, type RunningGateway, type StartGatewayOptions } from '../../../gateway/node.ts';

export const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');
export const MODEL_DIR = join(FIXTURES, 'models', 'llama');
export const ADAPTERS_DIR = join(FIXTURES, 'adapters', 'llama');
export const SERVICE_KEY = 'test-service-key-0123456789abcdef-0123456789';
export const ADMIN_TOKEN = 'test-admin-token';

export function requireFixtures(): void {
  if (!existsSync(join(MODEL_DIR, 'config.json')) || !existsSync(join(ADAPTERS_DIR, 'r8-qv', 'adapter_config.json'))) {
    throw new Error(`gateway e2e tests need the fixtures (${MODEL_DIR}, ${ADAPTERS_DIR}); make them with scripts/make-fixtures.py`);
  }
}

export type Backend = Awaited<ReturnType<typeof startServer>>;

/** An adapter root for one test file: the public fixture adapters (linked) and room for tenants/. */
export async function makeAdapterRoot(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'sb-gw-adapters-'));
  for (const name of readdirSync(ADAPTERS_DIR)) await symlink(join(ADAPTERS_DIR, name), join(dir, name));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function startBackend(adapterRoot: string, extra: string[] = []): Promise<Backend> {
  requireFixtures();
  const config = parseServeConfig(
    ['--model-id', MODEL_DIR, '--port', '0', '--hostname', '127.0.0.1', '--adapter-source', 'local', '--adapter-root', adapterRoot, '--service-key', SERVICE_KEY, ...extra],
    {},
  );
  return startServer(config);
}

export async function startTestGateway(o: Partial<StartGatewayOptions> & { backends: string[] }): Promise<RunningGateway> {
  return startGateway({
    serviceKey: SERVICE_KEY,
    adminToken: ADMIN_TOKEN,
    port: 0,
    hostname: '127.0.0.1',
    healthIntervalMs: 200,
    log: () => {},
    ...o,
  });
}

export async function admin(gw: { url: string }, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${gw.url}/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

export async function issueKey(gw: { url: string }, tenant: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await admin(gw, 'POST', '/keys', { tenant, ...extra });
  if (r.status !== 201) throw new Error(`issuing a key failed: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.key as string;
}

export function post(url: string, body: unknown, key: string | null, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

/** The `data:` payloads of an SSE body. */
export function sseData(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .map((b) =>
      b
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n'),
    )
    .filter((d) => d.length > 0);
}

/** Uploads one of the fixture adapters as a tenant's private adapter (both files). */
export async function uploadFixtureAdapter(gw: { url: string }, key: string, fixture: string, name: string): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
    const res = await fetch(`${gw.url}/v1/adapters/${name}/${file}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
      body: await readFile(join(ADAPTERS_DIR, fixture, file)),
    });
    if (!res.ok) throw new Error(`upload ${file} failed: ${res.status} ${await res.text()}`);
  }
}
