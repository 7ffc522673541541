import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import triton

import bench.runner
from bench.__main__ import main
from lstm_triton import LSTM
from lstm_triton._env import interpreting

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


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_zero_budget_measures_nothing_and_says_how_to_resume(tmp_path, capsys):
    args = ["--device", "cpu", "--T", "4", "--H", "16", "--B", "1", "--dirs", "1", "--dtype", "float32"]
    assert main([*args, "--mode", "fwd", "--budget-s", "0", "--out", str(tmp_path)]) == 0
    assert "5 rows left; run the same command again to resume" in capsys.readouterr().out
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_projection_sweep_trains_on_our_kernels(tmp_path):
    """The proj sweep, shrunk for the interpreter: our kernels pass the gate in training."""
    args = ["--device", "cpu", "--sweep", "proj", "--T", "3", "--H", "16", "--B", "2", "--dirs", "2"]
    args += ["--dtype", "float32", "--mode", "fwdbw", "--providers", "ours", "pytorch", "--out", str(tmp_path)]
    assert main(args) == 0
    df = pd.read_csv(tmp_path / "results.csv").set_index("provider")
    assert (df["status"] == "ok").all() and (df["proj"] == 4).all(), df[["status", "reason"]]


TINY = [
    "--device",
    "cpu",
    "--T",
    "4",
    "--H",
    "16",
    "--B",
    "1",
    "2",
    "--dirs",
    "1",
    "--dtype",
    "float32",
    "--mode",
    "fwd",
]


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_an_error_of_ours_fails_the_run_and_says_why(tmp_path, capsys, monkeypatch):
    """A broken Triton (every call of ours raises): exit 1, the last lines name the first error
    and the versions, the tracebacks are in errors.log and not on the console."""

    def broken(*args, **kwargs):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    monkeypatch.setattr(LSTM, "_layers", broken)
    assert main([*TINY, "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    failed, versions = out.strip().splitlines()[-2:]
    assert failed.startswith("FAILED: 2 of 4 rows of ours raised an error; the first, custom fwd float32 T=4 H=16")
    assert failed.endswith("| ours: RuntimeError: 0 active drivers ([]). There should only be one.")
    assert f"torch {torch.__version__}, triton {triton.__version__}" in versions
    assert versions.endswith(f"tracebacks in {tmp_path / 'errors.log'}")
    assert "Traceback" not in out + err
    log = (tmp_path / "errors.log").read_text()
    assert log.count("Traceback (most recent call last)") == 2 and "in broken" in log
    df = pd.read_csv(tmp_path / "results.csv").set_index("provider")
    assert (df.loc["ours", "status"] == "error").all() and (df.loc["pytorch", "status"] == "ok").all()


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_gpu_only_providers_on_a_cpu_are_one_line_and_skipped_rows(tmp_path, capsys):
    """A CPU run says once which providers need a GPU, not once per row; the CSV still has
    their rows, as skipped."""
    assert main([*TINY, "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if "skipped" in line]
    assert lines == ["skipped, needs a CUDA GPU: ours_graph, cudnn, cudnn_graph (6 rows, in results.csv as skipped)"]
    assert "[   2/4" in err and "/6 " not in err  # the progress counts the rows that run
    df = pd.read_csv(tmp_path / "results.csv")
    skipped = df[df["provider"].isin(["ours_graph", "cudnn", "cudnn_graph"])]
    assert len(skipped) == 6 and (skipped["status"] == "skipped").all()
    assert (skipped["reason"] == "needs a CUDA GPU").all()
    assert list(df["provider"][:5]) == ["ours", "ours_graph", "cudnn", "cudnn_graph", "pytorch"]  # the order of old


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_a_run_with_none_of_ours_timed_fails_unless_none_was_asked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.runner, "route", lambda *a: (None, "routed to PyTorch's LSTM: a made-up reason"))
    assert main([*TINY, "--providers", "ours", "pytorch", "--out", str(tmp_path / "routed")]) == 1
    failed = capsys.readouterr().out.strip().splitlines()[-2]
    assert (
        failed
        == "FAILED: no row of ours was timed (2 routed); the first reason: routed to PyTorch's LSTM: a made-up reason"
    )
    assert main([*TINY, "--providers", "pytorch", "--out", str(tmp_path / "theirs")]) == 0


@pytest.mark.skipif(not interpreting(), reason="the CPU run in this process needs the interpreter on")
def test_a_run_that_stops_fails_with_one_line_and_the_traceback_in_the_log(tmp_path, capsys, monkeypatch):
    def broken(case, device):
        raise RuntimeError("the CUDA context broke")

    monkeypatch.setattr(bench.runner, "base_module", broken)
    assert main([*TINY, "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-2] == "FAILED: the run stopped: RuntimeError: the CUDA context broke"
    assert "Traceback" not in out + err and "in broken" in (tmp_path / "errors.log").read_text()
