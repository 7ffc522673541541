import copy

import pandas as pd
import pytest

import bench.runner
from bench.env import environment
from bench.floor import run_barriers
from bench.providers import Provider
from bench.results import ERROR, ERRORS_LOG, FLOOR_CSV, OK, RESULTS_CSV, SKIPPED, floor_failure
from bench.runner import run
from bench.sweeps import Sweep
from bench.timing import Policy
from lstm_triton._env import interpreting

POLICY = Policy(warmup=0, min_reps=2, max_reps=2, target_ms=0.0, n_sets=2)
CASES = Sweep("test", "tiny", T=(3,), H=(8,), B=(1, 2), dirs=(1,), dtypes=("float32",)).cases()


class Calls:
    """Providers whose module builds are counted (one build per measured row)."""

    def __init__(self):
        self.built = 0
        self.fail = False

    def build(self, base):
        self.built += 1
        if self.fail:
            raise RuntimeError("deliberate failure")
        return copy.deepcopy(base)


def _run(out, calls, budget_s=None):
    providers = [Provider("a", "nn.LSTM", calls.build, cudnn=False), Provider("b", "nn.LSTM", calls.build, cudnn=False)]
    return run(out, CASES, providers, "cpu", POLICY, budget_s, environment("cpu"))


def test_budget_stops_cleanly_and_rerun_resumes(tmp_path):
    calls = Calls()
    first = _run(tmp_path, calls, budget_s=0)
    assert (first.written, first.left) == (0, 4) and calls.built == 0
    assert (tmp_path / FLOOR_CSV).exists()  # the floor rows are written first
    second = _run(tmp_path, calls)
    assert (second.written, second.left) == (4, 0) and calls.built == 4
    third = _run(tmp_path, calls)
    assert third.written == 0 and calls.built == 4  # nothing measured twice
    df = pd.read_csv(tmp_path / RESULTS_CSV)
    assert len(df) == 4 and set(df["status"]) == {OK}


def test_error_rows_are_recorded_then_measured_again(tmp_path, capsys):
    calls = Calls()
    calls.fail = True
    assert _run(tmp_path, calls).written == 4
    df = pd.read_csv(tmp_path / RESULTS_CSV)
    assert set(df["status"]) == {ERROR} and df["reason"].str.contains("deliberate failure").all()
    # the tracebacks go to the folder's log, one per error row, not to the console
    assert (tmp_path / ERRORS_LOG).read_text().count("RuntimeError: deliberate failure") == 4
    assert "Traceback" not in "".join(capsys.readouterr())
    calls.fail = False
    assert _run(tmp_path, calls).written == 4
    df = pd.read_csv(tmp_path / RESULTS_CSV)
    assert df["status"].tolist() == [ERROR] * 4 + [OK] * 4


def test_floor_is_skipped_on_cpu_with_a_reason(tmp_path):
    _run(tmp_path, Calls(), budget_s=0)
    floor = pd.read_csv(tmp_path / FLOOR_CSV)
    assert set(floor["status"]) == {SKIPPED} and floor["reason"].str.contains("CUDA").all()


@pytest.mark.skipif(not interpreting(), reason="a CPU launch of the kernel needs the interpreter")
def test_floor_kernel_counts_every_arrival():
    # one program under the interpreter: the barrier passes at once, the counter must reach n_iters
    assert run_barriers(1, 5, "cpu") == (5, 0)


def test_a_floor_that_raises_becomes_error_rows(tmp_path, monkeypatch):
    def broken(device):
        raise RuntimeError("deliberate floor failure")

    monkeypatch.setattr(bench.runner, "measure_floor", broken)
    _run(tmp_path, Calls(), budget_s=0)
    floor = pd.read_csv(tmp_path / FLOOR_CSV)
    assert set(floor["status"]) == {ERROR} and (floor["reason"] == "RuntimeError: deliberate floor failure").all()
    assert "deliberate floor failure" in (tmp_path / ERRORS_LOG).read_text()
    assert floor_failure(tmp_path / FLOOR_CSV).endswith("RuntimeError: deliberate floor failure")
