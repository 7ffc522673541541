"""Every config the launcher picks on the bench grid compiles for sm_90 (H100/H200) with the
ptxas inside Triton's wheel, within 227 KB of shared memory and without register spills."""

import json
import os
import subprocess
import sys

import pytest

from lstm_triton.aot import grid_configs


@pytest.mark.compile
def test_grid_configs_compile_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    r = subprocess.run([sys.executable, "-m", "lstm_triton.aot"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(grid_configs())
    bad = [
        (rep["hidden_size"], rep["dtype"], rep["exact_fp32"], rep["config"], rep["problems"])
        for rep in reports
        if rep["problems"]
    ]
    assert not bad, bad
    # the tensor cores are used on the dot path: a silent fallback to FMA would cost 10x
    assert all(
        rep["matmul"] == "mma.sync" for rep in reports if not rep["config"]["use_fma"] and not rep["exact_fp32"]
    ), reports
