// The CPU engine against transformers + PEFT for adapters with LoRA on lm_head and embed_tokens
// (issue 17; references by scripts/make-lora-extra-fixtures.py): llama (q/v + head; embeddings + head +
// MLP with rslora and rank/alpha patterns) and gemma2 (tied head, scaled embeddings, final
// soft-capping). Every case within 1e-3, top-5 and greedy tokens identical, and all cases (base rows
// too) as ONE mixed-adapter batch without a number changing.
// Fixtures are made on any machine with torch, transformers 5.x and peft (CPU is enough):
// `python3 scripts/make-lora-extra-fixtures.py`.
import { engineVsHfSuite } from './helpers/engine-vs-hf-suite.ts';
import { LORA_EXTRA_MODELS, loadLoraExtraReference } from './helpers/lora-extra-reference.ts';

for (const model of LORA_EXTRA_MODELS) engineVsHfSuite(model, { maxAdapters: 4, minAdapters: model === 'llama' ? 2 : 1, reference: () => loadLoraExtraReference(model), label: 'LoRA on lm_head / embed_tokens' });
