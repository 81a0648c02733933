// `npm start`: the whole stack on one machine for a first look: a model (the bundled demo model by
// default) on the CPU engine (or the GPU, where one works) behind the edge gateway, with an adapter
// root, a fresh service key, an admin token and an API key for a "demo" tenant, and curl lines
// that work as printed: generation with and without a shared adapter, a tenant adapter upload and
// its use. scripts/start.test.ts runs every printed line.
// Options: --port <gateway port, default 8080>, --model-id <dir> (default: the bundled model),
// --adapter-root <dir> (default: a temporary one, removed on exit, holding the bundled adapters).
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL, startServer } from '../backend/cli.ts';
import { parseServeConfig } from '../backend/config.ts';
import { formatGatewayAccess, startGateway } from '../gateway/node.ts';

const log = (m: string) => process.stderr.write(`[switchboard] ${m}\n`);
const REPO = path.resolve(import.meta.dirname, '..');
/** PEFT adapters trained for the bundled model (random weights too, like the model). */
const DEMO_ADAPTERS = path.join(REPO, 'test', 'fixtures', 'adapters', 'llama');
/** The bundled adapter a tenant uploads in the printed example, and the one shared with every tenant. */
const UPLOAD_EXAMPLE = 'r8-qv';
const SHARED_EXAMPLE = 'r16-all';

/** Fails fast, before the model loads, when the gateway's port is taken (one line, naming --port). */
async function checkPortFree(port: number, hostname: string): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const s = createServer();
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `port ${port} is already in use on ${hostname}: stop what holds it or pick another with --port (or PORT)` : `cannot listen on ${hostname}:${port}: ${err.message}`)),
    );
    s.listen(port, hostname, () => s.close(() => resolve()));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      'model-id': { type: 'string', default: process.env.MODEL_ID ?? DEFAULT_MODEL },
      'adapter-root': { type: 'string' },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: "${values.port}" is not a port number`);
  const hostname = '127.0.0.1';
  await checkPortFree(port, hostname);
  const modelDir = path.resolve(values['model-id']!);
  const isDemo = modelDir === DEFAULT_MODEL;

  // Tenant uploads land under <root>/tenants/; the bundled adapters are linked in as shared ones.
  let adapterRoot = values['adapter-root'] ? path.resolve(values['adapter-root']) : null;
  const ownRoot = adapterRoot === null;
  if (!adapterRoot) {
    adapterRoot = await mkdtemp(path.join(tmpdir(), 'switchboard-adapters-'));
    if (isDemo) for (const name of readdirSync(DEMO_ADAPTERS)) if (name !== 'wrong-shapes') await symlink(path.join(DEMO_ADAPTERS, name), path.join(adapterRoot, name));
  }

  const serviceKey = randomBytes(32).toString('base64url');
  const adminToken = `adm-${randomBytes(16).toString('hex')}`;
  const backend = await startServer(
    parseServeConfig(['--model-id', modelDir, '--port', '0', '--hostname', hostname, '--adapter-source', 'local', '--adapter-root', adapterRoot], { SWITCHBOARD_SERVICE_KEY: serviceKey }),
    { progress: true, log, accessLog: true },
  );
  log(`backend on ${backend.url} (reachable only with gateway service tokens), adapter root ${adapterRoot}`);
  const gateway = await startGateway({ backends: [backend.url], serviceKey, adminToken, port, hostname, log, accessLog: (e) => process.stderr.write(`${formatGatewayAccess(e, false)}\n`) });
  const admin = async (method: string, route: string, body: unknown) => {
    const res = await fetch(`${gateway.url}${route}`, { method, headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${method} ${route} answered ${res.status}: ${await res.text()}`);
    return res.json() as Promise<Record<string, unknown>>;
  };
  const { key } = (await admin('POST', '/admin/keys', { tenant: 'demo', name: 'npm start' })) as { key: string };
  const shared = isDemo && existsSync(path.join(adapterRoot, SHARED_EXAMPLE));
  if (shared) await admin('PUT', `/admin/shared-adapters/${SHARED_EXAMPLE}`, { source: 'local', adapter_id: SHARED_EXAMPLE });

  const model = backend.rt.modelName;
  const g = gateway.url;
  const auth = `-H 'authorization: Bearer ${key}'`;
  const json = `-H 'content-type: application/json'`;
  const lines = [
    `# generate with the base model (LoRAX API), then OpenAI's chat API`,
    `curl ${g}/generate ${auth} ${json} -d '{"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 20}}'`,
    `curl ${g}/v1/chat/completions ${auth} ${json} -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'`,
  ];
  if (shared) {
    lines.push(
      `# the same prompt through "${SHARED_EXAMPLE}", an adapter the admin shared with every tenant`,
      `curl ${g}/generate ${auth} ${json} -d '{"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 20, "adapter_id": "${SHARED_EXAMPLE}"}}'`,
    );
  }
  if (isDemo) {
    const dir = path.join(DEMO_ADAPTERS, UPLOAD_EXAMPLE);
    lines.push(
      `# upload a PEFT LoRA adapter as tenant "demo" (private to it), list it, use it`,
      `curl -X PUT ${g}/v1/adapters/my-lora/adapter_config.json ${auth} --data-binary @${path.join(dir, 'adapter_config.json')}`,
      `curl -X PUT ${g}/v1/adapters/my-lora/adapter_model.safetensors ${auth} --data-binary @${path.join(dir, 'adapter_model.safetensors')}`,
      `curl ${g}/v1/adapters ${auth}`,
      `curl ${g}/generate ${auth} ${json} -d '{"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 20, "adapter_id": "my-lora"}}'`,
    );
  }
  lines.push(
    `# admin: another tenant with its own key and limits, and its usage`,
    `curl ${g}/admin/keys -H 'authorization: Bearer ${adminToken}' ${json} -d '{"tenant": "acme", "limits": {"rpm": 60}}'`,
    `curl ${g}/admin/tenants/demo/usage -H 'authorization: Bearer ${adminToken}'`,
  );
  const what = isDemo
    ? `Model: the bundled demo model, a tiny Llama (2 layers, 64 wide, 576-token vocabulary) with RANDOM weights,\n` +
      `and its adapters are random too: the output is gibberish by design. It is here to try the API, the\n` +
      `adapters and the gateway; serve a real model with: npx switchboard serve --model-id <dir> (see README.md).`
    : `Model: ${modelDir}`;
  process.stdout.write(
    `\nSwitchboard is up: gateway ${g} -> backend ${backend.url} (${backend.rt.engine.info().deviceName}).\n${what}\n` +
      `API key of tenant "demo": ${key}\nAdmin token (keys, tenants, limits, shared adapters): ${adminToken}\n\nTry it:\n${lines.map((l) => (l.startsWith('#') ? `\n  ${l}` : `  ${l}`)).join('\n')}\n\n`,
  );

  let closing = false;
  const stop = async () => {
    if (closing) process.exit(1);
    closing = true;
    await gateway.close();
    await backend.close();
    if (ownRoot) await rm(adapterRoot, { recursive: true, force: true });
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: Error) => {
  process.stderr.write(`npm start: ${err.message}\n`);
  process.exit(1);
});
