"""Under ``torch.autocast`` (mixed-precision training), as cuDNN's LSTM: a float32 model runs in
the autocast dtype (input, states and weights cast; y, h_n and c_n in that dtype) on our
kernels, and the gradients reach the float32 parameters."""

import pytest
import torch
from torch import nn

from lstm_triton import LSTM
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, assert_close, dtype_id, tolerance
from tests.test_backward import grad_tolerance

T, B, I, H = 6, 3, 5, 16
AMP_DTYPES = (torch.bfloat16, torch.float16)


def rounded_reference(ours: LSTM, dtype: torch.dtype) -> nn.LSTM:
    """A float64 nn.LSTM holding ``ours``'s weights rounded to ``dtype`` (what autocast runs)."""
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=ours.proj_size, dtype=torch.float64)
    ref.load_state_dict({k: v.to(dtype).double() for k, v in ours.state_dict().items()})
    return ref


@pytest.mark.parametrize("proj", [0, 4], ids=["plain", "proj"])
@pytest.mark.parametrize("dtype", AMP_DTYPES, ids=dtype_id)
def test_autocast_runs_our_kernels_in_its_dtype(dtype, proj):
    torch.manual_seed(0)
    ours = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj).to(DEVICE)
    ref = rounded_reference(ours, dtype)
    x = torch.randn(T, B, I, device=DEVICE)
    hx = (torch.randn(4, B, proj or H, device=DEVICE), torch.randn(4, B, H, device=DEVICE))
    gy = torch.randn(T, B, 2 * (proj or H), dtype=torch.float64)

    x_ref = x.to(dtype).double().cpu().requires_grad_()
    want, (want_h, want_c) = lstm_reference(ref, x_ref, tuple(t.to(dtype).double().cpu() for t in hx))
    (want * gy).sum().backward()

    x_ours = x.clone().requires_grad_()
    with torch.autocast(DEVICE.type, dtype=dtype):
        assert ours.kernel_plan(x_ours, hx).reason is None
        y, (h_n, c_n) = ours(x_ours, hx)
    assert y.dtype == h_n.dtype == c_n.dtype == dtype
    for name, got, w in (("output", y, want), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        assert_close(name, got, w, tolerance(dtype))
    (y.double().cpu() * gy).sum().backward()
    assert x_ours.grad.dtype == torch.float32
    assert_close("d input", x_ours.grad, x_ref.grad, grad_tolerance(dtype))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert_close(f"d {name}", p.grad, q.grad, grad_tolerance(dtype))


def test_inference_cache_keeps_autocast_and_float32_apart():
    """The cached weights in kernel layout of a float32 call are not reused under autocast, nor
    the other way round."""
    torch.manual_seed(1)
    ours = LSTM(I, H).to(DEVICE)
    x = torch.randn(T, B, I, device=DEVICE)
    with torch.no_grad():
        first, _ = ours(x)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            low, _ = ours(x)
        again, _ = ours(x)
    assert first.dtype == again.dtype == torch.float32 and low.dtype == torch.bfloat16
    assert torch.equal(first, again)
    assert_close("bf16 under autocast", low, first, tolerance(torch.bfloat16))


@pytest.mark.parametrize("lower", ["input", "weights"])
def test_autocast_takes_a_mix_of_float32_and_its_dtype_as_nn_lstm_does(lower):
    """Under autocast nn.LSTM takes input and weights each in float32 or the autocast dtype
    (states float32); outside autocast the mismatch is a ValueError."""
    ours = LSTM(I, H).to(DEVICE, torch.bfloat16 if lower == "weights" else torch.float32)
    x = torch.randn(T, B, I, device=DEVICE, dtype=torch.bfloat16 if lower == "input" else torch.float32)
    hx = (torch.randn(1, B, H, device=DEVICE), torch.randn(1, B, H, device=DEVICE))
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        assert ours.kernel_plan(x, hx).reason is None
        y, (h_n, c_n) = ours(x, hx)
    assert y.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="does not match weight dtype"):
        ours(x, hx)
