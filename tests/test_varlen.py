"""Variable-length batches: PackedSequence input and ``lengths=`` on padded input, against a
float64 nn.LSTM on the packed input (forward and every gradient): mixed lengths including 1
and the maximum, sorted and unsorted batches, both directions, several layers, hidden splits."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstm_triton.module
from lstm_triton import LSTM, LSTMConfig
from tests.helpers import DEVICE, assert_close, dtype_id, tolerance
from tests.test_backward import grad_tolerance

F32, BF16 = torch.float32, torch.bfloat16
I, H = 5, 16

CASES = [
    # (lengths, layers, bi, batch_first, enforce_sorted, dtype, config)
    pytest.param([3, 7, 1, 5], 1, True, False, False, F32, None, id="unsorted-bi"),
    pytest.param([7, 5, 3, 1], 2, True, True, True, F32, None, id="sorted-bi-L2-bf"),
    pytest.param([1, 1, 4], 2, False, False, False, F32, None, id="short-uni-L2"),
    pytest.param([6, 2, 6, 3, 1], 1, True, False, False, BF16, None, id="unsorted-bi-bf16"),
    pytest.param([3, 7, 1, 5], 2, True, False, False, F32, LSTMConfig(block_h=8, block_b=2), id="P2-BB2-bi-L2"),
    pytest.param([2, 5, 5], 1, True, True, False, F32, LSTMConfig(block_h=8, block_b=1, use_fma=True), id="P2-fma"),
]


def make(layers, bi, batch_first, dtype):
    ref = nn.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=batch_first).to(dtype)
    return LSTM.from_torch(ref).to(DEVICE), ref.double()


def inputs(lengths, layers, bi, batch_first, dtype):
    T, B = max(lengths), len(lengths)
    x = torch.randn((B, T, I) if batch_first else (T, B, I)).to(dtype).double()
    hx = tuple(torch.randn(layers * (2 if bi else 1), B, H).to(dtype).double() for _ in range(2))
    return x, hx


def grads(module, x, hx, run):
    """Outputs of ``run(module, x, hx) -> (padded y, h_n, c_n)`` and the gradients of a fixed
    loss of them w.r.t. x, h_0, c_0 and every parameter."""
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx)
    module.zero_grad(set_to_none=True)
    y, h_n, c_n = run(module, x, hx)
    g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64, device=y.device).view_as(y)
    ((y.double() * g).sum() + h_n.double().sum() + (c_n.double() ** 2).sum()).backward()
    return (y, h_n, c_n), [x.grad, *(t.grad for t in hx), *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("lengths, layers, bi, batch_first, enforce_sorted, dtype, config", CASES)
@pytest.mark.parametrize("api", ["packed", "lengths"])
def test_matches_nn_lstm_on_packed_input(
    lengths, layers, bi, batch_first, enforce_sorted, dtype, config, api, monkeypatch
):
    if config is not None:
        monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: config)
    ours, ref = make(layers, bi, batch_first, dtype)
    x, hx = inputs(lengths, layers, bi, batch_first, dtype)
    T = max(lengths)

    def run_packed(module, x, hx):
        y, (h_n, c_n) = module(pack_padded_sequence(x, lengths, batch_first, enforce_sorted), hx)
        return pad_packed_sequence(y, batch_first, total_length=T)[0], h_n, c_n

    def run_ours(module, x, hx):
        x, hx = x.to(DEVICE, dtype), tuple(t.to(DEVICE, dtype) for t in hx)
        if api == "packed":
            y, (h_n, c_n) = module(pack_padded_sequence(x, lengths, batch_first, enforce_sorted), hx)
            assert isinstance(y, PackedSequence)
            return pad_packed_sequence(y, batch_first, total_length=T)[0], h_n, c_n
        y, (h_n, c_n) = module(x, hx, lengths=lengths)
        return y, h_n, c_n

    assert ours.kernel_plan(pack_padded_sequence(x.to(DEVICE, dtype), lengths, batch_first, False)).reason is None
    want_out, want_grads = grads(ref, x, hx, run_packed)
    out, got = grads(ours, x, hx, run_ours)
    for name, a, b in zip(("output", "h_n", "c_n"), out, want_out, strict=True):
        assert_close(name, a, b, tolerance(dtype))
    for i, (a, b) in enumerate(zip(got, want_grads, strict=True)):
        assert_close(f"gradient {i}", a, b, grad_tolerance(dtype))


def test_packed_output_keeps_the_input_order_and_padding_is_zero():
    ours, ref = make(1, True, False, F32)
    lengths = [2, 4, 1]
    x, _ = inputs(lengths, 1, True, False, F32)
    packed = pack_padded_sequence(x.float().to(DEVICE), lengths, enforce_sorted=False)
    with torch.no_grad():
        y, _ = ours(packed)
        want, _ = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
        padded, _ = ours(x.float().to(DEVICE), lengths=torch.tensor(lengths))
    assert torch.equal(y.batch_sizes, want.batch_sizes)
    assert torch.equal(y.sorted_indices.cpu(), want.sorted_indices) and torch.equal(
        y.unsorted_indices.cpu(), want.unsorted_indices
    )
    for b, n in enumerate(lengths):
        assert not padded[n:, b].any()


@pytest.mark.parametrize("dtype", [torch.float64], ids=dtype_id)
def test_lengths_where_our_kernels_do_not_run(dtype):
    """``lengths=`` also works where PyTorch's LSTM runs (here float64)."""
    ours = LSTM(I, H, bidirectional=True).to(dtype)
    x = torch.randn(5, 3, I, dtype=dtype)
    lengths = [5, 2, 4]
    y, (h_n, _) = ours(x, lengths=lengths)
    want, (want_h, _) = nn.LSTM.forward(ours, pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert torch.equal(y, pad_packed_sequence(want, total_length=5)[0]) and torch.equal(h_n, want_h)


@pytest.mark.parametrize(
    "lengths, exc, match",
    [
        ([3, 0], RuntimeError, r"every length must be in 1\.\.4"),
        ([3, 5], RuntimeError, r"every length must be in 1\.\.4"),
        ([3], RuntimeError, r"one entry per batch element \(2\)"),
        (torch.tensor([3.0, 2.0]), TypeError, "integers"),
    ],
    ids=["zero", "too-long", "count", "float"],
)
def test_bad_lengths(lengths, exc, match):
    ours = LSTM(I, H).to(DEVICE)
    with torch.no_grad(), pytest.raises(exc, match=match):
        ours(torch.randn(4, 2, I, device=DEVICE), lengths=lengths)
