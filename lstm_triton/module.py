"""``lstm_triton.LSTM``: ``torch.nn.LSTM`` with its recurrence on our persistent kernels."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import launch
from ._env import interpreting
from .configs import LSTMConfig, select_backward_config, select_config, training_config
from .function import LSTMRecurrence
from .launch import lstm_recurrent_fwd, new_output, new_timeout_flag, raise_on_timeout, uses_barrier
from .layout import PackedLayer, pack_layer

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class InputTypeError(TypeError, AttributeError):
    """``input`` is not a tensor (nn.LSTM fails there with an AttributeError)."""


class HiddenStateError(RuntimeError, IndexError):
    """``hx`` is not a pair of tensors (nn.LSTM fails there with a RuntimeError or IndexError)."""


@dataclass(frozen=True)
class KernelPlan:
    """What a forward call runs: our kernels with these configs, or PyTorch's LSTM (``reason``)."""

    config: LSTMConfig | None = None  # the forward kernel's (the training forward's when training)
    backward: LSTMConfig | None = None  # the backward kernel's, when training
    reason: str | None = None  # why PyTorch's LSTM runs instead; None: our kernels


class LSTM(nn.LSTM):
    """A drop-in ``torch.nn.LSTM``: the same constructor, parameters, initialisation,
    state_dict and ``forward(input, hx=None) -> (output, (h_n, c_n))``.

    float32 / bfloat16 / float16 tensors on a CUDA GPU (or on the CPU under Triton's
    interpreter) run one persistent kernel per layer for all directions, and, when autograd
    needs it, a persistent backward kernel: gradients for the input, h_0, c_0 and every weight
    and bias. Everything else (float64, CPU tensors, ``proj_size > 0``, PackedSequence input,
    shapes whose weights do not fit on chip) runs PyTorch's own LSTM, so the module always
    works; ``kernel_plan`` says which a call gets.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._packed: dict[int, tuple[tuple, PackedLayer]] = {}

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> "LSTM":
        """A copy of ``module`` (same hyper-parameters, weights, device, dtype and mode)."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        w = module.weight_ih_l0
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            device=w.device,
            dtype=w.dtype,
        )
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def __getstate__(self):
        state = super().__getstate__()
        state["_packed"] = {}  # a cache of the weights in kernel layout: rebuilt on demand
        return state

    def kernel_plan(self, input, hx=None, training: bool | None = None) -> "KernelPlan":
        """What ``forward(input, hx)`` would run: our kernels with which configs, or PyTorch's
        LSTM and why. ``training``: whether autograd will differentiate the call (default: as
        the call would decide, from grad mode and what requires grad)."""
        if isinstance(input, PackedSequence):
            return KernelPlan(reason="PackedSequence input")
        if self.proj_size > 0:
            return KernelPlan(reason="proj_size > 0")
        if input.dtype not in KERNEL_DTYPES:
            return KernelPlan(reason=f"{input.dtype} input")
        if not (input.device.type == "cuda" or (input.device.type == "cpu" and interpreting())):
            return KernelPlan(reason=f"{input.device.type} tensors without TRITON_INTERPRET=1")
        if training is None:
            training = torch.is_grad_enabled() and (
                input.requires_grad
                or any(p.requires_grad for p in self._flat_weights)
                or (hx is not None and (hx[0].requires_grad or hx[1].requires_grad))
            )
        batch = 1 if input.dim() == 2 else input.shape[0 if self.batch_first else 1]
        H, D = self.hidden_size, self.num_directions
        config = select_config(H, batch, D, input.dtype, input.device)
        if config is None:
            return KernelPlan(reason=f"no kernel config keeps the weights on chip (H={H}, B={batch}, dirs={D})")
        if not training:
            return KernelPlan(config)
        backward = select_backward_config(config, H, input.dtype, input.device)
        if backward is None:
            return KernelPlan(reason=f"no backward config fits on chip (H={H}, B={batch}, dirs={D})")
        return KernelPlan(training_config(config), backward)

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return super().forward(input, hx)
        batched = _check_forward_args(self, input, hx)
        plan = self.kernel_plan(input, hx)
        if plan.reason is not None:
            return super().forward(input, hx)
        x = input if batched else input.unsqueeze(1)
        if not batched and hx is not None:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if self.batch_first and batched:
            x = x.transpose(0, 1)  # a view: the kernels take time-major strides
        y, h_n, c_n = self._run(x, hx, plan.config, plan.backward)
        if self.batch_first and batched:
            y = y.transpose(0, 1)
        if not batched:
            y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return y, (h_n, c_n)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _run(self, x, hx, config: LSTMConfig, bwd_config: LSTMConfig | None):
        """x: [T, B, I] time-major (possibly a view). Returns y [T, B, D*H] (a batch-major
        tensor underneath when batch_first), h_n and c_n [L*D, B, H]. With a ``bwd_config``
        the layers are differentiable (the training forward, saving what backward needs)."""
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        err = new_timeout_flag(x.device)
        h_n, c_n = [], []
        for layer in range(L):
            packed = self._packed_layer(layer, config, differentiable=bwd_config is not None)
            # one GEMM for all timesteps and both directions, in the input's own memory order
            inp = x.transpose(0, 1) if self.batch_first else x
            xp = inp.reshape(-1, inp.shape[-1])
            xp = torch.addmm(packed.bias, xp, packed.w_ih.t()) if packed.bias is not None else xp @ packed.w_ih.t()
            xp = xp.view(*inp.shape[:2], packed.w_ih.shape[0])
            xp = xp.transpose(0, 1) if self.batch_first else xp
            states = slice(layer * D, (layer + 1) * D)
            h0 = None if hx is None else hx[0][states].contiguous()
            c0 = None if hx is None else hx[1][states].contiguous()
            if bwd_config is not None:
                y, h, c = LSTMRecurrence.apply(xp, packed.w_hh, h0, c0, H, config, bwd_config, self.batch_first, err)
            else:
                out = new_output(*inp.shape[:2], D * H, device=x.device, dtype=x.dtype)
                out = out.transpose(0, 1) if self.batch_first else out
                y, h, c, _ = lstm_recurrent_fwd(xp, packed, h0, c0, config, out=out, err=err)
            h_n.append(h)
            c_n.append(c)
            x = (
                F.dropout(y, self.dropout, training=True)
                if (self.training and self.dropout > 0 and layer < L - 1)
                else y
            )
        if launch.CHECK_TIMEOUTS and uses_barrier(config.programs(H)):
            raise_on_timeout(err)  # one host sync for all layers
        return y, torch.cat(h_n), torch.cat(c_n)

    def _packed_layer(self, layer: int, config: LSTMConfig, differentiable: bool = False) -> PackedLayer:
        """The layer's weights in kernel layout. Differentiable (for training): packed afresh,
        so autograd maps the packed gradients back to the parameters; otherwise cached until a
        weight changes (in place or not)."""
        sfx = ("", "_reverse")[: self.num_directions]
        w_ih, w_hh = ([getattr(self, f"{kind}_l{layer}{s}") for s in sfx] for kind in ("weight_ih", "weight_hh"))
        b_ih, b_hh = (
            [getattr(self, f"{kind}_l{layer}{s}") if self.bias else None for s in sfx]
            for kind in ("bias_ih", "bias_hh")
        )
        if differentiable:
            return pack_layer(w_ih, w_hh, b_ih, b_hh, config.block_h)
        params = [p for p in (*w_ih, *w_hh, *b_ih, *b_hh) if p is not None]
        key = (config.block_h,) + tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._packed.get(layer)
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad():
            packed = pack_layer(w_ih, w_hh, b_ih, b_hh, config.block_h)
        self._packed[layer] = (key, packed)
        return packed


def _check_forward_args(module: nn.LSTM, input, hx) -> bool:
    """nn.LSTM's checks with messages that name the bad argument; the same exception types
    nn.LSTM raises, so code that catches them keeps working. Returns whether input is batched."""
    name = type(module).__name__
    if not isinstance(input, torch.Tensor):
        raise InputTypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(
            f"{name}: input must be 2-D (seq_len, input_size) unbatched or 3-D batched, "
            f"got a {input.dim()}-D tensor of shape {tuple(input.shape)}"
        )
    batched = input.dim() == 3
    if input.shape[-1] != module.input_size:
        raise RuntimeError(
            f"{name}: input.size(-1) must be equal to input_size. Expected {module.input_size}, "
            f"got {input.shape[-1]} (input shape {tuple(input.shape)})"
        )
    w = module.weight_ih_l0
    if input.dtype != w.dtype:
        raise ValueError(
            f"{name}: input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
            f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})"
        )
    if input.device != w.device:
        raise RuntimeError(
            f"{name}: input is on {input.device} but the weights are on {w.device}; "
            f"move one of them: input.to({str(w.device)!r}) or model.to({str(input.device)!r})"
        )
    seq_len = input.shape[1 if (batched and module.batch_first) else 0]
    if seq_len == 0:
        raise RuntimeError(
            f"{name}: Expected sequence length to be larger than 0 in RNN (input shape {tuple(input.shape)})"
        )
    if hx is None:
        return batched
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, torch.Tensor) for t in hx)):
        raise HiddenStateError(f"{name}: hx must be a tuple (h_0, c_0) of two tensors, got {type(hx).__name__}")
    batch = input.shape[0 if module.batch_first else 1] if batched else None
    d = 2 if module.bidirectional else 1
    h_size = module.proj_size if module.proj_size > 0 else module.hidden_size
    for which, t, size in (("h_0", hx[0], h_size), ("c_0", hx[1], module.hidden_size)):
        want = (module.num_layers * d, batch, size) if batched else (module.num_layers * d, size)
        if t.dim() != len(want):
            raise RuntimeError(
                f"{name}: for {'batched 3-D' if batched else 'unbatched 2-D'} input, {which} must be "
                f"{len(want)}-D of shape {want}, got shape {tuple(t.shape)}"
            )
        if tuple(t.shape) != want:
            raise RuntimeError(f"{name}: Expected {which} of size {want}, got {tuple(t.shape)}")
        if t.dtype != input.dtype:
            raise RuntimeError(f"{name}: {which} dtype ({t.dtype}) must match the input dtype ({input.dtype})")
        if t.device != input.device:
            raise RuntimeError(f"{name}: {which} is on {t.device} but input is on {input.device}")
    return batched
