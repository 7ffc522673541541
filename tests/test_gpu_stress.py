"""The GPU stress script (bench/gpu_stress.py) runs every phase of a tiny plan under the
interpreter and passes, and its checks catch a wrong result."""

import torch

from bench import gpu_stress

PHASES = ("back to back", "two streams + GEMM", "forced time-out", "randomized")


def test_stress_script_runs_every_phase(capsys):
    assert gpu_stress.main(["--budget-s", "0"]) == 0
    out = capsys.readouterr().out
    for phase in PHASES:
        assert phase in out, out
    assert "gpu_stress: ok" in out


def test_stress_checks_catch_wrong_results():
    job = gpu_stress.Job(gpu_stress.Shape(H=5, B=2, T=3, dtype=torch.float32, train=True), "cpu", seed=0)
    got = job.launch()
    assert job.failures(got) == []
    got["h_n"] = got["h_n"] + 1e-2
    got["dx"] = got["dx"].clone()
    got["dx"][0, 0, 0] = float("nan")
    bad = job.failures(got)
    assert len(bad) == 2 and "h_n" in bad[0] and "dx" in bad[1], bad
