"""Launch configs of the recurrent kernels: what a config is, which ones fit a chip, and the
heuristic that picks one from the shape, the dtype and the chip."""

import functools
from dataclasses import dataclass, replace

import torch
import triton

from ._env import minor_version, next_pow2
from .layout import MIN_DOT_K, num_programs, padded_gate_columns, padded_hidden


@dataclass(frozen=True)
class LSTMConfig:
    """``block_h`` hidden units (of all four gates) per program, ``block_b`` batch rows per
    program; the recurrent matmul is a ``tl.dot`` whose reduction is split over ``split_k``
    warps, or (``use_fma``) a broadcast multiply-add on CUDA cores with the weights in fp32
    registers. Batch tiles beyond what the chip holds at once are walked by each program in
    every step (``batch_loop``: one launch per call), or run as launches in series.
    ``gates_on_m`` (split-K dots): the dot transposed, W_slice^T @ h^T, so the gate columns
    fill the MMA's M and the batch rows its N: half the MMAs of a batch tile of 8 rows."""

    block_h: int
    block_b: int
    split_k: int = 1
    use_fma: bool = False
    num_warps: int = 4
    batch_loop: bool = True
    gates_on_m: bool = False

    def programs(self, hidden_size: int) -> int:
        """Programs per barrier group: the hidden split ``P``."""
        return num_programs(hidden_size, self.block_h)

    def label(self, hidden_size: int) -> str:
        """Programs per group, tile sizes, matmul path and warps, in one short word."""
        path = "fma" if self.use_fma else f"{'dotT' if self.gates_on_m else 'dot'}-splitk{self.split_k}"
        serial = "" if self.batch_loop else "-serial"
        return f"P{self.programs(hidden_size)}-BH{self.block_h}-BB{self.block_b}-{path}-w{self.num_warps}{serial}"


# What a config name (``LSTMConfig.label``) says: the key in every CLI's --help that prints one.
CONFIG_NAME_HELP = (
    "config names (LSTMConfig.label, e.g. P2-BH64-BB8-dot-splitk1-w4) read P<programs per group>-"
    "BH<hidden units per program>-BB<batch rows per program>-<dot-splitk<warps splitting the reduction>|fma>-"
    "w<warps>[-serial]; dot: a tensor-core tl.dot, dotT: the same transposed (gate columns on the MMA's M, "
    "batch rows on its N), fma: multiply-adds on CUDA cores; -serial: batch tiles "
    "beyond the chip's SMs run as launches in series (otherwise each program walks several tiles a step)"
)


REGS_PER_SM = 65536  # 32-bit registers per SM on every NVIDIA GPU since Kepler


@dataclass(frozen=True)
class Chip:
    """What the launcher needs to know of a GPU."""

    name: str
    n_sm: int
    smem_per_block: int  # bytes a program may use (the opt-in limit)
    regs_per_sm: int = REGS_PER_SM


H200 = Chip("NVIDIA H200", n_sm=132, smem_per_block=232448)
# The interpreter runs programs one after another: no co-residency, no on-chip limits.
INTERPRETER = Chip("Triton interpreter", n_sm=1 << 16, smem_per_block=1 << 40, regs_per_sm=1 << 40)

# Smallest batch tile a tensor-core dot is given; one batch row takes the FMA path.
MIN_DOT_BLOCK_B = 8
MAX_BLOCK_B = 32
WIDE_BLOCK_B = 32  # batch tiles this tall get 8 warps on the dot path
# Hidden sizes below their padded size mask units, which costs registers: batch tiles of 32 rows
# spill there, and tiles of 16 take 8 warps (sm_90 compile check at H = 100, 200, 768), as do
# split-K dots (8-32 B spilled at H = 768 with 4 warps under triton 3.6)
MASKED_MAX_BLOCK_B = MASKED_WIDE_BLOCK_B = 16
EXACT_FP32_WIDE_H, EXACT_FP32_WIDE_BLOCK_H = 512, 8  # exact fp32 dots at H >= 512: 8 units a program
EXACT_FP32_SPLIT_K = 8  # exact fp32 dots: warps that split the reduction
# H <= 128: 4 warps; 8 (each reducing 16 of K) spill 400 B with triton 3.8 (sm_90 compile check)
EXACT_FP32_NARROW_H, EXACT_FP32_NARROW_SPLIT_K = 128, 4
TRAIN_WIDE_BLOCK_B = 16  # the training forward's tallest batch tile, with 8 warps
MAX_BWD_BLOCK_B, MAX_EXACT_BWD_BLOCK_B = 16, 4  # the backward's batch tile, TF32/16-bit and exact fp32
WIDE_BWD_BLOCK_H = 128  # a backward program this wide gets batch tiles of MIN_DOT_BLOCK_B rows
VARLEN_WIDE_BLOCK_H, VARLEN_MAX_BLOCK_B = 128, 16  # with per-sequence lengths, such programs take 16 rows
EXACT_BWD_CHUNK, MAX_EXACT_BWD_SPLIT = 256, 16  # exact fp32 backward: gate columns per warp, warps
# A backward step holds the next step's saved values (4 gates, c_t, c_{t-1} and dy per row and
# unit, loaded before its barrier wait) in registers: beyond this many per thread it spills
# (sm_90 compile check), so such programs take 8 warps or shorter batch tiles
BWD_SAVED_PER_UNIT, MAX_BWD_PREFETCH_REGS, WIDE_BWD_WARPS = 7, 16, 8
# The transposed dot reads its weight operand with ldmatrix from triton 3.8 on; 3.6 reads it with
# scalar shared loads (256 LDS.U16 a step at H=1024, B=8: slower than the half-empty MMAs it saves).
# Triton 3.9 as 3.8 (sm_90 compile check, bf16 B <= 8, H 256-1024): half the MMAs (a quarter at 16
# units a program), 13-57% fewer instructions a step, 1 critical CTA barrier, no spill
GATES_ON_M_MIN_TRITON = (3, 8)
GATES_ON_M_PAYS = minor_version(triton.__version__) >= GATES_ON_M_MIN_TRITON
# Where it stays spill-free (triton 3.8, sm_90 compile check): 16-bit operands, unmasked hidden
# sizes, and a warp's share of the transposed weights (4*block_h rows x H_PAD / split_k) of at
# most 32 x 256: more splits (and warps) for wider slices, 8 at 16 units and H = 1024 (with 4,
# 77 LDL/STL a step). Masked units spill 0.4-1.4 KB (H = 768), fp32's tf32 operands 424 B.
GATES_ON_M_MAX_WARP_ELEMS, GATES_ON_M_MAX_SPLIT_K, GATES_ON_M_MAX_ITEMSIZE = 32 * 256, 8, 2
# Registers one thread may spend on the fp32 weight slice of the FMA path.
MAX_FMA_WEIGHT_REGS = 160
WARP_SIZE = 32
MAX_THREAD_REGS = 255  # registers one thread can address (sm_90)
MAX_WARPS = 32  # 1024 threads per program
HEURISTIC_PICKS_KEPT = 4096  # memoized heuristic picks: far more shapes than a process runs


def thread_registers(num_warps: int) -> int:
    """Registers each thread of a program may take (ptxas's maxnreg). A persistent launch runs
    one program per SM, so it may take the whole register file; left to itself ptxas aims for
    several programs per SM and spills (sm_90 compile check)."""
    return min(MAX_THREAD_REGS, REGS_PER_SM // (WARP_SIZE * num_warps))


def chip_of(device: torch.device) -> Chip:
    if device.type != "cuda":
        return INTERPRETER
    p = torch.cuda.get_device_properties(device)
    smem = getattr(p, "shared_memory_per_block_optin", 0) or p.shared_memory_per_block
    return Chip(p.name, p.multi_processor_count, smem, getattr(p, "regs_per_multiprocessor", 65536))


def check_config(config: LSTMConfig, hidden_size: int, reduction: int | None = None) -> None:
    """Raise ValueError for a config the kernel cannot compile for this hidden size;
    ``reduction``: the padded length of the kernel's dot reduction (default: the forward's,
    the padded hidden size)."""
    h_pad = padded_hidden(hidden_size)
    reduction = reduction or h_pad
    for name in ("block_h", "block_b", "split_k", "num_warps"):
        v = getattr(config, name)
        if v < 1 or v & (v - 1):
            raise ValueError(f"LSTMConfig.{name} must be a power of two, got {v}")
    if config.use_fma and config.split_k != 1:
        raise ValueError("LSTMConfig: use_fma and split_k > 1 exclude each other")
    if config.gates_on_m and (config.use_fma or config.split_k == 1):
        # one warp must hold all of a K-chunk's gate rows: a unit's four gates then share a thread
        raise ValueError("LSTMConfig.gates_on_m needs the split-K dot (split_k > 1, no use_fma)")
    if not config.use_fma and reduction // config.split_k < MIN_DOT_K:
        raise ValueError(
            f"LSTMConfig.split_k={config.split_k} leaves a dot reduction of {reduction // config.split_k} "
            f"< {MIN_DOT_K} for hidden_size={hidden_size}"
        )
    if config.block_h > h_pad:
        raise ValueError(f"LSTMConfig.block_h={config.block_h} exceeds the padded hidden size {h_pad}")


def smem_estimate(config: LSTMConfig, hidden_size: int, elem_bytes: int) -> int:
    """Shared memory a program of the dot path needs (Triton keeps the loop-invariant weight
    slice and the h operand there), in bytes; the FMA path keeps its weights in registers."""
    h_pad = padded_hidden(hidden_size)
    if config.use_fma:
        return 4 * config.block_b * 4 * config.block_h * 4  # the reduction's scratch
    return (h_pad * 4 * config.block_h + config.block_b * h_pad) * elem_bytes


def fma_weight_regs(config: LSTMConfig, hidden_size: int) -> int:
    return padded_hidden(hidden_size) * 4 * config.block_h // (WARP_SIZE * config.num_warps)


def live_regs(config: LSTMConfig, hidden_size: int) -> int:
    """A lower bound on the 32-bit registers one thread holds through a step: its share of the
    fp32 gate accumulator (one per split-K partial) and of the cell state, and on the FMA path
    its share of the fp32 weight slice."""
    threads = WARP_SIZE * config.num_warps
    acc = -(-config.split_k * config.block_b * 4 * config.block_h // threads)
    cell = -(-config.block_b * config.block_h // threads)
    return acc + cell + (fma_weight_regs(config, hidden_size) if config.use_fma else 0)


def chip_problem(config: LSTMConfig, hidden_size: int, dtype: torch.dtype, chip: Chip) -> str | None:
    """Why a program of this config cannot run on ``chip`` as the persistent kernels need (one
    program per SM, its barrier group co-resident, nothing spilled), or None."""
    n_prog = config.programs(hidden_size)
    if n_prog > chip.n_sm:
        return f"{n_prog} programs per barrier group > {chip.n_sm} SMs: the group cannot be co-resident"
    if config.num_warps > MAX_WARPS:
        return f"{config.num_warps} warps > {MAX_WARPS} per program"
    if config.use_fma and fma_weight_regs(config, hidden_size) > MAX_FMA_WEIGHT_REGS:
        return f"{fma_weight_regs(config, hidden_size)} weight registers per thread > {MAX_FMA_WEIGHT_REGS}"
    reg_budget = min(MAX_THREAD_REGS, chip.regs_per_sm // (WARP_SIZE * config.num_warps))
    if live_regs(config, hidden_size) > reg_budget:
        return f"at least {live_regs(config, hidden_size)} live registers per thread > {reg_budget}"
    smem = smem_estimate(config, hidden_size, dtype.itemsize)
    if smem > chip.smem_per_block:
        return f"~{smem} B of shared memory > {chip.smem_per_block} B"
    return None


def fits(config: LSTMConfig, hidden_size: int, dtype: torch.dtype, chip: Chip) -> bool:
    """The program fits on one SM and its barrier group is co-resident (``chip_problem``)."""
    return chip_problem(config, hidden_size, dtype, chip) is None


def reject_reason(config: LSTMConfig, hidden_size: int, dtype: torch.dtype, chip: Chip) -> str | None:
    """The one pruning rule for every candidate, before anything is compiled: why this forward
    config cannot compile (``check_config``) or cannot run on ``chip`` (``chip_problem``), or
    None when it can."""
    try:
        check_config(config, hidden_size)
    except ValueError as e:
        return str(e)
    return chip_problem(config, hidden_size, dtype, chip)


def _start(h_pad: int, batch: int) -> LSTMConfig:
    """The spike's best measured layouts on the H200 (bf16, one direction), by size class."""
    if h_pad <= 128:
        return LSTMConfig(block_h=h_pad, block_b=min(max(next_pow2(batch), MIN_DOT_BLOCK_B), MAX_BLOCK_B))
    if batch == 1:
        return LSTMConfig(block_h=8, block_b=1, use_fma=True, num_warps=8)
    if batch <= MIN_DOT_BLOCK_B:
        return LSTMConfig(block_h=8, block_b=MIN_DOT_BLOCK_B, split_k=4, gates_on_m=GATES_ON_M_PAYS)
    block_h = 16 if h_pad >= 1024 else 32
    block_b = 16 if (batch <= 64 and h_pad < 1024) else MAX_BLOCK_B
    return LSTMConfig(block_h=block_h, block_b=block_b)


def _exact_fp32(cfg: LSTMConfig, h_pad: int) -> LSTMConfig:
    """Exact fp32 dots run on CUDA cores and spill unless each warp reduces a short K-chunk
    of a short batch tile for few hidden units (sm_90 compile check)."""
    if cfg.use_fma:
        return cfg
    split_k = EXACT_FP32_NARROW_SPLIT_K if h_pad <= EXACT_FP32_NARROW_H else EXACT_FP32_SPLIT_K
    return replace(
        cfg,
        gates_on_m=False,  # a CUDA-core dot: no MMA to fill
        block_h=min(cfg.block_h, _max_block_h(h_pad, True)),
        block_b=min(cfg.block_b, MIN_DOT_BLOCK_B),
        split_k=min(split_k, h_pad // MIN_DOT_K),
        num_warps=8,
    )


def _max_block_h(h_pad: int, exact_fp32: bool) -> int:
    return EXACT_FP32_WIDE_BLOCK_H if (exact_fp32 and h_pad >= EXACT_FP32_WIDE_H) else h_pad


def _transposed(cfg: LSTMConfig, h_pad: int, masked: bool, dtype: torch.dtype) -> LSTMConfig:
    """A transposed split-K config with as many splits (one warp each) as keep a warp's share of
    the weights spill-free, or the untransposed one where none does."""
    split_k = max(cfg.split_k, 4 * cfg.block_h * h_pad // GATES_ON_M_MAX_WARP_ELEMS)
    if masked or dtype.itemsize > GATES_ON_M_MAX_ITEMSIZE or split_k > GATES_ON_M_MAX_SPLIT_K:
        return replace(cfg, gates_on_m=False)
    return replace(cfg, split_k=split_k, num_warps=max(cfg.num_warps, split_k))


@functools.lru_cache(maxsize=HEURISTIC_PICKS_KEPT)  # it runs per forward call and takes ~30 us
def heuristic(
    hidden_size: int, batch: int, dirs: int, dtype: torch.dtype, chip: Chip, exact_fp32: bool = False
) -> LSTMConfig | None:
    """A config for this shape on this chip, or None when no config keeps the weights on chip
    (the caller then runs PyTorch's LSTM). ``exact_fp32``: float32 dots without TF32."""
    h_pad = padded_hidden(hidden_size)
    if chip is INTERPRETER:  # fewest programs: the interpreter's cost is per program and step
        return LSTMConfig(block_h=h_pad, block_b=min(next_pow2(batch), MAX_BLOCK_B))
    cfg = _start(h_pad, batch)
    if cfg.use_fma and (dirs * cfg.programs(hidden_size) > chip.n_sm or not fits(cfg, hidden_size, dtype, chip)):
        cfg = _start(h_pad, MIN_DOT_BLOCK_B)  # the split-K dot of small batches
    exact_fp32 = exact_fp32 and dtype == torch.float32
    if exact_fp32:
        cfg = _exact_fp32(cfg, h_pad)
    # fewer, fatter programs while the whole grid is not co-resident and the slice still fits
    n_tiles = -(-batch // cfg.block_b)
    while dirs * n_tiles * cfg.programs(hidden_size) > chip.n_sm and cfg.block_h < _max_block_h(h_pad, exact_fp32):
        wider = replace(cfg, block_h=cfg.block_h * 2)
        if not fits(wider, hidden_size, dtype, chip):
            break
        cfg = wider
    # then the widest hidden slice, with the largest batch tile, that fits
    masked = hidden_size != h_pad
    max_block_b, wide_block_b = (MASKED_MAX_BLOCK_B, MASKED_WIDE_BLOCK_B) if masked else (MAX_BLOCK_B, WIDE_BLOCK_B)
    block_h = cfg.block_h
    while block_h >= 1 and num_programs(hidden_size, block_h) <= chip.n_sm:
        block_b = min(cfg.block_b, max_block_b)
        while block_b >= min(cfg.block_b, MIN_DOT_BLOCK_B):
            cand = replace(cfg, block_h=block_h, block_b=block_b)
            if fits(cand, hidden_size, dtype, chip):
                if cand.gates_on_m:
                    cand = _transposed(cand, h_pad, masked, dtype)
                if not cand.use_fma and (block_b >= wide_block_b or (masked and cand.split_k > 1)):
                    cand = replace(cand, num_warps=8)  # 4 warps spill here (sm_90 compile check)
                check_config(cand, hidden_size)
                return cand
            block_b //= 2
        block_h //= 2
    return None


def training_config(config: LSTMConfig) -> LSTMConfig:
    """The training forward: the same layout (block_h), plus a store of the activations each
    step, which spills on batch tiles of 32 rows, and with 4 warps on 16 (sm_90 compile check)."""
    if config.use_fma or config.block_b < TRAIN_WIDE_BLOCK_B:
        return config
    return replace(config, block_b=TRAIN_WIDE_BLOCK_B, num_warps=max(config.num_warps, 8))


def varlen_config(config: LSTMConfig) -> LSTMConfig:
    """Per-sequence lengths: each row's own times cost registers, and a program holding all of
    a wide hidden slice then spills on batch tiles of 32 rows (sm_90 compile check)."""
    if config.block_h >= VARLEN_WIDE_BLOCK_H and config.block_b > VARLEN_MAX_BLOCK_B:
        return replace(config, block_b=VARLEN_MAX_BLOCK_B)
    return config


def bwd_reduction(config: LSTMConfig, hidden_size: int) -> int:
    """The backward dot's padded reduction length: all gate columns of a direction."""
    return padded_gate_columns(4 * config.block_h * config.programs(hidden_size))


def bwd_smem_estimate(config: LSTMConfig, hidden_size: int, elem_bytes: int) -> int:
    """Shared memory of a backward program: its W_hh slice [K_PAD, block_h] and the dgates row
    [block_b, K_PAD] it reads each step."""
    k_pad = bwd_reduction(config, hidden_size)
    return (k_pad * config.block_h + config.block_b * k_pad) * elem_bytes


def bwd_prefetch_regs(config: LSTMConfig, elem_bytes: int) -> int:
    """32-bit registers per thread holding the next step's saved values in the backward."""
    saved_bytes = config.block_b * BWD_SAVED_PER_UNIT * config.block_h * elem_bytes
    return saved_bytes // (4 * WARP_SIZE * config.num_warps)


def backward_config(
    config: LSTMConfig, hidden_size: int, dtype: torch.dtype, chip: Chip, exact_fp32: bool = False
) -> LSTMConfig | None:
    """The backward kernel runs the forward's hidden split (the packed layout depends on it) and
    batch loop choice with the tallest batch tile, up to the forward's, that fits on chip; None if none does.
    The reduction over all 4H gate columns is split over the warps (no spills, sm_90 compile
    check); exact fp32 dots need short batch tiles and chunks of EXACT_BWD_CHUNK per warp."""
    if chip is INTERPRETER:
        return LSTMConfig(config.block_h, config.block_b, batch_loop=config.batch_loop)
    exact_fp32 = exact_fp32 and dtype == torch.float32
    k_pad = bwd_reduction(config, hidden_size)
    block_b = min(config.block_b, MAX_EXACT_BWD_BLOCK_B if exact_fp32 else MAX_BWD_BLOCK_B)
    if config.block_h >= WIDE_BWD_BLOCK_H:  # its W_hh slice leaves registers for 8 rows (sm_90 compile check)
        block_b = min(block_b, MIN_DOT_BLOCK_B)
    while block_b >= 1:
        if exact_fp32:
            split = min(MAX_EXACT_BWD_SPLIT, max(1, k_pad // EXACT_BWD_CHUNK))
        else:
            split = min(4 if block_b <= MIN_DOT_BLOCK_B else 8, k_pad // MIN_DOT_K)
        cand = LSTMConfig(config.block_h, block_b, split, num_warps=max(split, 4), batch_loop=config.batch_loop)
        if bwd_prefetch_regs(cand, dtype.itemsize) > MAX_BWD_PREFETCH_REGS:
            cand = replace(cand, num_warps=max(cand.num_warps, WIDE_BWD_WARPS))
        fits_regs = bwd_prefetch_regs(cand, dtype.itemsize) <= MAX_BWD_PREFETCH_REGS
        if fits_regs and bwd_smem_estimate(cand, hidden_size, dtype.itemsize) <= chip.smem_per_block:
            check_config(cand, hidden_size, k_pad)
            return cand
        block_b //= 2
    return None
