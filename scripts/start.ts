// `npm start`: the whole stack on one machine for a first look: a model (the bundled demo model of
// demo/ by default: a tiny Llama that scripts/train-demo-model.py trained on synthetic stories, and
// its style adapters) on the CPU engine (or the GPU, where one works) behind the edge gateway, with
// an adapter root, a fresh service key, an admin token and an API key for a "demo" tenant, and curl
// lines that work as printed: the same prompt through the base and each shared adapter, a chat, a
// tenant adapter upload and its use. scripts/start.test.ts runs every printed line.
// Options: --port <gateway port, default 8080>, --model-id <dir> (default: the bundled model),
// --adapter-root <dir> (default: a temporary one, removed on exit, holding the bundled adapters).
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_ADAPTER_ROOT, DEFAULT_MODEL, startServer } from '../backend/cli.ts';
import { parseServeConfig } from '../backend/config.ts';
import { formatGatewayAccess, startGateway } from '../gateway/node.ts';

const log = (m: string) => process.stderr.write(`[switchboard] ${m}\n`);
/** The bundled demo model and its PEFT adapters, one per style (scripts/train-demo-model.py made them). */
export const DEMO_MODEL = DEFAULT_MODEL;
export const DEMO_ADAPTERS = DEFAULT_ADAPTER_ROOT;
/** The bundled adapter a tenant uploads (as its own "my-lora") in the printed example. */
const UPLOAD_EXAMPLE = 'pirate';
const PROMPT = 'Once upon a time';
const CHAT = 'Tell me a story about a cat.';

/** What the banner says about the bundled model, read from its config (so it stays true after a retrain). */
function describeDemo(adapters: string[]): string {
  const c = JSON.parse(readFileSync(path.join(DEMO_MODEL, 'config.json'), 'utf-8')) as Record<string, number>;
  return (
    `Model: the bundled demo model, a tiny Llama (${c.num_hidden_layers} layers, ${c.hidden_size} wide, ${c.vocab_size}-token vocabulary)\n` +
    `trained on a CPU in minutes by scripts/train-demo-model.py on synthetic children's stories that\n` +
    `scripts/demo_corpus.py generates. It writes short simple stories and nothing else: a demo, not an\n` +
    `assistant. Its adapters (${adapters.join(', ')}) each rewrite its style; every one is shared with all tenants.\n` +
    `Serve a real model with: npx switchboard serve --model-id <dir> (see README.md).`
  );
}

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
      'model-id': { type: 'string', default: process.env.MODEL_ID ?? DEMO_MODEL },
      'adapter-root': { type: 'string' },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: "${values.port}" is not a port number`);
  const hostname = '127.0.0.1';
  await checkPortFree(port, hostname);
  const modelDir = path.resolve(values['model-id']!);
  const isDemo = modelDir === DEMO_MODEL;
  const demoAdapters = isDemo ? readdirSync(DEMO_ADAPTERS).sort() : [];

  // Tenant uploads land under <root>/tenants/; the bundled adapters are linked in as shared ones.
  let adapterRoot = values['adapter-root'] ? path.resolve(values['adapter-root']) : null;
  const ownRoot = adapterRoot === null;
  if (!adapterRoot) {
    adapterRoot = await mkdtemp(path.join(tmpdir(), 'switchboard-adapters-'));
    for (const name of demoAdapters) await symlink(path.join(DEMO_ADAPTERS, name), path.join(adapterRoot, name));
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
  // The bundled adapters, shared with every tenant (those a given --adapter-root lacks are left out).
  const shared = demoAdapters.filter((name) => readdirSync(adapterRoot).includes(name));
  for (const name of shared) await admin('PUT', `/admin/shared-adapters/${name}`, { source: 'local', adapter_id: name });

  const model = backend.rt.modelName;
  const g = gateway.url;
  const auth = `-H 'authorization: Bearer ${key}'`;
  const json = `-H 'content-type: application/json'`;
  const prompt = isDemo ? PROMPT : 'Hello';
  const generate = (adapter: string | null) =>
    `curl ${g}/generate ${auth} ${json} -d '{"inputs": "${prompt}", "parameters": {"max_new_tokens": 40${adapter ? `, "adapter_id": "${adapter}"` : ''}}}'`;
  const chat = (adapter: string | null) =>
    `curl ${g}/v1/chat/completions ${auth} ${json} -d '{"model": "${adapter ?? model}", "messages": [{"role": "user", "content": "${isDemo ? CHAT : 'Hello!'}"}], "max_tokens": 40}'`;
  const lines = [`# generate with the base model (LoRAX API), then OpenAI's chat API`, generate(null), chat(null)];
  if (shared.length > 0) {
    lines.push(`# the same prompt through each adapter the admin shared with every tenant (one batch serves them all)`);
    for (const name of shared) lines.push(generate(name));
    lines.push(`# OpenAI clients name the adapter as the model`, chat(shared[0]!));
  }
  if (demoAdapters.includes(UPLOAD_EXAMPLE)) {
    const dir = path.join(DEMO_ADAPTERS, UPLOAD_EXAMPLE);
    lines.push(
      `# upload a PEFT LoRA adapter as tenant "demo" (private to it; here a copy of "${UPLOAD_EXAMPLE}"), list it, use it`,
      `curl -X PUT ${g}/v1/adapters/my-lora/adapter_config.json ${auth} --data-binary @${path.join(dir, 'adapter_config.json')}`,
      `curl -X PUT ${g}/v1/adapters/my-lora/adapter_model.safetensors ${auth} --data-binary @${path.join(dir, 'adapter_model.safetensors')}`,
      `curl ${g}/v1/adapters ${auth}`,
      generate('my-lora'),
    );
  }
  lines.push(
    `# admin: another tenant with its own key and limits, and its usage`,
    `curl ${g}/admin/keys -H 'authorization: Bearer ${adminToken}' ${json} -d '{"tenant": "acme", "limits": {"rpm": 60}}'`,
    `curl ${g}/admin/tenants/demo/usage -H 'authorization: Bearer ${adminToken}'`,
  );
  const what = isDemo ? describeDemo(demoAdapters) : `Model: ${modelDir}`;
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
