"""Persistent LSTM backward recurrence: the forward's program layout, walking time in reverse.

Program ``(p, b, d)`` owns hidden units ``[p*BLOCK_H, (p+1)*BLOCK_H)`` of direction ``d`` for
batch tile ``b``. It carries ``dc`` in registers and holds ``W_hh[:, own units]`` (all ``4H``
gate rows, ``[K_PAD, BLOCK_H]``) on chip for all steps. Each step it turns ``dh`` into the
gradients of its units' four gate pre-activations (from the saved activations and cell
states), stores them into ``dxp`` (the gradient of the input projection, in the packed column
order), passes the group's barrier, and reads the whole ``dxp[t]`` row back to form the next
step's recurrent ``dh = dgates_t @ W_hh[:, own units]``. Weight gradients are GEMMs on the host
afterwards: no atomics, so gradients are reproducible bit for bit.

Backward step ``s`` is the forward's step ``k = T - 1 - s`` (``_row_times`` maps it to each
row's time). A sequence shorter than T enters at its own last step, where the gradient of h_n
joins; before that its cell-state gradient holds and its gate gradients are zero.
"""

import triton
import triton.language as tl

from .common import (
    _batch_rows,
    _cast_for_store,
    _grid_barrier,
    _join_gates,
    _row_tile,
    _row_times,
    _split_gates,
    _step_rows,
    _tanh,
)


@triton.jit
def _recurrent_dh(p_dx, o_dg, m_dg, b_wt, SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dh of this program's units from the whole dgates row of one step: [BLOCK_B, BLOCK_H]."""
    # .cg: read through L2, never from this SM's L1, which other programs' stores bypass
    b_dg = tl.load(p_dx + o_dg, mask=m_dg, other=0.0, cache_modifier=".cg")
    if UPCAST:
        b_dg = b_dg.to(tl.float32)
    if SPLIT_K == 1:
        return tl.dot(b_dg, b_wt, input_precision=PRECISION)
    else:  # warp s reduces K-chunk s, then one cross-warp sum
        return tl.sum(tl.dot(b_dg, b_wt, input_precision=PRECISION), axis=0)


@triton.jit
def _saved_step(
    p_dy,
    p_gates,
    p_cs,
    k,
    live,
    d,
    lens,
    m_b,
    m_s,
    o_dyrow,
    o_xrow,
    o_yrow,
    o_x,
    o_us,
    stride_dyt,
    stride_xt,
    stride_yt,
    USE_LENGTHS: tl.constexpr,
):
    """What the backward reads of the forward's step ``k`` (nothing unless ``live``), as stored:
    dy, the activated gates, c_k and c_{k-1} (zero past a row's length, and c_{k-1} at k = 0)."""
    t, rows = _step_rows(k, d, lens, m_b, USE_LENGTHS)
    rows = rows & live
    m_own = m_s & rows[:, None]
    b_dy = tl.load(p_dy + (o_dyrow + t * stride_dyt)[:, None] + o_us, mask=m_own, other=0.0)
    b_a = tl.load(p_gates + (o_xrow + t * stride_xt)[:, None] + o_x, mask=rows[:, None], other=0.0)
    b_c = tl.load(p_cs + (o_yrow + t * stride_yt)[:, None] + o_us, mask=m_own, other=0.0)
    t_earlier, _ = _row_times(k - 1, d, lens)  # the forward's previous step (k >= 1)
    o_cp = (o_yrow + t_earlier * stride_yt)[:, None] + o_us
    b_cp = tl.load(p_cs + o_cp, mask=m_own & (k > 0), other=0.0)
    return b_dy, b_a, b_c, b_cp


@triton.jit(do_not_specialize=["T", "B", "s_begin", "n_steps", "final", "b_tile0", "d0", "max_spins"])
def _lstm_bwd_kernel(
    p_dy,  # [T, B, DIRS * H] gradient of the output (strides below)
    p_gates,  # [T, B, DIRS * n_cols] the forward's saved activations (xp's strides)
    p_cs,  # [T, B, DIRS * H] the forward's saved cell states (y's strides)
    p_c0,  # [DIRS, B, H] initial cell state (read when USE_INITIAL_STATE)
    p_w,  # [DIRS, H_PAD, n_cols] packed W_hh^T, as the forward had it
    p_dhn,  # [DIRS, B, H] fp32 gradient of h_n
    p_dc,  # [DIRS, B, H] fp32 cell-state gradient: read at s_begin, written after the last step
    p_dx,  # [T, B, DIRS * n_cols] out: gradient of the input projection (xp's strides)
    p_dh0,  # [DIRS, B, H] out: gradient of h_0 (written when final)
    p_len,  # [B] int32 sequence lengths in 1..T (read when USE_LENGTHS; otherwise all are T)
    p_cnt,  # [DIRS, cdiv(B, BLOCK_B)] int32 barrier counters, zeroed before the launch
    p_err,  # [1] int32, set on a barrier time-out
    T,
    B,
    s_begin,
    n_steps,
    final,  # nonzero: after the steps, form dh_0 from the last step's dgates (needs them all written)
    b_tile0,
    d0,
    max_spins,
    stride_xt,
    stride_xb,
    stride_yt,
    stride_yb,
    stride_dyt,
    stride_dyb,
    H: tl.constexpr,
    H_PAD: tl.constexpr,
    K_PAD: tl.constexpr,  # next power of two of n_cols: the dh reduction over all gate columns
    BLOCK_H: tl.constexpr,
    BLOCK_B: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    USE_LENGTHS: tl.constexpr,
    USE_BARRIER: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_p = tl.program_id(0)
    n_prog = tl.num_programs(0)
    b_tile = tl.program_id(1) + b_tile0
    d = tl.program_id(2) + d0
    N: tl.constexpr = 4 * BLOCK_H
    n_cols = n_prog * N

    # W_hh[:, own units] = rows p*BLOCK_H.. of the packed W_hh^T, read transposed: [K_PAD, BLOCK_H]
    # (or [SPLIT_K, K_PAD // SPLIT_K, BLOCK_H] for a split-K dot)
    o_unit = pid_p * BLOCK_H + tl.arange(0, BLOCK_H)
    p_wd = p_w + d * H_PAD * n_cols
    if SPLIT_K == 1:
        o_k = tl.arange(0, K_PAD)[:, None]
        o_u = o_unit[None, :]
    else:
        KS: tl.constexpr = K_PAD // SPLIT_K
        o_k = tl.arange(0, SPLIT_K)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]
        o_u = o_unit[None, None, :]
    b_wt = tl.load(p_wd + o_u * n_cols + o_k, mask=o_k < n_cols, other=0.0)
    if UPCAST:
        b_wt = b_wt.to(tl.float32)

    o_b, m_b, o_b64, lens = _batch_rows(b_tile, B, p_len, T, BLOCK_B, USE_LENGTHS)
    m_s = m_b[:, None] & (o_unit < H)[None, :]
    o_s = d * B * H + o_b[:, None] * H + o_unit[None, :]  # own slice of [DIRS, B, H]
    o_us = d * H + o_unit[None, :]  # own units within a row of cs[t] / dy[t]
    o_xrow = o_b64 * stride_xb + d * n_cols  # row starts in gates[t] / dx[t] (+ time * stride_xt)
    o_yrow = o_b64 * stride_yb  # row starts in cs[t] (+ time * stride_yt)
    o_x = pid_p * N + tl.arange(0, N)[None, :]  # own gate columns within a row

    dc = tl.load(p_dc + o_s, mask=m_s, other=0.0)
    dh_n = tl.load(p_dhn + o_s, mask=m_s, other=0.0)
    c_first = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # c_{-1}: the initial state
    if USE_INITIAL_STATE:
        c_first = tl.load(p_c0 + o_s, mask=m_s, other=0.0).to(tl.float32)

    s_end = s_begin + n_steps
    # each step's saved values are loaded during the previous one, before its barrier wait
    o_dyrow = o_b64 * stride_dyb
    saved = _saved_step(
        p_dy,
        p_gates,
        p_cs,
        T - 1 - s_begin,
        s_begin < s_end,
        d,
        lens,
        m_b,
        m_s,
        o_dyrow,
        o_xrow,
        o_yrow,
        o_x,
        o_us,
        stride_dyt,
        stride_xt,
        stride_yt,
        USE_LENGTHS,
    )
    for s in range(s_begin, s_end):
        k = T - 1 - s  # the forward step
        t, rows = _step_rows(k, d, lens, m_b, USE_LENGTHS)
        b_dy, b_a, b_c, b_cp = saved
        if s == 0:
            dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        else:  # dh through W_hh from every unit's dgates of the previous backward step
            t_later, _ = _row_times(k + 1, d, lens)
            o_dg, m_dg = _row_tile(o_xrow + t_later * stride_xt, m_b, n_cols, K_PAD, SPLIT_K)
            dh = _recurrent_dh(p_dx, o_dg, m_dg, b_wt, SPLIT_K, PRECISION, UPCAST)
        if USE_LENGTHS:  # a sequence's last step receives the gradient of h_n
            dh += tl.where(((k == lens - 1) & m_b)[:, None], dh_n, 0.0)
        elif s == 0:
            dh += dh_n
        dh += b_dy.to(tl.float32)
        a_i, a_f, a_g, a_o = _split_gates(b_a.to(tl.float32), BLOCK_B, BLOCK_H)
        c = b_c.to(tl.float32)
        c_prev = tl.where(k == 0, c_first, b_cp.to(tl.float32))
        o_xt = (o_xrow + t * stride_xt)[:, None] + o_x

        tc = _tanh(c)
        dc_new = dc + dh * a_o * (1.0 - tc * tc)
        d_i = dc_new * a_g * a_i * (1.0 - a_i)
        d_f = dc_new * c_prev * a_f * (1.0 - a_f)
        d_g = dc_new * a_i * (1.0 - a_g * a_g)
        d_o = dh * tc * a_o * (1.0 - a_o)
        b_dg = _join_gates(d_i, d_f, d_g, d_o, BLOCK_B, BLOCK_H)
        if USE_LENGTHS:  # before its last step a sequence's dc_n holds and its gate gradients are zero
            dc = tl.where(rows[:, None], dc_new * a_f, dc)
            b_dg = tl.where(rows[:, None], b_dg, 0.0)
        else:
            dc = dc_new * a_f
        tl.store(p_dx + o_xt, _cast_for_store(b_dg, p_dx.dtype.element_ty, UPCAST), mask=m_b[:, None])
        saved = _saved_step(
            p_dy,
            p_gates,
            p_cs,
            k - 1,
            s + 1 < s_end,
            d,
            lens,
            m_b,
            m_s,
            o_dyrow,
            o_xrow,
            o_yrow,
            o_x,
            o_us,
            stride_dyt,
            stride_xt,
            stride_yt,
            USE_LENGTHS,
        )
        if USE_BARRIER:
            _grid_barrier(p_cnt + d * tl.cdiv(B, BLOCK_B) + b_tile, p_err, n_prog * (s - s_begin + 1), max_spins)
        else:  # one program: its warps reload elements other warps stored (the layouts differ)
            tl.debug_barrier()

    if final != 0:  # dh_0 from the dgates of the forward's first step (each row's time of step 0)
        t_first, _ = _row_times(0, d, lens)
        o_dg, m_dg = _row_tile(o_xrow + t_first * stride_xt, m_b, n_cols, K_PAD, SPLIT_K)
        dh0 = _recurrent_dh(p_dx, o_dg, m_dg, b_wt, SPLIT_K, PRECISION, UPCAST)
        tl.store(p_dh0 + o_s, _cast_for_store(dh0, p_dh0.dtype.element_ty, UPCAST), mask=m_s)
    tl.store(p_dc + o_s, dc, mask=m_s)
