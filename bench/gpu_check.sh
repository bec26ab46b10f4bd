#!/usr/bin/env bash
# One prepared GPU check of the deployment path (Triton W2A8 `cuda` backend, int8 fallback, CUDA
# graphs, policy_node on the GPU), in one call of under ~9 minutes (each stage has its own timeout):
#
#   bash bench/gpu_check.sh            # on a machine with an NVIDIA GPU (sm80+ for the Triton path)
#   bash bench/gpu_check.sh --dry-run  # without a GPU: every stage at tiny sizes on the CPU
#
# Stages (each in its own process; a failure is printed and the next stage still runs; most
# important first, so a short budget cuts the least useful):
#   setup    pick a Python that imports torch + triton (prefers one that sees CUDA); only if none
#            does: python3 -m venv .venv-gpu && pip install -r requirements.txt (may fail offline)
#   compile  (no GPU only) compile every kernel variant for sm_90/sm_80 with triton's own ptxas
#   env      nvidia-smi, versions, what device/backend `auto` picks and why, the self-check
#   correct  W2A8 (every kernel kind) and the int8 fallback vs the reference, bit for bit
#   kernels  Triton W2A8 and int8 vs cuBLAS bf16 F.linear, N x K of BitVLA, M in {1, 8, 64, 626}
#   model    full-size BitVLA per chunk: Triton, int8, dense bf16; eager and CUDA graph; peak memory
#   node     policy_node over DDS on the full-size model (random packed weights), device/backend
#            auto, then int8: e2e and inference p50/p95, host RSS peak, GPU memory
#   report   gpu_check.json (all figures) and the table against the goals
#   pytest   test/test_kernels_triton.py test/test_device_path.py (compiled on the GPU)
#   sweep    alternative kernel configs per shape (for retuning), as long as time is left
# Everything is logged to $OUT/gpu_check.log (else ./gpu_check_out/), the stages' JSON lines to
# gpu_check_results.jsonl beside it (emptied at the start), the summary to gpu_check.json.

set -u -o pipefail
cd "$(dirname "$0")/.."
REPO_DIR="$PWD"
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
OUT_DIR="${OUT:-$REPO_DIR/gpu_check_out}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
rm -f "$OUT_DIR/gpu_check_results.jsonl" "$OUT_DIR/gpu_check.json"  # one run's results only

START=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}   # stop starting new stages after this many seconds
SUMMARY=()

elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME TIMEOUT_S CMD...: runs CMD with a timeout, records its status, never aborts.
run_stage() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - $(elapsed) ))
  if (( left < 20 )); then
    echo "=== stage $name: SKIPPED (time budget spent: $(elapsed)s of ${BUDGET_S}s) ==="
    SUMMARY+=("$name: skipped (budget)")
    return 0
  fi
  (( limit > left )) && limit=$left
  echo
  echo "=== stage $name (timeout ${limit}s, t=$(elapsed)s) ==="
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@"
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local what="rc=$rc"
  case $rc in
    0) what="ok" ;;
    124|137) what="TIMED OUT after ${limit}s" ;;
  esac
  echo "=== stage $name: $what (${dt}s) ==="
  SUMMARY+=("$name: $what (${dt}s)")
  return 0
}

# Prints the first interpreter that imports torch and triton, preferring one whose torch sees CUDA.
pick_python() {
  local fallback="" cand
  for cand in "${PYTHON:-}" python3 "$REPO_DIR/.venv-gpu/bin/python" "$REPO_DIR/.venv/bin/python" python; do
    [[ -n "$cand" ]] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if timeout 120 "$cand" -c "import torch, triton" >/dev/null 2>&1; then
      if timeout 120 "$cand" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
        echo "$cand"; return 0
      fi
      [[ -z "$fallback" ]] && fallback="$cand"
    fi
  done
  [[ -n "$fallback" ]] && { echo "$fallback"; return 0; }
  return 1
}

main() {
  echo "gpu_check: repo $REPO_DIR, log $LOG, $(date -u +%Y-%m-%dT%H:%M:%SZ), dry-run=$DRY_RUN"
  git -C "$REPO_DIR" log -1 --format='commit %h %s' 2>/dev/null || true
  git -C "$REPO_DIR" status --short 2>/dev/null | head -30 || true

  echo
  echo "=== stage setup ==="
  local PY
  if ! PY=$(pick_python); then
    echo "no Python here imports both torch and triton; creating .venv-gpu and installing requirements.txt"
    if python3 -m venv --system-site-packages "$REPO_DIR/.venv-gpu" \
       && timeout 300 "$REPO_DIR/.venv-gpu/bin/pip" install -q -r "$REPO_DIR/requirements.txt"; then
      PY="$REPO_DIR/.venv-gpu/bin/python"
    else
      echo "ERROR: pip install failed (this machine may have no network). Carry wheels or use a Python"
      echo "       with torch (CUDA build) and triton, e.g. PYTHON=/path/to/python bash bench/gpu_check.sh"
      SUMMARY+=("setup: FAILED (no torch+triton)")
      printf '\n=== summary ===\n'; printf '%s\n' "${SUMMARY[@]}"
      return 1
    fi
  fi
  echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0], sys.prefix)'))"
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| triton', triton.__version__)"
  local HAS_PYTEST=0
  "$PY" -c "import pytest" >/dev/null 2>&1 && HAS_PYTEST=1
  echo "pytest importable: $HAS_PYTEST"
  SUMMARY+=("setup: $PY")

  local HAS_GPU=0
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1 && HAS_GPU=1

  echo
  echo "=== nvidia-smi ==="
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi || true
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
      --format=csv || true
  else
    echo "nvidia-smi not found"
  fi

  export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  export OUT="$OUT_DIR"
  # Every rclpy process (the node stage, the node test) stays on localhost.
  export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

  if (( HAS_GPU == 0 )); then
    echo
    echo "No CUDA GPU is visible to $PY: the GPU stages cannot run on this machine."
    if (( HAS_PYTEST )); then
      run_stage pytest-interpreter 300 "$PY" -m pytest -q -p no:cacheprovider test/test_kernels_triton.py \
        test/test_device_path.py
    fi
    # Ahead-of-time compile for sm_90/sm_80 with triton's bundled ptxas: catches what the
    # interpreter cannot (compiler errors, registers, spills, the PTX of the fp32 arithmetic).
    run_stage compile 240 env -u TRITON_INTERPRET "$PY" -m bitvla_ros.kernels.triton_compile_check
    if (( DRY_RUN )); then
      echo "--dry-run: exercising every stage at tiny sizes on the CPU (Triton interpreter; timings are meaningless)"
      for st in env correct kernels model node sweep report; do
        run_stage "$st-dry" 240 "$PY" bench/gpu_check.py "$st" --dry-run
      done
    fi
    printf '\n=== summary (no GPU) ===\n'; printf '%s\n' "${SUMMARY[@]}"
    echo "gpu_check: no GPU here; the interpreter tests and the compile check above are what can run without one. Total $(elapsed)s."
    return 0
  fi

  run_stage env 45 "$PY" bench/gpu_check.py env
  run_stage correct 45 "$PY" bench/gpu_check.py correct --reps 1
  run_stage kernels 80 "$PY" bench/gpu_check.py kernels
  run_stage model 130 "$PY" bench/gpu_check.py model
  run_stage node 200 "$PY" bench/gpu_check.py node --seconds 15
  run_stage report 20 "$PY" bench/gpu_check.py report
  if (( HAS_PYTEST )); then
    # -W default: report warnings instead of failing on them (this machine's torch/triton versions
    # may differ from the pinned ones and warn about things the project's own runs do not see).
    run_stage pytest 120 "$PY" -m pytest -q -p no:cacheprovider -W default -rs test/test_kernels_triton.py \
      test/test_device_path.py
  else
    echo "pytest is not importable: skipping it; the 'correct' stage checks the kernels instead"
  fi
  run_stage sweep 100 "$PY" bench/gpu_check.py sweep --reps 10

  printf '\n=== summary ===\n'; printf '%s\n' "${SUMMARY[@]}"
  echo "gpu_check: total $(elapsed)s; log $LOG; results $OUT_DIR/gpu_check.json (table above), $OUT_DIR/gpu_check_results.jsonl"
  return 0
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
