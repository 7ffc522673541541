"""Persistent LSTM backward recurrence: the forward's program layout, walking time in reverse.

Program ``(p, b, d)`` owns hidden units ``[p*BLOCK_H, (p+1)*BLOCK_H)`` of direction ``d`` for
batch tile ``b``. It carries ``dc`` in registers and holds ``W_hh[:, own units]`` (all ``4H``
gate rows, ``[K_PAD, BLOCK_H]``) on chip for all steps. Each step it turns ``dh`` into the
gradients of its units' four gate pre-activations (from the saved activations and cell
states), stores them into ``dxp`` (the gradient of the input projection, in the packed column
order), passes the group's barrier, and reads the whole ``dxp[t]`` row back to form the next
step's recurrent ``dh = dgates_t @ W_hh[:, own units]``. Weight gradients are GEMMs on the host
afterwards: no atomics, so gradients are reproducible bit for bit.

BATCH_LOOP: as in the forward, a program walks batch tiles ``b, b + nb, ...`` in each step, and
each tile's ``dc`` lives in ``p_dc`` between steps.

Backward step ``s`` is the forward's step ``k = T - 1 - s`` (``_row_times`` maps it to each
row's time). A sequence shorter than T enters at its own last step, where the gradient of h_n
joins; before that its cell-state gradient holds and its gate gradients are zero.
"""

import triton
import triton.language as tl

from .common import (
    INTERPRETED,
    _cast_for_store,
    _end_step,
    _join_gates,
    _row_tile,
    _row_times,
    _split_gates,
    _step_rows,
    _sum_splits,
    _tanh,
    _tile_rows,
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
        return _sum_splits(tl.dot(b_dg, b_wt, input_precision=PRECISION))


@triton.jit
def _saved_step(saved_at, o_rows, k, live, d, lens, m_b, m_s, USE_LENGTHS: tl.constexpr):
    """What the backward reads of the forward's step ``k`` (nothing unless ``live``), as stored:
    dy, the activated gates, c_k and c_{k-1} (zero past a row's length, and c_{k-1} at k = 0).
    ``saved_at``: (p_dy, p_gates, p_cs, o_x, o_us, stride_dyt, stride_xt, stride_yt), the same
    every step; ``o_rows``: the tile's row starts in dy, gates and cs (o_dyrow, o_xrow, o_yrow)."""
    p_dy, p_gates, p_cs, o_x, o_us, stride_dyt, stride_xt, stride_yt = saved_at
    o_dyrow, o_xrow, o_yrow = o_rows
    t, rows = _step_rows(k, d, lens, m_b, USE_LENGTHS)
    rows = tl.where(live, rows, False) if INTERPRETED else rows & live
    m_own = m_s & rows[:, None]
    b_dy = tl.load(p_dy + (o_dyrow + t * stride_dyt)[:, None] + o_us, mask=m_own, other=0.0)
    b_a = tl.load(p_gates + (o_xrow + t * stride_xt)[:, None] + o_x, mask=rows[:, None], other=0.0)
    b_c = tl.load(p_cs + (o_yrow + t * stride_yt)[:, None] + o_us, mask=m_own, other=0.0)
    t_earlier, _ = _row_times(k - 1, d, lens)  # the forward's previous step (k >= 1)
    o_cp = (o_yrow + t_earlier * stride_yt)[:, None] + o_us
    m_cp = tl.where(k > 0, m_own, False) if INTERPRETED else m_own & (k > 0)
    b_cp = tl.load(p_cs + o_cp, mask=m_cp, other=0.0)
    return b_dy, b_a, b_c, b_cp


@triton.jit
def _bwd_step_tile(
    p_dx,
    saved,
    dh,
    dh_n,
    dc,
    c_first,
    k,
    lens,
    rows,
    m_b,
    o_xt,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    USE_LENGTHS: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Backward through the forward's step ``k`` for one batch tile: from the recurrent ``dh``,
    the saved values and ``dc``, store the gate gradients at ``o_xt``; returns the new dc.
    ``dh_n`` joins at each row's last step, ``c_first`` (c_{-1}) stands for c_{k-1} at k = 0."""
    b_dy, b_a, b_c, b_cp = saved
    if USE_LENGTHS:  # a sequence's last step receives the gradient of h_n
        dh += tl.where(((k == lens - 1) & m_b)[:, None], dh_n, 0.0)
    elif k == lens - 1:
        dh += dh_n
    dh += b_dy.to(tl.float32)
    a_i, a_f, a_g, a_o = _split_gates(b_a.to(tl.float32), BLOCK_B, BLOCK_H)
    c = b_c.to(tl.float32)
    c_prev = tl.where(k == 0, c_first, b_cp.to(tl.float32))

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
    return dc


@triton.jit
def _dh_after(
    p_dx,
    b_wt,
    k,
    d,
    lens,
    m_b,
    o_xrow,
    n_cols,
    stride_xt,
    K_PAD: tl.constexpr,
    SPLIT_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """dh through W_hh from every unit's dgates of the forward's step ``k`` (the previous
    backward step): [BLOCK_B, BLOCK_H]."""
    t_later, _ = _row_times(k, d, lens)
    o_dg, m_dg = _row_tile(o_xrow + t_later * stride_xt, m_b, n_cols, K_PAD, SPLIT_K)
    return _recurrent_dh(p_dx, o_dg, m_dg, b_wt, SPLIT_K, PRECISION, UPCAST)


@triton.jit(do_not_specialize=["T", "B", "s_begin", "n_steps", "final", "b_tile0", "d0", "max_spins"])
def _lstm_bwd_kernel(
    p_dy,  # [T, B, DIRS * H] gradient of the output (strides below)
    p_gates,  # [T, B, DIRS * n_cols] the forward's saved activations (xp's strides)
    p_cs,  # [T, B, DIRS * H] the forward's saved cell states (y's strides)
    p_c0,  # [DIRS, B, H] initial cell state (read when USE_INITIAL_STATE)
    p_w,  # [DIRS, H_PAD, n_cols] packed W_hh^T, as the forward had it
    p_dhn,  # [DIRS, B, H] fp32 gradient of h_n
    p_dc,  # [DIRS, B, H] fp32 cell-state gradient: read at s_begin, written at the end (BATCH_LOOP: every step)
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
    BATCH_LOOP: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_p = tl.program_id(0)
    n_prog = tl.num_programs(0)
    b_tile = tl.program_id(1) + b_tile0  # the first (BATCH_LOOP) or only batch tile
    d = tl.program_id(2) + d0
    N: tl.constexpr = 4 * BLOCK_H
    n_cols = n_prog * N
    p_cnt += d * tl.cdiv(B, BLOCK_B) + b_tile  # the group's barrier counter

    # W_hh[:, own units] = rows p*BLOCK_H.. of the packed W_hh^T, read transposed: [K_PAD, BLOCK_H]
    # (or [SPLIT_K, K_PAD // SPLIT_K, BLOCK_H] for a split-K dot)
    o_unit = pid_p * BLOCK_H + tl.arange(0, BLOCK_H)
    p_wd = p_w + d * H_PAD * n_cols
    if SPLIT_K == 1:
        o_k = tl.arange(0, K_PAD)[:, None]
        o_wu = o_unit[None, :]
    else:
        KS: tl.constexpr = K_PAD // SPLIT_K
        o_k = tl.arange(0, SPLIT_K)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]
        o_wu = o_unit[None, None, :]
    b_wt = tl.load(p_wd + o_wu * n_cols + o_k, mask=o_k < n_cols, other=0.0)
    if UPCAST:
        b_wt = b_wt.to(tl.float32)
    o_us = d * H + o_unit[None, :]  # own units within a row of cs[t] / dy[t]
    o_x = pid_p * N + tl.arange(0, N)[None, :]  # own gate columns within a row
    saved_at = (p_dy, p_gates, p_cs, o_x, o_us, stride_dyt, stride_xt, stride_yt)  # what _saved_step reads with
    s_end = s_begin + n_steps

    # the first tile's rows, and its first step's saved values (the batch loop loads each tile's
    # during the tile before: a step's first tile's before the barrier wait)
    o_b, m_b, o_b64, lens, m_s, o_s = _tile_rows(b_tile, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS)
    o_xrow = o_b64 * stride_xb + d * n_cols  # row starts in gates[t] / dx[t] (+ time * stride_xt)
    o_yrow = o_b64 * stride_yb  # row starts in cs[t] (+ time * stride_yt)
    o_dyrow = o_b64 * stride_dyb
    o_rows = (o_dyrow, o_xrow, o_yrow)
    saved = _saved_step(saved_at, o_rows, T - 1 - s_begin, s_begin < s_end, d, lens, m_b, m_s, USE_LENGTHS)
    if BATCH_LOOP:
        n_b = tl.num_programs(1)
        n_tiles = tl.cdiv(tl.cdiv(B, BLOCK_B) - b_tile, n_b)
        for s in range(s_begin, s_end):
            k = T - 1 - s  # the forward step
            # rows of other tiles: their dgates of step k + 1 were stored before the last barrier.
            # One stage: the W_hh slice leaves shared memory for one dgates tile, not the
            # pipeliner's copies of the next ones (sm_90 compile check)
            for j in tl.range(n_tiles, num_stages=1):
                o_b, m_b, o_b64, lens, m_s, o_s = _tile_rows(
                    b_tile + j * n_b, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS
                )
                dc = tl.load(p_dc + o_s, mask=m_s, other=0.0)
                # dh_n and c_{-1} only where a step needs them (each load costs a layout change)
                dh_n = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                if USE_LENGTHS:
                    dh_n = tl.load(p_dhn + o_s, mask=m_s & (k == lens - 1)[:, None], other=0.0)
                elif s == 0:
                    dh_n = tl.load(p_dhn + o_s, mask=m_s, other=0.0)
                c_first = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # c_{-1}: the initial state
                if USE_INITIAL_STATE and k == 0:
                    c_first = tl.load(p_c0 + o_s, mask=m_s, other=0.0).to(tl.float32)
                o_xrow = o_b64 * stride_xb + d * n_cols
                if s == 0:
                    dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                else:
                    dh = _dh_after(
                        p_dx, b_wt, k + 1, d, lens, m_b, o_xrow, n_cols, stride_xt, K_PAD, SPLIT_K, PRECISION, UPCAST
                    )
                t, rows = _step_rows(k, d, lens, m_b, USE_LENGTHS)
                o_xt = (o_xrow + t * stride_xt)[:, None] + o_x
                dc = _bwd_step_tile(
                    p_dx, saved, dh, dh_n, dc, c_first, k, lens, rows, m_b, o_xt, BLOCK_B, BLOCK_H, USE_LENGTHS, UPCAST
                )
                tl.store(p_dc + o_s, dc, mask=m_s)
                # the next tile (after the last, the next step's first): its rows and saved values
                wrap = j + 1 == n_tiles
                s_next = tl.where(wrap, s + 1, s)
                tile = tl.where(wrap, b_tile, b_tile + (j + 1) * n_b)
                _, m_bn, o_bn64, lens_n, m_sn, _ = _tile_rows(tile, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS)
                o_rows_n = (o_bn64 * stride_dyb, o_bn64 * stride_xb + d * n_cols, o_bn64 * stride_yb)
                saved = _saved_step(
                    saved_at, o_rows_n, T - 1 - s_next, s_next < s_end, d, lens_n, m_bn, m_sn, USE_LENGTHS
                )
            _end_step(p_cnt, p_err, n_prog * (s - s_begin + 1), max_spins, USE_BARRIER)
        if final != 0:  # dh_0 from the dgates of the forward's first step (each row's time of step 0)
            for j in tl.range(n_tiles, num_stages=1):
                o_b, m_b, o_b64, lens, m_s, o_s = _tile_rows(
                    b_tile + j * n_b, B, p_len, T, d, o_unit, H, BLOCK_B, USE_LENGTHS
                )
                o_xrow = o_b64 * stride_xb + d * n_cols
                dh0 = _dh_after(
                    p_dx, b_wt, 0, d, lens, m_b, o_xrow, n_cols, stride_xt, K_PAD, SPLIT_K, PRECISION, UPCAST
                )
                tl.store(p_dh0 + o_s, _cast_for_store(dh0, p_dh0.dtype.element_ty, UPCAST), mask=m_s)
    else:
        dc = tl.load(p_dc + o_s, mask=m_s, other=0.0)
        dh_n = tl.load(p_dhn + o_s, mask=m_s, other=0.0)
        c_first = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # c_{-1}: the initial state
        if USE_INITIAL_STATE:
            c_first = tl.load(p_c0 + o_s, mask=m_s, other=0.0).to(tl.float32)
        for s in range(s_begin, s_end):
            k = T - 1 - s  # the forward step
            if s == 0:
                dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
            else:
                dh = _dh_after(
                    p_dx, b_wt, k + 1, d, lens, m_b, o_xrow, n_cols, stride_xt, K_PAD, SPLIT_K, PRECISION, UPCAST
                )
            t, rows = _step_rows(k, d, lens, m_b, USE_LENGTHS)
            o_xt = (o_xrow + t * stride_xt)[:, None] + o_x
            dc = _bwd_step_tile(
                p_dx, saved, dh, dh_n, dc, c_first, k, lens, rows, m_b, o_xt, BLOCK_B, BLOCK_H, USE_LENGTHS, UPCAST
            )
            saved = _saved_step(saved_at, o_rows, k - 1, s + 1 < s_end, d, lens, m_b, m_s, USE_LENGTHS)
            _end_step(p_cnt, p_err, n_prog * (s - s_begin + 1), max_spins, USE_BARRIER)
        if final != 0:  # dh_0 from the dgates of the forward's first step (each row's time of step 0)
            dh0 = _dh_after(p_dx, b_wt, 0, d, lens, m_b, o_xrow, n_cols, stride_xt, K_PAD, SPLIT_K, PRECISION, UPCAST)
            tl.store(p_dh0 + o_s, _cast_for_store(dh0, p_dh0.dtype.element_ty, UPCAST), mask=m_s)
        tl.store(p_dc + o_s, dc, mask=m_s)
