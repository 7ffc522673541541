"""lstm_triton.LSTM forward against a float64 reference with the same weights, on fresh random
inputs, over batch sizes, lengths, odd hidden sizes, layers, directions, layouts, initial
states, hidden splits (P > 1 runs stepwise under the interpreter) and every dtype."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import lstm_triton.module
from lstm_triton import LSTM, LSTMConfig
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, assert_close, dtype_id, tolerance

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


@dataclass(frozen=True)
class Case:
    B: int
    T: int
    H: int
    I: int
    layers: int = 1
    bi: bool = False
    batch_first: bool = False
    init: bool = False
    dtype: torch.dtype = F32
    config: LSTMConfig | None = None  # None: the module's own choice (P = 1 under the interpreter)

    @property
    def id(self):
        cfg = self.config
        split = "" if cfg is None else f"-P{-(-self.H // cfg.block_h)}-BB{cfg.block_b}"
        split += "" if cfg is None or cfg.split_k == 1 else f"-S{cfg.split_k}"
        split += "-fma" if cfg is not None and cfg.use_fma else ""
        split += "-dotT" if cfg is not None and cfg.gates_on_m else ""
        return (
            f"B{self.B}-T{self.T}-H{self.H}-I{self.I}-L{self.layers}-{'bi' if self.bi else 'uni'}"
            f"{'-bf' if self.batch_first else ''}{'-h0' if self.init else ''}-{dtype_id(self.dtype)}{split}"
        )


CASES = [
    # P = 1: the configuration the interpreter picks itself
    Case(B=1, T=1, H=48, I=5),
    Case(B=3, T=9, H=48, I=5, layers=2, bi=True, batch_first=True, init=True),
    Case(B=17, T=33, H=32, I=24, bi=True, init=True),
    Case(B=1, T=33, H=16, I=1, layers=2, dtype=BF16),
    Case(B=3, T=2, H=48, I=7, layers=2, bi=True, init=True, dtype=BF16),
    Case(B=17, T=9, H=64, I=5, batch_first=True, init=True, dtype=BF16),
    Case(B=3, T=33, H=48, I=5, bi=True, dtype=F16),
    Case(B=1, T=9, H=32, I=24, layers=2, bi=True, batch_first=True, init=True, dtype=F16),
    Case(B=17, T=2, H=16, I=3, layers=2, init=True, dtype=F16),
    Case(B=3, T=1, H=48, I=5, layers=2, bi=True, batch_first=True, dtype=BF16),
    Case(B=1, T=2, H=5, I=2, bi=True, init=True),  # H below the dot's minimum reduction length
    # P > 1: the hidden units split over programs, h exchanged through the output
    Case(B=3, T=9, H=48, I=5, layers=2, bi=True, init=True, config=LSTMConfig(block_h=32, block_b=4)),
    Case(B=1, T=33, H=61, I=5, bi=True, init=True, dtype=BF16, config=LSTMConfig(block_h=16, block_b=1)),
    Case(
        B=17,
        T=2,
        H=20,
        I=6,
        layers=2,
        batch_first=True,
        init=True,
        dtype=F16,
        config=LSTMConfig(block_h=16, block_b=32),
    ),
    Case(B=3, T=9, H=48, I=5, bi=True, dtype=F32, config=LSTMConfig(block_h=16, block_b=4)),
    # the split-K dot and the FMA reduction
    Case(B=3, T=9, H=48, I=5, bi=True, init=True, config=LSTMConfig(block_h=32, block_b=4, split_k=2)),
    Case(B=17, T=2, H=64, I=5, layers=2, dtype=BF16, config=LSTMConfig(block_h=64, block_b=32, split_k=4)),
    # the transposed split-K dot: gate columns on M (P = 3 with padded units; P = 1, 4 splits)
    Case(B=3, T=9, H=40, I=5, bi=True, init=True, config=LSTMConfig(16, 4, split_k=2, gates_on_m=True)),
    Case(B=9, T=5, H=64, I=5, dtype=BF16, config=LSTMConfig(64, 8, split_k=4, gates_on_m=True)),
    Case(B=1, T=9, H=48, I=5, bi=True, init=True, config=LSTMConfig(block_h=16, block_b=1, use_fma=True)),
    Case(B=3, T=2, H=32, I=5, batch_first=True, dtype=F16, config=LSTMConfig(block_h=8, block_b=1, use_fma=True)),
]


def make_pair(case: Case, **kwargs):
    ref = nn.LSTM(case.I, case.H, num_layers=case.layers, bidirectional=case.bi, batch_first=case.batch_first, **kwargs)
    ours = LSTM.from_torch(ref).to(DEVICE, case.dtype)
    return ours, ref


def random_input(case: Case):
    D = 2 if case.bi else 1
    x = torch.randn((case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I))
    hx = None
    if case.init:
        hx = tuple(torch.randn(case.layers * D, case.B, case.H) for _ in range(2))
    return x, hx


def to(t, dtype):
    return t.to(DEVICE, dtype)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_forward_matches_reference(case, monkeypatch):
    if case.config is not None:
        monkeypatch.setattr(lstm_triton.module, "select_config", lambda *a, **k: case.config)
    ours, ref = make_pair(case)
    x, hx = random_input(case)
    # the reference sees the same (rounded) weights and inputs, computed in float64
    x, hx = to(x, case.dtype), None if hx is None else tuple(to(t, case.dtype) for t in hx)
    want_y, (want_h, want_c) = lstm_reference(ref.to(case.dtype), x, hx)
    with torch.no_grad():
        y, (h_n, c_n) = ours(x, hx)
    tol = tolerance(case.dtype)
    assert y.dtype == h_n.dtype == c_n.dtype == case.dtype
    assert_close("output", y, want_y, tol)
    assert_close("h_n", h_n, want_h, tol)
    assert_close("c_n", c_n, want_c, tol)
