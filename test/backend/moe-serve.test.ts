// A mixture-of-experts model served over HTTP with LoRA on its experts: the qwen2-moe fixture (shared expert,
// PEFT target_parameters adapter r4-experts) through the backend on the CPU engine, answered as transformers + PEFT
// answer; an adapter targeting a parameter Switchboard cannot adapt is a 422 naming it, not a silent no-op.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';
import { FIXTURES, loadReference } from '../helpers/hf-reference.ts';

const MODEL = 'qwen2-moe';
const ref = loadReference(MODEL);

interface Details {
  finish_reason: string;
  prefill: { id: number; logprob: number | null }[];
  tokens: { id: number }[];
}

describe('a mixture of experts with LoRA on its experts, over HTTP (CPU engine)', () => {
  let srv: TestServer;
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'sb-moe-serve-'));
    srv = await startBackend(['--model-id', join(FIXTURES, 'models', MODEL), '--device', 'cpu', '--adapter-source', 'local', '--allow-absolute-adapter-paths']);
  });
  after(async () => {
    await srv.close();
    await rm(tmp, { recursive: true, force: true });
  });

  for (const adapter of [null, 'r4-experts', 'r8-all']) {
    it(`/generate with ${adapter ?? 'the base model'} gives transformers + PEFT's tokens and prompt logprobs`, async () => {
      const prompt = 1;
      const c = ref.cases.find((x) => x.adapter === adapter && x.prompt === prompt)!;
      const res = await postJson(`${srv.url}/generate`, {
        inputs: ref.prompts[prompt]!.text,
        parameters: { max_new_tokens: 16, details: true, decoder_input_details: true, ...(adapter ? { adapter_id: join(FIXTURES, 'adapters', MODEL, adapter) } : {}) },
      });
      assert.equal(res.status, 200, await res.clone().text());
      const { details } = (await res.json()) as { details: Details };
      assert.deepEqual(details.prefill.map((t) => t.id), ref.prompts[prompt]!.ids);
      details.prefill.slice(1).forEach((t, i) => assert.ok(Math.abs(t.logprob! - c.prompt_logprobs[i]!) < 1e-3, `prefill ${i + 1}`));
      const ids = details.tokens.map((t) => t.id);
      // (the reference decodes 16 tokens whatever they are; the server stops at end of sequence)
      assert.deepEqual(ids, c.greedy.ids.slice(0, ids.length));
      assert.ok(ids.length === 16 || details.finish_reason === 'eos_token', `${ids.length} tokens, finish ${details.finish_reason}`);
    });
  }

  it('refuses, with a 422 naming it, an adapter whose target_parameters reach a parameter it cannot adapt', async () => {
    const dir = join(tmp, 'router-lora');
    await cp(join(FIXTURES, 'adapters', MODEL, 'r4-experts'), dir, { recursive: true });
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf-8')) as Record<string, unknown>;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, target_parameters: ['experts.gate_up_proj', 'experts.down_proj', 'mlp.gate.weight'] }));
    const res = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, adapter_id: dir } });
    assert.equal(res.status, 422);
    assert.match(await res.text(), /target_parameters entry \\"mlp\.gate\.weight\\" names no parameter Switchboard adapts/);
  });
});
