#!/usr/bin/env bash
# The one command a session with a GPU runs (under 6 minutes on an H200):
#   1. compile every kernel config of the bench grid for this GPU (and warm Triton's cache),
#   2. the GPU tests: the grid against float64 and cuDNN, forward and gradients, sharing the GPU,
#      and the drift over T=4096 steps, ours and cuDNN's (printed),
#   3. stress: mixed shapes back to back, two streams beside a GEMM, a forced time-out,
#      randomized shapes, all checked against float64 (~30 s),
#   4. one small case of each kernel under compute-sanitizer memcheck and racecheck,
#   5. timings against cuDNN (eager and CUDA graph) on the grid, inference then training.
# Logs go to $OUT (the device tool's folder; a temporary one otherwise), the report to
# reports/<gpu>-<date>-<commit>/ and, packed, to $OUT/report.tgz: commit it under reports/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc)"; status=1; }
}

python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "pip install -e . failed"; exit 1; }
{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
    git log -1 --format='commit %H %s'
} | tee "$OUT/env.log"

step aot 150 python3 -m lstm_triton.aot --jobs "$(nproc)"
python3 - "$OUT/aot.log" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [r for r in rows if r["problems"]]
print(f"aot: {len(rows)} compiles, {len(bad)} with problems", *[(r["kernel"], r["hidden_size"], r["dtype"], r["config"], r["problems"]) for r in bad], sep="\n")
sys.exit(1 if bad or not rows else 0)
PY

step gpu_tests 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step long_sequences 90 python3 -m pytest -q -rP -m gpu -p no:cacheprovider tests/test_long_sequences.py
step stress 120 python3 -m bench.gpu_stress --budget-s 30

if command -v compute-sanitizer >/dev/null; then
    step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m bench.gpu_smoke
    step racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 3 python3 -m bench.gpu_smoke
else
    echo "compute-sanitizer not found: sanitizer checks skipped" | tee "$OUT/sanitizer.log"
fi

report=$(python3 -c "from pathlib import Path; from bench.env import environment, report_dir
print(report_dir(Path('reports'), environment('cuda')))")
step bench_fwd 200 python3 -m bench --sweep default --providers ours ours_graph cudnn cudnn_graph --budget-s 140 --out "$report"
step bench_train 120 python3 -m bench --sweep training --providers ours cudnn cudnn_graph --budget-s 75 --out "$report"
tar czf "$OUT/report.tgz" "$report" && echo "report: $report (packed in $OUT/report.tgz)"
echo "gpu_check: $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
