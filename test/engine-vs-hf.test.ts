// The CPU engine against Hugging Face transformers + PEFT (references made by
// scripts/make-fixtures.py): every model x adapter x prompt, prompt logprobs within 1e-3, top-5
// next tokens and 16 greedy tokens identical, run one by one and as ONE mixed batch, which must
// not change a single number. (test/gpu/cuda-engine.test.ts holds the CUDA engine to the same.)
import { engineVsHfSuite } from './helpers/engine-vs-hf-suite.ts';

for (const model of ['llama', 'mistral', 'qwen2']) engineVsHfSuite(model, { maxAdapters: 16, minAdapters: 4 });
