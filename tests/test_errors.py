"""Bad input gets the exception type nn.LSTM raises (code that catches it keeps working) with a
message that names the bad argument; never a Triton crash or a silent wrong answer."""

import pytest
import torch
from torch import nn

from lstm_triton import LSTM
from tests.helpers import DEVICE

L, D, H, I, B, T = 2, 2, 4, 3, 2, 5


def rand(*shape, **kw):
    return torch.randn(*shape, **kw)


def state(*shape, **kw):
    return (rand(*shape, **kw), rand(*shape, **kw))


# (id, input factory, hx factory, exception type, what our message must say)
CASES = [
    ("input-1d", lambda: rand(I), None, ValueError, r"input must be 2-D .* got a 1-D"),
    ("input-4d", lambda: rand(T, B, I, 1), None, ValueError, r"input must be 2-D .* got a 4-D"),
    ("input_size", lambda: rand(T, B, I + 1), None, RuntimeError, r"input_size\. Expected 3, got 4"),
    ("input-float64", lambda: rand(T, B, I, dtype=torch.float64), None, ValueError, r"input dtype \(torch.float64\)"),
    ("input-int", lambda: torch.ones(T, B, I, dtype=torch.long), None, ValueError, r"input dtype \(torch.int64\)"),
    ("input-device", lambda: rand(T, B, I, device="meta"), None, RuntimeError, r"input is on meta"),
    ("input-list", lambda: [[0.0] * I] * T, None, AttributeError, r"input must be a Tensor"),
    ("input-none", lambda: None, None, AttributeError, r"input must be a Tensor"),
    ("seq-len-0", lambda: rand(0, B, I), None, RuntimeError, r"sequence length"),
    ("seq-len-0-unbatched", lambda: rand(0, I), None, RuntimeError, r"sequence length"),
    (
        "h0-shape",
        lambda: rand(T, B, I),
        lambda: (rand(L * D, B + 1, H), rand(L * D, B, H)),
        RuntimeError,
        r"Expected h_0 of size \(4, 2, 4\), got \(4, 3, 4\)",
    ),
    (
        "c0-shape",
        lambda: rand(T, B, I),
        lambda: (rand(L * D, B, H), rand(L * D, B, H + 1)),
        RuntimeError,
        r"Expected c_0 of size",
    ),
    (
        "hx-2d-for-batched",
        lambda: rand(T, B, I),
        lambda: state(L * D, H),
        RuntimeError,
        r"batched 3-D input, h_0 must be 3-D",
    ),
    (
        "hx-3d-for-unbatched",
        lambda: rand(T, I),
        lambda: state(L * D, 1, H),
        RuntimeError,
        r"unbatched 2-D input, h_0 must be 2-D",
    ),
    (
        "hx-dtype",
        lambda: rand(T, B, I),
        lambda: state(L * D, B, H, dtype=torch.float64),
        RuntimeError,
        r"h_0 dtype \(torch.float64\)",
    ),
    ("hx-device", lambda: rand(T, B, I), lambda: state(L * D, B, H, device="meta"), RuntimeError, r"h_0 is on meta"),
    ("hx-tensor", lambda: rand(T, B, I), lambda: rand(L * D, B, H), RuntimeError, r"hx must be a tuple"),
    ("hx-one-tensor", lambda: rand(T, B, I), lambda: (rand(L * D, B, H),), IndexError, r"hx must be a tuple"),
]


def on(device, value):
    """Move tensors (alone or in a tuple) that live on the CPU to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device) if value.device.type == "cpu" else value
    if isinstance(value, tuple):
        return tuple(on(device, v) for v in value)
    return value


@pytest.mark.parametrize("make_input, make_hx, exc, message", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_raises_like_nn_lstm(make_input, make_hx, exc, message):
    torch.manual_seed(0)
    x, hx = make_input(), (make_hx() if make_hx else None)
    ref = nn.LSTM(I, H, num_layers=L, bidirectional=True)
    with pytest.raises(exc):  # the yardstick: nn.LSTM raises this type on the same input
        ref(x, hx)
    ours = LSTM.from_torch(ref).to(DEVICE)
    with torch.no_grad(), pytest.raises(exc, match=message):
        ours(on(DEVICE, x), on(DEVICE, hx))
