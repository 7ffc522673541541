"""Numerics over long sequences: after T steps the drift of h_n and c_n from a float64 reference
stays within the dtype's tolerance, and at most about PyTorch's own drift in the same dtype on
the same inputs (cuDNN on a GPU, its CPU LSTM here). Both drifts are printed: ``-s`` or
``-rP`` shows them."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lstm_triton import LSTM
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, DTYPES, dtype_id, tolerance

# An open forget gate: the cell state integrates over hundreds of steps, so rounding errors
# accumulate instead of decaying within a few steps.
FORGET_BIAS = 3.0
# "Matches": our drift may exceed PyTorch's by this factor (different but equally valid
# rounding orders), or stay under this fraction of the dtype's tolerance where PyTorch's drift
# is near zero.
DRIFT_FACTOR, DRIFT_FLOOR = 2.0, 0.1
LONG_T_CPU, LONG_T_GPU = 1024, 4096
# The interpreter's time goes per program and step: both directions get half the steps.
BI_T_CPU = LONG_T_CPU // 2


@dataclass(frozen=True)
class Long:
    T: int
    H: int
    B: int
    I: int
    bi: bool
    dtype: torch.dtype

    @property
    def id(self) -> str:
        return f"T{self.T}-H{self.H}-B{self.B}-{'bi' if self.bi else 'uni'}-{dtype_id(self.dtype)}"


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


def drifts(case: Long, device) -> dict[str, dict[str, float]]:
    """Relative errors of h_n and c_n after ``case.T`` steps against float64, for ours and for
    PyTorch's LSTM in ``case.dtype``, on the same weights and inputs."""
    torch.manual_seed(case.T + case.H)
    ref = nn.LSTM(case.I, case.H, bidirectional=case.bi, device=device, dtype=case.dtype)
    with torch.no_grad():
        for name, b in ref.named_parameters():
            if name.startswith("bias_ih"):
                b[case.H : 2 * case.H] = FORGET_BIAS  # rows H..2H: the forget gate
    ours = LSTM.from_torch(ref)
    D = 2 if case.bi else 1
    x = torch.randn(case.T, case.B, case.I, device=device, dtype=case.dtype)
    hx = tuple(torch.randn(D, case.B, case.H, device=device, dtype=case.dtype) for _ in range(2))
    with torch.no_grad():
        _, (want_h, want_c) = lstm_reference(ref, x, hx)
        _, (h, c) = ours(x, hx)
        _, (torch_h, torch_c) = ref(x, hx)
    return {
        "ours": {"h_n": rel(h, want_h), "c_n": rel(c, want_c)},
        "pytorch": {"h_n": rel(torch_h, want_h), "c_n": rel(torch_c, want_c)},
    }


def check_drift(case: Long, device) -> None:
    d = drifts(case, device)
    vendor = "cuDNN" if torch.device(device).type == "cuda" else "PyTorch CPU"
    tol = tolerance(case.dtype)
    for name in ("h_n", "c_n"):
        ours, theirs = d["ours"][name], d["pytorch"][name]
        print(f"{case.id} {name}: drift ours {ours:.2e}, {vendor} {theirs:.2e} (tolerance {tol:.0e})")
        assert ours <= tol, f"{name}: drift {ours:.2e} > tolerance {tol:.0e}"
        assert ours <= max(DRIFT_FACTOR * theirs, DRIFT_FLOOR * tol), (
            f"{name}: drift {ours:.2e} far above {vendor}'s {theirs:.2e}"
        )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id)
        for c in (Long(LONG_T_CPU, 8, 2, 3, False, torch.float32), Long(BI_T_CPU, 5, 1, 2, True, torch.bfloat16))
    ],
)
def test_long_sequence_drift_on_cpu(case):
    """The persistent kernel (P = 1 under the interpreter) over a thousand steps."""
    check_drift(case, DEVICE)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "H, B, bi", [(256, 8, False), (1024, 8, True), (512, 64, False)], ids=["H256-B8-uni", "H1024-B8-bi", "H512-B64-uni"]
)
def test_long_sequence_drift_on_gpu(H, B, bi, dtype):
    """T = 4096 on the GPU: thousands of grid barriers per launch, against cuDNN's drift."""
    check_drift(Long(LONG_T_GPU, H, B, H, bi, dtype), "cuda")
