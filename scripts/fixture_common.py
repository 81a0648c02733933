"""Shared by the fixture scripts that run on the GPU machine (make-family-fixtures.py and
make-lora-extra-fixtures.py). Importing it first fixes the process before torch loads: Python's
string hashing is randomised per process and PEFT keeps target_modules in a set, so the order
written to adapter_config.json would change between runs; the script re-runs itself with a fixed
hash seed, and never touches the network. Then the helpers every fixture writer needs: rounding,
the JSON layout with one case per line (small, diff-friendly fixtures), models in fp32 with eager
attention, logits of one sequence, and sizes on disk.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

# One thread: the references must not depend on the machine's core count; no progress bars in logs.
torch.set_num_threads(1)
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:
    pass


def log(msg):
    print(msg, flush=True)


def r7(x):
    return round(float(x), 7)


def sig6(x):
    return float(f"{float(x):.6g}")


def write_json(path, obj):
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            lines.append(f"  {json.dumps(k)}: [")
            for j, el in enumerate(v):
                sep = "," if j < len(v) - 1 else ""
                lines.append("    " + json.dumps(el, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + sep)
            lines.append("  ]" + comma)
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'), allow_nan=False)}{comma}")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


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
