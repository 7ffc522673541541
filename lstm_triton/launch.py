"""The recurrent launcher: checks, allocation, grid and launch plan, the kernel call."""

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton

from ._env import check_interpreter, interpreting
from .configs import INTERPRETER, Chip, LSTMConfig, check_config, chip_of, thread_registers
from .kernels.common import BARRIER_POISON
from .kernels.lstm_bwd import _lstm_bwd_kernel
from .kernels.lstm_fwd import _lstm_fwd_kernel
from .layout import PackedLayer, padded_gate_columns

# Polls before a barrier wait gives up (a few seconds on a GPU): only a bug gets there, since
# every program of a group is resident (cooperative launch).
BARRIER_MAX_SPINS = 1 << 22
# The highest count a group's int32 barrier counter may reach in one launch (P per step): below
# the poison value a time-out writes, so longer sequences run as several persistent launches.
MAX_BARRIER_COUNT = BARRIER_POISON.value - 1

PERSISTENT, STEPWISE = "persistent", "stepwise"

# Multiply-adds contracted to FMA, as every Triton up to 3.9 does by default: set for our kernels,
# since Triton 3.10 turns the default off (a change of numerics and of the compiled step)
FP_FUSION = True

# Each call looks at its device's barrier time-out flag without a host sync (``check_timeouts``).
# Every launch that passes a grid barrier is cooperative (CUDA co-schedules all its programs), so a
# time-out needs a bug; turning this off leaves such a bug to show only as wrong outputs.
CHECK_TIMEOUTS = True

# Tests set this: every output buffer starts as NaN, so an element no kernel wrote shows.
POISON_OUTPUTS = False


def new_output(*shape, device, dtype) -> torch.Tensor:
    """An uninitialised output buffer (NaN-filled when POISON_OUTPUTS)."""
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)


def new_output_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised buffer with ``t``'s shape, dtype and strides (NaN when POISON_OUTPUTS)."""
    return torch.full_like(t, float("nan")) if POISON_OUTPUTS else torch.empty_like(t)


class BarrierTimeoutError(RuntimeError):
    """The programs of a barrier group did not all arrive: the kernel's results are invalid."""


def dot_precision(dtype: torch.dtype, exact_fp32: bool) -> str:
    """tl.dot's input precision: TF32 for float32 unless exact fp32 is asked for (16-bit
    dtypes ignore it)."""
    return "ieee" if (dtype == torch.float32 and exact_fp32) else "tf32"


class Group(NamedTuple):
    """One launch's barrier groups: batch programs ``b_tile0 ..`` (``n_b`` of them) times
    directions ``d0 ..`` (``n_dirs``); with ``loop`` each batch program walks every
    ``n_b``-th batch tile in each step."""

    b_tile0: int
    n_b: int
    d0: int
    n_dirs: int
    loop: bool


def launch_groups(n_prog: int, n_tiles: int, dirs: int, chip: Chip, batch_loop: bool = True) -> list[Group]:
    """Split the (batch tile, direction) barrier groups into launches whose programs are all
    co-resident, one program per SM. When they do not fit at once: with ``batch_loop``, fewer
    batch programs that loop over the tiles (one launch while the directions fit), otherwise
    launches in series."""
    per_launch = chip.n_sm // n_prog
    if per_launch < 1:
        raise ValueError(f"{n_prog} programs per barrier group exceed the {chip.n_sm} SMs of {chip.name}")
    if n_tiles * dirs <= per_launch:
        return [Group(0, n_tiles, 0, dirs, False)]
    if batch_loop:
        dirs_at_once = min(dirs, per_launch)
        n_b = per_launch // dirs_at_once
        n_b = triton.cdiv(n_tiles, triton.cdiv(n_tiles, n_b))  # as few tiles as the busiest program's
        return [Group(0, n_b, d, dirs_at_once, n_b < n_tiles) for d in range(0, dirs, dirs_at_once)]
    return [
        Group(b0, min(per_launch, n_tiles - b0), d, 1, False)
        for d in range(dirs)
        for b0 in range(0, n_tiles, per_launch)
    ]


@dataclass
class Saved:
    """What the training forward keeps for the backward kernel."""

    gates: torch.Tensor  # xp's shape and strides: the activated gates i, f, g, o of every step
    cs: torch.Tensor  # y's shape and strides: the cell state of every step


def loops_over_batch(config: LSTMConfig, hidden_size: int, batch: int, dirs: int, chip: Chip) -> bool:
    """Whether a call of this shape runs the kernel's batch loop (``Group.loop``) on ``chip``."""
    n_tiles = triton.cdiv(batch, config.block_b)
    return any(g.loop for g in launch_groups(config.programs(hidden_size), n_tiles, dirs, chip, config.batch_loop))


class Launch(NamedTuple):
    """One launch of a schedule: steps ``s_begin ..`` (``n_steps``) of a ``Group``'s barrier
    groups; ``final``: the backward's last launch of those groups (it forms dh_0)."""

    s_begin: int
    n_steps: int
    b_tile0: int
    n_b: int
    d0: int
    n_dirs: int
    loop: bool
    final: bool


def schedule(
    T: int,
    n_prog: int,
    n_tiles: int,
    dirs: int,
    mode: str,
    chip: Chip,
    final_pass: bool = False,
    batch_loop: bool = True,
) -> list[Launch]:
    """The launches of one recurrence: persistent launches run every step behind the grid
    barrier (in chunks of steps whose barrier count stays within MAX_BARRIER_COUNT), for each
    ``launch_groups`` group; stepwise launches run one step each, and ``final_pass`` adds a
    launch of no step for what needs the last step complete."""
    groups = launch_groups(n_prog, n_tiles, dirs, chip, batch_loop)
    if mode == PERSISTENT:
        chunk = MAX_BARRIER_COUNT // n_prog
        return [Launch(s0, min(chunk, T - s0), *g, s0 + chunk >= T) for s0 in range(0, T, chunk) for g in groups]
    if mode == STEPWISE:
        steps = [Launch(s, 1, *g, False) for s in range(T) for g in groups]
        return steps + ([Launch(T, 0, *g, True) for g in groups] if final_pass else [])
    raise ValueError(f"mode must be {PERSISTENT!r} or {STEPWISE!r}, got {mode!r}")


@dataclass(frozen=True)
class Step:
    """One launch of a schedule, and how every launch of the call runs."""

    s_begin: int
    n_steps: int
    b_tile0: int
    d0: int
    final: bool  # the backward's last launch: form dh_0 after its steps
    loop: bool  # each program walks several batch tiles per step
    barrier: bool
    interp: bool
    exact_fp32: bool
    max_spins: int = BARRIER_MAX_SPINS


def _common_kwargs(config: LSTMConfig, layer: PackedLayer, dtype, step: Step):
    return dict(
        H=layer.hidden_size,
        H_PAD=layer.w_hh.shape[1],
        BLOCK_H=config.block_h,
        BLOCK_B=config.block_b,
        SPLIT_K=config.split_k,
        USE_BARRIER=step.barrier,
        BATCH_LOOP=step.loop,
        PRECISION=dot_precision(dtype, step.exact_fp32),
        UPCAST=step.interp and dtype != torch.float32,
        num_warps=config.num_warps,
        maxnreg=thread_registers(config.num_warps),
        enable_fp_fusion=FP_FUSION,
        launch_cooperative_grid=step.barrier and not step.interp,
    )


def fwd_kernel_args(
    xp, layer: PackedLayer, h0, c, y, saved: Saved | None, lengths, cnt, err, config: LSTMConfig, step: Step
):
    """The forward kernel's arguments, shared by the launcher and the ahead-of-time compile check
    (which must specialize the kernel exactly as a launch does)."""
    T, B, _ = xp.shape
    args = (
        xp,
        layer.w_hh,
        h0 if h0 is not None else c,
        c,
        y,
        saved.gates if saved else xp,
        saved.cs if saved else y,
        lengths if lengths is not None else cnt,
        cnt,
        err,
        T,
        B,
        step.s_begin,
        step.n_steps,
        step.b_tile0,
        step.d0,
        step.max_spins,
        xp.stride(0),
        xp.stride(1),
        y.stride(0),
        y.stride(1),
    )
    kwargs = _common_kwargs(config, layer, xp.dtype, step)
    kwargs.update(
        USE_FMA=config.use_fma,
        GATES_ON_M=config.gates_on_m,
        USE_INITIAL_STATE=h0 is not None,
        USE_LENGTHS=lengths is not None,
        SAVE=saved is not None,
    )
    return args, kwargs


def bwd_kernel_args(
    dy, saved: Saved, c0, layer: PackedLayer, dh_n, dc, dxp, dh0, lengths, cnt, err, config: LSTMConfig, step: Step
):
    """The backward kernel's arguments (launcher and compile check)."""
    T, B, _ = dy.shape
    args = (
        dy,
        saved.gates,
        saved.cs,
        c0 if c0 is not None else dh_n,
        layer.w_hh,
        dh_n,
        dc,
        dxp,
        dh0,
        lengths if lengths is not None else cnt,
        cnt,
        err,
        T,
        B,
        step.s_begin,
        step.n_steps,
        int(step.final),
        step.b_tile0,
        step.d0,
        step.max_spins,
        saved.gates.stride(0),
        saved.gates.stride(1),
        saved.cs.stride(0),
        saved.cs.stride(1),
        dy.stride(0),
        dy.stride(1),
    )
    kwargs = _common_kwargs(config, layer, dy.dtype, step)
    kwargs.update(
        K_PAD=padded_gate_columns(layer.w_hh.shape[2]),
        USE_INITIAL_STATE=c0 is not None,
        USE_LENGTHS=lengths is not None,
    )
    return args, kwargs


def _launch_schedule(
    kernel,
    make_args,
    config: LSTMConfig,
    hidden_size: int,
    T: int,
    B: int,
    dirs: int,
    dev,
    *,
    mode,
    exact_fp32,
    chip,
    max_spins,
    final_pass: bool = False,
) -> bool:
    """Launch ``kernel`` over the whole schedule of one recurrence; ``make_args(cnt, step)``
    gives each launch's arguments. Returns whether the launches passed the grid barrier (then
    the time-out flag in their arguments tells whether one timed out)."""
    interp = interpreting()
    if interp:
        check_interpreter()
    exact_fp32 = (not torch.backends.cudnn.allow_tf32) if exact_fp32 is None else exact_fp32
    n_prog, n_tiles = config.programs(hidden_size), triton.cdiv(B, config.block_b)
    mode = mode or default_mode(n_prog)
    barrier = uses_barrier(n_prog, mode)
    chip = chip or (INTERPRETER if interp else chip_of(dev))
    cnt = torch.zeros(dirs, n_tiles, device=dev, dtype=torch.int32)
    # Triton launches on the current device: make it the tensors' (a layer on another GPU)
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        chunk_begin = 0
        plan = schedule(T, n_prog, n_tiles, dirs, mode, chip, final_pass, config.batch_loop)
        for s_begin, n_steps, b_tile0, n_b, d0, n_dirs, loop, final in plan:
            if barrier and s_begin != chunk_begin:  # a new chunk of steps: its barrier counts from 0
                cnt.zero_()
                chunk_begin = s_begin
            step = Step(s_begin, n_steps, b_tile0, d0, final, loop, barrier, interp, exact_fp32, max_spins)
            args, kwargs = make_args(cnt, step)
            kernel[(n_prog, n_b, n_dirs)](*args, **kwargs)
    return barrier


def _check_layer(xp: torch.Tensor, layer: PackedLayer, config: LSTMConfig, reduction: int | None = None) -> None:
    dirs, _, n_cols = layer.w_hh.shape
    check_config(config, layer.hidden_size, reduction)
    if layer.block_h != config.block_h:
        raise ValueError(f"the layer is packed for block_h={layer.block_h}, the config has {config.block_h}")
    if xp.shape[2] != dirs * n_cols:
        raise ValueError(f"xp's last dim {xp.shape[2]} does not match the packed layer's {dirs} x {n_cols} columns")
    if layer.w_hh.dtype != xp.dtype or xp.stride(2) != 1:
        raise ValueError("xp must have the packed weights' dtype and a contiguous last dim")


def _device_lengths(lengths: torch.Tensor | None, B: int, dev) -> torch.Tensor | None:
    """Sequence lengths as the kernels read them: int32 on the tensors' device."""
    if lengths is None:
        return None
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape [{B}], got {list(lengths.shape)}")
    return lengths.to(device=dev, dtype=torch.int32)


def _check_state(name, t, shape, dtype, dev) -> None:
    if t is not None and (t.shape != shape or t.dtype != dtype or t.device != dev):
        raise ValueError(
            f"{name} must be a {list(shape)} {dtype} tensor on {dev}, got {list(t.shape)} {t.dtype} on {t.device}"
        )


def lstm_recurrent_fwd(
    xp: torch.Tensor,
    layer: PackedLayer,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    config: LSTMConfig,
    *,
    out: torch.Tensor | None = None,
    save: bool = False,
    lengths: torch.Tensor | None = None,
    mode: str | None = None,
    exact_fp32: bool | None = None,
    chip: Chip | None = None,
    max_spins: int = BARRIER_MAX_SPINS,
):
    """Run the recurrence of one layer, all directions.

    xp:   [T, B, DIRS * n_cols] input projection ``x @ layer.w_ih^T + layer.bias`` in kernel
          column order (last dim contiguous; a transposed view of a batch-first tensor is fine)
    layer: the layer's weights packed for ``config.block_h`` (``layout.pack_layer``), xp's dtype
    h0, c0: [DIRS, B, H] initial states or None (zeros)
    out:  optional [T, B, DIRS * H] tensor (last dim contiguous) to write the output into
    save: keep what ``lstm_recurrent_bwd`` needs (the training forward)
    lengths: [B] sequence lengths in 1..T, or None (all T): past its length a sequence's output
          is zero and its state holds; the reverse direction starts at each sequence's end
    mode: PERSISTENT (one launch, grid barrier) or STEPWISE (a launch per step); default
          persistent on GPU, stepwise under the interpreter when P > 1.
    exact_fp32: float32 dots without TF32; default: ``not torch.backends.cudnn.allow_tf32``,
          as cuDNN decides.
    chip: the limits persistent launches are planned for; default: the tensors' device.
    Returns y [T, B, DIRS * H], h_n [DIRS, B, H], c_n [DIRS, B, H] (at each sequence's last
    step) in xp's dtype, and the ``Saved`` activations (None unless ``save``).
    """
    T, B, _ = xp.shape
    H, dirs = layer.hidden_size, layer.w_hh.shape[0]
    dtype, dev = xp.dtype, xp.device
    _check_layer(xp, layer, config)
    for name, t in (("h0", h0), ("c0", c0)):
        _check_state(name, t, (dirs, B, H), dtype, dev)
    if h0 is not None and not h0.is_contiguous():
        raise ValueError("h0 must be contiguous")
    y = out if out is not None else new_output(T, B, dirs * H, device=dev, dtype=dtype)
    if y.shape != (T, B, dirs * H) or y.stride(2) != 1 or y.dtype != dtype:
        raise ValueError(f"out must be a [{T}, {B}, {dirs * H}] {dtype} tensor with a contiguous last dim")
    c = torch.zeros(dirs, B, H, device=dev, dtype=torch.float32)  # the kernel's cell state, in and out
    if c0 is not None:
        c.copy_(c0)
    saved = Saved(new_output_like(xp), new_output_like(y)) if save else None
    lengths = _device_lengths(lengths, B, dev)
    if T == 0 or B == 0:
        h_n = torch.zeros(dirs, B, H, device=dev, dtype=dtype) if h0 is None else h0.clone()
        return y, h_n, c.to(dtype), saved

    err = timeout_flag(dev)
    barrier = _launch_schedule(
        _lstm_fwd_kernel,
        lambda cnt, step: fwd_kernel_args(xp, layer, h0, c, y, saved, lengths, cnt, err, config, step),
        config,
        H,
        T,
        B,
        dirs,
        dev,
        mode=mode,
        exact_fp32=exact_fp32,
        chip=chip,
        max_spins=max_spins,
    )
    if barrier and CHECK_TIMEOUTS:
        check_timeouts(dev)
    return y, last_outputs(y, lengths, dirs, H), c.to(dtype), saved


def last_outputs(y: torch.Tensor, lengths: torch.Tensor | None, dirs: int, hidden_size: int) -> torch.Tensor:
    """h_n [DIRS, B, H]: each direction's output at its sequence's last step (time len-1 for
    the forward direction, time 0 for the reverse one)."""
    T, B, _ = y.shape
    rows = torch.arange(B, device=y.device)
    last = lengths.long() - 1 if lengths is not None else torch.full((B,), T - 1, device=y.device)
    times = (last, torch.zeros_like(last))[:dirs]
    return torch.stack([y[t, rows, d * hidden_size : (d + 1) * hidden_size] for d, t in enumerate(times)])


def lstm_recurrent_bwd(
    dy: torch.Tensor,
    dh_n: torch.Tensor,
    dc_n: torch.Tensor,
    layer: PackedLayer,
    y: torch.Tensor,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    saved: Saved,
    config: LSTMConfig,
    *,
    lengths: torch.Tensor | None = None,
    mode: str | None = None,
    exact_fp32: bool | None = None,
    chip: Chip | None = None,
    max_spins: int = BARRIER_MAX_SPINS,
):
    """Gradients of one layer's recurrence from the gradients of its outputs.

    dy:   [T, B, DIRS * H] gradient of y; dh_n, dc_n: [DIRS, B, H] gradients of h_n and c_n
    layer, y, h0, c0, saved, lengths: the forward's packed weights, output, initial states,
          Saved activations and sequence lengths
    config: the backward's launch config (``configs.backward_config``): the forward's hidden
          split, its own batch tile
    Returns dxp (xp's shape and strides), dw_hh (``layer.w_hh``'s shape), dh0 and dc0
    ([DIRS, B, H]; dh0 is None when h0 is). Weight gradients are GEMMs: no atomics, so two runs
    give the same bits.
    """
    T, B, _ = dy.shape
    H, (dirs, _, n_cols) = layer.hidden_size, layer.w_hh.shape
    dtype, dev = dy.dtype, dy.device
    _check_layer(saved.gates, layer, config, padded_gate_columns(n_cols))
    dy = dy if dy.stride(2) == 1 else dy.contiguous()
    dh_n = dh_n.float().contiguous()
    dc = dc_n.float().contiguous().clone()  # the kernel's cell-state gradient, in and out
    dxp = new_output_like(saved.gates)
    dh0 = new_output(dirs, B, H, device=dev, dtype=dtype)
    lengths = _device_lengths(lengths, B, dev)

    err = timeout_flag(dev)
    barrier = _launch_schedule(
        _lstm_bwd_kernel,
        lambda cnt, step: bwd_kernel_args(dy, saved, c0, layer, dh_n, dc, dxp, dh0, lengths, cnt, err, config, step),
        config,
        H,
        T,
        B,
        dirs,
        dev,
        mode=mode,
        exact_fp32=exact_fp32,
        chip=chip,
        max_spins=max_spins,
        final_pass=True,
    )
    if barrier and CHECK_TIMEOUTS:
        check_timeouts(dev)

    # dW_hh^T[d] = sum_t h_{t-1}^T dgates_t, h_{t-1} from the output (h0 or zeros at each
    # sequence's first step; padded steps have zero dgates)
    first = torch.zeros(dirs, B, H, device=dev, dtype=dtype) if h0 is None else h0
    dw_hh = torch.zeros_like(layer.w_hh)
    for d in range(dirs):
        y_d = y[:, :, d * H : (d + 1) * H]
        if d == 0:
            h_prev = torch.cat([first[d, None], y_d[:-1]])
        else:  # the reverse direction starts at each sequence's own last time
            h_prev = torch.cat([y_d[1:], torch.zeros_like(y_d[:1])])
            last = (lengths.long() - 1 if lengths is not None else torch.full((B,), T - 1, device=dev))[None, :, None]
            h_prev = torch.where(torch.arange(T, device=dev)[:, None, None] == last, first[d, None], h_prev)
        dw_hh[d, :H] = torch.einsum("tbh,tbn->hn", h_prev, dxp[:, :, d * n_cols : (d + 1) * n_cols])
    return dxp, dw_hh, (dh0 if h0 is not None else None), dc.to(dtype)


def default_mode(n_prog: int) -> str:
    """Persistent on a GPU; stepwise under the interpreter (its programs run one after
    another, so a barrier across P > 1 programs would never open)."""
    return STEPWISE if (interpreting() and n_prog > 1) else PERSISTENT


def uses_barrier(n_prog: int, mode: str | None = None) -> bool:
    """Whether a launch passes the grid barrier; the interpreter runs it even for P = 1, so CPU
    tests cover its code."""
    return (mode or default_mode(n_prog)) == PERSISTENT and (n_prog > 1 or interpreting())


@dataclass
class _TimeoutWatch:
    """A device's barrier time-out flag, set by any launch on it, and its host copy."""

    flag: torch.Tensor  # [1] int32 on the device, zeroed once reported
    seen: torch.Tensor  # [1] int32 on the host (pinned on a GPU): the flag as the last copy found it
    copied: "torch.cuda.Event | None" = None  # recorded after that copy


_WATCHES: dict[torch.device, _TimeoutWatch] = {}


def _watch(device) -> _TimeoutWatch:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _WATCHES:
        on_gpu = device.type == "cuda"
        _WATCHES[device] = _TimeoutWatch(
            torch.zeros(1, device=device, dtype=torch.int32), torch.zeros(1, dtype=torch.int32, pin_memory=on_gpu)
        )
    return _WATCHES[device]


def timeout_flag(device) -> torch.Tensor:
    """The [1] int32 flag every launch on ``device`` sets when its grid barrier times out."""
    return _watch(device).flag


def check_timeouts(device, wait: bool = False) -> None:
    """Raise BarrierTimeoutError once if a launch on ``device`` timed out since the last report.

    On a GPU without ``wait`` there is no host sync: the flag's copy queued by the previous check
    is read if it has landed (an event query), and a new copy is queued; a time-out thus raises
    at a later call, or at once with ``wait=True`` (which synchronizes with the device). On the
    CPU (the interpreter) the flag is read at once. Nothing is read while a CUDA graph is being
    captured (its replays set the flag, and the next call outside the graph reports them)."""
    w = _watch(device)
    if not w.flag.is_cuda:
        fired = bool(w.flag.item())
    elif torch.cuda.is_current_stream_capturing():
        return
    elif wait:
        w.seen.copy_(w.flag)
        fired = bool(w.seen.item())
    else:
        fired = w.copied is not None and w.copied.query() and bool(w.seen.item())
        w.seen.copy_(w.flag, non_blocking=True)
        w.copied = torch.cuda.Event()
        w.copied.record()
    if fired:
        w.flag.zero_()
        w.seen.zero_()
        w.copied = None
        raise BarrierTimeoutError(
            "lstm_triton: the recurrent kernel's grid barrier timed out (a bug: a cooperative launch runs "
            "every program of a barrier group at once); the outputs of the calls since the last check are "
            "invalid. The GPU is still usable."
        )
