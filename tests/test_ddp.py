"""Training under torch.distributed: two spawned CPU ranks (gloo; our kernels under Triton's
interpreter) train a tiny BiLSTM regressor with DistributedDataParallel or FSDP. Every rank must
end with the parameters of one process trained on the concatenated batches, and inference after
wrapping and after training must see the weights the ranks share, not a stale kernel-layout
cache. The DDP example runs under torchrun on two CPU processes."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests import ddp_worker
from tests.ddp_worker import STEPS, WORLD, WRAPPERS
from tests.helpers import assert_close

TIMEOUT_S = 240  # a hang guard, not a budget: ~25 s of CPU per test; a loaded machine runs slower
GRACE_S = 2  # after one process fails, how long the others get before they are killed
# fp32 on both sides under the interpreter: only the order of the batch reductions differs
TOL = 1e-5
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_ddp.py"
EXAMPLE_STEPS = 2
TORCHRUN_GRACE_S = 20  # after SIGTERM, how long torchrun gets to stop its workers before it is killed


def spawn(fn, nprocs: int, args: tuple, timeout_s: float) -> None:
    """Runs ``fn(i, *args)`` in ``nprocs`` fresh processes; re-raises the first failure with its
    traceback; kills every one of them on failure or after ``timeout_s``."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=max(0.0, deadline - time.monotonic()), grace_period=GRACE_S):
            if time.monotonic() >= deadline:
                alive = [p.pid for p in ctx.processes if p.is_alive()]
                pytest.fail(f"processes {alive} still running after {timeout_s} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_ranks_match_one_process_on_the_concatenated_batch(wrapper, tmp_path):
    spawn(ddp_worker.run, WORLD + 1, (str(tmp_path), wrapper), TIMEOUT_S)
    single = torch.load(tmp_path / "single.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for name, run in [("single", single)] + [(f"rank {r}", run) for r, run in enumerate(ranks)]:
        assert run["reasons"] and all(r is None for r in run["reasons"]), f"{name} ran PyTorch's LSTM: {run['reasons']}"
    rank_mean = torch.tensor([run["losses"] for run in ranks]).mean(dim=0)
    assert_close("mean rank loss per step", rank_mean, torch.tensor(single["losses"]), TOL)
    for r, run in enumerate(ranks):
        assert_close(f"rank {r}: inference after wrapping", run["start"], single["start"], TOL)
        assert_close(f"rank {r}: inference after training", run["end"], single["end"], TOL)
        assert run["params"].keys() == single["params"].keys()
        for name, p in run["params"].items():
            assert torch.equal(p, ranks[0]["params"][name]), f"rank {r} and rank 0 differ in {name}"
            assert_close(f"rank {r}: {name} after {STEPS} steps", p, single["params"][name], TOL)


def test_example_trains_on_two_cpu_processes_with_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}"]
    cmd += [str(EXAMPLE), f"--steps={EXAMPLE_STEPS}"]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}  # the CPU path even on a machine with GPUs
    log = tmp_path / "torchrun.log"  # a file, not a pipe: a worker left behind cannot block the read
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(cmd)} still running after {TIMEOUT_S} s:\n{log.read_text()}")
        finally:
            if proc.poll() is None:
                proc.terminate()  # torchrun stops its workers (each in its own session) on SIGTERM
                try:
                    proc.wait(timeout=TORCHRUN_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    out = log.read_text()
    assert proc.returncode == 0, out
    assert f"{WORLD} process(es) on cpu; the LSTM runs our kernels under Triton's interpreter" in out, out
    for rank in range(WORLD):
        for step in range(EXAMPLE_STEPS):
            assert re.search(rf"^rank {rank}/{WORLD} step {step} loss \d+\.\d+$", out, re.M), out
    checksums = re.findall(rf"^rank \d/{WORLD} parameter checksum (\S+)$", out, re.M)
    assert len(checksums) == WORLD and len(set(checksums)) == 1, out
