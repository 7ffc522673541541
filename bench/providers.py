"""The providers the benchmark compares: how each builds its module from the shared
``nn.LSTM``, how it is called, and why it cannot run somewhere."""

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lstm_triton import LSTM
from lstm_triton.dispatch import plain_configs
from lstm_triton.module import KernelPlan
from lstm_triton.tuning import heuristic_only

from .sweeps import Case, is_training


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
    default: bool = True  # runs unless --providers names others

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


class HeuristicLSTM(LSTM):
    """lstm_triton.LSTM with every tuned-config cache off: the heuristic's configs."""

    def kernel_plan(self, *args, **kwargs):
        with heuristic_only():
            return super().kernel_plan(*args, **kwargs)

    def forward(self, *args, **kwargs):
        with heuristic_only():
            return super().forward(*args, **kwargs)


class PlainLSTM(LSTM):
    """lstm_triton.LSTM on the heuristic's configs without the batch loop (batch tiles beyond
    the chip as launches in series) and without the transposed dot, as before either existed."""

    def kernel_plan(self, *args, **kwargs):
        with heuristic_only(), plain_configs():
            return super().kernel_plan(*args, **kwargs)

    def forward(self, *args, **kwargs):
        with heuristic_only(), plain_configs():
            return super().forward(*args, **kwargs)


class CompiledLSTM(LSTM):
    """lstm_triton.LSTM called through ``torch.compile`` (inductor), as inside a compiled model.
    Each new shape compiles in the warm-up calls, before any timed run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled_forward = torch.compile(super().forward)

    def forward(self, *args, **kwargs):
        return self._compiled_forward(*args, **kwargs)


def route(case: Case, module: LSTM, x: torch.Tensor) -> tuple[KernelPlan | None, str | None]:
    """Our kernels' plan for this case (its ``label`` names the configs), or why our module
    would run PyTorch's LSTM instead; asked in the grad mode of the timed call, which decides
    between tuned and heuristic configs."""
    training = is_training(case.mode)
    with torch.set_grad_enabled(training):
        plan = module.kernel_plan(x, training=training)
    if plan.reason is not None:
        return None, f"routed to PyTorch's LSTM: {plan.reason}"
    return plan, None


PROVIDERS = {
    p.name: p
    for p in (
        Provider("ours", "lstm_triton.LSTM, eager", LSTM.from_torch, ours=True),
        Provider("ours_graph", "lstm_triton.LSTM replayed from a CUDA graph", LSTM.from_torch, graph=True, ours=True),
        Provider(
            "ours_heuristic",
            "lstm_triton.LSTM on the heuristic's configs, tuned caches off (eager; only with --providers)",
            HeuristicLSTM.from_torch,
            ours=True,
            default=False,
        ),
        Provider(
            "ours_plain",
            "lstm_triton.LSTM on the heuristic's configs without the batch loop (batch tiles beyond the chip as "
            "launches in series) and the transposed dot (eager; only with --providers)",
            PlainLSTM.from_torch,
            ours=True,
            default=False,
        ),
        Provider(
            "ours_compiled",
            "lstm_triton.LSTM under torch.compile (inductor; GPU only, only with --providers)",
            CompiledLSTM.from_torch,
            ours=True,
            needs_cuda=True,
            default=False,
        ),
        Provider("cudnn", "torch.nn.LSTM on cuDNN, eager", _copy, needs_cuda=True),
        Provider(
            "cudnn_graph", "torch.nn.LSTM on cuDNN replayed from a CUDA graph", _copy, graph=True, needs_cuda=True
        ),
        Provider(
            "pytorch", "torch.nn.LSTM without cuDNN (PyTorch's own kernels; the CPU LSTM on a CPU)", _copy, cudnn=False
        ),
    )
}
