"""The interpreter's fp32 -> 16-bit stores round as a GPU and PyTorch do: to nearest, ties to even."""

import pytest
import torch
import triton
import triton.language as tl

from lstm_triton.kernels.common import _cast_for_store
from tests.helpers import DEVICE, dtype_id

interpreter_only = pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's own bf16 rounding")


@triton.jit
def _store_kernel(p_in, p_out, n, BLOCK: tl.constexpr, UPCAST: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(p_in + o, mask=o < n)
    tl.store(p_out + o, _cast_for_store(x, p_out.dtype.element_ty, UPCAST), mask=o < n)


def crafted_fp32(dtype: torch.dtype) -> torch.Tensor:
    """Normal fp32 values exactly halfway between two neighbours of ``dtype`` (kept part even
    and odd, both signs, a carry into the exponent), one bit either side of halfway, and exact
    values (the interpreter flushes subnormal results to zero; activations never get there)."""
    dropped = 16 if dtype == torch.bfloat16 else 13  # fp32 mantissa bits the 16-bit type lacks
    half = 1 << (dropped - 1)
    kept = torch.tensor([0x3F80, 0x3F81, 0x3FFF, 0x4049, 0x407F, 0x0081], dtype=torch.int64) << 16
    if dtype == torch.float16:
        kept = torch.tensor([0x3F800000, 0x3F802000, 0x3FFFE000, 0x40490000], dtype=torch.int64)
    bits = torch.cat([kept + half, kept + half - 1, kept + half + 1, kept])
    x = bits.to(torch.int32).view(torch.float32)
    return torch.cat([x, -x])


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_stores_round_ties_to_even_as_torch(dtype):
    x = crafted_fp32(dtype)
    out = torch.full(x.shape, float("nan"), dtype=dtype)
    _store_kernel[(1,)](x, out, x.numel(), BLOCK=triton.next_power_of_2(x.numel()), UPCAST=True)
    want = x.to(dtype)
    assert torch.equal(out.view(torch.int16), want.view(torch.int16)), torch.stack(
        [x.view(torch.int32).long(), out.view(torch.int16).long(), want.view(torch.int16).long()]
    )
