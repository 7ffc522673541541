"""``lstm_triton.LSTM``: ``torch.nn.LSTM`` with its recurrence on our persistent kernels."""

import logging
import operator
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _env
from .configs import LSTMConfig, training_config, varlen_config
from .dispatch import select_backward_config, select_config
from .launch import last_outputs, lstm_recurrent_fwd, new_output
from .layout import PackedLayer, pack_layer
from .ops import config_args, recurrence

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
log = logging.getLogger(__name__)


class PyTorchFallbackWarning(UserWarning):
    """A call on CUDA tensors ran PyTorch's LSTM instead of our kernels (once per reason)."""


class LateInterpreterError(RuntimeError):
    """TRITON_INTERPRET=1 was set after lstm_triton was imported."""


class InputTypeError(TypeError, AttributeError):
    """``input`` is not a tensor (nn.LSTM fails there with an AttributeError)."""


class HiddenStateError(RuntimeError, IndexError, AttributeError):
    """``hx`` is not a pair of tensors (nn.LSTM fails there with a RuntimeError, an IndexError or
    an AttributeError, by the form of hx)."""


@dataclass(frozen=True)
class KernelPlan:
    """What a forward call runs: our kernels with these configs, or PyTorch's LSTM (``reason``)."""

    config: LSTMConfig | None = None  # the forward kernel's (the training forward's when training)
    backward: LSTMConfig | None = None  # the backward kernel's, when training
    reason: str | None = None  # why PyTorch's LSTM runs instead; None: our kernels
    hidden_size: int | None = None  # names the configs: their program count depends on it

    @property
    def label(self) -> str:
        """The configs by name, as the benchmark, the tuner and aot print them
        (``LSTMConfig.label``): 'P2-BH64-BB8-dot-splitk1-w4', with ' backward <name>' when
        training; or why PyTorch's LSTM runs."""
        if self.reason is not None:
            return f"PyTorch's LSTM: {self.reason}"
        fwd = self.config.label(self.hidden_size)
        return fwd if self.backward is None else f"{fwd} backward {self.backward.label(self.hidden_size)}"

    def __str__(self) -> str:
        return self.label


class LSTM(nn.RNNBase):
    """A drop-in ``torch.nn.LSTM``: the same constructor, parameters, initialisation,
    state_dict and ``forward(input, hx=None) -> (output, (h_n, c_n))``.

    float32 / bfloat16 / float16 tensors on a CUDA GPU (or on the CPU under Triton's
    interpreter) run one persistent kernel per layer for all directions, and, when autograd
    needs it, a persistent backward kernel: gradients for the input, h_0, c_0 and every weight
    and bias (``weight_hr`` too, with projections). Everything else (float64, CPU tensors,
    shapes whose weights do not fit on chip) runs PyTorch's own LSTM, so the module always
    works; ``kernel_plan`` says which a call gets.

    It is an ``nn.RNNBase`` in LSTM mode, as ``nn.LSTM`` is, but not an ``nn.LSTM``:
    torch.compile refuses to trace subclasses of ``nn.LSTM`` (they stay on cuDNN's path).
    """

    # nn.LSTM's own checks and forward (PyTorch's LSTM, for what our kernels do not run)
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden
    _pytorch_forward = nn.LSTM.forward

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        # per layer: (key, the weights it was packed from, the packed layer)
        self._packed: dict[int, tuple[tuple, tuple, PackedLayer]] = {}

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> "LSTM":
        """A copy of ``module`` (same hyper-parameters, weights, device, dtype and mode)."""
        if not isinstance(module, (nn.LSTM, LSTM)):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        w = module.weight_ih_l0
        new = cls.like(module, device=w.device, dtype=w.dtype)
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    @classmethod
    def like(cls, module: nn.RNNBase, **factory_kwargs) -> "LSTM":
        """A new LSTM with ``module``'s hyper-parameters (``factory_kwargs``: device, dtype)."""
        return cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            **factory_kwargs,
        )

    def __getstate__(self):
        state = super().__getstate__()
        state["_packed"] = {}  # a cache of the weights in kernel layout: rebuilt on demand
        return state

    def kernel_plan(self, input, hx=None, training: bool | None = None, lengths=None) -> "KernelPlan":
        """What ``forward(input, hx, lengths=lengths)`` would run: our kernels with which
        configs, or PyTorch's LSTM and why. ``training``: whether autograd will differentiate
        the call (default: as the call would decide, from grad mode and what requires grad)."""
        data = input.data if isinstance(input, PackedSequence) else input
        if torch.jit.is_tracing():  # a TorchScript graph cannot hold our kernels: it records PyTorch's
            return KernelPlan(reason="torch.jit.trace (TorchScript records PyTorch's LSTM)")
        # torch.library's autograd for custom ops does not support torch.func transforms
        if not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None:
            return KernelPlan(reason="inside a torch.func transform (grad, vmap, jvp, ...)")
        dtype = self._autocast_dtype(data) or data.dtype
        if dtype not in KERNEL_DTYPES:
            return KernelPlan(reason=f"{dtype} input")
        if data.device.type == "cpu" and _env.interpreting() and not _env.KERNELS_INTERPRETED:
            raise LateInterpreterError(
                "TRITON_INTERPRET=1 was set after `import lstm_triton`, and Triton reads it when the kernels are "
                "defined (at import): set it before importing lstm_triton, or unset it to run PyTorch's LSTM"
            )
        if not (data.device.type == "cuda" or (data.device.type == "cpu" and _env.interpreting())):
            return KernelPlan(reason=f"{data.device.type} tensors without TRITON_INTERPRET=1")
        if training is None:
            training = torch.is_grad_enabled() and (
                data.requires_grad
                or any(p.requires_grad for p in self._flat_weights)
                or (hx is not None and (hx[0].requires_grad or hx[1].requires_grad))
            )
        if isinstance(input, PackedSequence):
            batch = int(input.batch_sizes[0])
        else:
            # operator.index: under torch.compile, a batch size traced symbolically (dynamo does
            # after a second one) becomes a guarded constant again: the configs depend on its
            # exact value (a new batch size recompiles)
            batch = 1 if input.dim() == 2 else operator.index(input.shape[0 if self.batch_first else 1])
        return _plan(
            self.hidden_size,
            batch,
            self.num_directions,
            dtype,
            data.device,
            training,
            lengths is not None or isinstance(input, PackedSequence),
        )

    def forward(self, input, hx=None, *, lengths=None):
        """nn.LSTM's forward. ``lengths`` (ours, for padded input): [B] sequence lengths in
        1..T (a CPU tensor or a list, as ``pack_padded_sequence`` takes them): the output is
        zero past each length, ``h_n``/``c_n`` are each sequence's state at its last step and
        the reverse direction starts there, as with a PackedSequence, without packing."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{type(self).__name__}: lengths= is for padded input; a PackedSequence has its own")
            return self._forward_packed(input, hx)
        batched = _check_forward_args(self, input, hx)
        if lengths is not None:
            T, B = (input.shape[:2] if not self.batch_first else input.shape[1::-1]) if batched else (len(input), 1)
            lengths = _check_lengths(self, lengths, B, T, input.device)
        plan = self.kernel_plan(input, hx, lengths=lengths)
        if plan.reason is not None:
            _note_fallback(plan.reason, input.device)
            return self._pytorch_forward(input, hx) if lengths is None else self._pytorch_lengths(input, hx, lengths)
        x = input if batched else input.unsqueeze(1)
        if not batched and hx is not None:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if self.batch_first and batched:
            x = x.transpose(0, 1)  # a view: the kernels take time-major strides
        if lengths is not None:  # as with a PackedSequence, the padding never reaches the weights
            live = torch.arange(x.shape[0], device=lengths.device)[:, None] < lengths[None, :]
            x = x.masked_fill(~live.to(x.device)[..., None], 0)
        y, h_n, c_n = self._run(x, hx, plan, self.batch_first and batched, lengths)
        if self.batch_first and batched:
            y = y.transpose(0, 1)
        if not batched:
            y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return y, (h_n, c_n)

    def _forward_packed(self, packed: PackedSequence, hx):
        """A PackedSequence runs padded with its lengths, in the caller's batch order (where
        nn.LSTM expects ``hx`` and returns ``h_n``), then is packed again with its own order."""
        plan = self.kernel_plan(packed, hx)
        if plan.reason is not None:
            _note_fallback(plan.reason, packed.data.device)
            return self._pytorch_forward(packed, hx)
        padded, lengths = pad_packed_sequence(packed)  # [T, B, I] in the caller's order, lengths on the CPU
        _check_forward_args(self, padded, hx, batch_first=False)
        y, h_n, c_n = self._run(padded, hx, plan, False, lengths)
        order = packed.sorted_indices
        y_sorted = y if order is None else y.index_select(1, order)
        out = pack_padded_sequence(y_sorted, lengths if order is None else lengths[order.cpu()])
        return PackedSequence(out.data, out.batch_sizes, packed.sorted_indices, packed.unsorted_indices), (h_n, c_n)

    def _pytorch_lengths(self, input, hx, lengths):
        """``lengths=`` where our kernels do not run: nn.LSTM on the packed input, padded back."""
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1 if not self.batch_first else 0)
        if not batched and hx is not None:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        packed = pack_padded_sequence(x, lengths, batch_first=self.batch_first and batched, enforce_sorted=False)
        y, (h_n, c_n) = self._pytorch_forward(packed, hx)
        total = input.shape[1 if (self.batch_first and batched) else 0]
        y, _ = pad_packed_sequence(y, batch_first=self.batch_first and batched, total_length=total)
        if not batched:
            y, h_n, c_n = y.squeeze(1 if not self.batch_first else 0), h_n.squeeze(1), c_n.squeeze(1)
        return y, (h_n, c_n)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _autocast_dtype(self, input: torch.Tensor) -> torch.dtype | None:
        """The dtype a call runs in under autocast (``torch.autocast`` enabled for the input's
        device, input and weights each float32 or in the autocast dtype), else None. As cuDNN's
        LSTM under autocast: every float32 tensor (input, states, weights) is cast to it."""
        dev = input.device.type
        if dev not in ("cuda", "cpu") or not torch.is_autocast_enabled(dev):
            return None
        amp = torch.get_autocast_dtype(dev)
        if not {self.weight_ih_l0.dtype, input.dtype} <= {torch.float32, amp}:
            return None
        return amp

    def _run(self, x, hx, plan: "KernelPlan", batch_major: bool, lengths: torch.Tensor | None):
        """``_layers`` in the dtype of the call: under autocast the float32 input, states and
        weights cast (differentiably) to the autocast dtype, and autocast off inside."""
        amp = self._autocast_dtype(x)
        if amp is None:
            return self._layers(x, hx, plan, batch_major, lengths)
        x = x.to(amp)
        if hx is not None:
            hx = tuple(t.to(amp) if t.dtype == torch.float32 else t for t in hx)
        with torch.autocast(x.device.type, enabled=False):
            return self._layers(x, hx, plan, batch_major, lengths, weight_dtype=amp)

    def _layers(self, x, hx, plan, batch_major: bool, lengths: torch.Tensor | None, weight_dtype=None):
        """x: [T, B, I] time-major (a transposed view of a batch-major tensor when
        ``batch_major``). Returns y [T, B, D*H_out] (batch-major underneath when
        ``batch_major``), h_n [L*D, B, H_out] and c_n [L*D, B, H] (H_out: proj_size, or H
        without projections). With a backward config in the plan the layers are
        differentiable (the training forward, saving what backward needs). ``weight_dtype``: the
        dtype to compute in when it is not the weights' own (autocast)."""
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        config, bwd_config = plan.config, plan.backward
        compiling = torch.compiler.is_compiling()
        direct = bwd_config is None and not compiling  # the launcher called here, not through the op
        if lengths is not None:
            lengths = lengths.to(x.device, torch.int32)
        h_n, c_n = [], []
        for layer in range(L):
            # compiled graphs pack afresh (traced ops; the cache keys on storage pointers)
            packed = self._packed_layer(layer, config, bwd_config is not None or compiling, weight_dtype)
            # one GEMM for all timesteps and both directions, in the input's own memory order
            inp = x.transpose(0, 1) if batch_major else x
            xp = inp.reshape(-1, inp.shape[-1])
            xp = torch.addmm(packed.bias, xp, packed.w_ih.t()) if packed.bias is not None else xp @ packed.w_ih.t()
            xp = xp.view(*inp.shape[:2], packed.w_ih.shape[0])
            xp = xp.transpose(0, 1) if batch_major else xp
            states = slice(layer * D, (layer + 1) * D)
            h0 = None if hx is None else hx[0][states].contiguous()
            c0 = None if hx is None else hx[1][states].contiguous()
            if packed.w_hr is not None and h0 is not None:
                xp, h0 = _fold_initial_hidden(xp, h0, packed.w_h0, lengths), None
            if not direct:
                # one opaque op for autograd and torch.compile (it checks its own time-out)
                y, h, c, _, _ = recurrence(
                    xp,
                    packed.w_hh,
                    h0,
                    c0,
                    lengths,
                    H,
                    config_args(config),
                    config_args(bwd_config),
                    batch_major,
                    bwd_config is not None,
                )
            else:
                out = new_output(*inp.shape[:2], D * H, device=x.device, dtype=x.dtype)
                out = out.transpose(0, 1) if batch_major else out
                y, h, c, _ = lstm_recurrent_fwd(xp, packed, h0, c0, config, out=out, lengths=lengths)
            if packed.w_hr is not None:
                y = _project(y, packed.w_hr, batch_major)
                h = last_outputs(y, lengths, D, self.proj_size)
            h_n.append(h)
            c_n.append(c)
            x = (
                F.dropout(y, self.dropout, training=True)
                if (self.training and self.dropout > 0 and layer < L - 1)
                else y
            )
        return y, torch.cat(h_n), torch.cat(c_n)

    def _packed_layer(
        self, layer: int, config: LSTMConfig, differentiable: bool = False, dtype: torch.dtype | None = None
    ) -> PackedLayer:
        """The layer's weights in kernel layout, cast to ``dtype`` if given. Differentiable (for
        training): packed afresh, so autograd maps the packed gradients back to the parameters;
        otherwise cached until a weight changes (in place or not)."""
        sfx = ("", "_reverse")[: self.num_directions]
        w_ih, w_hh = ([getattr(self, f"{kind}_l{layer}{s}") for s in sfx] for kind in ("weight_ih", "weight_hh"))
        b_ih, b_hh = (
            [getattr(self, f"{kind}_l{layer}{s}") if self.bias else None for s in sfx]
            for kind in ("bias_ih", "bias_hh")
        )
        w_hr = [getattr(self, f"weight_hr_l{layer}{s}") for s in sfx] if self.proj_size > 0 else None

        def cast(ws):
            return ws if (ws is None or dtype is None) else [None if w is None else w.to(dtype) for w in ws]

        def pack():
            return pack_layer(*map(cast, (w_ih, w_hh, b_ih, b_hh)), config.block_h, cast(w_hr))

        if differentiable:
            return pack()
        params = [p for p in (*w_ih, *w_hh, *b_ih, *b_hh, *(w_hr or ())) if p is not None]
        key = (config.block_h, dtype) + tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._packed.get(layer)
        if hit is not None and hit[0] == key and all(a is b for a, b in zip(hit[1], params, strict=True)):
            return hit[2]
        with torch.no_grad():
            packed = pack()
        # the very tensors, held: a fresh tensor (functional_call, a parametrization) is never
        # taken for them, even at the same address with the same version
        self._packed[layer] = (key, tuple(params), packed)
        return packed


_noted: set[tuple[bool, str]] = set()  # (on CUDA, reason) of the fallbacks reported so far


def _note_fallback(reason: str, device: torch.device) -> None:
    """Say once per reason that a call runs PyTorch's LSTM: a warning on CUDA tensors, where our
    kernels were expected; an INFO log line elsewhere (CPU tensors without the interpreter).
    Kept out of graphs torch.compile traces."""
    if torch.compiler.is_compiling():
        return
    cuda = device.type == "cuda"
    if (cuda, reason) in _noted:
        return
    _noted.add((cuda, reason))
    text = f"lstm_triton.LSTM runs PyTorch's LSTM, not its kernels: {reason} (LSTM.kernel_plan tells which a call gets)"
    if cuda:
        warnings.warn(text, PyTorchFallbackWarning, stacklevel=3)
    else:
        log.info(text)


def _fold_initial_hidden(xp: torch.Tensor, h0: torch.Tensor, w_h0: torch.Tensor, lengths) -> torch.Tensor:
    """With projections: h_0 [DIRS, B, R] enters the recurrence as ``h_0 W_hh^T`` added to the
    input projection xp [T, B, DIRS * n_cols] of each direction's first step (time 0 forward;
    each sequence's last time in reverse), in place; the kernels then start from a zero state."""
    T, B, _ = xp.shape
    D, n_cols, _ = w_h0.shape
    last = torch.full((B,), T - 1, device=xp.device) if lengths is None else lengths.long() - 1
    first = torch.cat([torch.zeros_like(last), last][:D])
    rows = torch.arange(B, device=xp.device).repeat(D)
    dirs = torch.arange(D, device=xp.device).repeat_interleave(B)
    contribution = torch.einsum("dbr,dnr->dbn", h0, w_h0).reshape(D * B, n_cols)
    xp.view(T, B, D, n_cols).index_put_((first, rows, dirs), contribution, accumulate=True)
    return xp


def _project(m: torch.Tensor, w_hr: torch.Tensor, batch_major: bool) -> torch.Tensor:
    """With projections: the layer's output ``m W_hr^T`` per direction, [T, B, DIRS * R], from
    the recurrence's m [T, B, DIRS * H] (batch-major underneath when ``batch_major``, as is the
    result)."""
    D, R, H = w_hr.shape
    under = (m.transpose(0, 1) if batch_major else m).unflatten(-1, (D, H))
    # one 2-D GEMM per direction against W_hr^T: its weight gradient comes back contiguous, as
    # nn.LSTM's; a batched einsum or bmm hands it back as a transposed view
    rows = under.shape[:2]
    y = torch.cat([(under[:, :, d].reshape(-1, H) @ w_hr[d].t()).view(*rows, R) for d in range(D)], dim=-1)
    return y.transpose(0, 1) if batch_major else y


@torch.compiler.assume_constant_result  # torch.compile asks once per shape, outside the graph
def _plan(hidden_size: int, batch: int, dirs: int, dtype, device, training: bool, varlen: bool) -> KernelPlan:
    """The configs our kernels run a call with (see ``LSTM.kernel_plan``)."""
    H, B, D = hidden_size, batch, dirs
    config = select_config(H, B, D, dtype, device, training=training)
    if config is None:
        return KernelPlan(reason=f"no kernel config keeps the weights on chip (H={H}, B={B}, dirs={D})")
    if varlen:
        config = varlen_config(config)
    if not training:
        return KernelPlan(config, hidden_size=H)
    backward = select_backward_config(config, H, dtype, device)
    if backward is None:
        return KernelPlan(reason=f"no backward config fits on chip (H={H}, B={B}, dirs={D})")
    return KernelPlan(training_config(config), backward, hidden_size=H)


def _check_lengths(module: nn.LSTM, lengths, batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """``lengths=`` as an int64 tensor on the CPU, or, inside CUDA graph capture, on the input's
    ``device``, where it must already be (a copy would sync); the errors
    ``pack_padded_sequence`` raises, with the bad value named (values only in eager mode,
    outside capture)."""
    name = type(module).__name__
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if capturing and not (isinstance(lengths, torch.Tensor) and lengths.device == device):
        raise RuntimeError(f"{name}: inside CUDA graph capture, lengths must be a tensor on the input's {device}")
    try:
        lengths = lengths if capturing else torch.as_tensor(lengths, device="cpu")
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: lengths must be a 1-D tensor or a list of integers, got {lengths!r}") from e
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{name}: lengths must hold integers, got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise RuntimeError(
            f"{name}: lengths must have one entry per batch element ({batch}), got shape {tuple(lengths.shape)}"
        )
    if torch.compiler.is_compiling() or capturing:  # the values are data in a graph: not checked
        return lengths.long()
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo <= 0 or hi > seq_len:
        raise RuntimeError(
            f"{name}: every length must be in 1..{seq_len} (the padded sequence length), got lengths from {lo} to {hi}"
        )
    return lengths.long()


def _check_forward_args(module: nn.LSTM, input, hx, batch_first: bool | None = None) -> bool:
    """nn.LSTM's checks, with the exception types nn.LSTM raises (code that catches them keeps
    working) and, where nn.LSTM has a message of its own, that message word for word, then what
    names the bad argument. Returns whether input is batched."""
    name = type(module).__name__
    if not isinstance(input, torch.Tensor):
        raise InputTypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(
            f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead (input shape {tuple(input.shape)}: "
            "2-D is (seq_len, input_size) unbatched, 3-D batched)"
        )
    batched = input.dim() == 3
    if input.shape[-1] != module.input_size:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {module.input_size}, got {input.shape[-1]} "
            f"({name} input of shape {tuple(input.shape)})"
        )
    w = module.weight_ih_l0
    amp = module._autocast_dtype(input)  # under autocast float32 tensors run in this dtype

    def computed(dtype: torch.dtype) -> torch.dtype:
        return amp if (amp is not None and dtype == torch.float32) else dtype

    if input.dtype != w.dtype and amp is None:
        raise ValueError(
            f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
            f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})"
        )
    if input.device != w.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{input.device} and parameter tensor at {w.device}; move one of them: "
            f"input.to({str(w.device)!r}) or model.to({str(input.device)!r})"
        )
    batch_first = module.batch_first if batch_first is None else batch_first
    seq_len = input.shape[1 if (batched and batch_first) else 0]
    if seq_len == 0:
        raise RuntimeError(
            f"Expected sequence length to be larger than 0 in RNN ({name} input of shape {tuple(input.shape)})"
        )
    if hx is None:
        return batched
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, torch.Tensor) for t in hx)):
        raise HiddenStateError(
            f"lstm expects two hidden states: {name}'s hx must be a tuple (h_0, c_0) of two tensors, "
            f"got {_describe(hx)}"
        )
    batch = input.shape[0 if batch_first else 1] if batched else None
    d = 2 if module.bidirectional else 1
    h_size = module.proj_size if module.proj_size > 0 else module.hidden_size
    layers = module.num_layers * d
    wants = [(layers, batch, size) if batched else (layers, size) for size in (h_size, module.hidden_size)]
    if any(t.dim() != len(want) for t, want in zip(hx, wants, strict=True)):
        kind = "batched 3-D" if batched else "unbatched 2-D"
        raise RuntimeError(
            f"For {kind} input, hx and cx should also be {len(wants[0])}-D but got "
            f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors: h_0 must be of shape {wants[0]}, c_0 of shape {wants[1]}"
        )
    for i, (which, t, want) in enumerate(zip(("h_0", "c_0"), hx, wants, strict=True)):
        if tuple(t.shape) != want:
            # nn.LSTM checks unbatched states with a batch of 1 inserted, and says so
            shown, got = (want, list(t.shape)) if batched else (want[:1] + (1,) + want[1:], [t.shape[0], 1, t.shape[1]])
            raise RuntimeError(f"Expected hidden[{i}] size {shown}, got {got}: {which} must be of shape {want}")
        if computed(t.dtype) != computed(input.dtype):
            raise RuntimeError(f"{name}: {which} dtype ({t.dtype}) must match the input dtype ({input.dtype})")
        if t.device != input.device:
            raise RuntimeError(
                f"Input and hidden tensors are not at the same device, found input tensor at {input.device} "
                f"and hidden tensor at {t.device}: {which} is on {t.device}"
            )
    return batched


def _describe(hx) -> str:
    """What was passed as hx, in a few words."""
    if isinstance(hx, (tuple, list)):
        kinds = ", ".join(type(t).__name__ for t in hx)
        return f"a {type(hx).__name__} of {len(hx)} ({kinds})" if hx else f"an empty {type(hx).__name__}"
    return f"a {type(hx).__name__}"
