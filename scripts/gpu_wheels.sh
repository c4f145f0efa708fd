#!/usr/bin/env bash
# Download the wheels that the GPU image lacks into gpu_wheels/ (git-ignored), for scripts/gpu_check.sh.
#
# The GPU image: Python 3.12 with torch (CUDA), transformers, accelerate, safetensors, einops,
# jaxtyping, pytest and hypothesis, and no network. It has no transformer-lens. Run this on a
# machine with PyPI access and the project's .venv (scripts/setup.sh); versions are pinned to
# the ones installed there, so the GPU runs what the CPU tests ran.
#
#   bash scripts/gpu_wheels.sh           # download, print sizes, check the size bound
#   bash scripts/gpu_wheels.sh --check   # offline: only check that every Requires-Dist of the
#                                        # installed transformer-lens is accounted for below
#
# Every Requires-Dist of transformer-lens falls in one group below; a new one (after an upgrade)
# stops the script until it is placed. steer-lens itself travels as source (PYTHONPATH).
# Env: PYTHON (default .venv/bin/python), GPU_WHEELS (folder, default gpu_wheels),
#      GPU_CARRY_LIMIT_MIB (bound on wheels + working tree, default 48; the device takes 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."

# In the image already (torch, transformers and their dependencies).
IN_IMAGE="accelerate einops huggingface-hub jaxtyping numpy packaging torch tqdm transformers typing-extensions"
# Carried as wheels: imported when transformer_lens / steer_lens / the pytest config load.
# rich (transformer_lens.utilities) needs markdown-it-py and mdurl; pygments comes with pytest.
CARRIED="transformer-lens beartype rich markdown-it-py mdurl"
# Carried for gpu_check.sh itself: pytest-xdist (and execnet) spread the CUDA tests over workers.
CHECK_TOOLS="pytest-xdist execnet"
# Import-only stand-ins in scripts/gpu_stubs (wheels too large: pyarrow ~40 MB, pandas ~12 MB).
STUBBED="datasets pandas"
# Never imported by the modules that steer-lens loads (tiny models use a fast tokenizer).
# steer-lens's own requirements: matplotlib (imported by steer_lens.mi for plot_mi only) is a
# stand-in too; gguf is imported lazily by export only; tqdm, safetensors come with the image.
UNUSED="fancy-einsum typeguard transformers-stream-generator wandb protobuf sentencepiece"

PY=${PYTHON:-.venv/bin/python}
DEST=${GPU_WHEELS:-gpu_wheels}
LIMIT_MIB=${GPU_CARRY_LIMIT_MIB:-48}
CHECK_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --check) CHECK_ONLY=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown option '$arg'; use --check or no option (see --help)" >&2; exit 2 ;;
  esac
done
if ! "$PY" -c "import importlib.metadata as m; m.version('transformer-lens')" 2>/dev/null; then
  echo "gpu_wheels.sh: $PY has no transformer-lens installed; run scripts/setup.sh first or set PYTHON" >&2
  exit 1
fi

# 1. every Requires-Dist (no extras) of the installed transformer-lens is in a group above
unplaced=$("$PY" - "$IN_IMAGE $CARRIED $STUBBED $UNUSED" <<'EOF'
import re, sys
from importlib import metadata
from packaging.requirements import Requirement

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
known = {norm(n) for n in sys.argv[1].split()}
for line in metadata.requires("transformer-lens") or []:
    req = Requirement(line)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        if norm(req.name) not in known:
            print(req.name)
EOF
)
if [ -n "$unplaced" ]; then
  echo "gpu_wheels.sh: transformer-lens requires packages this script does not place: $unplaced" >&2
  echo "  add each to IN_IMAGE, CARRIED, STUBBED or UNUSED in scripts/gpu_wheels.sh" >&2
  exit 1
fi
echo "transformer-lens $("$PY" -c "import importlib.metadata as m; print(m.version('transformer-lens'))"):" \
  "every requirement placed (carried: $CARRIED; stand-ins: $STUBBED)"
[ "$CHECK_ONLY" = 1 ] && exit 0

# 2. download the carried wheels, pinned to the versions installed here, for CPython 3.12
pins=$("$PY" -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" \
  $CARRIED $CHECK_TOOLS)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading: $pins"
# pure-python wheels where they exist; binary ones as manylinux x86_64 cp312
# (the filter hides warnings about index folders a local pip config may name but lack)
"$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: -d "$tmp" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  $pins 2> >(grep -v "^WARNING: Location" >&2)
rm -rf "$DEST"
mkdir -p "$DEST"
mv "$tmp"/*.whl "$DEST"/

# 3. sizes: the device receives the working tree (tracked and untracked, not ignored) + $DEST
wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | "$PY" -c '
import os, sys
names = sys.stdin.buffer.read().split(b"\0")
print(sum(os.path.getsize(n) for n in names if n and os.path.isfile(n) and not os.path.islink(n)))')
ls -l "$DEST"
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "wheels: $(mib "$wheels"); working tree: $(mib "$tree"); together: $(mib $((wheels + tree)))" \
  "(bound $LIMIT_MIB MiB)"
if [ $((wheels + tree)) -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels.sh: wheels + working tree exceed $LIMIT_MIB MiB; the device takes 64 MiB in all." >&2
  echo "  Shrink the tree (large untracked files?) or move a carried package to the stand-ins." >&2
  exit 1
fi
echo "ready: run 'bash scripts/gpu_check.sh' on the device with carry [\"$DEST\"]"
