#!/usr/bin/env bash
# The command a GPU session runs to measure the tuned-config cache shipped for its GPU:
#   1. tune the default grid (bf16, fp16, fp32; uni and bi; H 128..1024; B 1..256) into
#      lstm_triton/tuned/<gpu>.json, within TUNE_BUDGET_S seconds (rerun to finish: it resumes),
#   2. time ours (tuned) against ours_heuristic and cuDNN from a CUDA graph on the bf16 grid,
#      within BENCH_BUDGET_S seconds; REPORT.md gets a "Tuned against heuristic configs" table.
# Set BENCH_BUDGET_S=0 to tune only. Logs, the cache and the packed report go to $OUT (the device
# tool's folder; a temporary one otherwise): commit the cache and the report under reports/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "pip install -e . failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/env.log"
cache=$(python3 -c "import torch; from lstm_triton.tuning import shipped_path; print(shipped_path(torch.cuda.get_device_name()))")
status=0
timeout $((${TUNE_BUDGET_S:-170} + 120)) python3 -m lstm_triton.tune --out "$cache" --budget-s "${TUNE_BUDGET_S:-170}" 2>&1 | tee "$OUT/tune.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "== tune FAILED"; status=1; }
cp "$cache" "$OUT/" 2>/dev/null
if [ "${BENCH_BUDGET_S:-120}" != 0 ]; then
    report=$(python3 -c "from pathlib import Path; from bench.env import environment, report_dir
print(report_dir(Path('reports'), environment('cuda')))")-tuning
    timeout $((${BENCH_BUDGET_S:-120} + 90)) python3 -m bench --sweep default --dtype bfloat16 \
        --providers ours ours_heuristic cudnn_graph --budget-s "${BENCH_BUDGET_S:-120}" --out "$report" 2>&1 | tee "$OUT/bench.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "== bench FAILED"; status=1; }
    tar czf "$OUT/report.tgz" "$report" && echo "report: $report (packed in $OUT/report.tgz)"
fi
echo "gpu_tune: $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
