"""The providers the benchmark compares: how each builds its module from the shared
``nn.LSTM``, how it is called, and why it cannot run somewhere."""

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lstm_triton import LSTM, LSTMConfig
from lstm_triton.configs import select_config

from .sweeps import FWDBW, Case


@dataclass(frozen=True)
class Provider:
    """``build`` makes this provider's module from the case's ``nn.LSTM`` (same weights).
    ``graph``: each call is a CUDA graph replay. ``ours``: a case our module would hand to
    PyTorch's LSTM is reported as routed, not timed."""

    name: str
    doc: str
    build: Callable[[nn.LSTM], nn.Module]
    graph: bool = False
    ours: bool = False
    cudnn: bool = True  # cuDNN enabled during the call
    needs_cuda: bool = False

    def skip_reason(self, device: str) -> str | None:
        if (self.needs_cuda or self.graph) and device != "cuda":
            return "needs a CUDA GPU"
        if self.needs_cuda and self.cudnn and not torch.backends.cudnn.is_available():
            return "cuDNN is not available in this torch build"
        return None


def _copy(base: nn.LSTM) -> nn.LSTM:
    module = copy.deepcopy(base)
    module.flatten_parameters()  # cuDNN wants its weights in one block
    return module


def route(case: Case, module: LSTM, x: torch.Tensor) -> tuple[LSTMConfig | None, str | None]:
    """Our kernel config for this case, or why our module would run PyTorch's LSTM instead."""
    if not module._uses_kernels(x):
        where = "CPU tensors without TRITON_INTERPRET=1" if x.device.type == "cpu" else f"{x.dtype} on {x.device}"
        return None, f"routed to PyTorch's LSTM: no kernel path for {where}"
    config = select_config(case.H, case.B, case.dirs, x.dtype, x.device)
    if config is None:
        return None, f"routed to PyTorch's LSTM: no kernel config fits H={case.H}, B={case.B}, dirs={case.dirs}"
    if case.mode == FWDBW:
        try:
            from lstm_triton.configs import select_backward_config
        except ImportError:  # no backward kernel in this lstm_triton: its training forward raises NotImplementedError
            return config, None
        if select_backward_config(config, case.H, x.dtype, x.device) is None:
            return None, f"routed to PyTorch's LSTM: no backward config fits H={case.H}, B={case.B}"
    return config, None


def describe(config: LSTMConfig, hidden_size: int) -> str:
    """A config in one CSV cell: programs per group, tile sizes, matmul path, warps."""
    path = "fma" if config.use_fma else f"dot-splitk{config.split_k}"
    return f"P{config.programs(hidden_size)}-BH{config.block_h}-BB{config.block_b}-{path}-w{config.num_warps}"


PROVIDERS = {
    p.name: p
    for p in (
        Provider("ours", "lstm_triton.LSTM, eager", LSTM.from_torch, ours=True),
        Provider("ours_graph", "lstm_triton.LSTM replayed from a CUDA graph", LSTM.from_torch, graph=True, ours=True),
        Provider("cudnn", "torch.nn.LSTM on cuDNN, eager", _copy, needs_cuda=True),
        Provider(
            "cudnn_graph", "torch.nn.LSTM on cuDNN replayed from a CUDA graph", _copy, graph=True, needs_cuda=True
        ),
        Provider(
            "pytorch", "torch.nn.LSTM without cuDNN (PyTorch's own kernels; the CPU LSTM on a CPU)", _copy, cudnn=False
        ),
    )
}
