"""``python -m lstm_triton.tune``: measure the fastest launch config of the inference forward for
each shape on this GPU and write the winners to the tuned-config cache the module reads.

    python -m lstm_triton.tune                     # the bench grid, into your user cache
    python -m lstm_triton.tune --H 768 --B 16 32 --dtype bfloat16 --budget-s 120
    python -m lstm_triton.tune --plan              # candidates per shape on an H200, no GPU needed
    python -m lstm_triton.tune --show FILE         # a cache as a table, no GPU needed

Per shape (dtype, directions, H, batch) every candidate of ``tuning.candidates`` is compiled for
this GPU in worker processes (which also fills Triton's cache) and dropped if it spills
registers inside its time loop or overflows shared memory; each survivor runs once against the float64 reference
(a wrong one is never timed, never a winner), then is timed with CUDA events on rotating random
inputs, median of many runs. The heuristic's config stays unless another beats it by MIN_GAIN.
The cache is written after every shape; at the time budget the run stops, and the same
command resumes where it stopped.
"""

import argparse
import contextlib
import functools
import itertools
import math
import multiprocessing
import os
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import triton
from torch import nn
from triton.backends.compiler import GPUTarget

from . import launch
from .aot import FWD, compile_kernel
from .configs import CONFIG_NAME_HELP, H200, WARP_SIZE, Chip, LSTMConfig, chip_of, heuristic
from .launch import lstm_recurrent_fwd
from .layout import PackedLayer, pack_layer
from .reference import lstm_reference
from .tuning import DTYPES, CacheError, Entry, Key, TunedCache, candidates, kernel_dtype, key_of, user_cache_path

GRID_H = (128, 256, 512, 1024)  # the benchmark's default grid
GRID_B = (1, 8, 64, 256)
TUNE_T = 128  # steps per timed call: per-step latency ranks the same as at T=256, at half the cost
# ||out - ref|| / ||ref|| a candidate may reach against the float64 reference (TF32 dots for float32)
TOL = {"bfloat16": 2e-2, "float16": 5e-3, "float32": 2e-3}
MIN_GAIN = 0.03  # a tuned config must beat the heuristic's by 3%, more than run-to-run noise
OK, WRONG, REJECTED, ERROR = "ok", "wrong", "rejected", "error"


@dataclass(frozen=True)
class Policy:
    """``warmup`` untimed calls, then ``min_reps`` timed ones, more up to ``max_reps`` while they
    fill ``target_ms``; inputs rotate over ``n_sets`` random draws."""

    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 100
    target_ms: float = 40.0
    n_sets: int = 3


@dataclass(frozen=True)
class Shape:
    dtype: torch.dtype
    dirs: int
    hidden_size: int
    batch: int

    def key(self) -> Key:
        return key_of(self.hidden_size, self.batch, self.dirs, self.dtype)

    def label(self) -> str:
        return f"{kernel_dtype(self.dtype)} {'bi' if self.dirs == 2 else 'uni'} H={self.hidden_size} B={self.batch}"


@dataclass
class Trial:
    config: LSTMConfig
    status: str  # OK, WRONG (failed the reference check), REJECTED (compile check), ERROR (raised)
    us_per_step: float | None = None
    reason: str = ""


class Problem:
    """One shape: random weights and ``n_sets`` draws of x [T, B, H], h0 and c0 [dirs, B, H] in
    the shape's dtype, the float64 reference outputs of draw 0, and a candidate's run on a draw."""

    def __init__(self, shape: Shape, T: int, device, n_sets: int, seed: int = 0):
        torch.manual_seed(seed)
        H, B, dirs = shape.hidden_size, shape.batch, shape.dirs
        self.shape = shape
        self.module = nn.LSTM(H, H, bidirectional=dirs == 2, device=device, dtype=shape.dtype)
        self.sets = [
            tuple(torch.randn(s, device=device, dtype=shape.dtype) for s in ((T, B, H), (dirs, B, H), (dirs, B, H)))
            for _ in range(n_sets)
        ]
        x, h0, c0 = self.sets[0]
        with torch.no_grad():
            y, (h_n, c_n) = lstm_reference(self.module, x, (h0, c0))
        self.ref = (y, h_n, c_n)
        self._packed: dict[int, tuple[PackedLayer, list[torch.Tensor]]] = {}

    def _inputs(self, block_h: int) -> tuple[PackedLayer, list[torch.Tensor]]:
        """The layer packed for ``block_h`` and each draw's input projection in its column order."""
        if block_h not in self._packed:
            m, sfx = self.module, ("", "_reverse")[: self.shape.dirs]
            w = {k: [getattr(m, f"{k}_l0{s}") for s in sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            with torch.no_grad():
                layer = pack_layer(w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"], block_h)
                xps = [torch.addmm(layer.bias, x.flatten(0, 1), layer.w_ih.t()) for x, _, _ in self.sets]
            xps = [xp.view(*x.shape[:2], -1) for xp, (x, _, _) in zip(xps, self.sets, strict=True)]
            self._packed[block_h] = (layer, xps)
        return self._packed[block_h]

    def run(self, config: LSTMConfig, k: int):
        """y, h_n, c_n of draw ``k`` with TF32 dots for float32 (cuDNN's default)."""
        layer, xps = self._inputs(config.block_h)
        _, h0, c0 = self.sets[k]
        y, h_n, c_n, _ = lstm_recurrent_fwd(xps[k], layer, h0, c0, config, exact_fp32=False)
        return y, h_n, c_n

    def check(self, config: LSTMConfig) -> float:
        """The worst ||out - ref|| / ||ref|| of y, h_n and c_n on draw 0, every output buffer
        poisoned first (NaN: unwritten elements show; NaN never passes)."""
        with _set(launch, "POISON_OUTPUTS", True), _set(launch, "CHECK_TIMEOUTS", True):
            out = self.run(config, 0)
            launch.check_timeouts(out[0].device, wait=True)
        errs = [((o.double() - r).norm() / r.norm()).item() for o, r in zip(out, self.ref, strict=True)]
        return math.nan if any(math.isnan(e) for e in errs) else max(errs)


@contextlib.contextmanager
def _set(module, name: str, value):
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def cuda_ms(call: Callable[[int], object], policy: Policy) -> float:
    """Median milliseconds of ``call(k)`` on input draw ``k % n_sets``, timed with CUDA events
    after a warm-up. Time-out checks are off while timing: each queues a copy of the flag per call."""

    def timed(reps: int, first: int) -> list[float]:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (start, end) in enumerate(events):
            start.record()
            call((first + i) % policy.n_sets)
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]

    with _set(launch, "CHECK_TIMEOUTS", False):
        for k in range(policy.warmup):
            call(k % policy.n_sets)
        ms = timed(policy.min_reps, 0)
        more = min(policy.max_reps, int(policy.target_ms / max(float(np.median(ms)), 1e-3))) - policy.min_reps
        if more > 0:
            ms += timed(more, policy.min_reps)
    return float(np.median(ms))


def measure(
    configs: list[LSTMConfig],
    check: Callable[[LSTMConfig], float],
    time_us: Callable[[LSTMConfig], float],
    tol: float,
    rejected: dict[LSTMConfig, str],
) -> list[Trial]:
    """A trial per config: REJECTED with the compile check's reason, else checked against the
    reference (``check`` -> relative error), timed only if right (``time_us`` -> us per step);
    an exception is an ERROR trial."""
    trials = []
    for cfg in configs:
        if cfg in rejected:
            trials.append(Trial(cfg, REJECTED, reason=rejected[cfg]))
            continue
        try:
            err = check(cfg)
            if not err <= tol:  # NaN fails too
                trials.append(Trial(cfg, WRONG, reason=f"relative error {err:.2e} > {tol:.0e}"))
                continue
            trials.append(Trial(cfg, OK, time_us(cfg)))
        except Exception as e:  # a candidate that cannot launch or times out is not a winner; the search goes on
            trials.append(Trial(cfg, ERROR, reason=f"{type(e).__name__}: {str(e).strip()[:200]}"))
    return trials


def pick(trials: list[Trial], base: LSTMConfig | None) -> Trial | None:
    """The fastest right trial, unless the heuristic's is within MIN_GAIN of it (noise)."""
    ok = [t for t in trials if t.status == OK]
    if not ok:
        return None
    best = min(ok, key=lambda t: t.us_per_step)
    mine = next((t for t in ok if t.config == base), None)
    return mine if mine is not None and mine.us_per_step <= best.us_per_step * (1 + MIN_GAIN) else best


def make_entry(shape: Shape, trials: list[Trial], base: LSTMConfig | None, T: int) -> Entry | None:
    best = pick(trials, base)
    if best is None:
        return None
    mine = next((t for t in trials if t.config == base and t.status == OK), None)
    return Entry(
        shape.key(),
        best.config,
        round(best.us_per_step, 3),
        base,
        round(mine.us_per_step, 3) if mine else None,
        shape.batch,
        T,
        timed=sum(t.status == OK for t in trials),
        rejected=sum(t.status != OK for t in trials),
    )


def compile_problems(config: LSTMConfig, shape: Shape, chip: Chip, target: GPUTarget) -> list[str]:
    """Compile the forward kernel of ``config`` for this shape and GPU (in a worker process,
    which fills Triton's cache for the launch) and say what is wrong with it: spills, shared
    memory."""
    rep = compile_kernel(FWD, config, shape.hidden_size, shape.batch, shape.dirs, shape.dtype, target=target)
    return rep.problems(chip)


class Bar:
    """One progress line per finished shape: a bar, the count, the time against the budget."""

    WIDTH = 20

    def __init__(self, total: int, budget_s: float | None):
        self.total, self.budget_s, self.n, self.t0 = total, budget_s, 0, time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def done(self, text: str) -> None:
        self.n += 1
        filled = self.WIDTH * self.n // max(self.total, 1)
        budget = f"/{self.budget_s:.0f}" if self.budget_s is not None else ""
        bar = "#" * filled + "." * (self.WIDTH - filled)
        print(f"[{bar}] {self.n}/{self.total} {self.elapsed():.0f}{budget} s  {text}", flush=True)


def table(cache: TunedCache) -> str:
    """The cache as a markdown table: tuned against heuristic config and time per shape."""
    rows = [
        "| mode | dtype | dirs | H | batch | tuned config | us/step | heuristic config | us/step | heuristic / tuned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in cache.sorted_entries():
        H = entry.key.hidden_size
        base = entry.heuristic.label(H) if entry.heuristic else "-"
        base_us = entry.heuristic_us_per_step
        gain = f"{base_us / entry.us_per_step:.2f}x" if base_us else "heuristic not timed"
        rows.append(
            f"| {entry.key.mode} | {entry.key.dtype} | {'bi' if entry.key.dirs == 2 else 'uni'} | {H} | "
            f"{entry.batch} (<= {entry.key.batch_bucket}) | {entry.config.label(H)} | {entry.us_per_step:.3g} | "
            f"{base} | {base_us if base_us is not None else '-'} | {gain} |"
        )
    return "\n".join(rows)


def shown_cache(path: Path) -> TunedCache:
    """The cache ``--show`` prints; a missing, broken or empty one is a one-line error."""
    try:
        cache = TunedCache.load(path)
    except FileNotFoundError:
        raise SystemExit(f"--show {path}: no such file") from None
    except CacheError as e:
        raise SystemExit(f"--show {path}: not a tuned-config cache ({e})") from None
    if not cache.entries:
        raise SystemExit(
            f"--show {path}: the cache for {cache.gpu} (triton {cache.triton}) has no entries yet; fill it on that "
            f"GPU with `python -m lstm_triton.tune --out {path}` (add --H/--B/--dtype for fewer shapes)"
        )
    return cache


def shapes_of(args) -> list[Shape]:
    """dtype outermost, so a run cut short by its budget has finished whole dtypes."""
    grid = itertools.product(args.dtype, args.dirs, args.H, args.B)
    return [Shape(DTYPES[d], dirs, H, B) for d, dirs, H, B in grid]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lstm_triton.tune",
        description=__doc__,
        epilog=textwrap.fill("In what this prints, " + CONFIG_NAME_HELP + ".", 88, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--H", type=int, nargs="+", default=GRID_H, help="hidden sizes")
    p.add_argument("--B", type=int, nargs="+", default=GRID_B, help="batch sizes (an entry serves its bucket)")
    p.add_argument("--dirs", type=int, nargs="+", default=(1, 2), choices=(1, 2), help="1: LSTM, 2: BiLSTM")
    p.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--T", type=int, default=TUNE_T, help="sequence length of the timed calls")
    p.add_argument("--budget-s", type=float, help="stop before a shape that would end past this; rerun to resume")
    p.add_argument("--out", type=Path, help="cache to write (default: $LSTM_TRITON_TUNED, else your user cache)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel compiles")
    p.add_argument("--retune", action="store_true", help="measure shapes the cache has too (replace another GPU's)")
    p.add_argument("--plan", action="store_true", help="list the candidates per shape on an H200, then exit")
    p.add_argument("--show", type=Path, metavar="FILE", help="print a cache as a table, then exit")
    return p


def plan(shapes: list[Shape], chip: Chip) -> int:
    compiles = set()
    for s in shapes:
        cands = candidates(s.hidden_size, s.batch, s.dirs, s.dtype, chip)
        compiles.update((c, s.hidden_size, s.dtype) for c in cands)
        print(f"{s.label()}: {len(cands)} candidates: " + " ".join(c.label(s.hidden_size) for c in cands))
    print(f"{len(shapes)} shapes, {len(compiles)} distinct compiles on {chip.name}")
    return 0


def open_cache(out: Path, gpu: str, retune: bool) -> TunedCache:
    """The cache at ``out`` to extend, or a new one. A cache of another GPU or Triton version is
    replaced only when ``retune``: one file never mixes them."""
    fresh = TunedCache(gpu, triton.__version__)
    if not out.exists():
        return fresh
    cache = TunedCache.load(out)
    if (cache.gpu, cache.triton) == (fresh.gpu, fresh.triton):
        return cache
    if retune:
        return fresh
    sys.exit(
        f"{out} holds configs for {cache.gpu} with triton {cache.triton}, this is {gpu} with triton "
        f"{fresh.triton}: pass another --out, or --retune to replace it"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.show:
        print(table(shown_cache(args.show)))
        return 0
    shapes = shapes_of(args)
    if args.plan:
        return plan(shapes, H200)
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("python -m lstm_triton.tune times kernels on a CUDA GPU (and without TRITON_INTERPRET)")
    device = torch.device("cuda")
    chip = chip_of(device)
    major, minor = torch.cuda.get_device_capability(device)
    out = args.out or user_cache_path(chip.name)[0]
    cache = open_cache(out, chip.name, args.retune)
    todo = pending(shapes, cache, args.retune)
    print(f"{len(todo)} shapes to tune ({len(shapes) - len(todo)} in {out} already) on {chip.name}", flush=True)
    policy = Policy()
    left = tune(
        todo,
        cache,
        out,
        chip,
        device=device,
        time_us=lambda problem, cfg: cuda_ms(lambda k: problem.run(cfg, k), policy) * 1e3 / args.T,
        T=args.T,
        n_sets=policy.n_sets,
        budget_s=args.budget_s,
        target=GPUTarget("cuda", 10 * major + minor, WARP_SIZE),
        jobs=args.jobs,
    )
    print(f"wrote {out}\n\n{table(cache)}")
    if left:
        print(f"budget spent: {left} shapes left; run the same command again to resume")
    return 0


def pending(shapes: list[Shape], cache: TunedCache, retune: bool) -> list[Shape]:
    """The shapes to measure: one per cache key (the first given), none the cache already has
    unless ``retune``."""
    todo = {}
    for s in shapes:
        if retune or cache.lookup(s.key()) is None:
            todo.setdefault(s.key(), s)
    return list(todo.values())


def tune(
    shapes: list[Shape],
    cache: TunedCache,
    out: Path,
    chip: Chip,
    *,
    device,
    time_us: Callable[[Problem, LSTMConfig], float],
    T: int,
    n_sets: int,
    budget_s: float | None = None,
    target: GPUTarget | None = None,
    jobs: int = 1,
) -> int:
    """Tune each shape: its candidates compile-checked for ``target`` in ``jobs`` worker
    processes (no check without a target), checked against the reference on ``device``, the
    right ones timed by ``time_us``; the winner goes into ``cache``, saved to ``out`` after every
    shape. Stops before a shape the budget would not see finish (estimated as the slowest so
    far). Returns how many shapes it left."""
    cands = {s: candidates(s.hidden_size, s.batch, s.dirs, s.dtype, chip) for s in shapes}
    bar, slowest = Bar(len(shapes), budget_s), 0.0
    with contextlib.ExitStack() as stack:
        compiled = {}
        if target is not None:
            # spawn: the workers only compile, and must not inherit this process's CUDA context
            pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")))
            for s in shapes:
                for c in cands[s]:
                    compiled.setdefault((c, s.hidden_size, s.dtype), pool.submit(compile_problems, c, s, chip, target))
        for i, s in enumerate(shapes):
            if budget_s is not None and bar.elapsed() + slowest > budget_s:
                if target is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                return len(shapes) - i
            t0 = time.monotonic()
            entry, counts = tune_one(s, cands[s], _rejected(s, cands[s], compiled), chip, device, time_us, T, n_sets)
            slowest = max(slowest, time.monotonic() - t0)
            if entry is None:
                bar.done(f"{s.label()}: no candidate passed {counts}")
                continue
            cache.add(entry)
            cache.save(out)
            base = entry.heuristic_us_per_step or "wrong"
            config = entry.config.label(s.hidden_size)
            bar.done(f"{s.label()}: {config} {entry.us_per_step} us/step, heuristic {base} {counts}")
    return 0


def tune_one(shape: Shape, cands, rejected, chip: Chip, device, time_us, T: int, n_sets: int):
    """One shape's winner (an Entry, or None when no candidate passed) and the trials' status
    counts."""
    problem = Problem(shape, T, device, n_sets)
    first_s = [0.0]

    def check(cfg: LSTMConfig) -> float:
        t0 = time.perf_counter()
        try:
            return problem.check(cfg)
        finally:
            first_s.append(time.perf_counter() - t0)

    tol = TOL[kernel_dtype(shape.dtype)]
    trials = measure(cands, check, functools.partial(time_us, problem), tol, rejected)
    if torch.device(device).type == "cuda":
        _check_context(shape)
    base = heuristic(shape.hidden_size, shape.batch, shape.dirs, shape.dtype, chip)
    counts = {k: n for k in (OK, REJECTED, WRONG, ERROR) if (n := sum(t.status == k for t in trials))}
    # seconds: a first call that compiles (the workers' compile missed Triton's cache) takes seconds
    counts["slowest first call s"] = round(max(first_s), 2)
    return make_entry(shape, trials, base, T), counts


def _rejected(shape: Shape, cands: list[LSTMConfig], compiled: dict[tuple, Future]) -> dict[LSTMConfig, str]:
    """The candidates the compile check rejects, with its reasons (waits for their compiles)."""
    rejected = {}
    for c in cands:
        job = compiled.get((c, shape.hidden_size, shape.dtype))
        if job is None:
            continue
        try:
            problems = job.result()
        except Exception as e:  # a compile that fails is a rejected candidate, not a failed run
            problems = [f"compile failed: {type(e).__name__}: {str(e).strip()[:200]}"]
        if problems:
            rejected[c] = "; ".join(problems)
    return rejected


def _check_context(shape: Shape) -> None:
    """Stop the run if a candidate broke the CUDA context: every later one would fail too."""
    try:
        torch.cuda.synchronize()
    except RuntimeError as e:
        raise SystemExit(f"the CUDA context broke while tuning {shape.label()} ({e}); the cache so far is saved") from e


if __name__ == "__main__":
    sys.exit(main())
