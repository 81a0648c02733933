// LoRA on mixture-of-experts expert weights (PEFT target_parameters, fixtures r4-experts of qwen3-moe, mixtral and
// qwen2-moe): what the families suite's match against transformers + PEFT rests on. The expert part of each adapter
// must matter (without it the answers move far past the suite's 1e-3), each expert must take its own columns of
// PEFT's interleaved lora_B (the CUDA engine's kernel for it, kernels/moe.cu moeLora, is held to the same fixtures by
// test/gpu/cuda-families.test.ts).
// Then what an adapter may target inside a MoE MLP that Switchboard cannot apply: refused by name, never left out.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { NativeAdapterSpec, NativeLoraModule } from '../native/addon.d.ts';
import { Engine } from '../native/engine.ts';
import { isExpertModule } from '../native/model-config.ts';
import { openModelDir } from '../native/model-dir.ts';
import { openPeftAdapter } from '../native/peft-adapter.ts';
import { writeSafetensors } from '../native/safetensors.ts';
import { readTensorF32 } from '../native/tensor-data.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadReference, maxAbsDiff, runCases } from './helpers/hf-reference.ts';

const ADAPTER = 'r4-experts';
/** The fixtures with an r4-experts adapter (engine-families-vs-hf.test.ts matches them against transformers + PEFT). */
const EXPERT_LORA_FAMILIES = ['qwen3-moe', 'mixtral', 'qwen2-moe'];

/** lora_B [out, r*E] with each expert's columns read as if stored contiguously (e*r + k instead of k*E + e). */
async function contiguousB(m: NativeLoraModule, experts: number): Promise<NativeLoraModule> {
  const b = await readTensorF32(m.b);
  const [out, cols] = m.b.shape as [number, number];
  const r = cols / experts;
  const moved = new Float32Array(b.length);
  for (let o = 0; o < out; o++) for (let e = 0; e < experts; e++) for (let k = 0; k < r; k++) moved[o * cols + k * experts + e] = b[o * cols + e * r + k]!;
  return { ...m, b: { name: m.b.name, dtype: 'F32', shape: [out, cols], data: moved } };
}

for (const model of EXPERT_LORA_FAMILIES) {
  describe(`${model}: LoRA on the experts (${ADAPTER})`, () => {
    test('reads one stacked LoRA per targeted expert parameter', async () => {
      const dir = await openModelDir(join(FIXTURES, 'models', model));
      const adapter = await openPeftAdapter(join(FIXTURES, 'adapters', model, ADAPTER), dir);
      const experts = adapter.spec.modules.filter((m) => isExpertModule(m.module));
      const E = dir.spec.numExperts!;
      assert.deepEqual(experts.map((m) => `${m.layer}.${m.module}`), ['0.experts.gate_up_proj', '0.experts.down_proj', '1.experts.gate_up_proj', '1.experts.down_proj']);
      for (const m of experts) {
        assert.equal(m.rank, 4);
        assert.equal(m.scale, 2);
        assert.equal(m.a.shape[0], 4 * E);
        assert.equal(m.b.shape[1], 4 * E);
      }
    });

    test('the expert LoRA matters, and each expert reads its own interleaved columns of lora_B', async () => {
      const ref = loadReference(model);
      const cases = ref.cases.filter((c) => c.adapter === ADAPTER);
      const dir = await openModelDir(join(FIXTURES, 'models', model));
      const adapter = await openPeftAdapter(join(FIXTURES, 'adapters', model, ADAPTER), dir);
      const engine = await Engine.open(join(FIXTURES, 'models', model), { device: 'cpu', numBlocks: cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 1 });
      try {
        const worst = async (spec: NativeAdapterSpec): Promise<number> => {
          await engine.loadAdapter(0, spec);
          const got = await runCases(engine, ref, new Map([[ADAPTER, 0]]), cases);
          return Math.max(...got.map((r, i) => maxAbsDiff(r.promptLogprobs, cases[i]!.prompt_logprobs)));
        };
        const exact = await worst(adapter.spec);
        assert.ok(exact < 1e-3, `as PEFT stores it: ${exact}`);
        const noExperts = await worst({ modules: adapter.spec.modules.filter((m) => !isExpertModule(m.module)) });
        assert.ok(noExperts > 1e-2, `without the expert LoRA the answers stay within ${noExperts}`);
        const misread = await worst({ modules: await Promise.all(adapter.spec.modules.map((m) => (isExpertModule(m.module) ? contiguousB(m, dir.spec.numExperts!) : m))) });
        assert.ok(misread > 1e-2, `lora_B read per expert contiguously stays within ${misread}`);
      } finally {
        engine.close();
      }
    });
  });
}

describe('LoRA inside a MoE MLP that cannot be applied is refused by name', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  /** A copy of a fixture adapter with its adapter_config.json changed, and optionally other weights. */
  async function variant(model: string, adapter: string, config: Record<string, unknown>, weights?: [string, number[]][]): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'sb-moe-lora-'));
    dirs.push(dir);
    await cp(join(FIXTURES, 'adapters', model, adapter), dir, { recursive: true });
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf-8')) as Record<string, unknown>;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, ...config }));
    if (weights) {
      await writeSafetensors(join(dir, 'adapter_model.safetensors'), weights.map(([name, shape]) => ({
        name, dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.01),
      })));
    }
    return dir;
  }
  const open = async (model: string, dir: string) => openPeftAdapter(dir, await openModelDir(join(FIXTURES, 'models', model)));

  test('a target_parameters entry that is no expert weight (a router, a norm)', async () => {
    const dir = await variant('qwen3-moe', ADAPTER, { target_parameters: ['experts.gate_up_proj', 'experts.down_proj', 'mlp.gate.weight'] });
    await assert.rejects(open('qwen3-moe', dir), /target_parameters entry "mlp\.gate\.weight" names no parameter Switchboard adapts in this model/);
  });

  test('wrappers nested deeper than target_parameters allows, or the wrong parameter for a level', async () => {
    const down = await variant('mixtral', ADAPTER, { target_parameters: ['experts.down_proj'] });
    await assert.rejects(open('mixtral', down), /layers\.0\.mlp\.experts\.base_layer: LoRA weights nested 2 deep, but adapter_config\.json's target_parameters adapt 1/);
    // (the down_proj-shaped outer wrapper alone, read as gate_up_proj: its shapes give it away)
    const gateUp = await variant('mixtral', ADAPTER, { target_parameters: ['experts.gate_up_proj'] }, [
      ['base_model.model.model.layers.0.mlp.experts.lora_A.weight', [16, 48]],
      ['base_model.model.model.layers.0.mlp.experts.lora_B.weight', [64, 16]],
    ]);
    await assert.rejects(open('mixtral', gateUp), /layers\.0\.mlp\.experts \(experts\.gate_up_proj\): lora_A is \[16, 48\] .* need \[16, 64\] and \[96, 16\]/);
    const ranks = await variant('qwen2-moe', ADAPTER, { rank_pattern: { 'experts.gate_up_proj': 2 } });
    await assert.rejects(open('qwen2-moe', ranks), /4 experts of rank 2 need \[8, 64\]/);
  });

  test('per-expert LoRA of transformers-4 checkpoints (nn.Linear experts), and the router', async () => {
    const perExpert = await variant('qwen2-moe', 'r8-all', { target_modules: ['gate_proj'] }, [
      ['base_model.model.model.layers.0.mlp.experts.0.gate_proj.lora_A.weight', [8, 64]],
      ['base_model.model.model.layers.0.mlp.experts.0.gate_proj.lora_B.weight', [32, 8]],
    ]);
    await assert.rejects(open('qwen2-moe', perExpert), /LoRA weights for model\.layers\.0\.mlp\.experts\.0\.gate_proj \(gate_proj\), which Switchboard does not serve/);
    const mixtralV4 = await variant('mixtral', 'r8-qv', { target_modules: ['w1'] }, [
      ['base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_A.weight', [8, 64]],
      ['base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_B.weight', [48, 8]],
    ]);
    await assert.rejects(open('mixtral', mixtralV4), /block_sparse_moe\.experts\.0\.w1, a Mixtral expert or router module of transformers 4, which Switchboard does not serve/);
    const gate = await variant('qwen2-moe', 'r8-all', { target_modules: ['shared_expert_gate'] }, [
      ['base_model.model.model.layers.0.mlp.shared_expert_gate.lora_A.weight', [8, 64]],
      ['base_model.model.model.layers.0.mlp.shared_expert_gate.lora_B.weight', [1, 8]],
    ]);
    await assert.rejects(open('qwen2-moe', gate), /model\.layers\.0\.mlp\.shared_expert_gate \(shared_expert_gate\), which Switchboard does not serve/);
  });

  test('Qwen2-MoE: shared-expert LoRA has the shared expert\'s shapes', async () => {
    const dir = await openModelDir(join(FIXTURES, 'models', 'qwen2-moe'));
    const { spec } = await openPeftAdapter(join(FIXTURES, 'adapters', 'qwen2-moe', 'r8-all'), dir);
    const shared = spec.modules.filter((m) => m.module === 'gate_proj' || m.module === 'up_proj' || m.module === 'down_proj');
    assert.equal(shared.length, 6);
    for (const m of shared) assert.equal(m.a.shape[1], m.module === 'down_proj' ? 48 : 64, `${m.module}: the shared expert's width`);
  });
});
