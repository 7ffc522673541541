"""The autograd Function of one layer's recurrence: forward -> persistent forward kernel (saving
activations), backward -> persistent backward kernel.

Only the recurrence is a custom Function. The weight packing and the input projection around it
are plain differentiable torch ops, so autograd itself maps the packed gradients back to
``weight_ih``, ``bias_ih``, ``bias_hh`` and ``weight_hh`` and forms ``dx``."""

import torch

from .configs import LSTMConfig
from .launch import Saved, lstm_recurrent_bwd, lstm_recurrent_fwd, new_output
from .layout import PackedLayer


class LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        xp,
        w_hh,
        h0,
        c0,
        lengths,
        hidden_size: int,
        config: LSTMConfig,
        bwd_config: LSTMConfig,
        batch_first: bool,
        err,
    ):
        """xp [T, B, DIRS * n_cols], w_hh [DIRS, H_PAD, n_cols] packed, h0 / c0 [DIRS, B, H] or
        None, lengths [B] int32 or None -> y [T, B, DIRS * H] (batch-major underneath when
        ``batch_first``), h_n, c_n."""
        layer = PackedLayer(None, None, w_hh, hidden_size, config.block_h)
        T, B, _ = xp.shape
        shape = (B, T) if batch_first else (T, B)
        out = new_output(*shape, w_hh.shape[0] * hidden_size, device=xp.device, dtype=xp.dtype)
        out = out.transpose(0, 1) if batch_first else out
        y, h_n, c_n, saved = lstm_recurrent_fwd(xp, layer, h0, c0, config, out=out, save=True, lengths=lengths, err=err)
        ctx.save_for_backward(w_hh, h0, c0, lengths, y, saved.gates, saved.cs)
        ctx.configs = (hidden_size, config, bwd_config)
        return y, h_n, c_n

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        w_hh, h0, c0, lengths, y, gates, cs = ctx.saved_tensors
        hidden_size, config, bwd_config = ctx.configs
        layer = PackedLayer(None, None, w_hh, hidden_size, config.block_h)
        dxp, dw_hh, dh0, dc0 = lstm_recurrent_bwd(
            dy, dh_n, dc_n, layer, y, h0, c0, Saved(gates, cs), bwd_config, lengths=lengths
        )
        return dxp, dw_hh, dh0, (dc0 if c0 is not None else None), None, None, None, None, None, None
