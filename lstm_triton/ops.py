"""The recurrence as ``torch.library`` custom ops (forward and backward, with fake
implementations and autograd), so autograd and ``torch.compile`` see one opaque node per layer:
``torch.compile(model, fullgraph=True)`` traces a model using ``lstm_triton.LSTM`` without a
graph break.

Only the recurrence is an op. The weight packing and the input projection around it are plain
differentiable torch ops, so autograd itself maps the packed gradients back to ``weight_ih``,
``bias_ih``, ``bias_hh`` and ``weight_hh`` and forms ``dx``."""

import torch
from torch import Tensor

from .configs import LSTMConfig
from .launch import Saved, lstm_recurrent_bwd, lstm_recurrent_fwd, new_output
from .layout import PackedLayer

# A config crosses the op boundary as these ints (custom ops take tensors and plain scalars).
CONFIG_FIELDS = ("block_h", "block_b", "split_k", "use_fma", "num_warps", "batch_loop", "gates_on_m")


def config_args(config: LSTMConfig | None) -> list[int]:
    return [0] * len(CONFIG_FIELDS) if config is None else [int(getattr(config, f)) for f in CONFIG_FIELDS]


def _config(args: list[int]) -> LSTMConfig:
    block_h, block_b, split_k, use_fma, num_warps, batch_loop, gates_on_m = args
    return LSTMConfig(block_h, block_b, split_k, bool(use_fma), num_warps, bool(batch_loop), bool(gates_on_m))


def _output(xp: Tensor, dirs: int, hidden_size: int, batch_first: bool) -> Tensor:
    """y [T, B, DIRS * H], batch-major underneath when ``batch_first``."""
    T, B, _ = xp.shape
    shape = (B, T) if batch_first else (T, B)
    out = new_output(*shape, dirs * hidden_size, device=xp.device, dtype=xp.dtype)
    return out.transpose(0, 1) if batch_first else out


@torch.library.custom_op("lstm_triton::recurrence", mutates_args=())
def recurrence(
    xp: Tensor,
    w_hh: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    lengths: Tensor | None,
    hidden_size: int,
    config: list[int],
    bwd_config: list[int],
    batch_first: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer's recurrence, all directions: xp [T, B, DIRS * n_cols] and w_hh
    [DIRS, H_PAD, n_cols] packed (``layout``), h0 / c0 [DIRS, B, H] or None, lengths [B] int32
    or None -> y [T, B, DIRS * H] (batch-major underneath when ``batch_first``), h_n, c_n
    [DIRS, B, H], and when ``save`` the activations backward needs (empty otherwise).
    ``config``: the forward's launch config; ``bwd_config``: the backward's (with ``save``)."""
    cfg = _config(config)
    layer = PackedLayer(None, None, w_hh, hidden_size, cfg.block_h)
    out = _output(xp, w_hh.shape[0], hidden_size, batch_first)
    y, h_n, c_n, saved = lstm_recurrent_fwd(xp, layer, h0, c0, cfg, out=out, save=save, lengths=lengths)
    if saved is None:
        return y, h_n, c_n, xp.new_empty(0), xp.new_empty(0)
    return y, h_n, c_n, saved.gates, saved.cs


@recurrence.register_fake
def _(xp, w_hh, h0, c0, lengths, hidden_size, config, bwd_config, batch_first, save):
    dirs = w_hh.shape[0]
    T, B, _ = xp.shape
    y = _output(xp, dirs, hidden_size, batch_first)
    h_n, c_n = (xp.new_empty(dirs, B, hidden_size) for _ in range(2))
    if not save:
        return y, h_n, c_n, xp.new_empty(0), xp.new_empty(0)
    return y, h_n, c_n, torch.empty_like(xp), torch.empty_like(y)


@torch.library.custom_op("lstm_triton::recurrence_backward", mutates_args=())
def recurrence_backward(
    dy: Tensor,
    dh_n: Tensor,
    dc_n: Tensor,
    w_hh: Tensor,
    y: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    lengths: Tensor | None,
    gates: Tensor,
    cs: Tensor,
    hidden_size: int,
    block_h: int,
    config: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``recurrence`` (saved with ``save``): dxp (xp's strides), dw_hh, dh0 and
    dc0 [DIRS, B, H] (zeros where there was no initial state). ``config``: the backward's."""
    layer = PackedLayer(None, None, w_hh, hidden_size, block_h)
    dxp, dw_hh, dh0, dc0 = lstm_recurrent_bwd(
        dy, dh_n, dc_n, layer, y, h0, c0, Saved(gates, cs), _config(config), lengths=lengths
    )
    return dxp, dw_hh, (torch.zeros_like(dc0) if dh0 is None else dh0), dc0


@recurrence_backward.register_fake
def _(dy, dh_n, dc_n, w_hh, y, h0, c0, lengths, gates, cs, hidden_size, block_h, config):
    return torch.empty_like(gates), torch.empty_like(w_hh), torch.empty_like(dc_n), torch.empty_like(dc_n)


def _setup_context(ctx, inputs, output):
    xp, w_hh, h0, c0, lengths, hidden_size, config, bwd_config, batch_first, save = inputs
    y, _, _, gates, cs = output
    ctx.save_for_backward(w_hh, h0, c0, lengths, y, gates, cs)
    ctx.hidden_size, ctx.block_h, ctx.bwd_config = hidden_size, config[0], bwd_config
    ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None


def _backward(ctx, dy, dh_n, dc_n, _dgates, _dcs):
    w_hh, h0, c0, lengths, y, gates, cs = ctx.saved_tensors
    dirs, batch = w_hh.shape[0], y.shape[1]
    dy = torch.zeros_like(y) if dy is None else dy
    dh_n, dc_n = (y.new_zeros(dirs, batch, ctx.hidden_size) if g is None else g for g in (dh_n, dc_n))
    dxp, dw_hh, dh0, dc0 = recurrence_backward(
        dy, dh_n, dc_n, w_hh, y, h0, c0, lengths, gates, cs, ctx.hidden_size, ctx.block_h, ctx.bwd_config
    )
    return dxp, dw_hh, dh0 if ctx.has_h0 else None, dc0 if ctx.has_c0 else None, None, None, None, None, None, None


recurrence.register_autograd(_backward, setup_context=_setup_context)
