#!/usr/bin/env bash
# The GPU check of steer-lens, as one command (under 5 minutes on one H100/H200).
#
# On the accelerator machine (repo root; python3 with torch + CUDA, transformers, accelerate,
# pytest; no network, no transformer-lens), carrying the git-ignored folder gpu_wheels:
#
#     bash scripts/gpu_check.sh                  # device tool: carry ["gpu_wheels"]
#
# Prepare gpu_wheels/ first, on a machine with PyPI access: bash scripts/gpu_wheels.sh
#
# Steps: (1) install the carried wheels the image lacks into a temporary folder on PYTHONPATH
# (pip --no-deps --no-index --target: the image's torch and transformers stay as they are) and
# put import-only stand-ins (scripts/gpu_stubs) for datasets / pandas / matplotlib where those
# are missing; (2) pytest tests/unit/test_cuda.py: the family tests of test_families.py on
# "cuda" in float32 and bfloat16, and device_map="auto"; a skipped test counts as a failure;
# (3) scripts/gpu_timing.py: a Llama-3.1-8B-shaped model cut to 2 blocks, random weights, bf16,
# timing capture, evaluate, sweep and steered/unsteered generate against the plain forward pass;
# (4) one JSON with device, versions, test counts and timings.
#
# Without a GPU (or with --cpu) the same steps run on the CPU at small sizes: test_families.py
# on "cpu", test_cuda.py (skipped), a width-256 float32 timing; "mode": "cpu" in the JSON.
#
# Options: --tiny   seconds, for the test suite: one family test, a width-64 timing
#          --cpu    CPU mode even where a GPU is visible
# Env: PYTHON  interpreter (default: .venv/bin/python if present, else python3)
#      OUT     output folder (the device tool sets it; default /tmp/steer-lens-gpu-check)
#      GPU_WHEELS (default gpu_wheels), GPU_CHECK_STUBS auto|all|none (default auto),
#      GPU_CHECK_K (pytest -k expression), GPU_CHECK_WORKERS (pytest-xdist workers; default 4
#      on a GPU, 0 on the CPU), GPU_CHECK_TEST_TIMEOUT / GPU_CHECK_TIMING_TIMEOUT (seconds)
# Writes $OUT/gpu_check.json, $OUT/gpu_check.log, $OUT/junit.xml, $OUT/timing.json.
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TINY=0
FORCE_CPU=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    --cpu) FORCE_CPU=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$arg'; options: --tiny, --cpu (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "gpu_check.sh: '$PYTHON' cannot import torch; set PYTHON to an interpreter that has torch" >&2
  exit 2
fi
case "${GPU_CHECK_STUBS:-auto}" in
  auto|all|none) ;;
  *) echo "gpu_check.sh: GPU_CHECK_STUBS must be auto, all or none, not '$GPU_CHECK_STUBS'" >&2; exit 2 ;;
esac
if ! [[ "${GPU_CHECK_WORKERS:-0}" =~ ^[0-9]+$ ]]; then
  echo "gpu_check.sh: GPU_CHECK_WORKERS must be a whole number (0: no pytest-xdist), not '$GPU_CHECK_WORKERS'" >&2
  exit 2
fi
OUT=${OUT:-/tmp/steer-lens-gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WHEELS=${GPU_WHEELS:-gpu_wheels}

main() {
  set -e
  local start=$SECONDS mode=cpu
  if [ "$FORCE_CPU" = 0 ] && "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    mode=gpu
  fi
  echo "== steer-lens GPU check: mode $mode, tiny $TINY, python $PYTHON, out $OUT"
  if [ "$mode" = cpu ]; then
    echo "== CPU MODE: no CUDA GPU in use; the checks run on the CPU at small sizes (not a GPU check)"
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rm -f "$OUT/gpu_check.json" "$OUT/junit.xml" "$OUT/timing.json" "$OUT/install.json"

  # 1. wheels the image lacks -> $work/site; stand-ins -> $work/stubs (last on the path)
  local t=$SECONDS
  "$PYTHON" scripts/gpu_check.py prepare --wheels "$WHEELS" --site "$work/site" --stubs-dir "$work/stubs" \
    --stubs "${GPU_CHECK_STUBS:-auto}" --out "$OUT/install.json" || true
  export PYTHONPATH="$work/site:$ROOT:$work/stubs${PYTHONPATH:+:$PYTHONPATH}"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  local import_rc=0
  "$PYTHON" -c "import transformer_lens, steer_lens; print('imports: steer_lens, transformer_lens', transformer_lens.__file__)" \
    || import_rc=$?
  local install_s=$((SECONDS - t))

  if [ "$import_rc" != 0 ]; then  # nothing below can run: report at once
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "gpu_check.sh: no wheels in $WHEELS/ and this Python lacks a package above: run" \
        "'bash scripts/gpu_wheels.sh' where PyPI is reachable, then carry [\"$WHEELS\"]" >&2
    fi
    "$PYTHON" scripts/gpu_check.py report --mode "$mode" $([ "$TINY" = 1 ] && echo --tiny) \
      --install "$OUT/install.json" --import-rc "$import_rc" --junit "$OUT/junit.xml" \
      --timing "$OUT/timing.json" --seconds "total=$((SECONDS - start))" --out "$OUT/gpu_check.json"
    return
  fi

  # 2. the tests: on a GPU the family tests on "cuda"; on the CPU the same tests on "cpu"
  local tests=(tests/unit/test_cuda.py) k=${GPU_CHECK_K:-} test_timeout=${GPU_CHECK_TEST_TIMEOUT:-170}
  [ "$mode" = cpu ] && tests=(tests/unit/test_families.py tests/unit/test_cuda.py) && test_timeout=${GPU_CHECK_TEST_TIMEOUT:-1200}
  [ "$TINY" = 1 ] && k=${k:-"test_logits_equal_hf and llama3"} && test_timeout=${GPU_CHECK_TEST_TIMEOUT:-300}
  local pytest_cmd=("$PYTHON" -m pytest -q -p no:cacheprovider -rs --junitxml="$OUT/junit.xml" "${tests[@]}")
  [ -n "$k" ] && pytest_cmd+=(-k "$k")
  # pytest-xdist workers (carried in gpu_wheels): the tests are bound by Python, not by the GPU
  local workers=${GPU_CHECK_WORKERS:-$([ "$mode" = gpu ] && [ "$TINY" = 0 ] && echo 4 || echo 0)}
  if [ "$workers" -gt 0 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
    pytest_cmd+=(-n "$workers")
  elif [ "$workers" -gt 0 ]; then
    echo "== pytest-xdist missing: the tests run in one process (slower)"
  fi
  echo "== tests: ${pytest_cmd[*]} (timeout ${test_timeout}s)"
  t=$SECONDS
  local pytest_rc=0
  timeout "$test_timeout" "${pytest_cmd[@]}" || pytest_rc=$?
  local tests_s=$((SECONDS - t))

  # 3. the timing
  local shape=paper timing_timeout=${GPU_CHECK_TIMING_TIMEOUT:-100}
  [ "$mode" = cpu ] && shape=small && timing_timeout=${GPU_CHECK_TIMING_TIMEOUT:-600}
  [ "$TINY" = 1 ] && shape=tiny
  local timing_cmd=("$PYTHON" scripts/gpu_timing.py --device "$([ "$mode" = gpu ] && echo cuda || echo cpu)"
                    --shape "$shape" --out "$OUT/timing.json")
  echo "== timing: ${timing_cmd[*]} (timeout ${timing_timeout}s)"
  t=$SECONDS
  local timing_rc=0
  timeout "$timing_timeout" "${timing_cmd[@]}" >/dev/null || timing_rc=$?  # its JSON: timing.json
  local timing_s=$((SECONDS - t))

  # 4. the report
  local tiny_flag=()
  [ "$TINY" = 1 ] && tiny_flag=(--tiny)
  "$PYTHON" scripts/gpu_check.py report --mode "$mode" "${tiny_flag[@]}" --install "$OUT/install.json" \
    --import-rc "$import_rc" --junit "$OUT/junit.xml" --pytest-rc "$pytest_rc" \
    --pytest-command "${pytest_cmd[*]}" --timing "$OUT/timing.json" --timing-rc "$timing_rc" \
    --seconds "install=$install_s" "tests=$tests_s" "timing=$timing_s" "total=$((SECONDS - start))" \
    --out "$OUT/gpu_check.json"
}

set +e
main 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
exit "$status"
