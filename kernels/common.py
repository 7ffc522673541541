"""Shared @triton.jit helpers: activations, the gate split, and the bounded grid barrier."""

import os

import triton
import triton.language as tl

# Triton's interpreter runs the kernels (CPU tests): Triton itself reads TRITON_INTERPRET when a
# kernel is defined, as this module is imported. A block mask `&` a scalar condition is written
# `tl.where(cond, mask, False) if INTERPRETED else mask & cond`: triton 3.9's interpreter types
# that `&` as int32, which its loads and stores refuse as a mask, and compiled the select (or a
# helper function holding either) changes the step's code (triton 3.8: fp32 backward +1..3 SASS)
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))

# Counter value written on a barrier time-out: above any target P * T a launch can reach, so
# every later wait of every program passes at once and the kernel finishes instead of hanging.
BARRIER_POISON = tl.constexpr(1 << 30)


# fp32 -> bf16 round to nearest even: add 0x7FFF plus the kept part's lowest bit, drop 16 bits
BF16_ROUNDING_BIAS = tl.constexpr(0x7FFF)
BF16_DROPPED_BITS = tl.constexpr(16)


@triton.jit
def _cast_for_store(x, DTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """fp32 ``x`` cast to the stored dtype. Triton's interpreter truncates fp32 -> bf16 casts; it
    gets the round-to-nearest-even a GPU (and PyTorch) does, so CPU tests see GPU numerics."""
    if UPCAST and DTYPE == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        bits += BF16_ROUNDING_BIAS + ((bits >> BF16_DROPPED_BITS) & 1)
        x = ((bits >> BF16_DROPPED_BITS) << BF16_DROPPED_BITS).to(tl.float32, bitcast=True)
    return x.to(DTYPE)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


# |x| below which tanh takes its odd series to x^9 (next term < 1e-8 relative there); above it
# the exponential form 1 - 2 / (exp(2x) + 1) loses at most ~2 bits to cancellation.
TANH_SERIES_BOUND = tl.constexpr(0.25)


@triton.jit
def _tanh(x):
    # Triton 3.6 has no tl.math.tanh and libdevice.tanh fails under the interpreter; the plain
    # exponential form alone loses the relative precision of small values (small cell states).
    x2 = x * x
    series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
    return tl.where(tl.abs(x) < TANH_SERIES_BOUND, series, 2.0 * _sigmoid(2.0 * x) - 1.0)


@triton.jit
def _row_tile(o_row, m_row, n, N_PAD: tl.constexpr, SPLIT_K: tl.constexpr):
    """Offsets and mask of ``n`` consecutive elements (padded to N_PAD) after each row offset in
    ``o_row``, shaped as a matmul's left operand: [BLOCK_B, N_PAD], or
    [SPLIT_K, BLOCK_B, N_PAD // SPLIT_K] for a split-K dot."""
    if SPLIT_K == 1:
        o_k = tl.arange(0, N_PAD)
        return o_row[:, None] + o_k[None, :], m_row[:, None] & (o_k < n)[None, :]
    else:
        KS: tl.constexpr = N_PAD // SPLIT_K
        o_k = tl.arange(0, SPLIT_K)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]
        return o_row[None, :, None] + o_k, m_row[None, :, None] & (o_k < n)


@triton.jit
def _tile_rows(b_tile, B, p_len, T, d, o_unit, H: tl.constexpr, BLOCK_B: tl.constexpr, USE_LENGTHS: tl.constexpr):
    """Batch tile ``b_tile`` of a program owning hidden units ``o_unit`` of direction ``d``: the
    rows' indices, in-batch mask, int64 indices and sequence lengths (read from ``p_len``;
    without them one scalar T, so times and validity stay scalars, as cheap as a plain loop),
    and the own slice's mask and offsets in a [DIRS, B, H] state tensor."""
    o_b = b_tile * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    if USE_LENGTHS:
        lens = tl.load(p_len + o_b, mask=m_b, other=0)
    else:
        lens = T
    m_s = m_b[:, None] & (o_unit < H)[None, :]
    o_s = d * B * H + o_b[:, None] * H + o_unit[None, :]
    return o_b, m_b, o_b.to(tl.int64), lens, m_s, o_s


@triton.jit
def _row_times(s, d, lens):
    """The time each batch row processes at step ``s`` of direction ``d`` ([BLOCK_B] int64),
    and whether the step is one of the row's ``lens`` valid ones: the forward direction walks
    times 0..len-1, the reverse one len-1..0 (each sequence from its own end); past its length
    a row sits on the padded time ``s``, which every step of the row thus covers exactly once."""
    valid = s < lens
    return tl.where(valid, s + d * (lens - 1 - 2 * s), s).to(tl.int64), valid


@triton.jit
def _step_rows(s, d, lens, m_b, USE_LENGTHS: tl.constexpr):
    """``_row_times`` for a tile of rows: each row's time at step ``s`` and the rows the step
    updates (in the batch, and, with lengths, not past their own length)."""
    t, valid = _row_times(s, d, lens)
    if USE_LENGTHS:
        return t, m_b & valid
    else:
        return t, m_b


@triton.jit
def _sum_splits(g):
    """[SPLIT_K, M, N] fp32 partial sums (split s from warp s) -> [M, N]; SPLIT_K a power of two.

    Halving the split axis with ``tl.split`` (both halves must sit in one thread) and adding
    moves the partials through shared memory once, into a layout that the gate split and the
    store of h keep: 1 CTA barrier from the last MMA to the store under triton 3.6 and 3.8.
    ``tl.sum(g, axis=0)`` took 4 (3.6) and 15 (3.8: more shared-memory round trips)."""
    S: tl.constexpr = g.shape[0]
    M: tl.constexpr = g.shape[1]
    N: tl.constexpr = g.shape[2]
    g = tl.permute(g, (1, 2, 0))
    for _ in tl.static_range(S):  # log2(S) of these passes halve
        if g.shape[2] > 1:
            a, b = tl.split(tl.reshape(g, (M, N, g.shape[2] // 2, 2)))
            g = a + b
    return tl.reshape(g, (M, N))


@triton.jit
def _gate_columns(BLOCK_H: tl.constexpr, GATES_ON_M: tl.constexpr):
    """A program's 4*BLOCK_H packed gate columns in the order its dot produces them: as packed,
    or with GATES_ON_M gate-major (position g*BLOCK_H + u holds gate g of unit u)."""
    n = tl.arange(0, 4 * BLOCK_H)
    if GATES_ON_M:
        g = n // BLOCK_H
        return (g // 2) * 2 * BLOCK_H + 2 * (n % BLOCK_H) + g % 2
    else:
        return n


@triton.jit
def _split_gates(g, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, GATES_ON_M: tl.constexpr = False):
    """[BLOCK_B, 4*BLOCK_H] gate pre-activations -> i, f, g, o, each [BLOCK_B, BLOCK_H].

    Column j of a program holds gate 2*g1 + g0 of unit u, j = g1*2*BLOCK_H + 2*u + g0
    (``lstm_triton.layout`` packs the weights so): both splits then stay inside a thread's
    registers for the mma accumulator layout (columns n, n+1 and n, n+2*BLOCK_H).

    GATES_ON_M: ``g`` is the transposed dot's [4*BLOCK_H, BLOCK_B], gate-major
    (``_gate_columns``): the mma accumulator's rows r + 8m share a thread, so the four gates of a
    unit stay in the registers of the warp that holds all the rows."""
    if GATES_ON_M:
        g4 = tl.permute(tl.reshape(g, (2, 2, BLOCK_H, BLOCK_B)), (3, 2, 0, 1))  # [B, BH, g1, g0]
        g_ig, g_fo = tl.split(g4)
        g_i, g_g = tl.split(g_ig)
        g_f, g_o = tl.split(g_fo)
    else:
        g_ig, g_fo = tl.split(tl.reshape(g, (BLOCK_B, 2, BLOCK_H, 2)))
        g_i, g_g = tl.split(tl.permute(g_ig, (0, 2, 1)))
        g_f, g_o = tl.split(tl.permute(g_fo, (0, 2, 1)))
    return g_i, g_f, g_g, g_o


@triton.jit
def _join_gates(g_i, g_f, g_g, g_o, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, GATES_ON_M: tl.constexpr = False):
    """The inverse of ``_split_gates``: four [BLOCK_B, BLOCK_H] -> [BLOCK_B, 4*BLOCK_H], in
    packed column order or (GATES_ON_M) gate-major."""
    g = tl.join(tl.join(g_i, g_f), tl.join(g_g, g_o))  # [BB, BH, g0, g1]
    if GATES_ON_M:
        return tl.reshape(tl.permute(g, (0, 3, 2, 1)), (BLOCK_B, 4 * BLOCK_H))
    else:
        return tl.reshape(tl.permute(g, (0, 3, 1, 2)), (BLOCK_B, 4 * BLOCK_H))


@triton.jit
def _grid_barrier(p_cnt, p_err, target, max_spins):
    """Wait until all programs of a group have arrived; ``target`` = group size x barriers so far.

    ``p_cnt`` is the group's int32 counter (zeroed before the launch) and every program of the
    group must be resident (the launcher makes sure). A wait longer than ``max_spins`` polls sets
    ``*p_err`` and poisons the counter: the kernel then finishes with garbage, which the host
    reports as a RuntimeError, instead of hanging the GPU."""
    tl.debug_barrier()  # every thread's stores of this step are issued
    tl.atomic_add(p_cnt, 1, sem="release", scope="gpu")
    # An atomic with an unused result may be deleted: the polled value is used below.
    cur = tl.atomic_add(p_cnt, 0, sem="acquire", scope="gpu")
    spins = 0
    while (cur < target) & (spins < max_spins):
        cur = tl.atomic_add(p_cnt, 0, sem="acquire", scope="gpu")
        spins += 1
    if cur < target:
        tl.atomic_max(p_cnt, BARRIER_POISON)
        tl.atomic_or(p_err, 1)
    tl.debug_barrier()


@triton.jit
def _end_step(p_cnt, p_err, target, max_spins, USE_BARRIER: tl.constexpr):
    """A step's end: the group's grid barrier, or for a program alone a CTA barrier (its warps
    reload elements other warps stored: the layouts differ)."""
    if USE_BARRIER:
        _grid_barrier(p_cnt, p_err, target, max_spins)
    else:
        tl.debug_barrier()
