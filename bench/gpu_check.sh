#!/usr/bin/env bash
# The one command a session with a GPU runs (about 6 minutes on an H200, GPU_CHECK_BUDGET_S):
#   1. compile every kernel config of the bench grid for this GPU (and warm Triton's cache),
#   2. the GPU tests: the grid against float64 and cuDNN, forward and gradients, sharing the GPU,
#      CUDA graphs and torch.compile,
#   3. timings against cuDNN (eager and CUDA graph) on the grid, inference, then training and
#      variable lengths with what time is left,
#   4. one small case of each kernel under compute-sanitizer memcheck and racecheck, GPU stress,
#      long-sequence drift, then LSTMs with projections and our LSTM under torch.compile against
#      cuDNN on a few shapes.
# Steps run in that order of value; a step starts only while the budget lasts. Everything lands
# in $OUT (the device tool's folder; a temporary one otherwise), at most 8 files: gpu_check.log
# (all steps), aot.jsonl, report.tgz (the bench report, reports/<gpu>-<date>-<commit>/: commit
# it under reports/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
BUDGET=${GPU_CHECK_BUDGET_S:-330}
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1
start=$SECONDS
status=0
left() { echo $((BUDGET - (SECONDS - start))); }
step() {  # step NAME TIMEOUT_S CMD...: run if the budget allows, log, remember a failure
    local name=$1 limit=$2
    shift 2
    if [ "$(left)" -lt 20 ]; then
        echo "== $name skipped: budget spent" | tee -a "$LOG"
        return
    fi
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    echo "== $name ($(left) s left): $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc)" | tee -a "$LOG"; status=1; }
}

python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "pip install -e . failed"; exit 1; }
{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
    git log -1 --format='commit %H %s'
} 2>&1 | tee -a "$LOG"

step aot 120 bash -c "python3 -m lstm_triton.aot --jobs $(nproc) > '$OUT/aot.jsonl'"
python3 - "$OUT/aot.jsonl" <<'PY' 2>&1 | tee -a "$LOG" || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [r for r in rows if r["problems"]]
print(f"aot: {len(rows)} compiles, {len(bad)} with problems", *[(r["kernel"], r["varlen"], r["hidden_size"], r["dtype"], r["config"], r["problems"]) for r in bad], sep="\n")
sys.exit(1 if bad or not rows else 0)
PY

step gpu_tests 200 python3 -m pytest -q -x -m gpu -p no:cacheprovider tests/test_gpu.py

report=$(python3 -c "from pathlib import Path; from bench.env import environment, report_dir
print(report_dir(Path('reports'), environment('cuda')))")
step bench_fwd 160 python3 -m bench --sweep default --providers ours ours_plain ours_graph cudnn cudnn_graph --budget-s 110 --out "$report"
if command -v compute-sanitizer >/dev/null; then
    step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m bench.gpu_smoke
    step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 3 python3 -m bench.gpu_smoke
else
    echo "compute-sanitizer not found: sanitizer checks skipped" | tee -a "$LOG"
fi
step stress 60 python3 -m bench.gpu_stress --budget-s 20
step long_sequences 60 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/test_long_sequences.py
step bench_train 100 python3 -m bench --sweep training --providers ours ours_plain cudnn cudnn_graph --budget-s 55 --out "$report"
step bench_packed 60 python3 -m bench --sweep packed --providers ours cudnn --budget-s 30 --out "$report"
step bench_proj 60 python3 -m bench --sweep proj --providers ours cudnn cudnn_graph --budget-s 40 --out "$report"
step bench_compiled 60 python3 -m bench --sweep quick --providers ours ours_compiled cudnn_graph --budget-s 40 --out "$report"
[ -d "$report" ] && tar czf "$OUT/report.tgz" "$report" && echo "report: $report (packed in $OUT/report.tgz)" | tee -a "$LOG"
echo "gpu_check: $([ $status -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - start)) s" | tee -a "$LOG"
exit $status
