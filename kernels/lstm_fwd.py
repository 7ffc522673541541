"""Persistent LSTM forward recurrence: one program per (hidden slice, batch tile, direction).

Program ``(p, b, d)`` owns hidden units ``[p*BLOCK_H, (p+1)*BLOCK_H)`` of all four gates of
direction ``d`` for the ``BLOCK_B`` rows of batch tile ``b``. Its slice of ``W_hh^T`` is loaded
once, before the time loop, and stays on chip; ``c`` stays in registers. ``h_t`` is exchanged
through the output ``y``: every program stores its slice, passes the group's grid barrier and
reads the full ``h_t`` row back (every address of ``y`` is written once, so no double buffer).

BATCH_LOOP: program ``(p, b, d)`` owns batch tiles ``b, b + nb, b + 2 nb, ...`` (``nb``
programs on grid axis 1) and walks them in each step (h chunk in, dot, gates, store), then
passes the barrier once: one copy of the weight slice serves the whole batch, so a batch of
any size is one launch. The cell state of each tile then lives in ``p_c`` between steps.

Two launch modes, one body: persistent (all steps in one launch, ``USE_BARRIER`` when the group
has more than one program, and under the interpreter at one too, to run the barrier's code) and
stepwise (one launch per step, the launch boundary is the barrier; for Triton's interpreter,
which runs programs one after another).
"""

import triton
import triton.language as tl

from .common import (
    INTERPRETED,
    _cast_for_store,
    _end_step,
    _gate_columns,
    _join_gates,
    _row_tile,
    _row_times,
    _sigmoid,
    _split_gates,
    _step_rows,
    _sum_splits,
    _tanh,
    _tile_rows,
)


@triton.jit
def _load_w(p_w, n_cols, H_PAD: tl.constexpr, BLOCK_H: tl.constexpr, SPLIT_K: tl.constexpr, GATES_ON_M: tl.constexpr):
    """This program's slice of the packed W_hh^T (row stride ``n_cols``), shaped as the matmul's
    right operand: [H_PAD, N] or [SPLIT_K, H_PAD // SPLIT_K, N]; with GATES_ON_M transposed, as
    its left one, rows gate-major: [N, H_PAD] or [SPLIT_K, N, H_PAD // SPLIT_K]."""
    o_n = _gate_columns(BLOCK_H, GATES_ON_M)
    if SPLIT_K == 1:
        o_k = tl.arange(0, H_PAD)
        if GATES_ON_M:
            return tl.load(p_w + o_k[None, :] * n_cols + o_n[:, None])
        else:
            return tl.load(p_w + o_k[:, None] * n_cols + o_n[None, :])
    else:
        KS: tl.constexpr = H_PAD // SPLIT_K
        o_s = tl.arange(0, SPLIT_K)[:, None, None] * KS
        if GATES_ON_M:
            return tl.load(p_w + (o_s + tl.arange(0, KS)[None, None, :]) * n_cols + o_n[None, :, None])
        else:
            return tl.load(p_w + (o_s + tl.arange(0, KS)[None, :, None]) * n_cols + o_n[None, None, :])


@triton.jit
def _recurrent_matmul(
    b_h, b_w, b_x, SPLIT_K: tl.constexpr, USE_FMA: tl.constexpr, PRECISION: tl.constexpr, GATES_ON_M: tl.constexpr
):
    """x_t W_ih^T + h_{t-1} @ W_hh^T slice -> [BLOCK_B, N] fp32 (GATES_ON_M: its transpose
    [N, BLOCK_B], from W_slice^T @ h^T: the gate columns fill the MMA's M, the batch its N). The
    projection ``b_x`` enters as the dot's accumulator (of split 0): its layout conversion then
    waits for no product."""
    b_x = b_x.to(tl.float32)
    if USE_FMA:  # broadcast-multiply and reduce on CUDA cores: beats tl.dot at one batch row
        return tl.sum(b_h.to(tl.float32)[:, :, None] * b_w[None, :, :], axis=1) + b_x
    elif SPLIT_K == 1:
        if GATES_ON_M:
            return tl.dot(b_w, tl.trans(b_h), acc=tl.trans(b_x), input_precision=PRECISION)
        else:
            return tl.dot(b_h, b_w, acc=b_x, input_precision=PRECISION)
    else:  # warp s reduces K-chunk s, then one cross-warp sum
        if GATES_ON_M:
            acc = tl.where(tl.arange(0, SPLIT_K)[:, None, None] == 0, tl.trans(b_x)[None, :, :], 0.0)
            return _sum_splits(tl.dot(b_w, tl.permute(b_h, (0, 2, 1)), acc=acc, input_precision=PRECISION))
        else:
            acc = tl.where(tl.arange(0, SPLIT_K)[:, None, None] == 0, b_x[None, :, :], 0.0)
            return _sum_splits(tl.dot(b_h, b_w, acc=acc, input_precision=PRECISION))


@triton.jit
def _h_before(
    p_h0,
    p_y,
    s,
    d,
    B,
    lens,
    m_b,
    o_b,
    o_yrow,
    stride_yt,
    H: tl.constexpr,
    H_PAD: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
):
    """h_{t-1} of step ``s`` for a tile's rows, as the dot's left operand: the initial state at
    step 0, else the output of step s - 1 (``.cg``: read through L2, never from this SM's L1,
    which other programs' stores bypass). Masked loads, no branch: a branch here would take a
    copy of the dot into each arm."""
    t_prev, _ = _row_times(s - 1, d, lens)
    o_yh, m_h = _row_tile(o_yrow + t_prev * stride_yt, m_b, H, H_PAD, SPLIT_K)
    m_h = tl.where(s > 0, m_h, False) if INTERPRETED else m_h & (s > 0)
    b_h = tl.load(p_y + o_yh, mask=m_h, other=0.0, cache_modifier=".cg")
    if USE_INITIAL_STATE:
        o_h0, m_h0 = _row_tile(d * B * H + o_b * H, m_b, H, H_PAD, SPLIT_K)
        m_h0 = tl.where(s == 0, m_h0, False) if INTERPRETED else m_h0 & (s == 0)
        b_h = tl.where(s == 0, tl.load(p_h0 + o_h0, mask=m_h0, other=0.0), b_h)
    return b_h


@triton.jit
def _step_tile(
    p_y,
    p_gates,
    p_cs,
    b_h,
    b_w,
    b_x,
    c,
    rows,
    m_b,
    m_s,
    o_yt,
    o_xt,
    o_u,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_FMA: tl.constexpr,
    USE_LENGTHS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    SAVE: tl.constexpr,
    GATES_ON_M: tl.constexpr,
):
    """One step of one batch tile from h_{t-1} (``b_h``), the projection ``b_x`` and ``c``:
    stores h_t at ``o_yt + o_u`` (and, when SAVE, the gates at ``o_xt`` and c_t); returns c_t.
    ``rows``: the rows this step updates."""
    if UPCAST:
        b_h = b_h.to(tl.float32)
    g = _recurrent_matmul(b_h, b_w, b_x, SPLIT_K, USE_FMA, PRECISION, GATES_ON_M)
    g_i, g_f, g_g, g_o = _split_gates(g, BLOCK_B, BLOCK_H, GATES_ON_M)
    a_i, a_f, a_g, a_o = _sigmoid(g_i), _sigmoid(g_f), _tanh(g_g), _sigmoid(g_o)
    c_new = a_f * c + a_i * a_g
    h = a_o * _tanh(c_new)
    if USE_LENGTHS:  # past its length a sequence's state holds and its output is zero
        c = tl.where(rows[:, None], c_new, c)
        h = tl.where(rows[:, None], h, 0.0)
    else:
        c = c_new
    tl.store(p_y + o_yt + o_u, _cast_for_store(h, p_y.dtype.element_ty, UPCAST), mask=m_s)
    if SAVE:  # the padding is saved as zeros: every element of the saved tensors is defined
        b_a = _join_gates(a_i, a_f, a_g, a_o, BLOCK_B, BLOCK_H, GATES_ON_M)
        c_save = c
        if USE_LENGTHS:
            b_a = tl.where(rows[:, None], b_a, 0.0)
            c_save = tl.where(rows[:, None], c, 0.0)
        tl.store(p_gates + o_xt, _cast_for_store(b_a, p_gates.dtype.element_ty, UPCAST), mask=m_b[:, None])
        tl.store(p_cs + o_yt + o_u, _cast_for_store(c_save, p_cs.dtype.element_ty, UPCAST), mask=m_s)
    return c


@triton.jit(do_not_specialize=["T", "B", "s_begin", "n_steps", "b_tile0", "d0", "max_spins"])
def _lstm_fwd_kernel(
    p_x,  # [T, B, DIRS, n_cols] input projection in kernel column order (strides below)
    p_w,  # [DIRS, H_PAD, n_cols] packed W_hh^T, activation dtype
    p_h0,  # [DIRS, B, H] initial hidden state (read when USE_INITIAL_STATE)
    p_c,  # [DIRS, B, H] fp32 cell state: read at s_begin, written at the end (BATCH_LOOP: every step)
    p_y,  # [T, B, DIRS * H] output, also the h exchange buffer (strides below)
    p_gates,  # like p_x: the activated gates i, f, g, o of every step (written when SAVE)
    p_cs,  # like p_y: the cell state of every step (written when SAVE)
    p_len,  # [B] int32 sequence lengths in 1..T (read when USE_LENGTHS; otherwise all are T)
    p_cnt,  # [DIRS, cdiv(B, BLOCK_B)] int32 barrier counters, zeroed before the launch
    p_err,  # [1] int32, set on a barrier time-out
    T,
    B,
    s_begin,
    n_steps,
    b_tile0,
    d0,
    max_spins,
    stride_xt,
    stride_xb,
    stride_yt,
    stride_yb,
    H: tl.constexpr,
    H_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_B: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_FMA: tl.constexpr,
    GATES_ON_M: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    USE_LENGTHS: tl.constexpr,
    USE_BARRIER: tl.constexpr,
    BATCH_LOOP: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    SAVE: tl.constexpr,
):
    """Steps ``s_begin .. s_begin + n_steps - 1`` (``_row_times`` maps steps to each row's
    times; past a sequence's length its state holds and its output is zero; h_n is the output
    at each sequence's last step, which the host gathers). SAVE: keep what
    the backward kernel needs. UPCAST: compute on fp32 copies of 16-bit operands (the
    interpreter's bf16 arithmetic is wrong; products of 16-bit floats are exact in fp32)."""
    pid_p = tl.program_id(0)
    n_prog = tl.num_programs(0)
    b_tile = tl.program_id(1) + b_tile0  # the first (BATCH_LOOP) or only batch tile
    d = tl.program_id(2) + d0
    N: tl.constexpr = 4 * BLOCK_H
    n_cols = n_prog * N
    p_cnt += d * tl.cdiv(B, BLOCK_B) + b_tile  # the group's barrier counter

    b_w = _load_w(p_w + d * H_PAD * n_cols + pid_p * N, n_cols, H_PAD, BLOCK_H, SPLIT_K, GATES_ON_M)
    if USE_FMA or UPCAST:
        b_w = b_w.to(tl.float32)
    o_unit = pid_p * BLOCK_H + tl.arange(0, BLOCK_H)
    o_n = pid_p * N + _gate_columns(BLOCK_H, GATES_ON_M)[None, :]  # own gate columns of xp[t], in dot order
    o_u = o_unit[None, :]
    s_end = s_begin + n_steps

    # the first tile's rows and projection (the batch loop carries the next tile's)
    o_b, m_b, o_b64, lens, m_s, o_s = _tile_rows(b_tile, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS)
    t, rows = _step_rows(s_begin, d, lens, m_b, USE_LENGTHS)
    b_x = tl.load(p_x + (o_b64 * stride_xb + d * n_cols + t * stride_xt)[:, None] + o_n, mask=rows[:, None], other=0.0)
    if BATCH_LOOP:
        n_b = tl.num_programs(1)
        n_tiles = tl.cdiv(tl.cdiv(B, BLOCK_B) - b_tile, n_b)
        for s in range(s_begin, s_end):
            # rows of other tiles: h_{t-1} was stored in the previous step, before its barrier.
            # One stage: the weight slice leaves shared memory for one h tile, not the
            # pipeliner's copies of the next ones (sm_90 compile check)
            for j in tl.range(n_tiles, num_stages=1):
                o_b, m_b, o_b64, lens, m_s, o_s = _tile_rows(
                    b_tile + j * n_b, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS
                )
                t, rows = _step_rows(s, d, lens, m_b, USE_LENGTHS)
                o_yrow = o_b64 * stride_yb + d * H  # row starts in y[t] (+ time * stride_yt)
                o_xt = (o_b64 * stride_xb + d * n_cols + t * stride_xt)[:, None] + o_n
                c = tl.load(p_c + o_s, mask=m_s, other=0.0)
                b_h = _h_before(
                    p_h0, p_y, s, d, B, lens, m_b, o_b, o_yrow, stride_yt, H, H_PAD, SPLIT_K, USE_INITIAL_STATE
                )
                o_yt = (o_yrow + t * stride_yt)[:, None]
                c = _step_tile(
                    p_y,
                    p_gates,
                    p_cs,
                    b_h,
                    b_w,
                    b_x,
                    c,
                    rows,
                    m_b,
                    m_s,
                    o_yt,
                    o_xt,
                    o_u,
                    BLOCK_B,
                    BLOCK_H,
                    SPLIT_K,
                    USE_FMA,
                    USE_LENGTHS,
                    PRECISION,
                    UPCAST,
                    SAVE,
                    GATES_ON_M,
                )
                tl.store(p_c + o_s, c, mask=m_s)
                # the next tile (after the last, the next step's first): its rows, and its
                # projection loaded now, its latency hidden behind this tile's work or the wait
                wrap = j + 1 == n_tiles
                s_next = tl.where(wrap, s + 1, s)
                tile = tl.where(wrap, b_tile, b_tile + (j + 1) * n_b)
                _, m_bn, o_bn64, lens_n, _, _ = _tile_rows(tile, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS)
                t_n, rows_n = _step_rows(s_next, d, lens_n, m_bn, USE_LENGTHS)
                o_xt = (o_bn64 * stride_xb + d * n_cols + t_n * stride_xt)[:, None] + o_n
                more = s_next < s_end
                m_x = tl.where(more, rows_n, False) if INTERPRETED else rows_n & more
                b_x = tl.load(p_x + o_xt, mask=m_x[:, None], other=0.0)
            _end_step(p_cnt, p_err, n_prog * (s - s_begin + 1), max_spins, USE_BARRIER)
    else:
        o_yrow = o_b64 * stride_yb + d * H  # row starts in y[t] (+ time * stride_yt)
        o_xrow = o_b64 * stride_xb + d * n_cols  # row starts in xp[t] (+ time * stride_xt)
        c = tl.load(p_c + o_s, mask=m_s, other=0.0)
        b_h = _h_before(
            p_h0, p_y, s_begin, d, B, lens, m_b, o_b, o_yrow, stride_yt, H, H_PAD, SPLIT_K, USE_INITIAL_STATE
        )
        for s in range(s_begin, s_end):
            o_yt = (o_yrow + t * stride_yt)[:, None]
            o_xt = (o_xrow + t * stride_xt)[:, None] + o_n
            c = _step_tile(
                p_y,
                p_gates,
                p_cs,
                b_h,
                b_w,
                b_x,
                c,
                rows,
                m_b,
                m_s,
                o_yt,
                o_xt,
                o_u,
                BLOCK_B,
                BLOCK_H,
                SPLIT_K,
                USE_FMA,
                USE_LENGTHS,
                PRECISION,
                UPCAST,
                SAVE,
                GATES_ON_M,
            )
            # next step's projection is loaded before the barrier: its latency hides behind the wait
            more = s + 1 < s_end
            t_next, rows_next = _step_rows(s + 1, d, lens, m_b, USE_LENGTHS)
            m_x = tl.where(more, rows_next, False) if INTERPRETED else rows_next & more
            b_x = tl.load(p_x + (o_xrow + t_next * stride_xt)[:, None] + o_n, mask=m_x[:, None], other=0.0)
            _end_step(p_cnt, p_err, n_prog * (s - s_begin + 1), max_spins, USE_BARRIER)
            # h_t of the whole group (.cg, as in _h_before)
            o_yh, m_h = _row_tile(o_yrow + t * stride_yt, m_b, H, H_PAD, SPLIT_K)
            m_h = tl.where(more, m_h, False) if INTERPRETED else m_h & more
            b_h = tl.load(p_y + o_yh, mask=m_h, other=0.0, cache_modifier=".cg")
            t, rows = t_next, rows_next
        tl.store(p_c + o_s, c, mask=m_s)
