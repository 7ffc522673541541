"""The recurrent launcher on its own: launch modes, launch plans that split the grid, the
barrier time-out, and argument checks."""

import warnings

import pytest
import torch
import triton
from torch import nn

import lstm_triton.launch
from lstm_triton import BarrierTimeoutError, LSTMConfig
from lstm_triton.configs import Chip
from lstm_triton.launch import (
    PERSISTENT,
    STEPWISE,
    Group,
    check_timeouts,
    launch_groups,
    lstm_recurrent_bwd,
    lstm_recurrent_fwd,
    schedule,
    timeout_flag,
)
from lstm_triton.layout import pack_layer
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, assert_close, tolerance

interpreter_only = pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's sequential programs")


def packed_problem(H=24, input_size=5, T=7, B=5, bi=True, block_h=8, init=True, dtype=torch.float32):
    ref = nn.LSTM(input_size, H, bidirectional=bi).to(dtype)
    D = 2 if bi else 1
    sfx = ("", "_reverse")[:D]
    p = pack_layer(
        *([getattr(ref, f"{k}_l0{s}").detach() for s in sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
        block_h=block_h,
    )
    x = torch.randn(T, B, input_size, dtype=dtype)
    hx = tuple(torch.randn(D, B, H, dtype=dtype) for _ in range(2)) if init else None
    xp = torch.addmm(p.bias, x.reshape(T * B, input_size), p.w_ih.t()).view(T, B, -1)
    want = lstm_reference(ref, x, hx)

    def to(t):
        return None if t is None else t.to(DEVICE)

    p.w_hh = p.w_hh.to(DEVICE)
    return to(xp), p, to(hx[0]) if init else None, to(hx[1]) if init else None, want


@pytest.mark.parametrize("mode", [PERSISTENT, STEPWISE])
@pytest.mark.parametrize("init", [False, True], ids=["zeros", "h0"])
def test_modes_match_reference(mode, init):
    """Stepwise (launch per step) and persistent (one launch) compute the same recurrence."""
    xp, layer, h0, c0, (want_y, (want_h, want_c)) = packed_problem(init=init, block_h=32)  # P = 1
    y, h_n, c_n, _ = lstm_recurrent_fwd(xp, layer, h0, c0, LSTMConfig(block_h=32, block_b=4), mode=mode)
    tol = tolerance(torch.float32)
    assert_close("y", y, want_y, tol)
    assert_close("h_n", h_n, want_h, tol)
    assert_close("c_n", c_n, want_c, tol)


def test_launch_plan_splits_groups_over_launches():
    """Without the batch loop, a chip with fewer SMs than programs gets several persistent
    launches, each co-resident, every (batch tile, direction) group in exactly one."""
    chip = Chip("tiny", n_sm=3, smem_per_block=1 << 20)
    xp, layer, h0, c0, (want_y, (want_h, want_c)) = packed_problem(B=5, block_h=32)
    cfg = LSTMConfig(block_h=32, block_b=2, batch_loop=False)  # P = 1, 3 batch tiles x 2 directions
    plan = launch_groups(cfg.programs(24), 3, 2, chip, batch_loop=False)
    assert len(plan) > 1 and all(g.n_b * g.n_dirs <= chip.n_sm and not g.loop for g in plan)
    covered = sorted((b, d) for b0, nb, d0, nd, _ in plan for b in range(b0, b0 + nb) for d in range(d0, d0 + nd))
    assert covered == [(b, d) for b in range(3) for d in range(2)]
    y, h_n, c_n, _ = lstm_recurrent_fwd(xp, layer, h0, c0, cfg, mode=PERSISTENT, chip=chip)
    tol = tolerance(torch.float32)
    assert_close("y", y, want_y, tol)
    assert_close("h_n", h_n, want_h, tol)
    assert_close("c_n", c_n, want_c, tol)


@pytest.mark.parametrize(
    "n_sm, P, n_tiles, dirs, want",
    [
        (132, 64, 8, 2, [Group(0, 1, 0, 2, True)]),  # H=1024 BH16 bi, B=256 in tiles of 32
        (132, 8, 8, 2, [Group(0, 8, 0, 2, False)]),  # all co-resident: no loop
        (132, 16, 16, 2, [Group(0, 4, 0, 2, True)]),  # 4 tiles a program, none idle
        (132, 32, 7, 1, [Group(0, 4, 0, 1, True)]),  # 2 tiles a program: 4 programs, not 5
        (132, 128, 2, 2, [Group(0, 1, 0, 1, True), Group(0, 1, 1, 1, True)]),  # a direction at a time
    ],
)
def test_batch_loop_plans_one_launch_while_the_directions_fit(n_sm, P, n_tiles, dirs, want):
    chip = Chip("any", n_sm=n_sm, smem_per_block=1 << 20)
    assert launch_groups(P, n_tiles, dirs, chip) == want
    for g in want:  # co-resident, every tile of every direction walked once
        assert P * g.n_b * g.n_dirs <= n_sm
        walked = [t for b in range(g.n_b) for t in range(b, n_tiles, g.n_b)] if g.loop else list(range(g.n_b))
        assert sorted(walked) == list(range(n_tiles))


# (B, bi, SMs, batch programs per direction, h0): P = 1, batch tiles of 2 rows
BATCH_LOOP_PLANS = [
    pytest.param(5, True, 2, 1, False, id="B5-bi-1prog-3tiles-zeros"),  # one program walks tiles 0, 1, 2
    pytest.param(5, True, 2, 1, True, id="B5-bi-1prog-3tiles-h0"),
    pytest.param(8, False, 2, 2, True, id="B8-uni-2progs-2tiles-h0"),  # programs walk tiles 0, 2 and 1, 3
    pytest.param(5, True, 4, 2, True, id="B5-bi-2progs-uneven-h0"),  # programs walk tiles 0, 2 and 1
]


@pytest.mark.parametrize("B, bi, n_sm, n_b, init", BATCH_LOOP_PLANS)
def test_batch_loop_matches_serial_launches_bit_for_bit(B, bi, n_sm, n_b, init):
    """Each program walking several batch tiles per step in one launch (P = 1; with n_b > 1
    batch programs, every n_b-th tile from its own) gives the outputs, saved activations and
    gradients of one launch per tile, bit for bit, and the reference's."""
    chip = Chip("tiny", n_sm=n_sm, smem_per_block=1 << 20)
    xp, layer, h0, c0, (want_y, (want_h, want_c)) = packed_problem(B=B, bi=bi, block_h=32, init=init)
    n_tiles, dirs = triton.cdiv(B, 2), 2 if bi else 1
    assert [g.n_b for g in launch_groups(1, n_tiles, dirs, chip)] == [n_b] and n_b < n_tiles
    got = {}
    for loop in (True, False):
        cfg = LSTMConfig(block_h=32, block_b=2, batch_loop=loop)
        assert any(g.loop for g in launch_groups(1, n_tiles, dirs, chip, loop)) == loop
        y, h_n, c_n, saved = lstm_recurrent_fwd(xp, layer, h0, c0, cfg, mode=PERSISTENT, chip=chip, save=True)
        gen = torch.Generator().manual_seed(1)
        dy, dh_n, dc_n = (torch.randn(t.shape, generator=gen).to(DEVICE) for t in (y, h_n, c_n))
        grads = lstm_recurrent_bwd(dy, dh_n, dc_n, layer, y, h0, c0, saved, cfg, mode=PERSISTENT, chip=chip)
        got[loop] = [y, h_n, c_n, saved.gates, saved.cs, *grads]
    names = ["y", "h_n", "c_n", "saved gates", "saved c", "dxp", "dw_hh", "dh0", "dc0"]
    for name, a, b in zip(names, got[True], got[False], strict=True):
        assert (a is None) == (b is None), name
        assert a is None or (torch.isfinite(a).all() and torch.equal(a, b)), name
    tol = tolerance(torch.float32)
    assert_close("y", got[True][0], want_y, tol)
    assert_close("h_n", got[True][1], want_h, tol)
    assert_close("c_n", got[True][2], want_c, tol)


def test_launch_plan_rejects_groups_larger_than_the_chip():
    with pytest.raises(ValueError, match="exceed"):
        launch_groups(8, 1, 1, Chip("tiny", n_sm=4, smem_per_block=1 << 20))


@interpreter_only
def test_barrier_timeout_raises_and_next_call_works():
    """P = 2 programs run one after another in the interpreter, so the first waits for the
    second forever: the bounded wait gives up, the host raises, once: the flag is cleared, and
    the next launch is fine and reports nothing."""
    xp, layer, h0, c0, (want_y, _) = packed_problem(block_h=16)
    cfg = LSTMConfig(block_h=16, block_b=8)  # P = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # garbage gates overflow exp()
        with pytest.raises(BarrierTimeoutError, match="timed out"):
            lstm_recurrent_fwd(xp, layer, h0, c0, cfg, mode=PERSISTENT, max_spins=8)
    assert not timeout_flag(DEVICE).any(), "the reported time-out's flag was not cleared"
    y, _, _, _ = lstm_recurrent_fwd(xp, layer, h0, c0, cfg)
    check_timeouts(DEVICE)  # as every persistent call ends (this stepwise one has no barrier)
    assert_close("y after a time-out", y, want_y, tolerance(torch.float32))


def test_out_receives_the_output_in_place():
    xp, layer, h0, c0, (want_y, _) = packed_problem(block_h=32)
    out = torch.full((7, 5, 48), float("nan"), device=DEVICE)
    y, _, _, _ = lstm_recurrent_fwd(xp, layer, h0, c0, LSTMConfig(block_h=32, block_b=8), out=out)
    assert y.data_ptr() == out.data_ptr()
    assert_close("out", out, want_y, tolerance(torch.float32))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(h0=torch.empty(2, 5, 23)), "h0 must be"),
        (dict(config=LSTMConfig(block_h=16, block_b=8)), "packed for block_h=32"),
        (dict(config=LSTMConfig(block_h=24, block_b=8)), "power of two"),
        (dict(config=LSTMConfig(block_h=32, block_b=8, split_k=4)), "reduction"),
        (dict(config=LSTMConfig(block_h=32, block_b=8, split_k=2, use_fma=True)), "exclude"),
        (dict(out=torch.empty(7, 5, 47)), "out must be"),
        (dict(mode="sideways"), "mode must be"),
    ],
    ids=["h0", "block_h-vs-packing", "block_h-pow2", "split_k-too-deep", "fma-and-split", "out", "mode"],
)
def test_bad_arguments_raise_value_error(bad, match):
    xp, layer, h0, c0, _ = packed_problem(block_h=32)
    kwargs = dict(h0=h0, config=LSTMConfig(block_h=32, block_b=8)) | bad
    kwargs = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        lstm_recurrent_fwd(xp, layer, kwargs.pop("h0"), c0, kwargs.pop("config"), **kwargs)


@pytest.mark.parametrize("init", [False, True], ids=["zeros", "h0"])
def test_backward_modes_agree(init):
    """The backward's stepwise schedule (a launch per step plus a final launch for dh_0) and
    its persistent one give the same gradients."""
    xp, layer, h0, c0, _ = packed_problem(init=init, block_h=32)
    cfg = LSTMConfig(block_h=32, block_b=4)
    y, h_n, c_n, saved = lstm_recurrent_fwd(xp, layer, h0, c0, cfg, save=True)
    dy, dh_n, dc_n = torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)
    grads = [lstm_recurrent_bwd(dy, dh_n, dc_n, layer, y, h0, c0, saved, cfg, mode=m) for m in (PERSISTENT, STEPWISE)]
    for name, a, b in zip(("dxp", "dw_hh", "dh0", "dc0"), *grads, strict=True):
        assert (a is None) == (b is None) == (name == "dh0" and not init), name
        if a is not None:
            assert torch.isfinite(a).all() and torch.equal(a, b), name


def test_long_sequences_run_as_chunks_within_the_barrier_count():
    """A persistent launch counts P arrivals per step on an int32 counter that a time-out
    poisons with 1 << 30: longer sequences split into launches of fewer steps, each step of
    each group exactly once, the backward's dh_0 in the last."""
    chip = Chip("tiny", n_sm=3, smem_per_block=1 << 20)
    P, T = 3, 1000
    # 3 * 10**9 arrivals in one launch would overflow; launches in series: a group each
    plan = schedule(10**9, P, 2, 2, PERSISTENT, chip, batch_loop=False)
    assert max(n * P for _, n, *_ in plan) <= lstm_triton.launch.MAX_BARRIER_COUNT < 1 << 30
    assert [final for *_, final in plan].count(True) == 2 * 2 and len(plan) > 2 * 2
    assert sum(n for _, n, *_ in plan) == 10**9 * 2 * 2  # every step of the 4 groups, one launch each
    small = schedule(T, P, 1, 1, PERSISTENT, chip)
    assert small == [(0, T, 0, 1, 0, 1, False, True)]


@pytest.mark.parametrize("T", [6, 7, 8], ids=lambda T: f"T{T}")
def test_each_groups_last_chunk_and_only_it_is_final(T, monkeypatch):
    """Chunks of 3 steps: a T that is a multiple of the chunk ends in a full chunk, which must
    still be final (the backward forms dh_0 in it), and a short last chunk is final too."""
    monkeypatch.setattr(lstm_triton.launch, "MAX_BARRIER_COUNT", 3)  # P = 1: 3 steps a launch
    chip = Chip("tiny", n_sm=2, smem_per_block=1 << 20)
    for batch_loop in (True, False):  # 3 tiles x 2 directions: one looping launch, or 4 in series
        plan = schedule(T, 1, 3, 2, PERSISTENT, chip, batch_loop=batch_loop)
        groups = {(launch.b_tile0, launch.d0) for launch in plan}
        for b_tile0, d0 in groups:
            mine = [launch for launch in plan if (launch.b_tile0, launch.d0) == (b_tile0, d0)]
            assert [(launch.s_begin, launch.n_steps) for launch in mine] == [(s, min(3, T - s)) for s in range(0, T, 3)]
            assert [launch.final for launch in mine] == [False] * (len(mine) - 1) + [True], (T, b_tile0, d0)


@pytest.mark.parametrize(
    "T, init",
    [(7, False), (7, True), (6, True)],
    ids=["T7-zeros", "T7-h0", "T6-h0-exact-chunks"],
)
def test_chunked_persistent_launches_match_stepwise(T, init, monkeypatch):
    """Persistent launches of 3 steps each (T = 7: 3 chunks, the last short; T = 6: 2 full
    chunks; counters zeroed between them) give the stepwise schedule's bits, forward and
    backward, dh_0 included (formed in the last chunk's launch)."""
    monkeypatch.setattr(lstm_triton.launch, "MAX_BARRIER_COUNT", 3)  # P = 1: 3 steps a launch
    xp, layer, h0, c0, _ = packed_problem(T=T, init=init, block_h=32)
    cfg = LSTMConfig(block_h=32, block_b=4)
    assert len(schedule(T, 1, 2, 2, PERSISTENT, Chip("any", 8, 1 << 20))) == triton.cdiv(T, 3)
    fwd = [lstm_recurrent_fwd(xp, layer, h0, c0, cfg, mode=m, save=True) for m in (PERSISTENT, STEPWISE)]
    for name, a, b in zip(("y", "h_n", "c_n"), fwd[0][:3], fwd[1][:3], strict=True):
        assert torch.isfinite(a).all() and torch.equal(a, b), name
    y, h_n, c_n, saved = fwd[1]
    dy, dh_n, dc_n = torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)
    grads = [lstm_recurrent_bwd(dy, dh_n, dc_n, layer, y, h0, c0, saved, cfg, mode=m) for m in (PERSISTENT, STEPWISE)]
    for name, a, b in zip(("dxp", "dw_hh", "dh0", "dc0"), *grads, strict=True):
        assert (a is None) == (b is None) == (name == "dh0" and not init), name
        if a is not None:
            assert torch.isfinite(a).all() and torch.equal(a, b), name
