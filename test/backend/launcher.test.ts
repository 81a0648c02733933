// A LoRAX user's command line and probes (issue 17): every launcher flag of LoRAX is known here
// (honoured or refused by name, from the flag or its environment variable), and the platform
// endpoints (/health with a real generation, /, /ping, /startup, /invocations, CORS, preloaded
// adapters in /info) answer as LoRAX's router does.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConfigError, parseServeConfig, serveHelp } from '../../backend/config.ts';
import { Health } from '../../backend/health.ts';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';

const ADAPTERS = new URL('../fixtures/adapters/llama', import.meta.url).pathname;

// Every flag of LoRAX's launcher (launcher/src/main.rs, struct Args), by its clap long name.
const LORAX_FLAGS = [
  'model-id', 'adapter-id', 'source', 'default-adapter-source', 'adapter-source', 'revision', 'validation-workers',
  'sharded', 'num-shard', 'quantize', 'compile', 'eager', 'compile-max-batch-size', 'compile-max-rank',
  'compile-batch-size', 'speculative-tokens', 'speculation-max-batch-size', 'preloaded-adapter-ids',
  'preloaded-adapter-source', 'predibase-api-token', 'dtype', 'trust-remote-code', 'max-concurrent-requests',
  'max-best-of', 'max-stop-sequences', 'max-input-length', 'max-total-tokens', 'waiting-served-ratio',
  'max-batch-prefill-tokens', 'max-batch-total-tokens', 'max-waiting-tokens', 'eager-prefill', 'chunked-prefill',
  'prefix-caching', 'merge-adapter-weights', 'max-active-adapters', 'adapter-cycle-time-s',
  'adapter-memory-fraction', 'hostname', 'port', 'shard-uds-path', 'master-addr', 'master-port',
  'huggingface-hub-cache', 'weights-cache-override', 'disable-custom-kernels', 'cuda-memory-fraction',
  'json-output', 'otlp-endpoint', 'cors-allow-origin', 'cors-allow-header', 'cors-expose-header',
  'cors-allow-method', 'cors-allow-credentials', 'watermark-gamma', 'watermark-delta', 'ngrok',
  'ngrok-authtoken', 'ngrok-edge', 'env', 'download-only', 'tokenizer-config-path', 'backend', 'embedding-dim',
  'disable-sgmv', 'memory-wiggle-room',
];

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseServeConfig(['--model-id', '/m', ...argv], env);
const refusedAs = (re: RegExp) => (e: unknown) => e instanceof ConfigError && re.test(e.message);

describe('LoRAX launcher flags', () => {
  it('knows every flag of LoRAX\'s launcher: none is an unknown option', () => {
    for (const flag of LORAX_FLAGS) {
      try {
        parse([`--${flag}=1`]);
      } catch (err) {
        assert.ok(err instanceof ConfigError, `--${flag}: ${String(err)}`);
        assert.doesNotMatch(err.message, /unknown option/, `--${flag} is unknown`);
        assert.match(err.message, new RegExp(`--${flag}\\b`), `the refusal of --${flag} names it: ${err.message}`);
      }
    }
    const help = serveHelp();
    for (const flag of LORAX_FLAGS) assert.match(help, new RegExp(`--${flag}\\s`), `--help lists --${flag}`);
  });

  it('refuses unknown quantization methods and sharding by name, from flags and from the environment', () => {
    assert.throws(() => parse([], { QUANTIZE: 'eetq', NUM_SHARD: '2' }), refusedAs(/^QUANTIZE "eetq" is not supported \(supported: awq, gptq, fp8, bitsandbytes, bitsandbytes-nf4, bitsandbytes-fp4\)/));
    assert.throws(() => parse(['--quantize', 'exl2']), refusedAs(/^--quantize "exl2" is not supported/));
    for (const q of ['awq', 'gptq', 'fp8', 'bitsandbytes', 'bitsandbytes-nf4', 'bitsandbytes-fp4']) assert.equal(parse(['--quantize', q]).quantize, q);
    assert.equal(parse([], { QUANTIZE: 'bitsandbytes-nf4' }).quantize, 'bitsandbytes-nf4');
    assert.throws(() => parse([], { NUM_SHARD: '2' }), refusedAs(/^NUM_SHARD 2 is not supported/));
    assert.throws(() => parse(['--num-shard', '4']), refusedAs(/^--num-shard 4 is not supported/));
    assert.throws(() => parse(['--sharded', 'true']), refusedAs(/^--sharded true is not supported/));
    assert.equal(parse(['--num-shard', '1', '--sharded', 'false']).numShard, 1);
    assert.equal(parse(['--quantize', 'none']).quantize, 'none');
    assert.throws(() => parse([], { OTLP_ENDPOINT: 'http://collector:4317' }), refusedAs(/^OTLP_ENDPOINT no OpenTelemetry exporter/));
    assert.throws(() => parse(['--trust-remote-code']), refusedAs(/^--trust-remote-code not supported/));
    assert.throws(() => parse(['--speculative-tokens', '3']), refusedAs(/^--speculative-tokens 3/));
    assert.throws(() => parse(['--source', 's3']), refusedAs(/^--source models load/));
    // Generic names other tools set are not read: torchrun's MASTER_ADDR, Docker's HOSTNAME.
    assert.equal(parse([], { MASTER_ADDR: '10.0.0.1', BACKEND: 'x', HOSTNAME: 'abc' }).hostname, '127.0.0.1');
  });

  it('honours -p, --eager/--compile, lists, the host tier, validation workers and sources', () => {
    assert.equal(parse(['-p', '3000']).port, 3000);
    assert.throws(() => parse(['-x', '1']), refusedAs(/unknown option -x/));
    assert.equal(parse(['--eager']).eager, true);
    assert.equal(parse([], { EAGER: 'true' }).eager, true);
    assert.throws(() => parse(['--eager', '--compile']), refusedAs(/--eager and --compile/));
    const c = parse(['--preloaded-adapter-ids', 'a/b', '--preloaded-adapter-ids', 'c/d,e/f', '--cors-allow-origin', 'https://x.example', '--max-cpu-loras', '7', '--validation-workers', '3', '--default-adapter-source', 'local']);
    assert.deepEqual(c.preloadedAdapterIds, ['a/b', 'c/d', 'e/f']);
    assert.deepEqual(c.corsAllowOrigin, ['https://x.example']);
    assert.equal(c.maxCpuAdapters, 7);
    assert.equal(c.validationWorkers, 3);
    assert.equal(c.defaultAdapterSource, 'local');
    assert.deepEqual(parse([], { PRELOADED_ADAPTER_IDS: 'x,y' }).preloadedAdapterIds, ['x', 'y']);
    assert.equal(parse(['--cuda-memory-fraction', '0.5']).cudaMemoryFraction, 0.5);
    assert.throws(() => parse(['--cuda-memory-fraction', '0']), refusedAs(/--cuda-memory-fraction/));
  });

  it('groups --help under LoRAX\'s headings, refused flags last', () => {
    const help = serveHelp();
    const heads = ['Model:', 'Adapters:', 'Request limits and batching:', 'Device and memory:', 'Server:', 'Hub and caches:', 'Logs and telemetry:', 'CORS:', 'LoRAX flags refused here'];
    const at = heads.map((h) => help.indexOf(h));
    assert.ok(at.every((i) => i >= 0), `headings: ${at}`);
    assert.deepEqual([...at].sort((a, b) => a - b), at);
    assert.ok(help.indexOf('--quantize') < help.indexOf('Adapters:'));
    assert.ok(help.indexOf('--ngrok ') > help.indexOf('LoRAX flags refused here'));
    assert.match(help, /-p, --port/);
  });
});

describe('Health', () => {
  it('skips the probe after a recent step, shares and caches probes, reports failures', async () => {
    let t = 100;
    let probes = 0;
    let fail = false;
    const h = new Health(
      async () => {
        probes++;
        await new Promise((r) => setTimeout(r, 5));
        if (fail) throw new Error('engine gone');
      },
      { freshS: 5, cacheS: 2, now: () => t },
    );
    h.noteStep();
    assert.deepEqual(await h.check(), { ok: true });
    assert.equal(probes, 0, 'a step 0 s ago proves the engine works');
    t += 10;
    const [a, b] = await Promise.all([h.check(), h.check()]);
    assert.equal(probes, 1, 'concurrent checks share one probe');
    assert.ok(a.ok && b.ok);
    fail = true;
    t += 1;
    assert.ok((await h.check()).ok, 'cached for cacheS');
    t += 3;
    const r = await h.check();
    assert.equal(r.ok, false);
    assert.match(r.error!, /engine gone/);
    assert.equal(probes, 2);
  });

  it('times a stuck probe out', async () => {
    const h = new Health((signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')))), { timeoutS: 0.05 });
    const r = await h.check();
    assert.equal(r.ok, false);
    assert.match(r.error!, /did not finish within 0.05 s/);
  });
});

describe('LoRAX endpoints on the CPU engine', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend([
      '--adapter-source', 'local', '--adapter-root', ADAPTERS, '--adapter-id', 'r8-qv', '--preloaded-adapter-ids', 'r4-rslora-mlp,r8-qv-b',
      '--cors-allow-origin', 'https://app.example', '--cors-expose-header', 'x-request-id', '--cors-allow-credentials', 'true',
    ]);
  });
  after(async () => srv?.close());

  it('lists preloaded adapters in /info, ready before the port served anything', async () => {
    const info = (await (await fetch(`${srv.url}/info`)).json()) as { preloaded_adapters: string[] };
    assert.deepEqual(info.preloaded_adapters, ['r8-qv', 'r4-rslora-mlp', 'r8-qv-b']);
    assert.deepEqual(srv.rt.preloadedAdapters, info.preloaded_adapters);
  });

  it('answers /health, /, /ping and /startup after a real one-token generation', async () => {
    srv.rt.health.noteFailure(); // no recent step to lean on: each answer below needs a generation
    for (const path of ['/health', '/', '/ping', '/startup']) {
      const res = await fetch(`${srv.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.deepEqual(await res.json(), { status: 'ok' });
    }
  });

  it('POST /invocations dispatches like POST / (array, or SSE with stream)', async () => {
    const body = { inputs: 'Hello', parameters: { max_new_tokens: 3, adapter_id: 'r8-qv' } };
    const res = await postJson(`${srv.url}/invocations`, body);
    assert.equal(res.status, 200);
    const out = (await res.json()) as { generated_text: string }[];
    assert.ok(Array.isArray(out) && out.length === 1 && typeof out[0]!.generated_text === 'string');
    const same = (await (await postJson(`${srv.url}/`, body)).json()) as { generated_text: string }[];
    assert.equal(same[0]!.generated_text, out[0]!.generated_text);
    const s = await postJson(`${srv.url}/invocations`, { ...body, stream: true });
    assert.match(s.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.match(await s.text(), /"generated_text"/);
  });

  it('applies the CORS flags: preflight answered, origin echoed, others get no grant', async () => {
    const pre = await fetch(`${srv.url}/generate`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.equal(pre.headers.get('access-control-allow-credentials'), 'true');
    const res = await fetch(`${srv.url}/info`, { headers: { origin: 'https://app.example' } });
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.equal(res.headers.get('access-control-expose-headers'), 'x-request-id');
    const other = await fetch(`${srv.url}/info`, { headers: { origin: 'https://evil.example' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });

  it('applies frequency/presence penalties on /generate and /v1, logit_bias on /v1', async () => {
    const gen = async (parameters: Record<string, unknown>) => {
      const res = await postJson(`${srv.url}/generate`, { inputs: 'Hello there', parameters: { max_new_tokens: 40, details: true, ...parameters } });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { details: { tokens: { id: number }[] } }).details.tokens.map((t) => t.id);
    };
    const plain = await gen({});
    assert.ok(new Set(plain).size < plain.length, 'the greedy run repeats tokens (else no penalty could change it)');
    const freq = await gen({ frequency_penalty: 2 });
    const pres = await gen({ presence_penalty: 2 });
    assert.notDeepEqual(freq, plain);
    assert.notDeepEqual(pres, plain);
    assert.ok(new Set(pres).size > new Set(plain).size, 'presence_penalty: more distinct tokens');
    const v1 = async (extra: Record<string, unknown>) => {
      const res = await postJson(`${srv.url}/v1/completions`, { model: '', prompt: 'Hello there', max_tokens: 12, temperature: 0, ...extra });
      return { status: res.status, body: (await res.json()) as { choices?: { text: string }[]; error?: { param?: string; message: string } } };
    };
    const base = await v1({});
    const penalised = await v1({ frequency_penalty: 2, presence_penalty: 1 });
    assert.equal(penalised.status, 200, JSON.stringify(penalised.body));
    const biased = await v1({ logit_bias: { [String(plain[0])]: -100 } });
    assert.equal(biased.status, 200);
    assert.notEqual(biased.body.choices![0]!.text, base.body.choices![0]!.text, 'banning the first greedy token changes the text');
    const bad = await v1({ logit_bias: { '99999999': 5 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error?.param, 'logit_bias');
    assert.match(bad.body.error!.message, /outside the vocabulary/);
    const many = await v1({ logit_bias: Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1])) });
    assert.equal(many.status, 400);
    assert.match(many.body.error!.message, /at most 300 token ids/);
  });

  it('serves an OpenAPI document generated from protocol/\'s schemas at /docs and LoRAX\'s /api-doc/openapi.json', async () => {
    const doc = (await (await fetch(`${srv.url}/docs`)).json()) as { openapi: string; paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, { properties?: Record<string, unknown> }> } }> } }>> };
    assert.equal(doc.openapi, '3.1.0');
    for (const p of ['/generate', '/generate_stream', '/', '/invocations', '/v1/completions', '/v1/chat/completions', '/health']) assert.ok(doc.paths[p], p);
    // Fields come from the zod schemas: the penalties and adapter fields of /generate's parameters.
    const params = doc.paths['/generate']!.post!.requestBody!.content['application/json']!.schema.properties.parameters!.properties!;
    for (const f of ['adapter_id', 'merged_adapters', 'frequency_penalty', 'presence_penalty', 'max_new_tokens']) assert.ok(f in params, f);
    assert.deepEqual(await (await fetch(`${srv.url}/api-doc/openapi.json`)).json(), doc);
  });

  it('exports LoRAX\'s request and batch metrics, observed', async () => {
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, (ch) => `\\${ch}`)} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    for (const h of ['lorax_request_queue_duration', 'lorax_request_validation_duration', 'lorax_request_inference_duration']) assert.ok(value(`${h}_count`) > 0, `${h} observed`);
    assert.ok(value('lorax_batch_inference_count{method="prefill"}') > 0);
    assert.ok(value('lorax_batch_inference_success{method="decode"}') > 0);
    assert.ok(Number.isFinite(value('lorax_queue_length')));
    assert.ok(Number.isFinite(value('lorax_batch_current_max_tokens')));
    assert.doesNotMatch(metrics, /lorax_queue_size/);
  });

  it('/health answers 503 in LoRAX\'s error shape when the engine cannot generate', async () => {
    srv.rt.health.noteFailure();
    srv.rt.engine.close();
    const res = await fetch(`${srv.url}/health`);
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: string; error_type: string };
    assert.equal(body.error_type, 'healthcheck');
    assert.match(body.error, /^unhealthy/);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(metrics, /^lorax_batch_inference_failure\{method="prefill"\} [1-9]/m, 'the failed probe step is counted');
  });
});
