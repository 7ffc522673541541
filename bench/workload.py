"""What one timed call does: the input sets and the buffers every provider reads, the call
itself (inference, or forward + backward), and its replay from a CUDA graph."""

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from .sweeps import Case, is_packed, is_training

# Calls on a side stream before capture, as torch.cuda.graphs asks (allocator and library warm-up).
GRAPH_WARMUP = 3

Outputs = dict[str, torch.Tensor]


class CaptureError(RuntimeError):
    """CUDA graph capture of a call failed: the provider cannot run replayed from a graph."""


class Inputs:
    """``n_sets`` draws of random inputs (never zeros) and the buffers a call reads:
    x [T, B, I], h0 [layers * dirs, B, W] (W: proj_size, or H), c0 [layers * dirs, B, H], and
    in training gy [T, B, dirs * W], the gradient of the output. ``load(k)`` copies draw ``k``
    into the buffers; draw 0 is the correctness gate's. In training ``x`` requires grad.
    ``lengths``: the case's sequence lengths (a CPU tensor, as packing takes them)."""

    def __init__(self, case: Case, device: str, n_sets: int):
        dtype = getattr(torch, case.dtype)
        shapes = {
            "x": (case.T, case.B, case.I),
            "h0": (case.layers * case.dirs, case.B, case.width),
            "c0": (case.layers * case.dirs, case.B, case.H),
        }
        if is_training(case.mode):
            shapes["gy"] = (case.T, case.B, case.dirs * case.width)
        self.sets = [{k: torch.randn(s, device=device, dtype=dtype) for k, s in shapes.items()} for _ in range(n_sets)]
        self.buf = {k: v.clone() for k, v in self.sets[0].items()}
        self.buf["x"].requires_grad_(is_training(case.mode))
        self.lengths = torch.tensor(case.lengths())

    def load(self, k: int) -> None:
        with torch.no_grad():
            for name, t in self.sets[k].items():
                self.buf[name].copy_(t)


@contextlib.contextmanager
def cudnn_enabled(enabled: bool):
    """Switch cuDNN on or off for the calls inside, leaving its other flags as the user set them."""
    before = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = before


def pack(t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The packed data of a padded [T, B, ...] tensor: what a PackedSequence call consumes."""
    return pack_padded_sequence(t, lengths, enforce_sorted=False).data


def make_call(module: nn.Module, mode: str, inputs: Inputs, cudnn: bool = True) -> Callable[[], Outputs]:
    """One call of ``module`` on the buffers. Inference runs under no_grad and returns y,
    h_n and c_n; training runs forward and ``y.backward(gy)`` (fresh gradients, not
    accumulated) and also returns ``dx`` and ``d<name>`` for every parameter. A packed mode
    packs x (and gy) in the call, as a user's pipeline would, and returns y's packed data."""
    b = inputs.buf
    params = dict(module.named_parameters())
    module.train(is_training(mode))  # cuDNN's RNN backward runs only in training mode; dropout is 0
    packed = is_packed(mode)

    def forward():
        x = pack_padded_sequence(b["x"], inputs.lengths, enforce_sorted=False) if packed else b["x"]
        y, (h_n, c_n) = module(x, (b["h0"], b["c0"]))
        return (y.data if isinstance(y, PackedSequence) else y), h_n, c_n

    def infer() -> Outputs:
        with torch.no_grad(), cudnn_enabled(cudnn):
            y, h_n, c_n = forward()
        return {"y": y, "h_n": h_n, "c_n": c_n}

    def train() -> Outputs:
        b["x"].grad = None
        for p in params.values():
            p.grad = None
        with cudnn_enabled(cudnn):
            y, h_n, c_n = forward()
            y.backward(pack(b["gy"], inputs.lengths) if packed else b["gy"])
        grads = {f"d{name}": p.grad for name, p in params.items()}
        return {"y": y, "h_n": h_n, "c_n": c_n, "dx": b["x"].grad, **grads}

    return train if is_training(mode) else infer


def graphed(call: Callable[[], Outputs]) -> Callable[[], Outputs]:
    """``call`` captured into a CUDA graph (after warm-up on a side stream); the returned
    function replays it and returns the graph's static outputs. Errors of the warm-up
    (e.g. NotImplementedError) propagate as they are; a capture failure is a CaptureError."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = call()
    except Exception as e:
        raise CaptureError(f"CUDA graph capture failed: {type(e).__name__}: {e}") from e

    def replay() -> Outputs:
        graph.replay()
        return out

    return replay
