"""The correctness gate: every provider's first call is checked against a float64 oracle on the
same inputs before it is timed; a wrong provider is reported as wrong, never as fast."""

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from lstm_triton.reference import lstm_reference

from .sweeps import Case, is_packed, is_training
from .workload import Inputs, Outputs, pack

# ||out - ref|| / ||ref|| allowed per dtype (METHOD.md's levels, with room for T steps of recurrence).
TOL = {"float32": 2e-3, "bfloat16": 2e-2, "float16": 5e-3}  # float32: TF32 dots, as cuDNN by default
EXACT_FP32_TOL = 1e-5  # float32 when torch.backends.cudnn.allow_tf32 is off
# Weight gradients sum T*B terms: nn.LSTM's bf16 bias gradient came out 4x its output's error (CPU, T=256).
GRAD_TOL_FACTOR = 2.5


@dataclass(frozen=True)
class Verdict:
    ok: bool
    worst: str  # the output with the largest error relative to its tolerance
    rel_err: float
    tol: float

    def reason(self) -> str:
        return f"{self.worst}: ||out - ref|| / ||ref|| = {self.rel_err:.2e} > tol {self.tol:.1e}"


def tolerance(dtype: str, name: str) -> float:
    base = EXACT_FP32_TOL if (dtype == "float32" and not torch.backends.cudnn.allow_tf32) else TOL[dtype]
    return base * GRAD_TOL_FACTOR if name.startswith("d") else base


def reference(case: Case, base: nn.LSTM, inputs: Inputs) -> Outputs:
    """The float64 oracle (``lstm_reference``, on the inputs' device) for input draw 0: the
    outputs a provider's call returns, with the same names."""
    model = copy.deepcopy(base).double()
    s = inputs.sets[0]
    training, packed = is_training(case.mode), is_packed(case.mode)
    x = s["x"].double().requires_grad_(training)
    lengths = inputs.lengths if packed else None
    with torch.set_grad_enabled(training):
        y, (h_n, c_n) = lstm_reference(model, x, (s["h0"].double(), s["c0"].double()), lengths=lengths)
        y = pack(y, lengths) if packed else y
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if training:
        y.backward(pack(s["gy"].double(), lengths) if packed else s["gy"].double())
        out["dx"] = x.grad
        out.update({f"d{name}": p.grad for name, p in model.named_parameters()})
    return out


def rel_err(out: torch.Tensor | None, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN for a missing or misshapen output (never passes)."""
    if out is None or out.shape != ref.shape:
        return math.nan
    return ((out.detach().double() - ref).norm() / ref.norm()).item()


def check(dtype: str, out: Outputs, ref: Outputs) -> Verdict:
    """Compare every reference output: the first failure, else the output nearest its tolerance.
    NaN or inf anywhere fails."""
    verdicts = []
    for name, r in ref.items():
        err, tol = rel_err(out.get(name), r), tolerance(dtype, name)
        verdicts.append(Verdict(err <= tol, name, err, tol))  # NaN compares false: fails
    failed = [v for v in verdicts if not v.ok]
    return failed[0] if failed else max(verdicts, key=lambda v: v.rel_err / v.tol)
