import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_run_end_to_end(tmp_path):
    """The README's first command on a machine without a GPU, on one tiny case: the CLI itself
    switches Triton's interpreter on, and writes the same report files as a GPU run."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = ["--T", "4", "--H", "16", "--B", "1", "2", "--dirs", "2", "--dtype", "float32", "--mode", "fwd"]
    cmd = [sys.executable, "-m", "bench", "--device", "cpu", *args, "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("CPU-interpreter timings: they say nothing about GPU performance")
    df = pd.read_csv(tmp_path / "results.csv").set_index("provider")
    assert (df.loc[["ours", "pytorch"], "status"] == "ok").all()
    assert (df["device"] == "cpu").all() and (df["mode"] == "fwd").all() and len(df) == 2 * 5
    assert (df.loc[["cudnn", "cudnn_graph", "ours_graph"], "status"] == "skipped").all()
    report = (tmp_path / "REPORT.md").read_text()
    assert report.startswith("# CPU-interpreter timings: they say nothing about GPU performance")
    assert "ours vs pytorch" in report
    assert (tmp_path / "floor.csv").exists()
    assert (tmp_path / "us_per_step-vs-B-custom-fwd-float32-bi.png").exists()
    assert (tmp_path / "speedup-heatmap-custom-fwd-float32-T4-L1.png").exists()
