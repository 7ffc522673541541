"""The floor of one recurrent step: the latency of our grid barrier across P programs, measured
in the same run as the LSTM rows, with the barrier the kernels use."""

import numpy as np
import torch
import triton
import triton.language as tl

from lstm_triton.kernels.common import _grid_barrier
from lstm_triton.launch import BARRIER_MAX_SPINS

from .results import ERROR, OK, SKIPPED

FLOOR_PROGRAMS = (1, 8, 64, 132)  # capped at the SM count: one program per SM, all resident
FLOOR_ITERS = 2000
FLOOR_REPS = 11
FLOOR_NUM_WARPS = 4  # as the recurrent kernels launch: the barrier's bar.sync waits on every warp


@triton.jit(do_not_specialize=["n_iters", "max_spins"])
def _barrier_loop_kernel(p_cnt, p_err, n_iters, max_spins):
    """``n_iters`` grid barriers in a row across all programs of the launch."""
    n_prog = tl.num_programs(0)
    i = 0
    while i < n_iters:
        _grid_barrier(p_cnt, p_err, n_prog * (i + 1), max_spins)
        i += 1


def run_barriers(programs: int, n_iters: int, device: str) -> tuple[int, int]:
    """One launch of ``programs`` programs passing ``n_iters`` barriers; returns the final
    counter (``programs * n_iters`` when every arrival counted) and the time-out flag."""
    cnt = torch.zeros(1, dtype=torch.int32, device=device)
    err = torch.zeros(1, dtype=torch.int32, device=device)
    _launch(cnt, err, programs, n_iters)
    return int(cnt.item()), int(err.item())


def _launch(cnt, err, programs: int, n_iters: int) -> None:
    _barrier_loop_kernel[(programs,)](
        cnt, err, n_iters, BARRIER_MAX_SPINS, num_warps=FLOOR_NUM_WARPS, launch_cooperative_grid=cnt.is_cuda
    )


def _median_ms(programs: int, n_iters: int) -> float:
    cnt = torch.zeros(1, dtype=torch.int32, device="cuda")
    err = torch.zeros(1, dtype=torch.int32, device="cuda")
    ms = []
    for _ in range(FLOOR_REPS):
        cnt.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _launch(cnt, err, programs, n_iters)
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return float(np.median(ms))


def measure_floor(device: str) -> list[dict]:
    """One row per P: microseconds per barrier = (t(N barriers) - t(0)) / N, medians of launches
    timed with CUDA events; a launch whose counter or time-out flag is wrong is an error row."""
    if device != "cuda":
        reason = "no CUDA GPU: the interpreter runs programs one after another, a barrier has no latency"
        return [dict(programs=p, n_iters=0, us_per_barrier=None, status=SKIPPED, reason=reason) for p in FLOOR_PROGRAMS]
    n_sm = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    rows = []
    for p in sorted({min(p, n_sm) for p in FLOOR_PROGRAMS}):
        row = dict(programs=p, n_iters=FLOOR_ITERS, us_per_barrier=None, status=OK, reason="")
        count, timed_out = run_barriers(p, FLOOR_ITERS, "cuda")  # also the compile, untimed
        if count != p * FLOOR_ITERS or timed_out:
            row.update(status=ERROR, reason=f"counter {count} != {p * FLOOR_ITERS} or time-out flag {timed_out}")
        else:
            row["us_per_barrier"] = (_median_ms(p, FLOOR_ITERS) - _median_ms(p, 0)) * 1e3 / FLOOR_ITERS
        rows.append(row)
    return rows
