"""Named shape sweeps: what one benchmark row measures (a ``Case``) and the grids of them."""

import itertools
from dataclasses import dataclass, fields, replace

FWD, FWDBW = "fwd", "fwdbw"  # inference (no grad) and training (forward + backward)
PACKED = "-packed"  # suffix: the same call on a PackedSequence of mixed lengths (``lengths_of``)
MODES = (FWD, FWDBW, FWD + PACKED, FWDBW + PACKED)
SHORTEST = 0.5  # packed sweeps: sequence lengths spread evenly over [SHORTEST * T, T]
PACKED_SHUFFLE = 7919  # a prime: i -> i * PACKED_SHUFFLE mod B orders the lengths unsorted


def is_training(mode: str) -> bool:
    return mode.startswith(FWDBW)


def is_packed(mode: str) -> bool:
    return mode.endswith(PACKED)


DTYPES = ("bfloat16", "float16", "float32")
BACKWARD_FLOPS = 2  # backward costs about twice the forward's matmul work (dgates @ W, dW)


@dataclass(frozen=True)
class Case:
    """One shape, dtype and mode. ``I`` is the first layer's input size; later layers take
    ``dirs * width`` as nn.LSTM does. Inputs are time-major ``[T, B, I]``. ``proj``: nn.LSTM's
    ``proj_size`` (0: no projections)."""

    sweep: str
    mode: str
    dtype: str
    T: int
    B: int
    H: int
    I: int
    layers: int
    dirs: int
    proj: int = 0

    @property
    def width(self) -> int:
        """Of h and of each direction's output: proj_size, or H without projections."""
        return self.proj or self.H

    def flops(self) -> float:
        """Matmul FLOPs of one call, as nn.LSTM defines the layer: per layer and direction
        T*B*(2*4H*I + 2*4H*W (+ 2*H*W, the projection)), W the width of h; elementwise work
        ignored; training adds the backward's."""
        total = 0.0
        W = self.width
        for layer in range(self.layers):
            inp = self.I if layer == 0 else self.dirs * W
            per_token = 2 * 4 * self.H * inp + 2 * 4 * self.H * W + (2 * self.H * W if self.proj else 0)
            total += self.dirs * self.T * self.B * per_token
        return total * self.tokens() / (self.T * self.B) * (1 + BACKWARD_FLOPS if is_training(self.mode) else 1)

    def lengths(self) -> list[int]:
        """Each sequence's length: all T, or for a packed mode spread evenly over
        [SHORTEST * T, T] (the longest is T), in a fixed shuffled order (unsorted batches)."""
        if not is_packed(self.mode):
            return [self.T] * self.B
        shortest = max(1, round(SHORTEST * self.T))
        spread = [self.T - (self.T - shortest) * i // max(1, self.B - 1) for i in range(self.B)]
        order = sorted(range(self.B), key=lambda i: (i * PACKED_SHUFFLE) % self.B)
        return [spread[i] for i in order]

    def tokens(self) -> int:
        """Real (not padded) timesteps of one call."""
        return sum(self.lengths())

    def label(self) -> str:
        d = "bi" if self.dirs == 2 else "uni"
        proj = f" R={self.proj}" if self.proj else ""
        return f"{self.sweep} {self.mode} {self.dtype} T={self.T} H={self.H}{proj} B={self.B} L={self.layers} {d}"


@dataclass(frozen=True)
class Sweep:
    """The product of its value lists, dtype outermost so a run cut short by its budget has
    finished whole dtypes. ``I=None``: input size equals the hidden size."""

    name: str
    doc: str
    T: tuple[int, ...]
    H: tuple[int, ...]
    B: tuple[int, ...]
    dirs: tuple[int, ...] = (1, 2)
    layers: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("bfloat16",)
    modes: tuple[str, ...] = (FWD,)
    I: tuple[int, ...] | None = None
    proj_ratio: tuple[int, ...] = ()  # with projections: proj_size = H // ratio; () none

    def cases(self) -> list[Case]:
        grid = itertools.product(self.dtypes, self.modes, self.dirs, self.layers, self.T, self.H, self.B)
        out = []
        for dtype, mode, dirs, layers, T, H, B in grid:
            for inp in self.I or (H,):
                for proj in [H // r for r in self.proj_ratio] or [0]:
                    out.append(Case(self.name, mode, dtype, T, B, H, inp, layers, dirs, proj))
        return out

    def override(self, **values) -> "Sweep":
        """This sweep with some value lists replaced (None keeps one), renamed ``custom``
        when anything changed, so its rows never mix with the named sweep's."""
        given = {k: tuple(v) for k, v in values.items() if v is not None}
        if not given:
            return self
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown sweep fields {sorted(unknown)}")
        return replace(self, name="custom", doc=f"{self.name} with {given}", **given)


GRID_H = (128, 256, 512, 1024)
GRID_B = (1, 8, 64, 256)
SWEEPS = {
    s.name: s
    for s in (
        Sweep(
            "default",
            "the product grid: T=256, every H and B, uni and bi, every dtype",
            (256,),
            GRID_H,
            GRID_B,
            dtypes=DTYPES,
        ),
        Sweep(
            "seqlen",
            "sequence-length scaling (tokens/s against T)",
            (64, 128, 256, 512, 1024, 2048),
            (256, 1024),
            (8, 64),
            dirs=(1,),
        ),
        Sweep("layers", "stacked layers", (256,), (256, 1024), (8, 64), layers=(1, 2, 4)),
        Sweep("training", "forward + backward (training)", (256,), GRID_H, GRID_B, modes=(FWDBW,)),
        Sweep("quick", "a few GPU points, seconds", (256,), (256, 1024), (1, 64)),
        Sweep(
            "proj",
            "LSTM with projections (speech): proj_size H/4, two layers, inference and training",
            (256,),
            (512, 1024),
            (8, 64),
            layers=(2,),
            modes=(FWD, FWDBW),
            proj_ratio=(4,),
        ),
        Sweep(
            "packed",
            "variable lengths: PackedSequence input against padded input of the same maximum length",
            (256,),
            (256, 1024),
            (8, 64),
            modes=MODES,
        ),
        Sweep(
            "cpu",
            "tiny shapes for Triton's interpreter against PyTorch on the CPU (its cost is per program and step)",
            (8,),
            (32, 64),
            (1, 4),
            dtypes=("float32", "bfloat16"),
            modes=MODES,
        ),
    )
}
