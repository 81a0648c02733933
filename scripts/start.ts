// `npm start`: the whole stack on one machine for a first look: the bundled tiny Llama on the
// CPU engine (or the GPU, where one works) behind the edge gateway, with a fresh service key, an
// admin token and an API key for a "demo" tenant, and curl lines that work as printed.
// Options: --port <gateway port, default 8080>, --model-id <dir> (default: the bundled model).
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL, startServer } from '../backend/cli.ts';
import { parseServeConfig } from '../backend/config.ts';
import { startGateway } from '../gateway/node.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: process.env.PORT ?? '8080' }, 'model-id': { type: 'string', default: process.env.MODEL_ID ?? DEFAULT_MODEL } } });
const log = (m: string) => process.stderr.write(`[switchboard] ${m}\n`);

const serviceKey = randomBytes(32).toString('base64url');
const adminToken = `adm-${randomBytes(16).toString('hex')}`;
const backend = await startServer(
  parseServeConfig(['--model-id', values['model-id']!, '--port', '0', '--hostname', '127.0.0.1', '--service-key', serviceKey, '--adapter-source', 'local'], {}),
);
log(`backend on ${backend.url} (reachable only with gateway service tokens)`);
const gateway = await startGateway({ backends: [backend.url], serviceKey, adminToken, port: Number(values.port), hostname: '127.0.0.1', log });
const res = await fetch(`${gateway.url}/admin/keys`, {
  method: 'POST',
  headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
  body: JSON.stringify({ tenant: 'demo', name: 'npm start' }),
});
if (!res.ok) throw new Error(`could not issue the demo API key: ${res.status} ${await res.text()}`);
const { key } = (await res.json()) as { key: string };
const model = backend.rt.modelName;
process.stdout.write(
  `\nSwitchboard is up: gateway ${gateway.url} -> backend ${backend.url} (${backend.rt.engine.info().deviceName}).\n` +
    `Admin token (issue keys, register adapters): ${adminToken}\n\nTry it:\n` +
    `  curl ${gateway.url}/generate -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 20}}'\n` +
    `  curl ${gateway.url}/v1/chat/completions -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'\n\n`,
);
let closing = false;
const stop = async () => {
  if (closing) process.exit(1);
  closing = true;
  await gateway.close();
  await backend.close();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
