"""The run: cases x providers -> correctness gate -> timing -> one CSV row each, inside a time
budget, skipping the rows an earlier run of the same folder already wrote."""

import dataclasses
import functools
import itertools
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .floor import FLOOR_PROGRAMS, measure_floor
from .gate import check, reference
from .progress import Progress
from .providers import Provider, route
from .results import (
    ERROR,
    ERRORS_LOG,
    FLOOR_CSV,
    FLOOR_SCHEMA,
    OK,
    RESULTS_CSV,
    ROUTED,
    SCHEMA,
    SKIPPED,
    UNSUPPORTED,
    WRONG,
    CsvLog,
    done_keys,
    key_of,
    now,
)
from .sweeps import Case
from .timing import Policy, measure
from .workload import CaptureError, Inputs, graphed, make_call

MIB = 1 << 20
# The interpreter's numpy and torch's OpenMP pool spin against each other on a small CPU: one
# torch thread turned PyTorch's ~0.3 s per tiny call into ~1 ms (2 cores).
CPU_TORCH_THREADS = 1


@dataclass(frozen=True)
class Outcome:
    written: int  # rows this run added
    left: int  # rows the budget left for a rerun


def base_module(case: Case, device: str) -> nn.LSTM:
    """The case's nn.LSTM: the same weights for every provider and on every rerun."""
    torch.manual_seed(zlib.crc32(case.label().encode()))
    return nn.LSTM(
        case.I,
        case.H,
        case.layers,
        bidirectional=case.dirs == 2,
        proj_size=case.proj,
        device=device,
        dtype=getattr(torch, case.dtype),
    )


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _memory_start(cuda: bool) -> int:
    if not cuda:
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def measure_row(provider: Provider, case: Case, base: nn.LSTM, inputs: Inputs, expected, policy: Policy, device: str):
    """The measured columns of one row. ``expected()`` gives the gate's reference outputs.
    The first call (compile, capture, and the gate's inputs) is timed on its own; only a
    provider that passed the gate is timed further. peak_mem_mib: the provider's memory
    above the shared inputs and reference."""
    cuda = device == "cuda"
    reason = provider.skip_reason(device)
    if reason:
        return {"status": SKIPPED, "reason": reason}
    ref = expected()
    mem0 = _memory_start(cuda)
    module = provider.build(base)
    row = {}
    if provider.ours:
        plan, reason = route(case, module, inputs.buf["x"])
        if reason:
            return {"status": ROUTED, "reason": reason}
        row["config"] = plan.label  # as KernelPlan, the tuner and aot name configs
    call = make_call(module, case.mode, inputs, cudnn=provider.cudnn)
    inputs.load(0)
    t0 = time.perf_counter()
    try:
        if provider.graph:
            call = graphed(call)
        out = call()
        _sync(cuda)
    except NotImplementedError as e:
        return row | {"status": UNSUPPORTED, "reason": str(e)}
    except CaptureError as e:
        return row | {"status": SKIPPED, "reason": str(e)}
    row["compile_s"] = time.perf_counter() - t0
    verdict = check(case.dtype, out, ref)
    row |= {"rel_err": verdict.rel_err, "tol": verdict.tol}
    if not verdict.ok:
        return row | {"status": WRONG, "reason": verdict.reason()}
    t = measure(call, inputs.load, policy, cuda)
    seconds = t["median_ms"] * 1e-3
    row.update(
        t,
        status=OK,
        us_per_step=t["median_ms"] * 1e3 / case.T,
        tokens_per_s=case.tokens() / seconds,
        tflops=case.flops() / seconds * 1e-12,
        peak_mem_mib=(torch.cuda.max_memory_allocated() - mem0) / MIB if cuda else None,
    )
    return row


def make_row(case: Case, provider: str, measured: dict, env: dict) -> dict:
    return dict.fromkeys(SCHEMA) | dataclasses.asdict(case) | {"provider": provider} | measured | env | {"time": now()}


def _outcome(m: dict) -> str:
    if m["status"] == OK:
        return f"{m['median_ms']:.4g} ms"
    return f"{m['status']}: {m['reason'][:100]}"


def error_row(e: Exception, log: Path, where: str) -> dict:
    """An error row; its traceback goes to ``log`` (the report folder's errors.log), not the
    console: a broken Triton fails every row of ours the same way, thousands of lines."""
    with log.open("a") as f:
        f.write(f"=== {now()} {where}\n{''.join(traceback.format_exception(e))}\n")
    lines = str(e).strip().splitlines()
    return {"status": ERROR, "reason": f"{type(e).__name__}: {lines[0] if lines else ''}"}


def _floor_rows(device: str, log: Path) -> list[dict]:
    """measure_floor's rows; an exception becomes an error row per program count."""
    try:
        return measure_floor(device)
    except Exception as e:  # recorded as error rows (traceback in the log); the run goes on
        row = error_row(e, log, "floor")
        return [dict(programs=p, n_iters=0, us_per_barrier=None) | row for p in FLOOR_PROGRAMS]


def run(
    out: Path,
    cases: list[Case],
    providers: list[Provider],
    device: str,
    policy: Policy,
    budget_s: float | None,
    env: dict,
) -> Outcome:
    """Measure every (case, provider) row not yet in ``out/results.csv`` (and the barrier floor
    once per folder). Stops before a row that the budget would not see finish, estimated as
    the slowest row so far. A provider that cannot run on ``device`` writes its skipped rows
    without a progress line each: one line up front says which and why."""
    out.mkdir(parents=True, exist_ok=True)
    cuda = device == "cuda"
    if not cuda:
        torch.set_num_threads(CPU_TORCH_THREADS)
    results = out / RESULTS_CSV
    log = CsvLog(results, SCHEMA)
    done = done_keys(results)
    todo = [
        (c, p) for c in cases for p in providers if key_of(dataclasses.asdict(c) | {"provider": p.name}) not in done
    ]
    skips = {p.name: p.skip_reason(device) for p in providers}
    print_skips(todo, skips)
    progress = Progress(sum(skips[p.name] is None for _, p in todo), budget_s)
    floor = CsvLog(out / FLOOR_CSV, FLOOR_SCHEMA)
    errors_log = out / ERRORS_LOG
    if not (out / FLOOR_CSV).exists():
        for row in _floor_rows(device, errors_log):
            floor.append(row | env | {"time": now()})
    written, slowest = 0, 0.0
    for case, group in itertools.groupby(todo, key=lambda cp: cp[0]):
        base = base_module(case, device)
        inputs = Inputs(case, device, policy.n_sets)
        expected = functools.cache(lambda case=case, base=base, inputs=inputs: reference(case, base, inputs))
        for _, provider in group:
            if budget_s is not None and progress.elapsed() + slowest > budget_s:
                progress.close()
                return Outcome(written, len(todo) - written)
            if skips[provider.name]:
                log.append(make_row(case, provider.name, {"status": SKIPPED, "reason": skips[provider.name]}, env))
                written += 1
                continue
            progress.start(f"{case.label()} | {provider.name}")
            t0 = time.monotonic()
            try:
                m = measure_row(provider, case, base, inputs, expected, policy, device)
            except Exception as e:  # recorded as an error row (traceback in errors.log); the run goes on
                m = error_row(e, errors_log, f"{case.label()} | {provider.name}")
            slowest = max(slowest, time.monotonic() - t0)
            log.append(make_row(case, provider.name, m, env))
            written += 1
            progress.done(_outcome(m))
            if m["status"] == ERROR and cuda:
                _check_context(case, provider)
    progress.close()
    return Outcome(written, 0)


def print_skips(todo: list[tuple[Case, Provider]], skips: dict[str, str | None]) -> None:
    """One line per reason: the providers it skips and how many rows (e.g. every GPU-only
    provider on a CPU run)."""
    rows: dict[str, dict[str, int]] = {}
    for _, p in todo:
        if skips[p.name]:
            by = rows.setdefault(skips[p.name], {})
            by[p.name] = by.get(p.name, 0) + 1
    for reason, by in rows.items():
        print(f"skipped, {reason}: {', '.join(by)} ({sum(by.values())} rows, in {RESULTS_CSV} as skipped)", flush=True)


def _check_context(case: Case, provider: Provider) -> None:
    """After an error: free what it left, and stop the run if the CUDA context is broken (every
    later row would fail the same way)."""
    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    except RuntimeError as e:
        raise RuntimeError(
            f"the CUDA context broke at {case.label()} | {provider.name}; finished rows are saved, "
            "rerun the same command to resume"
        ) from e
