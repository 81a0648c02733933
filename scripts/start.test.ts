// `npm start` as a newcomer meets it: every curl line it prints is run (as fetch, parsed from the
// printed text) and must succeed, the tenant adapter upload included; it says what the model is,
// and each adapter visibly changes what it writes. Then the bundled demo model from outside: our
// CPU engine, through the server's API, must answer exactly what transformers' generate answered
// when scripts/train-demo-model.py trained it (demo/reference.json: greedy ids, base and adapters).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { postJson, startBackend } from '../test/helpers/backend.ts';

const ROOT = join(import.meta.dirname, '..');

/** A printed curl line as a fetch call: -X, -H, -d '<json>', --data-binary @file. */
function parseCurl(line: string): { url: string; init: RequestInit } {
  const tokens = [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!);
  assert.equal(tokens.shift(), 'curl');
  let url = '';
  let method: string | null = null;
  const headers: Record<string, string> = {};
  let body: string | Uint8Array<ArrayBuffer> | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '-X') method = tokens[++i]!;
    else if (t === '-H') {
      const h = tokens[++i]!;
      const colon = h.indexOf(':');
      headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
    } else if (t === '-d') body = tokens[++i]!;
    else if (t === '--data-binary') body = new Uint8Array(readFileSync(tokens[++i]!.replace(/^@/, '')));
    else if (/^https?:\/\//.test(t)) url = t;
    else assert.fail(`curl option the test does not know: ${t}`);
  }
  return { url, init: { method: method ?? (body !== undefined ? 'POST' : 'GET'), headers, ...(body !== undefined ? { body } : {}) } };
}

describe('npm start', () => {
  it('prints curl lines that all work, tenant adapter upload included, and says what the model is', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'start.ts'), '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (/Try it:[\s\S]*\n\n$/.test(out)) resolve();
        });
        child.once('exit', (code) => reject(new Error(`npm start exited ${code}: ${err}`)));
      });
      assert.match(out, /the bundled demo model, a tiny Llama \(\d+ layers, \d+ wide, \d+-token vocabulary\)/);
      assert.match(out, /scripts\/train-demo-model\.py on synthetic children's stories/);
      assert.match(out, /adapters \(pirate, shout\)/);
      const curls = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('curl '));
      assert.ok(curls.length >= 11, out);
      assert.ok(curls.some((l) => l.includes('/v1/adapters/my-lora/adapter_model.safetensors')), 'the upload is among them');
      const generated = new Map<string, string>();
      for (const line of curls) {
        const { url, init } = parseCurl(line);
        const res = await fetch(url, init);
        const text = await res.text();
        assert.ok(res.ok, `${line}\n-> ${res.status} ${text}`);
        if (url.endsWith('/generate')) {
          const adapter = (JSON.parse(init.body as string) as { parameters: { adapter_id?: string } }).parameters.adapter_id ?? 'base';
          generated.set(adapter, (JSON.parse(text) as { generated_text: string }).generated_text);
        }
      }
      // The base and each adapter, one printed line each; the styles show in the text itself.
      assert.deepEqual([...generated.keys()].sort(), ['base', 'my-lora', 'pirate', 'shout']);
      assert.match(generated.get('base')!, /[a-z]{3}/);
      assert.equal(generated.get('shout'), generated.get('shout')!.toUpperCase());
      assert.match(generated.get('pirate')!, /\bth'|\b(ye|matey|Arr|be|wee|jolly|mighty|growled|spied)\b/);
      assert.equal(generated.get('my-lora'), generated.get('pirate'), 'the uploaded copy of the pirate adapter writes as it does');
      assert.equal(new Set(generated.values()).size, 3, 'base, pirate and shout each write something else');
      // The uploaded adapter really served: the backend loaded it from the tenant's directory.
      assert.match(err, /adapter \S*tenants\/demo\/my-lora loaded into an engine slot/);
      // Both layers log each request, never the key or the admin token.
      assert.match(err, /\[gateway\] POST \/generate 200 tenant=demo adapter=my-lora in=\d+ out=40 [\d.]+ms/);
      assert.match(err, /\[switchboard\] POST \/generate 200 adapter=tenants\/demo\/my-lora in=\d+ out=40 [\d.]+ms/);
      const key = /API key of tenant "demo": (\S+)/.exec(out)![1]!;
      const admin = /Admin token [^:]*: (\S+)/.exec(out)![1]!;
      assert.ok(!err.includes(key) && !err.includes(admin), 'no credential in the logs');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    }
  });

  it('a gateway port in use: one line naming it, before anything loads', async () => {
    const { createServer } = await import('node:net');
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as { port: number }).port;
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'start.ts'), '--port', String(port)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise((r) => child.once('exit', r));
      assert.equal(code, 1);
      assert.equal(err, `npm start: port ${port} is already in use on 127.0.0.1: stop what holds it or pick another with --port (or PORT)\n`);
    } finally {
      held.close();
    }
  });
});

interface DemoCase {
  adapter: string | null;
  kind: 'text' | 'chat';
  prompt: string;
  rendered: string;
  prompt_ids: number[];
  greedy_ids: number[];
  text: string;
}

describe('the bundled demo model, served by the CPU engine, against transformers', () => {
  const DEMO = join(ROOT, 'demo');
  const ref = JSON.parse(readFileSync(join(DEMO, 'reference.json'), 'utf-8')) as { max_new_tokens: number; cases: DemoCase[] };

  it('greedily generates the tokens transformers generated, base and every adapter, /generate and chat', async () => {
    const server = await startBackend(['--model-id', join(DEMO, 'tiny-story-llama'), '--device', 'cpu', '--adapter-source', 'local', '--adapter-root', join(DEMO, 'adapters')]);
    try {
      assert.deepEqual([...new Set(ref.cases.map((c) => c.adapter))], [null, 'pirate', 'shout']);
      for (const c of ref.cases) {
        const where = `${c.adapter ?? 'base'}, ${c.kind} ${JSON.stringify(c.prompt)}`;
        if (c.kind === 'text') {
          const res = await postJson(`${server.url}/generate`, {
            inputs: c.prompt,
            parameters: { max_new_tokens: ref.max_new_tokens, details: true, decoder_input_details: true, ...(c.adapter ? { adapter_id: c.adapter } : {}) },
          });
          const body = (await res.json()) as { generated_text: string; details: { prefill: { id: number }[]; tokens: { id: number }[] } };
          assert.equal(res.status, 200, `${where}: ${JSON.stringify(body)}`);
          assert.deepEqual(body.details.prefill.map((t) => t.id), c.prompt_ids, `${where}: prompt ids`);
          assert.deepEqual(body.details.tokens.map((t) => t.id), c.greedy_ids, `${where}: greedy ids`);
          assert.equal(body.generated_text, c.text, where);
        } else {
          // The chat template renders as transformers rendered it, and tokenizes to the same ids.
          const tok = (await (await postJson(`${server.url}/tokenize`, { inputs: c.rendered, add_special_tokens: false })).json()) as { id: number }[];
          assert.deepEqual(tok.map((t) => t.id), c.prompt_ids, `${where}: prompt ids`);
          const res = await postJson(`${server.url}/v1/chat/completions`, {
            model: c.adapter ?? server.rt.modelName,
            messages: [{ role: 'user', content: c.prompt }],
            max_tokens: ref.max_new_tokens,
            temperature: 0,
            logprobs: true,
          });
          const body = (await res.json()) as { choices: { message: { content: string }; logprobs: { content: { token: string }[] } }[] };
          assert.equal(res.status, 200, `${where}: ${JSON.stringify(body)}`);
          assert.equal(body.choices[0]!.message.content, c.text, where);
          const eos = c.greedy_ids.length < ref.max_new_tokens ? 1 : 0;
          assert.equal(body.choices[0]!.logprobs.content.length, c.greedy_ids.length - eos, `${where}: generated tokens`);
        }
      }
    } finally {
      await server.close();
    }
  });
});
