"""Shared test helpers: where the kernels run, tolerances by dtype, the error-ratio assert."""

import torch

from lstm_triton._env import interpreting

# The interpreter runs CPU tensors; otherwise the kernels need the GPU.
DEVICE = torch.device("cpu" if interpreting() else "cuda")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def tolerance(dtype: torch.dtype) -> float:
    """Bound on ||out - ref|| / ||ref|| against a float64 reference (METHOD.md): exact fp32
    arithmetic far under 1e-3 (the interpreter's dots are exact), TF32 dots near 3e-4, fp16
    near 1e-3, bf16 between 1e-3 and 1e-2."""
    if dtype == torch.float32:
        return 1e-5 if interpreting() else 2e-3
    return {torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]


def dtype_id(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """Relative error of ``out`` against ``ref`` in the 2-norm; fails on any NaN/Inf."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    bad = (~torch.isfinite(out64)).sum().item()
    assert bad == 0, f"{name}: {bad} of {out64.numel()} elements are NaN/Inf (unwritten or overflowed)"
    err = ((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30)).item()
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"
