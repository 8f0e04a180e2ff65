#!/usr/bin/env bash
# One unattended GPU check (issues 12 and 14), about 10 minutes on one modern GPU:
#   1. the CUDA-marked tests (pytest -m cuda), which must not all be skipped;
#   2. benchmarks/bench_gpu.py --modes: ResNet-56 with 4 exits, bf16 + channels_last, every BP
#      mode eager and compiled (images/s, ratios to STANDARD, compiled/eager);
#   3. benchmarks/bench_inference.py --device cuda: the inference build and optimize=max
#      (channels_last + torch.compile) against hand-written twins;
#   4. README's main job on the GPU (netspec train --gpu 0, the digits net, MULTIWAY);
#   5. with two or more GPUs, a 2-rank NCCL data-parallel run of the digits net (MULTIWAY,
#      then STANDARD under DDP).
# Every step runs (a failure does not stop the later ones) under its own time limit; the
# figures and logs go to $OUT (default gpu_check_out/); the last lines are a summary, and the
# exit status is 1 when any step failed or no CUDA device is present.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, venv active
#   OUT=/tmp/gpu BENCH_MODES="STANDARD MULTIWAY" bash benchmarks/gpu_check.sh
# Shorter leases: the *_LIMIT variables (seconds per step), BENCH_REPEATS/BENCH_ITERS and
# INFER_NETS/INFER_BATCHES trim the run; defaults are the numbers below.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
PY=${PYTHON:-python}
BENCH_MODES=${BENCH_MODES:-"STANDARD JOINT RELAY MULTIWAY MULTIWAY_naive"}
BENCH_REPEATS=${BENCH_REPEATS:-3} BENCH_ITERS=${BENCH_ITERS:-5}
INFER_NETS=${INFER_NETS:-"resnet50 googlenet caffenet"} INFER_BATCHES=${INFER_BATCHES:-"1 16"}
mkdir -p "$OUT"
declare -a SUMMARY=()
FAILED=0
START=$(date +%s)

step() {                      # step NAME LIMIT_S COMMAND...: run, log, record pass/fail
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s) rc
    echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/gpu_check.log"
    timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
    rc=${PIPESTATUS[0]}
    local dt=$(( $(date +%s) - t0 ))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("PASS  $name (${dt}s)")
    else
        [ "$rc" -eq 124 ] && why="timed out" || why="exit $rc"
        SUMMARY+=("FAIL  $name (${dt}s, $why; log: $OUT/$name.log)")
        FAILED=1
    fi
    return 0
}

NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
{ echo "gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), $NGPU GPU(s)"; nvidia-smi -L 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$OUT/gpu_check.log"
if [ "$NGPU" -lt 1 ]; then
    echo "FAIL: no CUDA device visible to torch; nothing was checked" | tee -a "$OUT/gpu_check.log" >&2
    exit 1
fi

# 1. CUDA tests: -rs lists skips; a run where every CUDA test skipped counts as a failure.
#    Only the files holding them are collected: the rest need test-only packages a GPU image lacks.
# shellcheck disable=SC2046
step cuda_tests "${CUDA_TESTS_LIMIT:-150}" $PY -m pytest -q -m cuda -rs -p no:cacheprovider $(grep -l "mark.cuda" tests/*.py)
if grep -qE "^[0-9]+ skipped|no tests ran|[0-9]+ deselected in" "$OUT/cuda_tests.log" \
        && ! grep -qE "[0-9]+ passed" "$OUT/cuda_tests.log"; then
    SUMMARY+=("FAIL  cuda_tests: no CUDA test ran (all skipped or deselected)"); FAILED=1
fi

# 2. every BP mode on ResNet-56 with 4 exits, eager vs compiled (first iterations compile)
# shellcheck disable=SC2086
step bench_gpu "${BENCH_LIMIT:-450}" $PY benchmarks/bench_gpu.py --require-cuda --repeats "$BENCH_REPEATS" \
    --iterations "$BENCH_ITERS" --modes $BENCH_MODES
grep -A20 "^Device:" "$OUT/bench_gpu.log" > "$OUT/bench_gpu.md" 2>/dev/null || true

# 3. inference on the GPU (nets whose deploy file is absent are reported, not measured)
# shellcheck disable=SC2086
step bench_inference "${INFER_LIMIT:-200}" $PY benchmarks/bench_inference.py --device cuda --nets $INFER_NETS \
    --batches $INFER_BATCHES --repeats 5 --iterations 10

# 4. README's main job on the GPU; its weights go to a scratch copy of the solver's folder
SCRATCH=$(mktemp -d)
cp -r models/digits "$SCRATCH/"
step train_digits "${TRAIN_LIMIT:-90}" $PY -m netspec train --solver "$SCRATCH/digits/solver_multiway.prototxt" --gpu 0

# 5. two ranks over NCCL (only with two or more GPUs)
if [ "$NGPU" -ge 2 ]; then
    for mode in multiway standard; do
        step "nccl_$mode" 90 $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m netspec train \
            --solver "models/digits/solver_$mode.prototxt" --gpu 0 --iterations 40 --dist-timeout 60
        grep -q "Optimization Done" "$OUT/nccl_$mode.log" \
            || { SUMMARY+=("FAIL  nccl_$mode: no 'Optimization Done' in its log"); FAILED=1; }
    done
else
    SUMMARY+=("SKIP  nccl: one GPU only")
fi

echo "=== summary ($(( $(date +%s) - START ))s; logs in $OUT/)" | tee -a "$OUT/gpu_check.log"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$OUT/gpu_check.log"
[ "$FAILED" -eq 0 ] && echo "gpu_check: OK" || echo "gpu_check: FAILED" >&2
exit "$FAILED"
