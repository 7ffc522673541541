"""Every config the launcher picks on the bench grid, and at hidden sizes that are not powers of
two, compiles for sm_90 (H100/H200) with the ptxas inside Triton's wheel, within 227 KB of shared
memory, without register spills in its time loop, and passes the PTX checks of ``lstm_triton.ptx``. Each PTX check
is shown to reject a compiled kernel that breaks what it checks: small kernels written here, and
the product kernels compiled with one jit helper swapped.

Run as a script (without TRITON_INTERPRET) this file compiles those variants and prints, one
JSON line each, what the checks find.
"""

import json
import os
import subprocess
import sys
import tempfile
import types
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from unittest import mock

import pytest
import torch
import triton
import triton.language as tl

from lstm_triton import aot, kernels
from lstm_triton._env import minor_version
from lstm_triton.configs import H200, backward_config, heuristic
from lstm_triton.launch import loops_over_batch
from lstm_triton.ptx import BARRIER_SEMANTICS, EXCHANGE_CACHED, EXCHANGE_UNSYNCED, WEIGHTS_IN_LOOP, check_ptx


def _compile_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    return env | extra


@pytest.mark.compile
def test_grid_configs_compile_for_sm90_without_spills_and_pass_the_ptx_checks():
    r = subprocess.run(
        [sys.executable, "-m", "lstm_triton.aot"], capture_output=True, text=True, env=_compile_env(), timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(aot.grid_configs())
    bad = [
        f"{rep['kernel']}{'-varlen' if rep['varlen'] else ''} H={rep['hidden_size']} B={rep['B']} dirs={rep['dirs']} "
        f"{rep['dtype']}{'-ieee' if rep['exact_fp32'] else ''} {rep['config']}: {rep['problems']}"
        for rep in reports
        if rep["problems"]
    ]
    assert not bad, "\n".join(bad)
    # the tensor cores are used on the dot path: a silent fallback to FMA would cost 10x
    assert all(
        rep["matmul"] == "mma.sync" for rep in reports if not rep["config"]["use_fma"] and not rep["exact_fp32"]
    ), reports


# From triton 3.9 on, Triton puts a CTA barrier before an atomic on a scalar itself (the compiled
# variant has a bar.sync at the arrive's own line): without ours the arrive is still synchronized
TRITON_SYNCS_SCALAR_ATOMICS = minor_version(triton.__version__) >= (3, 9)

# What the checks must find in each variant (SMALL and PRODUCT below): nothing in the kernels as
# they are, the one check a variant breaks in the others.
EXPECTED = {
    "small": set(),
    "small-no-cta-barrier": {EXCHANGE_UNSYNCED},
    "small-weights-in-loop": {WEIGHTS_IN_LOOP},
    "small-exchange-through-l1": {EXCHANGE_CACHED},
    "small-exchange-ca": {EXCHANGE_CACHED},
    "fwd-P1": set(),
    "fwd-P1-no-cta-barrier": {EXCHANGE_UNSYNCED},  # the forward before the CTA barrier for P = 1
    "bwd-P1": set(),
    "bwd-P1-no-cta-barrier": {EXCHANGE_UNSYNCED},
    "fwd-P32": set(),
    "fwd-P32-relaxed-arrive": {BARRIER_SEMANTICS},
    "fwd-P32-relaxed-polls": {BARRIER_SEMANTICS},
    "fwd-P32-cta-scope-polls": {BARRIER_SEMANTICS},
    "fwd-P32-no-cta-barrier-before-arrive": set() if TRITON_SYNCS_SCALAR_ATOMICS else {BARRIER_SEMANTICS},
    "bwd-P32": set(),
    "bwd-P32-exchange-through-l1": {EXCHANGE_CACHED},
    "small-loop": set(),  # the batch loop: reloads of the previous step's rows inside a step
    "small-loop-no-cta-barrier": {EXCHANGE_UNSYNCED},
    "fwd-loop-P32": set(),
    "bwd-loop-P32": set(),
    "fwd-P32-dot": set(),  # the split-K dot as it is and transposed, whichever the heuristic picks
    "fwd-P32-dotT": set(),
}


@pytest.fixture(scope="module")
def variant_problems():
    r = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=_compile_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {rep["variant"]: rep["problems"] for rep in map(json.loads, r.stdout.splitlines())}


@pytest.mark.compile
@pytest.mark.parametrize("variant", list(EXPECTED))
def test_ptx_checks_reject_broken_variants(variant_problems, variant):
    problems = variant_problems[variant]
    assert {p.split(":", 1)[0] for p in problems} == EXPECTED[variant], problems


# A grid-barrier step written by hand: what Triton never emits (its scalar atomics broadcast the
# polled value through shared memory behind a bar.sync), so no compiled variant can show it.
BARRIER_STEP_PTX = """
.visible .entry step(
    .param .u64 .ptr .global .align 16 step_param_0,
    .param .u64 .ptr .global .align 16 step_param_1,
    .param .u64 .ptr .global .align 16 step_param_2
)
.reqntid 128
{
    ld.param.b64 %rd1, [step_param_0];
    ld.param.b64 %rd2, [step_param_1];
    ld.param.b64 %rd3, [step_param_2];
    ld.global.b32 %r1, [%rd1];
$L__BB0_1:
    st.global.b32 [%rd2], %r1;
    bar.sync 0;
    mov.b32 %r2, 1;
    atom.global.gpu.release.add.u32 %r3, [%rd3], %r2;
$L__BB0_2:
    ld.global.gpu.acquire.b32 %r4, [%rd3];
    setp.lt.s32 %p1, %r4, %r5;
    @%p1 bra $L__BB0_2;
    SYNC_AFTER_POLLS
    add.s64 %rd4, %rd2, 4;
    ld.global.cg.b32 %r1, [%rd4];
    @%p2 bra $L__BB0_1;
    ret;
}
"""


@pytest.mark.parametrize(
    "sync, found",
    [
        pytest.param("bar.sync 0;", set(), id="bar.sync"),
        pytest.param("barrier.sync.aligned 0;", set(), id="barrier.sync.aligned"),
        pytest.param("bar.sync 0, 128;", set(), id="bar.sync-all-threads"),
        pytest.param("", {BARRIER_SEMANTICS}, id="none"),
        pytest.param("@%p3 bar.sync 0;", {BARRIER_SEMANTICS}, id="predicated"),
        pytest.param("bar.sync 1, 64;", {BARRIER_SEMANTICS}, id="half-the-threads"),
        pytest.param("bar.arrive 0, 128;", {BARRIER_SEMANTICS}, id="arrive-only"),
    ],
)
def test_ptx_checks_want_a_cta_barrier_between_polls_and_exchange_loads(sync, found):
    ptx = BARRIER_STEP_PTX.replace("SYNC_AFTER_POLLS", sync)
    problems = check_ptx(ptx, ["p_w", "p_y", "p_cnt"], weights="p_w", exchange="p_y", counter="p_cnt")
    assert {p.split(":", 1)[0] for p in problems} == found, problems


ATOM_ARRIVE = "atom.global.gpu.release.add.u32 %r3, [%rd3], %r2;"


@pytest.mark.parametrize(
    "arrive, found",
    [
        pytest.param("red.global.gpu.release.add.u32 [%rd3], %r2;", set(), id="red-release"),
        pytest.param("red.global.gpu.relaxed.add.u32 [%rd3], %r2;", {BARRIER_SEMANTICS}, id="red-relaxed"),
        pytest.param("red.global.cta.release.add.u32 [%rd3], %r2;", {BARRIER_SEMANTICS}, id="red-cta"),
        pytest.param("mov.b32 %r3, 0;", {BARRIER_SEMANTICS}, id="no-arrive"),
    ],
)
def test_ptx_checks_read_an_arrive_without_result(arrive, found):
    """Triton 3.9 emits the arrive, whose result the kernel ignores, as ``red``: it must count as
    the arrive, with its semantics checked as an ``atom``'s."""
    ptx = BARRIER_STEP_PTX.replace("SYNC_AFTER_POLLS", "bar.sync 0;").replace(ATOM_ARRIVE, arrive)
    problems = check_ptx(ptx, ["p_w", "p_y", "p_cnt"], weights="p_w", exchange="p_y", counter="p_cnt")
    assert {p.split(":", 1)[0] for p in problems} == found, problems


# ---- the variants (compiled in a subprocess: the kernels must not be interpreted) ----


@triton.jit
def _exchange_kernel(
    p_w, p_y, T, N: tl.constexpr, W_IN_LOOP: tl.constexpr, CTA_BARRIER: tl.constexpr, CACHE: tl.constexpr
):
    """The recurrent kernels' pattern at its smallest: weights on chip, h_t stored in one layout
    and reloaded in another (across warps), every step."""
    o = tl.arange(0, N)
    b_w = tl.load(p_w + o[:, None] * N + o[None, :])
    b_h = tl.zeros([N], dtype=tl.float32)
    for s in range(T):
        if W_IN_LOOP:  # the address depends on the step: nothing can hoist the load
            b_w = tl.load(p_w + (s % 2) * N * N + o[:, None] * N + o[None, :])
        h = tl.sum(b_h[:, None] * b_w, axis=0)
        tl.store(p_y + s * N + o, h)
        if CTA_BARRIER:
            tl.debug_barrier()
        b_h = tl.load(p_y + s * N + o, cache_modifier=CACHE)


@triton.jit
def _batch_loop_exchange_kernel(p_w, p_y, T, J, N: tl.constexpr, CTA_BARRIER: tl.constexpr):
    """The batch loop's pattern at its smallest: each step walks J row blocks, each reloading its
    h of the previous step and storing the new one, with one CTA barrier per step."""
    o = tl.arange(0, N)
    b_w = tl.load(p_w + o[:, None] * N + o[None, :])
    for s in range(1, T):
        for j in range(J):
            b_h = tl.load(p_y + ((s - 1) * J + j) * N + o, cache_modifier=".cg")
            tl.store(p_y + (s * J + j) * N + o, tl.sum(b_h[:, None] * b_w, axis=0))
        if CTA_BARRIER:
            tl.debug_barrier()


@tl.core.builtin
def _no_cta_barrier(_semantic=None):
    """``tl.debug_barrier`` that emits nothing."""


# triton.language with tl.debug_barrier emitting nothing: kernels/common.py with it compiles the
# P = 1 step's end as it was before its CTA barrier
_tl_without_cta_barrier = types.ModuleType(tl.__name__)
vars(_tl_without_cta_barrier).update(vars(tl))
_tl_without_cta_barrier.debug_barrier = _no_cta_barrier


@triton.jit
def _grid_barrier_variant(
    p_cnt,
    target,
    max_spins,
    ARRIVE_SEM: tl.constexpr,
    POLL_SEM: tl.constexpr,
    POLL_SCOPE: tl.constexpr,
    SYNC_FIRST: tl.constexpr,
):
    """The product's grid barrier with its memory semantics as parameters."""
    if SYNC_FIRST:
        tl.debug_barrier()
    tl.atomic_add(p_cnt, 1, sem=ARRIVE_SEM, scope="gpu")
    cur = tl.atomic_add(p_cnt, 0, sem=POLL_SEM, scope=POLL_SCOPE)
    spins = 0
    while (cur < target) & (spins < max_spins):
        cur = tl.atomic_add(p_cnt, 0, sem=POLL_SEM, scope=POLL_SCOPE)
        spins += 1
    tl.debug_barrier()


@triton.jit
def _barrier_relaxed_arrive(p_cnt, p_err, target, max_spins):
    _grid_barrier_variant(p_cnt, target, max_spins, "relaxed", "acquire", "gpu", True)


@triton.jit
def _barrier_relaxed_polls(p_cnt, p_err, target, max_spins):
    _grid_barrier_variant(p_cnt, target, max_spins, "release", "relaxed", "gpu", True)


@triton.jit
def _barrier_cta_scope_polls(p_cnt, p_err, target, max_spins):
    _grid_barrier_variant(p_cnt, target, max_spins, "release", "acquire", "cta", True)


@triton.jit
def _barrier_arrive_unsynced(p_cnt, p_err, target, max_spins):
    _grid_barrier_variant(p_cnt, target, max_spins, "release", "acquire", "gpu", False)


@triton.jit
def _recurrent_dh_through_l1(
    p_dx, o_dg, m_dg, b_wt, SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr
):
    """The backward's ``_recurrent_dh`` with a default-cached load of the exchanged dgates."""
    b_dg = tl.load(p_dx + o_dg, mask=m_dg, other=0.0)
    if UPCAST:
        b_dg = b_dg.to(tl.float32)
    if SPLIT_K == 1:
        return tl.dot(b_dg, b_wt, input_precision=PRECISION)
    else:
        return tl.sum(tl.dot(b_dg, b_wt, input_precision=PRECISION), axis=0)


# small-kernel variants: (W_IN_LOOP, CTA_BARRIER, CACHE)
SMALL = {
    "small": (False, True, ".cg"),
    "small-no-cta-barrier": (False, False, ".cg"),
    "small-weights-in-loop": (True, True, ".cg"),
    "small-exchange-through-l1": (False, True, ""),
    "small-exchange-ca": (False, True, ".ca"),
}
SMALL_LOOP = {"small-loop": True, "small-loop-no-cta-barrier": False}  # CTA_BARRIER
# product variants: kernel, hidden size (the config of batch 8, one direction, bf16), whether the
# batch loop runs (twice the batch on a chip of one barrier group), swapped module attributes
P1_H, P32_H = 128, 256  # one program per group, and 32 (BLOCK_H = 8)
NO_CTA_BARRIER = {"common.tl": _tl_without_cta_barrier}
PRODUCT = {
    "fwd-P1": ("fwd", P1_H, False, {}),
    "fwd-P1-no-cta-barrier": ("fwd", P1_H, False, NO_CTA_BARRIER),
    "bwd-P1": ("bwd", P1_H, False, {}),
    "bwd-P1-no-cta-barrier": ("bwd", P1_H, False, NO_CTA_BARRIER),
    "fwd-P32": ("fwd", P32_H, False, {}),
    "fwd-P32-relaxed-arrive": ("fwd", P32_H, False, {"common._grid_barrier": _barrier_relaxed_arrive}),
    "fwd-P32-relaxed-polls": ("fwd", P32_H, False, {"common._grid_barrier": _barrier_relaxed_polls}),
    "fwd-P32-cta-scope-polls": ("fwd", P32_H, False, {"common._grid_barrier": _barrier_cta_scope_polls}),
    "fwd-P32-no-cta-barrier-before-arrive": ("fwd", P32_H, False, {"common._grid_barrier": _barrier_arrive_unsynced}),
    "bwd-P32": ("bwd", P32_H, False, {}),
    "bwd-P32-exchange-through-l1": ("bwd", P32_H, False, {"lstm_bwd._recurrent_dh": _recurrent_dh_through_l1}),
    "fwd-loop-P32": ("fwd", P32_H, True, {}),
    "fwd-P32-dot": ("fwd", P32_H, False, {}),
    "fwd-P32-dotT": ("fwd", P32_H, False, {}),
    "bwd-loop-P32": ("bwd", P32_H, True, {}),
}


def _variant_problems(name: str, cache_dir: str) -> list[str]:
    # a cache of its own: a swapped helper does not change the kernel's cache key, so a variant
    # and the kernel as it is would hit (or, compiled at once, overwrite) each other's entry
    triton.knobs.cache.dir = cache_dir
    if name in SMALL_LOOP:
        N = 64
        args = (torch.empty(N, N), torch.empty(8 * 3, N), 8, 3)
        kwargs = dict(N=N, CTA_BARRIER=SMALL_LOOP[name], num_warps=4)
        compiled, names = aot.compile_call(_batch_loop_exchange_kernel, args, kwargs)
        return check_ptx(compiled.asm["ptx"], names, weights="p_w", exchange="p_y", counter=None)
    if name in SMALL:
        w_in_loop, cta_barrier, cache = SMALL[name]
        N = 64
        args = (torch.empty(2, N, N), torch.empty(8, N), 8)
        kwargs = dict(N=N, W_IN_LOOP=w_in_loop, CTA_BARRIER=cta_barrier, CACHE=cache, num_warps=4)
        compiled, names = aot.compile_call(_exchange_kernel, args, kwargs)
        return check_ptx(compiled.asm["ptx"], names, weights="p_w", exchange="p_y", counter=None)
    kind, H, loop, swaps = PRODUCT[name]
    B, dirs, dtype = 8, 1, torch.bfloat16
    config = heuristic(H, B, dirs, dtype, H200)
    P = config.programs(H)
    assert P == (1 if H == P1_H else 32), config
    if kind == "bwd":
        config = backward_config(config, H, dtype, H200)
    if name.endswith(("-dot", "-dotT")):
        config = replace(config, gates_on_m=name.endswith("-dotT"))
    chip = replace(H200, n_sm=P) if loop else H200
    B = 2 * config.block_b if loop else B
    assert loops_over_batch(config, H, B, dirs, chip) == loop
    with ExitStack() as stack:
        for target, new in swaps.items():
            module, attr = target.split(".")
            stack.enter_context(mock.patch.object(getattr(kernels, module), attr, new))
        return aot.compile_kernel(
            aot.BWD if kind == "bwd" else aot.FWD, config, H, B, dirs, dtype, chip=chip
        ).ptx_problems


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: this compiles the kernels for the GPU")
    with tempfile.TemporaryDirectory(prefix="lstm_triton_variants_") as cache, ProcessPoolExecutor() as pool:
        dirs = [os.path.join(cache, name) for name in EXPECTED]
        for variant, problems in zip(EXPECTED, pool.map(_variant_problems, EXPECTED, dirs), strict=True):
            print(json.dumps(dict(variant=variant, problems=problems)), flush=True)
