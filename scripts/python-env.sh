#!/usr/bin/env bash
# The Python the fixture scripts (scripts/make-*.py) need, on a machine without a GPU: a venv with
# CPU torch, transformers 5.x, peft and safetensors. The tiny fixture models run on the CPU in
# seconds; only scripts that time or run CUDA code need the GPU machine (which has these already).
# Usage: scripts/python-env.sh [VENV]   (default ~/.cache/sb-py), then VENV/bin/python scripts/make-....py
# Index: whatever pip is configured with (PIP_INDEX_URL / pip.conf); PyPI's CPU torch wheel is large.
set -euo pipefail
venv=${1:-$HOME/.cache/sb-py}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch 'transformers>=5,<6' 'peft>=0.21' safetensors
"$venv/bin/python" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
