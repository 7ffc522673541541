"""The kernels' weight layout: PyTorch's LSTM weights permuted, padded and transposed, once.

PyTorch stores the four gates of a layer as row blocks ``[i; f; g; o]`` of ``W_ih`` [4H, I],
``W_hh`` [4H, H] and the biases. The kernel wants, for each program ``p`` of ``BLOCK_H`` hidden
units, its ``4*BLOCK_H`` gate columns side by side in the order ``_split_gates`` takes apart
(column ``g1*2*BLOCK_H + 2*u + g0`` holds gate ``2*g1 + g0`` of unit ``p*BLOCK_H + u``), padded
with zeros where ``P*BLOCK_H > H``. The input projection GEMM then writes its output straight in
that order, so nothing is permuted per step.

With projections (``proj_size`` R > 0, ``h_t = W_hr (o_t * tanh(c_t))``) the recurrence runs on
the unprojected ``m_t = o_t * tanh(c_t)``, H wide: ``h_{t-1} W_hh^T = m_{t-1} (W_hh W_hr)^T``, so
the kernels take ``W_hh W_hr`` [4H, H] as their recurrent weight, unchanged, and the projection
of every step's output is one GEMM after the recurrence. ``h_0`` enters as ``h_0 W_hh^T`` added
to the input projection of each direction's first step.
"""

from dataclasses import dataclass

import torch

from ._env import next_pow2

MIN_DOT_K = 16  # tl.dot needs a reduction dimension of at least 16 on NVIDIA GPUs


def padded_hidden(hidden_size: int) -> int:
    """The reduction length the kernel uses for h: a power of two, at least MIN_DOT_K."""
    return max(MIN_DOT_K, next_pow2(hidden_size))


def padded_gate_columns(n_cols: int) -> int:
    """The backward's reduction length over all gate columns of a direction: a power of two,
    at least MIN_DOT_K."""
    return max(MIN_DOT_K, next_pow2(n_cols))


def num_programs(hidden_size: int, block_h: int) -> int:
    return -(-hidden_size // block_h)


def gate_rows(hidden_size: int, block_h: int, device=None) -> torch.Tensor:
    """For each packed column of one direction, the PyTorch gate row it comes from
    (``4*hidden_size`` marks a zero pad column). Length ``num_programs * 4 * block_h``."""
    j = torch.arange(4 * block_h, device=device)
    g1, u, g0 = j // (2 * block_h), (j % (2 * block_h)) // 2, j % 2
    p = torch.arange(num_programs(hidden_size, block_h), device=device)[:, None]
    unit = p * block_h + u
    rows = (2 * g1 + g0) * hidden_size + unit
    return torch.where(unit < hidden_size, rows, 4 * hidden_size).reshape(-1)


@dataclass
class PackedLayer:
    """One layer, all directions, in kernel layout (``n_cols`` packed columns per direction)."""

    w_ih: torch.Tensor  # [DIRS * n_cols, I]
    bias: torch.Tensor | None  # [DIRS * n_cols], b_ih + b_hh
    w_hh: torch.Tensor  # [DIRS, H_PAD, n_cols], W_hh^T (with projections: (W_hh W_hr)^T)
    hidden_size: int
    block_h: int  # the column order depends on it: a config must use the same
    w_hr: torch.Tensor | None = None  # with projections: [DIRS, R, H]
    w_h0: torch.Tensor | None = None  # with projections: [DIRS, n_cols, R], W_hh's rows in column order


def _take_rows(w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return torch.cat([w, w.new_zeros((1,) + w.shape[1:])])[rows]


def pack_layer(w_ih, w_hh, b_ih, b_hh, block_h: int, w_hr=None) -> PackedLayer:
    """``w_ih``/``w_hh``/``b_ih``/``b_hh`` (and ``w_hr`` with projections, else None): one
    tensor per direction, PyTorch's layout (biases may be None). Returns the kernel layout in
    the weights' dtype."""
    hidden_size = w_hh[0].shape[0] // 4
    rows = gate_rows(hidden_size, block_h, w_hh[0].device)
    h_pad = padded_hidden(hidden_size)
    w_ih_p = torch.cat([_take_rows(w, rows) for w in w_ih])
    w_rec = w_hh if w_hr is None else [_recurrent_weight(a, b) for a, b in zip(w_hh, w_hr, strict=True)]
    w_hh_p = torch.stack([_take_rows(w, rows).t() for w in w_rec])
    w_hh_p = torch.nn.functional.pad(w_hh_p, (0, 0, 0, h_pad - hidden_size)).contiguous()
    bias = None
    if b_ih[0] is not None:
        bias = torch.cat([_take_rows(bi.float() + bh.float(), rows) for bi, bh in zip(b_ih, b_hh, strict=True)])
        bias = bias.to(w_ih[0].dtype)
    if w_hr is None:
        return PackedLayer(w_ih_p, bias, w_hh_p, hidden_size, block_h)
    w_h0 = torch.stack([_take_rows(w, rows) for w in w_hh])
    return PackedLayer(w_ih_p, bias, w_hh_p, hidden_size, block_h, torch.stack(list(w_hr)), w_h0)


def _recurrent_weight(w_hh: torch.Tensor, w_hr: torch.Tensor) -> torch.Tensor:
    """W_hh [4H, R] @ W_hr [R, H]: the recurrent weight on the unprojected state, rounded once
    to the weights' dtype."""
    return (w_hh.float() @ w_hr.float()).to(w_hh.dtype)
