"""The persistent schedule on CPU: one launch for all steps, its programs meeting at the grid
barrier, run by the interpreter with one thread per program under seeded adversarial schedules
(``tests/interleaving.py``). Its outputs, saved activations and gradients must be the stepwise
mode's bit for bit (a launch per step: the launch boundary is the barrier) and close to a
float64 reference, over hidden splits, batch tiles, directions, barrier groups split over
launches, steps split into chunks, lengths, projections and dtypes. Kernels made racy on purpose
(no barrier, a barrier that opens one arrival early) must be caught on every seed; a barrier
that cannot open ends in BarrierTimeoutError, and a real deadlock in the harness's error."""

import functools
import warnings
from dataclasses import dataclass

import pytest
import torch
import triton
import triton.language as tl
from torch import nn
from triton.runtime import interpreter

import lstm_triton.launch
import lstm_triton.module
from lstm_triton import LSTMConfig
from lstm_triton._env import interpreting
from lstm_triton.configs import INTERPRETER, Chip
from lstm_triton.kernels import common
from lstm_triton.kernels.common import _grid_barrier
from lstm_triton.launch import (
    PERSISTENT,
    STEPWISE,
    BarrierTimeoutError,
    Saved,
    check_timeouts,
    lstm_recurrent_bwd,
    lstm_recurrent_fwd,
    schedule,
    timeout_flag,
)
from lstm_triton.layout import PackedLayer, pack_layer
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, assert_close, dtype_id, tolerance
from tests.interleaving import Deadlock, Launch, NotInterleaved, Schedule, UnsupportedTriton, concurrent_programs
from tests.test_backward import grad_tolerance
from tests.test_projections import Case as ModuleCase
from tests.test_projections import make_pair

pytestmark = pytest.mark.skipif(not interpreting(), reason="a GPU runs the persistent schedule itself")

F32, BF16 = torch.float32, torch.bfloat16
SEEDS = [pytest.param(s, id=f"seed{s}") for s in (0, 1, 2)]
I = 3  # input size: the input projection is a plain GEMM, outside the kernels


@dataclass(frozen=True)
class Case:
    """One layer's recurrence on the launcher: ``block_h`` sets the programs per barrier group
    (P = cdiv(H, block_h)), ``block_b`` the batch tiles."""

    H: int
    block_h: int
    B: int
    block_b: int
    T: int
    bi: bool = False
    init: bool = False
    lengths: tuple[int, ...] | None = None
    dtype: torch.dtype = F32
    train: bool = True  # the training forward (save) and the backward; else inference
    use_fma: bool = False
    gates_on_m: bool = False  # the transposed split-K dot (split_k 2)
    n_sm: int | None = None  # plan for a chip this small: programs walk several batch tiles
    batch_loop: bool = True  # False: barrier groups beyond the chip run as launches in series
    max_count: int | None = None  # MAX_BARRIER_COUNT: persistent launches of fewer steps

    @property
    def config(self) -> LSTMConfig:
        return LSTMConfig(
            self.block_h,
            self.block_b,
            split_k=2 if self.gates_on_m else 1,
            use_fma=self.use_fma,
            batch_loop=self.batch_loop,
            gates_on_m=self.gates_on_m,
        )

    @property
    def chip(self) -> Chip | None:
        return None if self.n_sm is None else Chip(f"{self.n_sm} SMs", n_sm=self.n_sm, smem_per_block=1 << 20)

    @property
    def id(self) -> str:
        P = self.config.programs(self.H)
        return "-".join(
            [f"H{self.H}-P{P}-B{self.B}-BB{self.block_b}-T{self.T}", "bi" if self.bi else "uni"]
            + ["h0"] * self.init
            + ["varlen"] * (self.lengths is not None)
            + ["fma"] * self.use_fma
            + ["dotT"] * self.gates_on_m
            + ([f"sm{self.n_sm}"] if self.n_sm else [])
            + ["serial"] * (not self.batch_loop)
            + ([f"count{self.max_count}"] if self.max_count else [])
            + [dtype_id(self.dtype), "train" if self.train else "infer"]
        )


CASES = [
    Case(H=16, block_h=8, B=3, block_b=4, T=6, train=False),
    Case(H=16, block_h=8, B=3, block_b=2, T=4, bi=True, init=True),  # 2 batch tiles, both directions
    Case(H=28, block_h=8, B=2, block_b=2, T=3, bi=True, init=True, dtype=BF16),  # P = 4, padded units
    Case(H=32, block_h=8, B=4, block_b=4, T=4, lengths=(4, 1, 3, 2), dtype=BF16, train=False),
    Case(H=16, block_h=8, B=1, block_b=1, T=4, bi=True, use_fma=True, train=False),
    Case(H=28, block_h=8, B=3, block_b=4, T=3, bi=True, init=True, gates_on_m=True, dtype=BF16),
    # 4 barrier groups, one per launch
    Case(H=16, block_h=8, B=3, block_b=2, T=4, bi=True, lengths=(4, 1, 3), n_sm=2, batch_loop=False),
    # one launch: each program walks 3 batch tiles per step, both directions
    Case(H=16, block_h=8, B=5, block_b=2, T=4, bi=True, init=True, lengths=(4, 1, 3, 2, 4), n_sm=4),
    Case(H=28, block_h=8, B=3, block_b=2, T=3, dtype=BF16, n_sm=4),  # P = 4, padded units, 2 tiles
    # 2 batch programs, each walking every 2nd of the 4 tiles (0, 2 and 1, 3) per step
    Case(H=16, block_h=8, B=8, block_b=2, T=3, init=True, n_sm=4),
    # 2 batch programs per direction over 3 tiles (0, 2 and 1), in 2 full chunks of 2 steps: the
    # second (T a multiple of the chunk) is the last, which forms dh_0
    Case(H=16, block_h=8, B=5, block_b=2, T=4, bi=True, init=True, lengths=(4, 1, 3, 2, 4), n_sm=8, max_count=4),
    # 2 steps a launch (counts up to 4 at P = 2): 3 chunks x 2 launches of one barrier group
    Case(H=16, block_h=8, B=2, block_b=2, T=5, bi=True, init=True, n_sm=2, max_count=4),
]
# Small enough to run many schedules; a race shows in one step of one of them.
RACE_CASE = Case(H=16, block_h=8, B=3, block_b=4, T=6, bi=True, init=True)


@dataclass
class Problem:
    """A case's weights and inputs, the float64 reference and the stepwise results."""

    layer: PackedLayer
    xp: torch.Tensor
    h0: torch.Tensor | None
    c0: torch.Tensor | None
    lengths: torch.Tensor | None
    grads_out: tuple  # dy, dh_n, dc_n
    reference: tuple  # float64 y, h_n, c_n
    stepwise: dict
    saved: Saved | None  # the stepwise training forward's


@functools.cache
def problem(case: Case) -> Problem:
    gen = torch.Generator().manual_seed(0)
    ref = nn.LSTM(I, case.H, bidirectional=case.bi).to(case.dtype)
    with torch.no_grad():
        for w in ref.parameters():
            w.copy_(torch.rand(w.shape, generator=gen) - 0.5)
    D = 2 if case.bi else 1
    sfx = ("", "_reverse")[:D]
    layer = pack_layer(
        *([getattr(ref, f"{k}_l0{s}").detach() for s in sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
        block_h=case.block_h,
    )
    x = torch.randn(case.T, case.B, I, generator=gen).to(case.dtype)
    hx = tuple(torch.randn(D, case.B, case.H, generator=gen).to(case.dtype) for _ in range(2)) if case.init else None
    xp = torch.addmm(layer.bias, x.view(-1, I), layer.w_ih.t()).view(case.T, case.B, -1)
    lengths = None if case.lengths is None else torch.tensor(case.lengths)
    grads_out = (
        torch.randn(case.T, case.B, D * case.H, generator=gen).to(case.dtype),
        *(torch.randn(D, case.B, case.H, generator=gen).to(case.dtype) for _ in range(2)),
    )
    with torch.no_grad():
        y, (h_n, c_n) = lstm_reference(ref, x, hx, lengths=lengths)
    prob = Problem(layer, xp, *(hx or (None, None)), lengths, grads_out, (y, h_n, c_n), {}, None)
    prob.stepwise, prob.saved = forward(case, prob, STEPWISE)
    if case.train:
        prob.stepwise |= backward(case, prob, prob.saved, STEPWISE)
    return prob


def forward(case: Case, prob: Problem, mode: str, **kwargs) -> tuple[dict, Saved | None]:
    y, h_n, c_n, saved = lstm_recurrent_fwd(
        prob.xp, prob.layer, prob.h0, prob.c0, case.config, save=case.train, lengths=prob.lengths, mode=mode,
        chip=case.chip, **kwargs,
    )  # fmt: skip
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if saved is not None:
        out |= {"saved gates": saved.gates, "saved c": saved.cs}
    return out, saved


def backward(case: Case, prob: Problem, saved: Saved, mode: str, **kwargs) -> dict:
    dy, dh_n, dc_n = prob.grads_out
    dxp, dw_hh, dh0, dc0 = lstm_recurrent_bwd(
        dy, dh_n, dc_n, prob.layer, prob.stepwise["y"], prob.h0, prob.c0, saved, case.config, lengths=prob.lengths,
        mode=mode, chip=case.chip, **kwargs,
    )  # fmt: skip
    return {"dxp": dxp, "dw_hh": dw_hh, "dh0": dh0, "dc0": dc0}


def assert_bitwise_equal(got: dict, want: dict, seed: int) -> None:
    assert got.keys() == want.keys()
    for name, a in got.items():
        b = want[name]
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.isfinite(a).all(), f"seed {seed}: {name} holds NaN/Inf (an element no program wrote)"
            diff = (a.double() - b.double()).abs().max().item()
            assert torch.equal(a, b), f"seed {seed}: persistent {name} differs from stepwise (max |diff| {diff:.3e})"


def persistent_launches(case: Case, kernel: str, sched: Schedule) -> list[Launch]:
    """The launches of ``kernel`` in ``sched``, checked to be the persistent plan's: one per
    chunk of steps and group of barrier groups, each passing the barrier."""
    launches = [launch for launch in sched.launches if launch.kernel == kernel]
    n_tiles = triton.cdiv(case.B, case.block_b)
    plan = schedule(
        case.T,
        case.config.programs(case.H),
        n_tiles,
        2 if case.bi else 1,
        PERSISTENT,
        case.chip or INTERPRETER,
        batch_loop=case.batch_loop,
    )
    assert len(launches) == len(plan), f"{kernel}: {len(launches)} launches, the persistent plan has {len(plan)}"
    assert all(launch.polls for launch in launches), f"{kernel}: a launch never polled the barrier"
    return launches


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_persistent_matches_stepwise_bit_for_bit(case, seed, monkeypatch):
    prob = problem(case)  # stepwise, with the sequential interpreter
    if case.max_count is not None:
        monkeypatch.setattr(lstm_triton.launch, "MAX_BARRIER_COUNT", case.max_count)
    with concurrent_programs(seed) as sched:
        got, saved = forward(case, prob, PERSISTENT)
        if case.train:
            got |= backward(case, prob, saved, PERSISTENT)
    assert_bitwise_equal(got, prob.stepwise, seed)
    tol = tolerance(case.dtype)
    for name, want in zip(("y", "h_n", "c_n"), prob.reference, strict=True):
        assert_close(name, got[name], want, tol)
    launches = persistent_launches(case, "_lstm_fwd_kernel", sched)
    if case.train:
        launches += persistent_launches(case, "_lstm_bwd_kernel", sched)
    assert any(launch.waits for launch in launches), f"seed {seed}: no program ever waited at the barrier"


MODULE_CASES = [
    ModuleCase(B=2, T=4, H=16, R=0, I=4, bi=True, init=True, config=LSTMConfig(8, 2)),
    ModuleCase(B=3, T=4, H=16, R=5, I=3, bi=True, init=True, varlen=True, dtype=BF16, config=LSTMConfig(8, 4)),
]


def outputs_and_gradients(run, params, x, hx) -> dict:
    """``run(x, hx) -> (y, (h_n, c_n))``'s outputs and the gradients of a fixed loss of them with
    respect to x, h_0, c_0 and every named parameter in ``params``."""
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx)
    params = dict(params)
    for p in params.values():
        p.grad = None
    y, (h_n, c_n) = run(x, hx)
    outs = {"output": y, "h_n": h_n, "c_n": c_n}
    sum(
        (t.double() * torch.linspace(-1, 1, t.numel(), dtype=torch.float64).view_as(t)).sum() for t in outs.values()
    ).backward()
    grads = {"input": x.grad, "h_0": hx[0].grad, "c_0": hx[1].grad} | {k: p.grad for k, p in params.items()}
    return outs | {f"d {k}": g for k, g in grads.items()}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MODULE_CASES])
def test_module_trains_persistent(case, seed, monkeypatch):
    """lstm_triton.LSTM's training forward and backward in the persistent mode the GPU runs
    (with projections and lengths too): every output and gradient close to float64 and the
    stepwise mode's bit for bit."""
    monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: case.config)
    ours, ref = make_pair(case)
    gen = torch.Generator().manual_seed(seed)
    n = case.layers * case.D
    x = torch.randn(case.T, case.B, case.I, generator=gen).to(case.dtype)
    hx = tuple(torch.randn(n, case.B, w, generator=gen).to(case.dtype) for w in (case.R or case.H, case.H))
    lengths = torch.tensor([case.T, 1, *torch.randint(1, case.T + 1, (case.B - 2,), generator=gen).tolist()])
    lengths = lengths if case.varlen else None
    assert ours.kernel_plan(x, hx, training=True, lengths=lengths).reason is None

    def run(x, hx):
        return ours(x, hx, lengths=lengths)

    ref64 = ref.double()
    want = outputs_and_gradients(
        lambda x, hx: lstm_reference(ref64, x, hx, lengths=lengths), ref64.named_parameters(), x.double(),
        tuple(t.double() for t in hx),
    )  # fmt: skip
    stepwise = outputs_and_gradients(run, ours.named_parameters(), x, hx)
    monkeypatch.setattr(lstm_triton.launch, "default_mode", lambda n_prog: PERSISTENT)
    with concurrent_programs(seed) as sched:
        got = outputs_and_gradients(run, ours.named_parameters(), x, hx)
    assert_bitwise_equal(got, stepwise, seed)
    for name, value in got.items():
        tol = grad_tolerance(case.dtype) if name.startswith("d ") else tolerance(case.dtype)
        assert_close(name, value, want[name], tol)
    assert sched.launches and all(launch.polls for launch in sched.launches), "a launch was not persistent"


@triton.jit
def _no_barrier(p_cnt, p_err, target, max_spins):
    tl.debug_barrier()  # the program's own warps only: programs never wait for each other


@triton.jit
def _barrier_one_early(p_cnt, p_err, target, max_spins):
    _grid_barrier(p_cnt, p_err, target - 1, max_spins)


@triton.jit
def _barrier_one_short(p_cnt, p_err, target, max_spins):
    # waits for one arrival more than the group has: it can never open
    _grid_barrier(p_cnt, p_err, target + 1, max_spins)


KERNELS = {"fwd": "_lstm_fwd_kernel", "bwd": "_lstm_bwd_kernel"}


def run_persistent(kernel: str, case: Case, prob: Problem, **kwargs) -> dict:
    """``kernel``'s persistent launches on the stepwise results (the backward on the stepwise
    training forward's activations)."""
    if kernel == "fwd":
        return forward(case, prob, PERSISTENT, **kwargs)[0]
    return backward(case, prob, prob.saved, PERSISTENT, **kwargs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "kernel, barrier",
    [("fwd", _no_barrier), ("fwd", _barrier_one_early), ("bwd", _no_barrier), ("bwd", _barrier_one_early)],
    ids=["fwd-no-barrier", "fwd-barrier-one-early", "bwd-no-barrier", "bwd-barrier-one-early"],
)
def test_racy_kernel_is_caught(kernel, barrier, seed, monkeypatch):
    """The kernel's barrier swapped for a racy one (the interpreter looks a function's globals up
    in its module at run time: kernels.common's, where the step's end calls the barrier): some
    program reads an exchange row before every program wrote it, on every seed."""
    prob = problem(RACE_CASE)
    name = KERNELS[kernel]
    monkeypatch.setattr(common, "_grid_barrier", barrier)
    with concurrent_programs(seed) as sched:
        got = run_persistent(kernel, RACE_CASE, prob)
    differs = [k for k, t in got.items() if t is not None and not torch.equal(t, prob.stepwise[k])]
    assert differs, f"seed {seed}: the racy {kernel} kernel went unseen"
    polls = sum(launch.polls for launch in sched.launches if launch.kernel == name)
    assert (polls == 0) == (barrier is _no_barrier), "the barrier was not swapped"


@pytest.mark.parametrize("kernel", ["fwd", "bwd"])
def test_barrier_that_cannot_open_times_out(kernel, monkeypatch):
    """A group that can never be complete: every program's bounded wait runs out, the kernel
    finishes and the host raises BarrierTimeoutError, once (the flag is cleared); the harness
    sees no hang."""
    prob = problem(RACE_CASE)
    monkeypatch.setattr(common, "_grid_barrier", _barrier_one_short)
    with concurrent_programs(0) as sched, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # garbage gates overflow exp()
        with pytest.raises(BarrierTimeoutError, match="timed out"):
            run_persistent(kernel, RACE_CASE, prob, max_spins=8)
    (launch,) = sched.launches
    assert launch.waits >= 8, "no program ran its wait down"
    assert not timeout_flag(DEVICE).any(), "the reported time-out's flag was not cleared"
    check_timeouts(DEVICE)  # what the next persistent call runs: nothing left to report


def test_deadlock_is_reported_not_hung(monkeypatch):
    """The same barrier with an unbounded wait: the harness ends the launch with Deadlock."""
    prob = problem(RACE_CASE)
    monkeypatch.setattr(common, "_grid_barrier", _barrier_one_short)
    with concurrent_programs(0, hang_polls=100), pytest.raises(Deadlock, match="deadlock in _lstm_fwd_kernel"):
        run_persistent("fwd", RACE_CASE, prob)


def test_launch_past_its_wall_time_is_abandoned(monkeypatch):
    """Without the poll count to stop it, the join time-out ends the launch."""
    prob = problem(RACE_CASE)
    monkeypatch.setattr(common, "_grid_barrier", _barrier_one_short)
    with concurrent_programs(0, hang_polls=1 << 40, join_timeout_s=0.5), pytest.raises(Deadlock, match="still running"):
        run_persistent("fwd", RACE_CASE, prob)


def test_a_seed_replays_exactly():
    """The interleaving is a function of the seed: the same launches switch at the same places."""
    case = Case(H=16, block_h=8, B=2, block_b=2, T=3, train=False)
    prob = problem(case)
    runs = []
    for _ in range(2):
        with concurrent_programs(7) as sched:
            forward(case, prob, PERSISTENT)
        runs.append(sched.launches)
    assert runs[0] == runs[1]


def test_the_plain_interpreter_is_back_after_a_block():
    """After a block, also one left by an error, launches run sequentially again: a persistent
    launch of 2 programs waits for the second in vain and times out."""
    executor, builder = interpreter.GridExecutor, vars(interpreter.interpreter_builder).copy()
    with pytest.raises(KeyError, match="left by an error"), concurrent_programs(0):
        raise KeyError("left by an error")
    assert interpreter.GridExecutor is executor and vars(interpreter.interpreter_builder) == builder
    case = Case(H=16, block_h=8, B=2, block_b=2, T=2, train=False)
    with warnings.catch_warnings(), pytest.raises(BarrierTimeoutError):
        warnings.simplefilter("ignore", RuntimeWarning)
        forward(case, problem(case), PERSISTENT, max_spins=8)
    assert not timeout_flag(DEVICE).any(), "the reported time-out's flag was not cleared"


def test_a_block_that_ran_nothing_concurrently_fails():
    with pytest.raises(NotInterleaved, match="no launch"), concurrent_programs(0):
        pass
    for launch, match in (
        (Launch("k", (2, 1, 1), 0.02, (), loads=9), "no load or store"),
        (Launch("k", (2, 1, 1), 0.02, (), loads=9, stores=4, polls=4), "one after another"),
    ):
        with pytest.raises(NotInterleaved, match=match):
            Schedule(0, hang_polls=1, join_timeout_s=1.0, launches=[launch]).check_interleaved()


def test_missing_interpreter_internals_name_the_triton_version(monkeypatch):
    monkeypatch.delattr(interpreter, "_implicit_cvt")
    with pytest.raises(UnsupportedTriton, match=f"triton {triton.__version__} lacks _implicit_cvt"):
        with concurrent_programs(0):
            pass
