// The CPU engine against transformers + PEFT for adapters with LoRA on lm_head and embed_tokens
// (issue 17; references by scripts/make-lora-extra-fixtures.py): llama (q/v + head; embeddings + head +
// MLP with rslora and rank/alpha patterns) and gemma2 (tied head, scaled embeddings, final
// soft-capping). Every case within 1e-3, top-5 and greedy tokens identical, and all cases (base rows
// too) as ONE mixed-adapter batch without a number changing.
// NOT YET RUN: the fixtures do not exist yet (no GPU machine could be started in the session that wrote
// this). To enable, on the GPU machine (python3 with torch, transformers 5.x, peft; addons rebuilt), from the
// repository root: `python3 scripts/make-lora-extra-fixtures.py` (writes test/fixtures/reference/
// {llama,gemma2}-lora-extra.json and test/fixtures/adapters/{llama/lora-qv-head, llama/lora-embed-head-mlp,
// gemma2/lora-embed-head-qv}, ~200 KB), commit those files, then `git mv test/engine-lora-extra-vs-hf.pending.ts
// test/engine-lora-extra-vs-hf.test.ts` and `git mv test/gpu/lora-extra-vs-hf.pending.ts
// test/gpu/lora-extra-vs-hf.test.ts`. Missing fixtures then fail them, naming the script.
import { engineVsHfSuite } from './helpers/engine-vs-hf-suite.ts';
import { LORA_EXTRA_MODELS, loadLoraExtraReference } from './helpers/lora-extra-reference.ts';

for (const model of LORA_EXTRA_MODELS) engineVsHfSuite(model, { maxAdapters: 4, minAdapters: model === 'llama' ? 2 : 1, reference: () => loadLoraExtraReference(model), label: 'LoRA on lm_head / embed_tokens' });
