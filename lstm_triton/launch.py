"""The recurrent launcher: checks, allocation, grid and launch plan, the kernel call."""

import torch
import triton

from ._env import interpreting
from .configs import INTERPRETER, Chip, LSTMConfig, check_config, chip_of
from .kernels.lstm_fwd import _lstm_fwd_kernel
from .layout import PackedLayer

# Polls before a barrier wait gives up (a few seconds on a GPU): only a bug gets there, since
# every program of a group is resident (cooperative launch).
BARRIER_MAX_SPINS = 1 << 22

PERSISTENT, STEPWISE = "persistent", "stepwise"

# A host sync per forward call reads the barrier time-out flag, so a time-out raises at the call.
# Turn it off for fully asynchronous multi-stream pipelines: every persistent launch is
# cooperative (CUDA co-schedules all its programs), so a time-out then needs a bug, and shows
# only as wrong outputs.
CHECK_TIMEOUTS = True

# Tests set this: every output buffer starts as NaN, so an element no kernel wrote shows.
POISON_OUTPUTS = False


def new_output(*shape, device, dtype) -> torch.Tensor:
    """An uninitialised output buffer (NaN-filled when POISON_OUTPUTS)."""
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)


class BarrierTimeoutError(RuntimeError):
    """The programs of a barrier group did not all arrive: the kernel's results are invalid."""


def dot_precision(dtype: torch.dtype, exact_fp32: bool) -> str:
    """tl.dot's input precision: TF32 for float32 unless exact fp32 is asked for (16-bit
    dtypes ignore it)."""
    return "ieee" if (dtype == torch.float32 and exact_fp32) else "tf32"


def launch_groups(n_prog: int, n_tiles: int, dirs: int, chip: Chip) -> list[tuple[int, int, int, int]]:
    """Split the (batch tile, direction) barrier groups into launches whose programs are all
    co-resident, one program per SM: ``(b_tile0, n_tiles, d0, n_dirs)`` per launch."""
    per_launch = chip.n_sm // n_prog
    if per_launch < 1:
        raise ValueError(f"{n_prog} programs per barrier group exceed the {chip.n_sm} SMs of {chip.name}")
    if n_tiles * dirs <= per_launch:
        return [(0, n_tiles, 0, dirs)]
    return [(b0, min(per_launch, n_tiles - b0), d, 1) for d in range(dirs) for b0 in range(0, n_tiles, per_launch)]


def fwd_kernel_args(
    xp,
    layer: PackedLayer,
    h0,
    c,
    y,
    h_n,
    cnt,
    err,
    config: LSTMConfig,
    *,
    s_begin: int,
    n_steps: int,
    b_tile0: int,
    d0: int,
    barrier: bool,
    max_spins: int,
    interp: bool,
    exact_fp32: bool,
):
    """The forward kernel's arguments, shared by the launcher and the ahead-of-time compile check
    (which must specialize the kernel exactly as a launch does)."""
    T, B, _ = xp.shape
    args = (
        xp,
        layer.w_hh,
        h0 if h0 is not None else h_n,
        c,
        y,
        h_n,
        cnt,
        err,
        T,
        B,
        s_begin,
        n_steps,
        b_tile0,
        d0,
        max_spins,
        xp.stride(0),
        xp.stride(1),
        y.stride(0),
        y.stride(1),
    )
    kwargs = dict(
        H=layer.hidden_size,
        H_PAD=layer.w_hh.shape[1],
        BLOCK_H=config.block_h,
        BLOCK_B=config.block_b,
        SPLIT_K=config.split_k,
        USE_FMA=config.use_fma,
        USE_INITIAL_STATE=h0 is not None,
        USE_BARRIER=barrier,
        PRECISION=dot_precision(xp.dtype, exact_fp32),
        UPCAST=interp and xp.dtype != torch.float32,
        num_warps=config.num_warps,
        launch_cooperative_grid=barrier and not interp,
    )
    return args, kwargs


def lstm_recurrent_fwd(
    xp: torch.Tensor,
    layer: PackedLayer,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    config: LSTMConfig,
    *,
    out: torch.Tensor | None = None,
    mode: str | None = None,
    exact_fp32: bool | None = None,
    chip: Chip | None = None,
    err: torch.Tensor | None = None,
    max_spins: int = BARRIER_MAX_SPINS,
):
    """Run the recurrence of one layer, all directions.

    xp:   [T, B, DIRS * n_cols] input projection ``x @ layer.w_ih^T + layer.bias`` in kernel
          column order (last dim contiguous; a transposed view of a batch-first tensor is fine)
    layer: the layer's weights packed for ``config.block_h`` (``layout.pack_layer``), xp's dtype
    h0, c0: [DIRS, B, H] initial states or None (zeros)
    out:  optional [T, B, DIRS * H] tensor (last dim contiguous) to write the output into
    mode: PERSISTENT (one launch, grid barrier) or STEPWISE (a launch per step); default
          persistent on GPU, stepwise under the interpreter when P > 1.
    exact_fp32: float32 dots without TF32; default: ``not torch.backends.cudnn.allow_tf32``,
          as cuDNN decides.
    chip: the limits persistent launches are planned for; default: the tensors' device.
    err:  a [1] int32 time-out flag shared by several calls, which the caller then checks with
          ``raise_on_timeout`` (one sync for a whole stack of layers); default: a flag of this
          call's own, checked before returning when CHECK_TIMEOUTS.
    Returns y [T, B, DIRS * H], h_n [DIRS, B, H], c_n [DIRS, B, H], all in xp's dtype.
    """
    T, B, _ = xp.shape
    w_hh, H = layer.w_hh, layer.hidden_size
    dirs, _, n_cols = w_hh.shape
    dtype, dev = xp.dtype, xp.device
    check_config(config, H)
    n_prog = config.programs(H)
    if layer.block_h != config.block_h:
        raise ValueError(f"the layer is packed for block_h={layer.block_h}, the config has {config.block_h}")
    if xp.shape[2] != dirs * n_cols:
        raise ValueError(f"xp's last dim {xp.shape[2]} does not match the packed layer's {dirs} x {n_cols} columns")
    if w_hh.dtype != dtype or xp.stride(2) != 1:
        raise ValueError("xp must have the packed weights' dtype and a contiguous last dim")
    for name, t in (("h0", h0), ("c0", c0)):
        if t is not None and (t.shape != (dirs, B, H) or t.dtype != dtype or t.device != dev):
            raise ValueError(
                f"{name} must be a [{dirs}, {B}, {H}] {dtype} tensor on {dev}, got "
                f"{list(t.shape)} {t.dtype} on {t.device}"
            )
    if h0 is not None and not h0.is_contiguous():
        raise ValueError("h0 must be contiguous")
    y = out if out is not None else new_output(T, B, dirs * H, device=dev, dtype=dtype)
    if y.shape != (T, B, dirs * H) or y.stride(2) != 1 or y.dtype != dtype:
        raise ValueError(f"out must be a [{T}, {B}, {dirs * H}] {dtype} tensor with a contiguous last dim")
    h_n = new_output(dirs, B, H, device=dev, dtype=dtype)
    c = torch.zeros(dirs, B, H, device=dev, dtype=torch.float32)  # the kernel's cell state, in and out
    if c0 is not None:
        c.copy_(c0)
    if T == 0 or B == 0:
        return y, h_n.zero_() if h0 is None else h_n.copy_(h0), c.to(dtype)

    interp = interpreting()
    if exact_fp32 is None:
        exact_fp32 = not torch.backends.cudnn.allow_tf32
    mode = mode or default_mode(n_prog)
    n_tiles = triton.cdiv(B, config.block_b)
    cnt = torch.zeros(dirs, n_tiles, device=dev, dtype=torch.int32)
    own_err = err is None
    if own_err:
        err = new_timeout_flag(dev)
    use_barrier = uses_barrier(n_prog, mode)
    if chip is None:
        chip = INTERPRETER if interp else chip_of(dev)

    def launch(s_begin, n_steps, b_tile0, nb, d0, nd, barrier):
        args, kwargs = fwd_kernel_args(
            xp,
            layer,
            h0,
            c,
            y,
            h_n,
            cnt,
            err,
            config,
            s_begin=s_begin,
            n_steps=n_steps,
            b_tile0=b_tile0,
            d0=d0,
            barrier=barrier,
            max_spins=max_spins,
            interp=interp,
            exact_fp32=exact_fp32,
        )
        _lstm_fwd_kernel[(n_prog, nb, nd)](*args, **kwargs)

    if mode == PERSISTENT:
        for b_tile0, nb, d0, nd in launch_groups(n_prog, n_tiles, dirs, chip):
            launch(0, T, b_tile0, nb, d0, nd, use_barrier)
    elif mode == STEPWISE:
        for s in range(T):
            launch(s, 1, 0, n_tiles, 0, dirs, False)
    else:
        raise ValueError(f"mode must be {PERSISTENT!r} or {STEPWISE!r}, got {mode!r}")
    if own_err and use_barrier and CHECK_TIMEOUTS:
        raise_on_timeout(err)
    return y, h_n, c.to(dtype)


def default_mode(n_prog: int) -> str:
    """Persistent on a GPU; stepwise under the interpreter (its programs run one after
    another, so a barrier across P > 1 programs would never open)."""
    return STEPWISE if (interpreting() and n_prog > 1) else PERSISTENT


def uses_barrier(n_prog: int, mode: str | None = None) -> bool:
    """Whether a launch passes the grid barrier; the interpreter runs it even for P = 1, so CPU
    tests cover its code."""
    return (mode or default_mode(n_prog)) == PERSISTENT and (n_prog > 1 or interpreting())


def new_timeout_flag(device) -> torch.Tensor:
    return torch.zeros(1, device=device, dtype=torch.int32)


def raise_on_timeout(err: torch.Tensor) -> None:
    """Raise BarrierTimeoutError if a barrier timed out (reads the flag: a host sync), except
    while a CUDA graph is being captured, where no sync is allowed."""
    if err.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    if int(err.item()):
        raise BarrierTimeoutError(
            "lstm_triton: the recurrent kernel's grid barrier timed out (its programs were not all "
            "resident on the GPU); its outputs are invalid. The GPU is still usable."
        )
