"""The output side every fixture writer shares (make-fixtures.py, make-family-fixtures.py,
make-lora-extra-fixtures.py): rounding of logprobs, log lines, and the JSON layout
with one case per line (small, diff-friendly fixtures). No side effects at import, unlike fixture_common.
"""

import json
from pathlib import Path


def log(msg):
    print(msg, flush=True)


def r7(x):
    """Round a logprob: keeps 1e-7 absolute precision."""
    return round(float(x), 7)


def sig6(x):
    return float(f"{float(x):.6g}")


def write_json(path, obj):
    """Readable but compact JSON: one top-level key per line, one element per line for lists of objects."""
    items = list(obj.items())
    lines = ["{"]
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            lines.append(f"  {json.dumps(k)}: [")
            for j, el in enumerate(v):
                sep = "," if j < len(v) - 1 else ""
                lines.append("    " + json.dumps(el, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + sep)
            lines.append("  ]" + comma)
        else:
            lines.append(
                f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'), allow_nan=False)}{comma}"
            )
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if json.loads(text) != json.loads(json.dumps(obj, allow_nan=False)):
        raise AssertionError(f"JSON round trip failed for {path}")
    Path(path).write_text(text, encoding="utf-8")
