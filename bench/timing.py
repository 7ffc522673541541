"""Timing one call: CUDA events on a GPU (the host clock on the CPU), warm-up, then many runs,
each on a freshly loaded input set; median and 20/80 quantiles."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

QUANTILES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class Policy:
    """How much to run: ``warmup`` untimed calls after the first (compiling) one, then enough
    timed calls to fill ``target_ms``, at least ``min_reps`` and at most ``max_reps``;
    ``n_sets`` random input sets are rotated through the buffers."""

    warmup: int
    min_reps: int
    max_reps: int
    target_ms: float
    n_sets: int


GPU_POLICY = Policy(warmup=5, min_reps=25, max_reps=400, target_ms=150.0, n_sets=4)
# The interpreter takes 0.1-1 s a call at the CPU sweep's sizes and compiles nothing (the gate's
# call warmed it): few runs, as they measure nothing about a GPU anyway.
CPU_POLICY = Policy(warmup=0, min_reps=3, max_reps=3, target_ms=0.0, n_sets=2)


def run_timed(fn: Callable[[], object], load: Callable[[int], None], reps: int, n_sets: int, cuda: bool) -> np.ndarray:
    """Milliseconds of ``reps`` calls of ``fn``; ``load(k)`` puts input set ``k`` in place
    before each call, outside the timed region."""
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for k, (start, end) in enumerate(events):
            load(k % n_sets)
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return np.array([s.elapsed_time(e) for s, e in events])
    ms = []
    for k in range(reps):
        load(k % n_sets)
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return np.array(ms)


def measure(fn: Callable[[], object], load: Callable[[int], None], policy: Policy, cuda: bool) -> dict:
    """Warm up, then time; returns q20_ms, median_ms, q80_ms and n_reps."""
    warm = run_timed(fn, load, policy.warmup, policy.n_sets, cuda)
    est_ms = float(np.median(warm)) if len(warm) else 0.0
    reps = policy.min_reps if est_ms <= 0 else math.ceil(policy.target_ms / est_ms)
    reps = min(max(reps, policy.min_reps), policy.max_reps)
    ms = run_timed(fn, load, reps, policy.n_sets, cuda)
    q20, med, q80 = np.quantile(ms, QUANTILES)
    return {"q20_ms": float(q20), "median_ms": float(med), "q80_ms": float(q80), "n_reps": reps}
