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
#
# `bash bench/gpu_check.sh --dry-run` needs no GPU (tests/test_gpu_check.py runs it): every step's
# command as far as it goes without CUDA, so a broken step fails there and not on the GPU lease.
# The install only builds its metadata (pip --dry-run), the compile check compiles DRY_AOT_ONLY's
# configs, the python CLIs get --dry-run (arguments, sweeps, providers, plans, the report folder,
# under $OUT), pytest only collects the GPU tests; nvidia-smi and compute-sanitizer are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
case "${1-}" in
    "") DRY_RUN=0 ;;
    --dry-run) DRY_RUN=1 ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
# The inference forward at H=128 in bfloat16: two compiles, about 10 s on 2 cores; the tests compile them all
DRY_AOT_ONLY='^fwd-H128-bfloat16-P'
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

# What the steps' commands add in a dry run; reports/ lies in $base
if [ $DRY_RUN -eq 1 ]; then
    dry=--dry-run aot_only="--only '$DRY_AOT_ONLY'" collect=--collect-only device=cpu base=$OUT
else
    dry="" aot_only="" collect="" device=cuda base=.
fi

# setuptools < 70.1 without the wheel package cannot build the editable install (invalid command
# 'bdist_wheel'), and the machine has no network: the checkout then runs as it is, from PYTHONPATH
install=(python3 -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .)
if [ $DRY_RUN -eq 1 ]; then  # the same build's metadata, which fails as the install does (old
    # setuptools), and nothing installed: an install into another prefix uninstalls the
    # environment's own lstm-triton first
    install+=(--dry-run)
fi
uninstalled=""
if ! "${install[@]}" >/dev/null 2>&1; then
    uninstalled="${install[*]} failed"
elif [ $DRY_RUN -eq 1 ]; then
    uninstalled="dry run: ${install[*]} installed nothing"
fi
if [ -n "$uninstalled" ]; then
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    echo "$uninstalled: the checkout runs uninstalled, PYTHONPATH=$ROOT" | tee -a "$LOG"
fi
{
    if [ $DRY_RUN -eq 1 ]; then
        echo "nvidia-smi: skipped in dry run"
    else
        nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
    fi
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
    git log -1 --format='commit %H %s'
} 2>&1 | tee -a "$LOG"

step aot 120 bash -c "python3 -m lstm_triton.aot --jobs $(nproc) $aot_only > '$OUT/aot.jsonl'"
python3 - "$OUT/aot.jsonl" <<'PY' 2>&1 | tee -a "$LOG" || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [r for r in rows if r["problems"]]
print(f"aot: {len(rows)} compiles, {len(bad)} with problems", *[(r["kernel"], r["varlen"], r["hidden_size"], r["dtype"], r["config"], r["problems"]) for r in bad], sep="\n")
sys.exit(1 if bad or not rows else 0)
PY

step gpu_tests 200 python3 -m pytest -q -x -m gpu -p no:cacheprovider tests/test_gpu.py $collect

# reports/<gpu>-<date>-<commit>, under $base; a dry run names it for the CPU
if ! report=$(python3 -c "import sys; from pathlib import Path; from bench.env import environment, report_dir
print(report_dir(Path('reports'), environment(sys.argv[1])))" "$device" 2>>"$LOG"); then
    report=reports/unnamed status=1
    echo "== report folder FAILED (traceback above): the bench steps write to $report" | tee -a "$LOG"
fi
step bench_fwd 160 python3 -m bench --sweep default --providers ours ours_plain ours_graph cudnn cudnn_graph --budget-s 110 --out "$base/$report" $dry
if [ $DRY_RUN -eq 1 ]; then
    echo "memcheck, racecheck: compute-sanitizer skipped in dry run" | tee -a "$LOG"
    step gpu_smoke 60 python3 -m bench.gpu_smoke $dry
elif command -v compute-sanitizer >/dev/null; then
    step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m bench.gpu_smoke
    step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 3 python3 -m bench.gpu_smoke
else
    echo "compute-sanitizer not found: sanitizer checks skipped" | tee -a "$LOG"
fi
step stress 60 python3 -m bench.gpu_stress --budget-s 20 $dry
step long_sequences 60 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/test_long_sequences.py $collect
step bench_train 100 python3 -m bench --sweep training --providers ours ours_plain cudnn cudnn_graph --budget-s 55 --out "$base/$report" $dry
step bench_packed 60 python3 -m bench --sweep packed --providers ours cudnn --budget-s 30 --out "$base/$report" $dry
step bench_proj 60 python3 -m bench --sweep proj --providers ours cudnn cudnn_graph --budget-s 40 --out "$base/$report" $dry
step bench_compiled 60 python3 -m bench --sweep quick --providers ours ours_compiled cudnn_graph --budget-s 40 --out "$base/$report" $dry
[ -d "$base/$report" ] && tar czf "$OUT/report.tgz" -C "$base" "$report" && echo "report: $report (packed in $OUT/report.tgz)" | tee -a "$LOG"
echo "gpu_check: $([ $status -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - start)) s" | tee -a "$LOG"
exit $status
