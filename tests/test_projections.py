"""LSTM with projections (``proj_size`` > 0) on our kernels: the recurrence runs on the
unprojected state with ``W_hh W_hr`` as its weight, h_0 folded into the first step's input
projection, the output projected after the recurrence (``layout``). Forward and every gradient
(``weight_hr`` included) against a float64 reference with the same rounded weights, over
directions, layers, initial states, layouts, sequence lengths, hidden splits and dtypes."""

import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton.module
from lstm_triton import LSTM, LSTMConfig
from lstm_triton.reference import lstm_reference
from tests import test_forward as forward
from tests.helpers import DEVICE, assert_close, tolerance
from tests.test_backward import grad_tolerance

F32, BF16, F16 = forward.F32, forward.BF16, forward.F16


@dataclass(frozen=True)
class Case(forward.Case):
    """A forward test case with projections (``R``: proj_size) and, with ``varlen``, lengths=
    of sequences of different lengths."""

    R: int = 1
    varlen: bool = False

    @property
    def D(self) -> int:
        return 2 if self.bi else 1

    @property
    def id(self):
        return f"{super().id}-R{self.R}{'-varlen' if self.varlen else ''}"


CASES = [
    Case(B=3, T=7, H=9, R=3, I=5),
    Case(B=4, T=6, H=20, R=7, I=5, layers=2, bi=True, init=True),
    Case(B=2, T=5, H=16, R=5, I=3, layers=2, bi=True, batch_first=True, init=True, varlen=True),
    Case(B=5, T=6, H=12, R=4, I=6, bi=True, init=True, varlen=True, dtype=BF16),
    Case(B=3, T=5, H=20, R=16, I=4, layers=2, batch_first=True, init=True, dtype=F16),
    # P > 1: the unprojected state exchanged between programs through the output
    Case(B=3, T=6, H=40, R=6, I=5, bi=True, init=True, config=LSTMConfig(block_h=16, block_b=4)),
    Case(B=4, T=5, H=24, R=8, I=3, layers=2, bi=True, init=True, varlen=True, dtype=BF16, config=LSTMConfig(8, 2)),
]


def make_pair(case: Case):
    """Our module and an nn.LSTM holding the same weights rounded to the case's dtype."""
    ref = nn.LSTM(
        case.I, case.H, num_layers=case.layers, bidirectional=case.bi, batch_first=case.batch_first, proj_size=case.R
    ).to(case.dtype)
    return LSTM.from_torch(ref).to(DEVICE), ref


def random_inputs(case: Case):
    """x, hx (or None) and lengths (or None), holding values the case's dtype represents."""
    shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
    x = torch.randn(shape).to(case.dtype)
    hx = None
    if case.init:
        n = case.layers * case.D
        hx = (torch.randn(n, case.B, case.R).to(case.dtype), torch.randn(n, case.B, case.H).to(case.dtype))
    lengths = torch.randint(1, case.T + 1, (case.B,)) if case.varlen else None
    if lengths is not None:
        lengths[0] = case.T  # the longest sequence fills the padded length
    return x, hx, lengths


def prepare(case: Case, monkeypatch, training: bool):
    """The modules and inputs of ``case``, its forced config in place; our kernels must run."""
    if case.config is not None:
        monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: case.config)
    ours, ref = make_pair(case)
    x, hx, lengths = random_inputs(case)
    assert ours.kernel_plan(x, hx, training=training, lengths=lengths).reason is None
    return ours, ref, x, hx, lengths


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_forward_matches_reference(case, monkeypatch):
    ours, ref, x, hx, lengths = prepare(case, monkeypatch, training=False)
    want_y, (want_h, want_c) = lstm_reference(ref, x, hx, lengths=lengths)
    on_device = None if hx is None else tuple(t.to(DEVICE) for t in hx)
    with torch.no_grad():
        y, (h_n, c_n) = ours(x.to(DEVICE), on_device, lengths=lengths)
    assert y.dtype == h_n.dtype == c_n.dtype == case.dtype
    assert h_n.shape == (case.layers * case.D, case.B, case.R) and c_n.shape[-1] == case.H
    tol = tolerance(case.dtype)
    assert_close("output", y, want_y, tol)
    assert_close("h_n", h_n, want_h, tol)
    assert_close("c_n", c_n, want_c, tol)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_gradients_match_reference(case, monkeypatch):
    ours, ref, x, hx, lengths = prepare(case, monkeypatch, training=True)
    shape_y = (*x.shape[:2], case.D * case.R)
    gy = torch.randn(shape_y, dtype=torch.float64)
    gh = torch.randn(case.layers * case.D, case.B, case.R, dtype=torch.float64)
    gc = torch.randn(case.layers * case.D, case.B, case.H, dtype=torch.float64)

    def loss(y, h_n, c_n):
        return (y.double() * gy).sum() + (h_n.double() * gh).sum() + (c_n.double() * gc).sum()

    ref64 = ref.double()
    x_ref = x.double().requires_grad_()
    hx_ref = None if hx is None else tuple(t.double().requires_grad_() for t in hx)
    y, (h_n, c_n) = lstm_reference(ref64, x_ref, hx_ref, lengths=lengths)
    loss(y, h_n, c_n).backward()

    x_ours = x.to(DEVICE).requires_grad_()
    hx_ours = None if hx is None else tuple(t.to(DEVICE).requires_grad_() for t in hx)
    y, (h_n, c_n) = ours(x_ours, hx_ours, lengths=lengths)
    loss(y.cpu(), h_n.cpu(), c_n.cpu()).backward()

    pairs = [("input", x_ours, x_ref)]
    if hx is not None:
        pairs += [("h_0", hx_ours[0], hx_ref[0]), ("c_0", hx_ours[1], hx_ref[1])]
    pairs += [(name, p, q) for (name, p), q in zip(ours.named_parameters(), ref64.parameters(), strict=True)]
    assert any(name.startswith("weight_hr") for name, _, _ in pairs)
    tol = grad_tolerance(case.dtype)
    for name, a, b in pairs:
        assert a.grad is not None and a.grad.dtype == case.dtype, name
        assert_close(f"d {name}", a.grad, b.grad, tol)


def test_reference_matches_nn_lstm_with_projections():
    """The oracle itself: lstm_reference against nn.LSTM, both float64, with lengths."""
    ref = nn.LSTM(4, 10, num_layers=2, bidirectional=True, proj_size=3).double()
    x, hx = torch.randn(6, 3, 4, dtype=torch.float64), (torch.randn(4, 3, 3), torch.randn(4, 3, 10))
    hx = tuple(t.double() for t in hx)
    lengths = torch.tensor([6, 2, 4])
    want, (want_h, want_c) = ref(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    want, _ = pad_packed_sequence(want, total_length=6)
    y, (h_n, c_n) = lstm_reference(ref, x, hx, lengths=lengths)
    for name, a, b in (("output", y, want), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        assert_close(name, a, b, 1e-12)


def test_packed_sequence_and_unbatched_input():
    ours, ref = make_pair(Case(B=3, T=5, H=12, R=5, I=4, bi=True))
    ref = ref.double()
    x = torch.randn(5, 3, 4)
    lengths = torch.tensor([2, 5, 3])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        out, (h_n, c_n) = ours(packed.to(DEVICE))
        want, (want_h, want_c) = ref(pack_padded_sequence(x.double(), lengths, enforce_sorted=False))
    assert torch.equal(out.batch_sizes, want.batch_sizes)
    for name, a, b in (("output", out.data, want.data), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        assert_close(f"packed {name}", a, b, tolerance(F32))

    x1, hx1 = torch.randn(5, 4), (torch.randn(2, 5), torch.randn(2, 12))
    with torch.no_grad():
        y, (h_n, c_n) = ours(x1.to(DEVICE), tuple(t.to(DEVICE) for t in hx1))
        want, (want_h, want_c) = ref(x1.double(), tuple(t.double() for t in hx1))
    assert y.shape == (5, 10) and h_n.shape == (2, 5) and c_n.shape == (2, 12)
    for name, a, b in (("output", y, want), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        assert_close(f"unbatched {name}", a, b, tolerance(F32))


def test_inference_cache_sees_a_changed_projection():
    """The weights in kernel layout are cached between inference calls; changing weight_hr
    alone (in place) must invalidate them."""
    ours, _ = make_pair(Case(B=2, T=4, H=10, R=4, I=3))
    x = torch.randn(4, 2, 3, device=DEVICE)
    with torch.no_grad():
        ours(x)
        ours.weight_hr_l0.mul_(-1)
        after, _ = ours(x)
    want, _ = lstm_reference(ours, x)
    assert_close("output after negating weight_hr", after, want, tolerance(F32))


def test_initial_state_of_the_wrong_width_raises_as_nn_lstm():
    """h_0 is proj_size wide, c_0 hidden_size wide: swapped widths raise nn.LSTM's RuntimeError
    with nn.LSTM's message, then the state's name."""
    ours, ref = make_pair(Case(B=2, T=3, H=6, R=2, I=3))
    x = torch.randn(3, 2, 3)
    for hx, which in (((torch.randn(1, 2, 6), torch.randn(1, 2, 6)), "h_0"), ((torch.randn(1, 2, 2),) * 2, "c_0")):
        with pytest.raises(RuntimeError) as want:
            ref(x, hx)
        with pytest.raises(RuntimeError, match=re.escape(f"{want.value}: {which} must be of shape")):
            ours(x.to(DEVICE), tuple(t.to(DEVICE) for t in hx))


@pytest.mark.parametrize("proj_size", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_gradients_are_contiguous_as_nn_lstms(proj_size, batch_first):
    """Every gradient (input, states, each parameter) contiguous, as nn.LSTM's, read with
    torch.autograd.grad, which hands them back as autograd made them (``.grad`` would restride
    them); PyTorch's test_memory_format checks this. W_hr's came back a transposed view."""
    torch.manual_seed(0)
    ours = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, proj_size=proj_size).to(DEVICE)
    x = torch.randn((2, 5, 3) if batch_first else (5, 2, 3), device=DEVICE, requires_grad=True)
    hx = tuple(torch.randn(4, 2, n, device=DEVICE, requires_grad=True) for n in (proj_size or 4, 4))
    y, (h_n, c_n) = ours(x, hx)
    assert ours.kernel_plan(x, hx).reason is None
    names = ["input", "h_0", "c_0"] + [n for n, _ in ours.named_parameters()]
    outs = (y, h_n, c_n)
    grads = torch.autograd.grad(outs, [x, *hx, *ours.parameters()], [torch.rand_like(t) for t in outs])
    strided = [(n, g.stride()) for n, g in zip(names, grads, strict=True) if not g.is_contiguous()]
    assert not strided, f"non-contiguous gradients: {strided}"
