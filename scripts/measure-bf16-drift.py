#!/usr/bin/env python3
"""How far transformers' own bfloat16 run lands from its float32 reference, per fixture case.

The GPU suites hold the CUDA engine's bfloat16 run to the float32 reference within a fixed bound. A mixture of
experts can exceed any such bound without a bug: bf16 rounding of a router logit near a tie sends a token to
another expert, and the prompt logprobs after it move by tenths (transformers itself does). So for each
(family, adapter, prompt) of the reference files this writes the largest |logprob| difference between
transformers + PEFT run in bfloat16 and the committed float32 reference, and test/gpu/cuda-families.test.ts
allows a bf16 case max(its fixed bound, this drift): the engine may be no farther from float32 than
transformers' own bf16 run is.

Usage (CPU torch is enough; seconds):  python3 scripts/measure-bf16-drift.py [--families mixtral,...]
Writes test/fixtures/reference/bf16-drift.json.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# First: it re-runs this script with a fixed hash seed and no network before torch loads.
import fixture_common  # noqa: E402,F401
from fixture_json import log, sig6, write_json  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "test" / "fixtures"
DEFAULT = ["qwen3", "gemma2", "gemma3", "phi3", "qwen2-yarn", "llama-dynamic", "qwen3-moe", "mixtral", "qwen2-moe"]


def bf16_prompt_logprobs(family, adapter, ids):
    # A fresh model per prompt: rotary caches that depend on the sequence length (dynamic, longrope) start clean.
    m = AutoModelForCausalLM.from_pretrained(str(FIXTURES / "models" / family), attn_implementation="eager", dtype=torch.bfloat16)
    if adapter is not None:
        m = PeftModel.from_pretrained(m, str(FIXTURES / "adapters" / family / adapter))
    m.eval()
    with torch.inference_mode():
        logits = m(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()
    lp = torch.log_softmax(logits.double(), dim=-1)
    return [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(DEFAULT))
    a = ap.parse_args()
    drift = {}
    for family in a.families.split(","):
        ref = json.loads((FIXTURES / "reference" / f"{family}.json").read_text(encoding="utf-8"))
        per = {}
        for c in ref["cases"]:
            got = bf16_prompt_logprobs(family, c["adapter"], ref["prompts"][c["prompt"]]["ids"])
            d = max(abs(x - y) for x, y in zip(got, c["prompt_logprobs"]))
            per.setdefault(c["adapter"] or "none", []).append(sig6(d))
        drift[family] = per
        log(f"{family}: " + ", ".join(f"{k} {max(v):.3f}" for k, v in per.items()))
    out = {
        "what": "max |prompt logprob, transformers + PEFT in bfloat16 - the float32 reference| per case; keys: family, adapter, prompt index",
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
        "drift": drift,
    }
    write_json(FIXTURES / "reference" / "bf16-drift.json", out)


if __name__ == "__main__":
    main()
