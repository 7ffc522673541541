"""Training: gradients of lstm_triton.LSTM against a float64 nn.LSTM with the same weights, for
the input, h_0, c_0 and every weight and bias, over the forward tests' grid; reproducibility;
a second backward; dropout between layers; a few SGD steps that track nn.LSTM's losses."""

import pytest
import torch
from torch import nn

import lstm_triton.module
from lstm_triton import LSTM, LSTMConfig
from tests.helpers import DEVICE, assert_close, dtype_id
from tests.test_forward import CASES, Case

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def grad_tolerance(dtype):
    """Gradients go through one more rounding of every saved activation than the forward."""
    return {F32: 1e-5 if DEVICE.type == "cpu" else 3e-3, F16: 5e-3, BF16: 4e-2}[dtype]


def run_both(case: Case, ours, ref, grad_h0: bool = True):
    """Forward + backward of both modules on the same inputs and output gradients; returns
    {name: (our grad, float64 reference grad)}."""
    D = 2 if case.bi else 1
    shape_x = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
    x = torch.randn(shape_x, dtype=torch.float64).to(case.dtype).double()  # values the dtype holds
    hx = tuple(torch.randn(case.layers * D, case.B, case.H).to(case.dtype).double() for _ in range(2))
    hx = hx if case.init else None
    gy = torch.randn(*shape_x[:2], D * case.H, dtype=torch.float64)
    g_state = torch.randn(2, case.layers * D, case.B, case.H, dtype=torch.float64)

    def loss(module, x, hx, dtype):
        y, (h_n, c_n) = module(x, hx)
        return sum((t.double() * g.to(t.device)).sum() for t, g in ((y, gy), (h_n, g_state[0]), (c_n, g_state[1])))

    ref64 = ref.double()
    ref64.zero_grad(set_to_none=True)
    x_ref = x.clone().requires_grad_()
    hx_ref = None if hx is None else tuple(t.clone().requires_grad_(grad_h0) for t in hx)
    loss(ref64, x_ref, hx_ref, torch.float64).backward()

    ours.zero_grad(set_to_none=True)
    x_ours = x.to(DEVICE, case.dtype).requires_grad_()
    hx_ours = None if hx is None else tuple(t.to(DEVICE, case.dtype).requires_grad_(grad_h0) for t in hx)
    loss(ours, x_ours, hx_ours, case.dtype).backward()

    out = {"input": (x_ours.grad, x_ref.grad)}
    if hx is not None and grad_h0:
        out |= {"h_0": (hx_ours[0].grad, hx_ref[0].grad), "c_0": (hx_ours[1].grad, hx_ref[1].grad)}
    for (name, p), q in zip(ours.named_parameters(), ref64.parameters(), strict=True):
        out[name] = (p.grad, q.grad)
    return out


def make_pair(case: Case, **kwargs):
    ref = nn.LSTM(case.I, case.H, num_layers=case.layers, bidirectional=case.bi, batch_first=case.batch_first, **kwargs)
    ref.to(case.dtype)  # the reference holds the same rounded weights
    return LSTM.from_torch(ref).to(DEVICE), ref


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_gradients_match_reference(case, monkeypatch):
    if case.config is not None:
        monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: case.config)
    ours, ref = make_pair(case)
    grads = run_both(case, ours, ref)
    tol = grad_tolerance(case.dtype)
    for name, (g, want) in grads.items():
        assert g is not None, f"no gradient for {name}"
        assert g.dtype == case.dtype, name
        assert_close(f"d {name}", g, want, tol)


def test_initial_state_without_gradient():
    case = Case(B=3, T=5, H=16, I=4, layers=2, bi=True, init=True)
    ours, ref = make_pair(case)
    grads = run_both(case, ours, ref, grad_h0=False)
    assert "h_0" not in grads
    for name, (g, want) in grads.items():
        assert_close(f"d {name}", g, want, grad_tolerance(F32))


def test_gradients_are_reproducible_bit_for_bit():
    case = Case(B=17, T=9, H=48, I=5, layers=2, bi=True, init=True, dtype=BF16)
    ours, ref = make_pair(case)
    torch.manual_seed(1)
    first = {k: g.clone() for k, (g, _) in run_both(case, ours, ref).items()}
    torch.manual_seed(1)
    second = {k: g for k, (g, _) in run_both(case, ours, ref).items()}
    for k in first:
        assert torch.equal(first[k], second[k]), k


def test_second_forward_backward_through_a_reused_module():
    case = Case(B=3, T=6, H=16, I=4, bi=True, init=True)
    ours, ref = make_pair(case)
    run_both(case, ours, ref)
    for name, (g, want) in run_both(case, ours, ref).items():  # fresh inputs, the same module
        assert_close(f"second d {name}", g, want, grad_tolerance(F32))


def test_backward_twice_with_retain_graph():
    ours, _ = make_pair(Case(B=2, T=4, H=16, I=3, bi=True))
    x = torch.randn(4, 2, 3, device=DEVICE, requires_grad=True)
    y, _ = ours(x)
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    y.sum().backward()
    assert_close("accumulated", x.grad, 2 * first, 1e-6)


def test_dropout_between_layers_in_training():
    """dropout=1 zeroes the second layer's input: no gradient reaches the input through it, and
    layer 0 learns only through its own final states."""
    case = Case(B=3, T=5, H=8, I=4, layers=2)
    ours, _ = make_pair(case, dropout=1.0)
    ours.train()
    x = torch.randn(5, 3, 4, device=DEVICE, requires_grad=True)
    y, _ = ours(x)
    y.sum().backward()
    assert not x.grad.any() and not ours.weight_ih_l0.grad.any()
    assert ours.weight_ih_l1.grad is not None and ours.weight_hh_l1.grad.any()


@pytest.mark.parametrize("dtype", [F32, BF16], ids=dtype_id)
def test_sgd_steps_track_nn_lstm(dtype):
    """A tiny BiLSTM regressor trained for a few SGD steps: the losses match nn.LSTM's (float64)
    step by step."""
    torch.manual_seed(0)
    ref = nn.LSTM(4, 12, num_layers=2, bidirectional=True, batch_first=True).to(dtype)
    head = nn.Linear(24, 1).to(dtype)
    ours = LSTM.from_torch(ref).to(DEVICE)
    ref, head_ref, head_ours = ref.double(), head.double(), nn.Linear(24, 1).to(DEVICE, dtype)
    head_ours.load_state_dict(head.state_dict())
    x = torch.randn(6, 7, 4).to(dtype)
    target = torch.randn(6, 1).to(dtype)
    opt_ref = torch.optim.SGD([*ref.parameters(), *head_ref.parameters()], lr=0.5)
    opt_ours = torch.optim.SGD([*ours.parameters(), *head_ours.parameters()], lr=0.5)
    losses = []
    for _ in range(4):
        step = []
        for lstm, lin, opt, inp, tgt in (
            (ref, head_ref, opt_ref, x.double(), target.double()),
            (ours, head_ours, opt_ours, x.to(DEVICE), target.to(DEVICE)),
        ):
            opt.zero_grad()
            y, _ = lstm(inp)
            loss = ((lin(y[:, -1]) - tgt) ** 2).mean()
            loss.backward()
            opt.step()
            step.append(loss.item())
        losses.append(step)
    assert losses[-1][0] < losses[0][0]  # it learns
    rtol = 1e-5 if dtype == F32 and DEVICE.type == "cpu" else 5e-2
    for want, got in losses:
        assert abs(got - want) <= rtol * abs(want), losses


def test_training_with_a_config_too_big_to_run_backward_falls_back(monkeypatch):
    """No backward config fits: the module trains with PyTorch's LSTM instead of failing."""
    monkeypatch.setattr(lstm_triton.module, "select_backward_config", lambda *a, **k: None)
    ours, ref = make_pair(Case(B=2, T=3, H=8, I=3))
    x = torch.randn(3, 2, 3, device=DEVICE, requires_grad=True)
    y, _ = ours(x)
    y.sum().backward()
    assert x.grad is not None and ours.weight_hh_l0.grad is not None


@pytest.mark.parametrize(
    "fwd, bwd",
    [
        (LSTMConfig(block_h=16, block_b=4), LSTMConfig(block_h=16, block_b=2, split_k=2)),
        (LSTMConfig(block_h=64, block_b=4), LSTMConfig(block_h=64, block_b=4, split_k=4)),
        (LSTMConfig(16, 4, split_k=2, gates_on_m=True), LSTMConfig(16, 2, split_k=2)),  # saved gate-major
    ],
    ids=["P3-bwd-BB2-S2", "P1-bwd-S4", "P3-fwd-dotT"],
)
def test_backward_with_its_own_tile_and_split(fwd, bwd, monkeypatch):
    """The backward runs the forward's hidden split with its own batch tile and split-K."""
    monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: fwd)
    monkeypatch.setattr(lstm_triton.module, "select_backward_config", lambda *a, **k: bwd)
    case = Case(B=3, T=5, H=48, I=5, layers=2, bi=True, init=True)
    ours, ref = make_pair(case)
    for name, (g, want) in run_both(case, ours, ref).items():
        assert_close(f"d {name}", g, want, grad_tolerance(F32))
