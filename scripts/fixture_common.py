"""Shared by the fixture scripts (make-fixtures.py, make-family-fixtures.py, make-lora-extra-fixtures.py and
measure-bf16-drift.py). Importing it first fixes the process before torch loads: Python's
string hashing is randomised per process and PEFT keeps target_modules in a set, so the order
written to adapter_config.json would change between runs; the script re-runs itself with a fixed
hash seed, and never touches the network. Then what the model-side of those scripts shares: models in fp32 with eager attention,
logits of one sequence, one reference case (prompt logprobs, top-5, greedy tokens) and sizes on disk;
rounding and the JSON layout are in fixture_json.py.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from fixture_json import r7, sig6  # noqa: E402

# One thread: the references must not depend on the machine's core count; no progress bars in logs.
torch.set_num_threads(1)
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:
    pass


def load_model(model_dir):
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32)
    m.eval()
    return m


def logits_of(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()


def size_of(path):
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


N_GREEDY = 16


def reference_case(logits, ids, next_logits):
    """One case of a reference file: the prompt's logprobs, the top-5 after it and N_GREEDY greedy tokens.
    `logits` are the prompt's ([len(ids), vocab], float32); `next_logits(seq)` gives the logits after `seq`
    (a recomputation, or a cached step). Returns the case and its smallest greedy margin (top-1 minus top-2)."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    prompt_lp = [r7(lp[i - 1, ids[i]].item()) for i in range(1, len(ids))]
    top = torch.topk(logits[-1], 6)
    top5_ids = [int(i) for i in top.indices[:5].tolist()]
    vals = [float(v) for v in top.values.tolist()]
    top5 = {"ids": top5_ids, "logprobs": [r7(lp[-1, i].item()) for i in top5_ids],
            "min_gap": sig6(min(vals[i] - vals[i + 1] for i in range(5)))}
    seq = list(ids)
    step_logits = logits[-1]
    g_ids, g_lps, margins = [], [], []
    for step in range(N_GREEDY):
        if step > 0:
            step_logits = next_logits(seq)
        v, i = torch.topk(step_logits, 2)
        tok = int(i[0])
        margins.append(float(v[0] - v[1]))
        g_ids.append(tok)
        g_lps.append(r7(torch.log_softmax(step_logits.double(), dim=-1)[tok].item()))
        seq.append(tok)
    return {"prompt_logprobs": prompt_lp, "top5": top5,
            "greedy": {"ids": g_ids, "logprobs": g_lps, "min_margin": sig6(min(margins))}}, min(margins)
