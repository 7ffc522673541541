"""Persistent LSTM backward recurrence: the forward's program layout, walking time in reverse.

Program ``(p, b, d)`` owns hidden units ``[p*BLOCK_H, (p+1)*BLOCK_H)`` of direction ``d`` for
batch tile ``b``. It carries ``dc`` in registers and holds ``W_hh[:, own units]`` (all ``4H``
gate rows, ``[K_PAD, BLOCK_H]``) on chip for all steps. Each step it turns ``dh`` into the
gradients of its units' four gate pre-activations (from the saved activations and cell
states), stores them into ``dxp`` (the gradient of the input projection, in the packed column
order), passes the group's barrier, and reads the whole ``dxp[t]`` row back to form the next
step's recurrent ``dh = dgates_t @ W_hh[:, own units]``. Weight gradients are GEMMs on the host
afterwards: no atomics, so gradients are reproducible bit for bit.

Backward step ``s`` is the forward's step ``T - 1 - s``: time ``T - 1 - s`` for direction 0,
time ``s`` for direction 1.
"""

import triton
import triton.language as tl

from .common import _grid_barrier, _join_gates, _row_tile, _split_gates, _tanh


@triton.jit
def _recurrent_dh(p_dxt, o_dg, m_dg, b_wt, SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dh of this program's units from the whole dgates row of one step: [BLOCK_B, BLOCK_H]."""
    # .cg: read through L2, never from this SM's L1, which other programs' stores bypass
    b_dg = tl.load(p_dxt + o_dg, mask=m_dg, other=0.0, cache_modifier=".cg")
    if UPCAST:
        b_dg = b_dg.to(tl.float32)
    if SPLIT_K == 1:
        return tl.dot(b_dg, b_wt, input_precision=PRECISION)
    else:  # warp s reduces K-chunk s, then one cross-warp sum
        return tl.sum(tl.dot(b_dg, b_wt, input_precision=PRECISION), axis=0)


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

    o_b = b_tile * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    o_b64 = o_b.to(tl.int64)
    m_s = m_b[:, None] & (o_unit < H)[None, :]
    o_s = d * B * H + o_b[:, None] * H + o_unit[None, :]  # own slice of [DIRS, B, H]
    o_ys = o_b64[:, None] * stride_yb + d * H + o_unit[None, :]  # own slice of cs[t]
    o_dys = o_b64[:, None] * stride_dyb + d * H + o_unit[None, :]  # own slice of dy[t]
    o_row = o_b64 * stride_xb + d * n_cols
    o_x = o_row[:, None] + pid_p * N + tl.arange(0, N)[None, :]  # own gate columns of gates[t] / dx[t]
    m_x = m_b[:, None]
    o_dg, m_dg = _row_tile(o_row, m_b, n_cols, K_PAD, SPLIT_K)  # all gate columns of dx[t]

    dc = tl.load(p_dc + o_s, mask=m_s, other=0.0)
    c_first = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # c_{-1}: the initial state
    if USE_INITIAL_STATE:
        c_first = tl.load(p_c0 + o_s, mask=m_s, other=0.0).to(tl.float32)

    s_end = s_begin + n_steps
    t = (T - 1 - s_begin) + d * (2 * s_begin - T + 1)
    for s in range(s_begin, s_end):
        t64 = t.to(tl.int64)
        t_later = t + 1 - 2 * d  # the time backward step s - 1 processed
        if s == 0:
            dh = tl.load(p_dhn + o_s, mask=m_s, other=0.0)
        else:
            dh = _recurrent_dh(p_dx + t_later.to(tl.int64) * stride_xt, o_dg, m_dg, b_wt, SPLIT_K, PRECISION, UPCAST)
        dh += tl.load(p_dy + t64 * stride_dyt + o_dys, mask=m_s, other=0.0).to(tl.float32)

        b_a = tl.load(p_gates + t64 * stride_xt + o_x, mask=m_x, other=0.0).to(tl.float32)
        a_i, a_f, a_g, a_o = _split_gates(b_a, BLOCK_B, BLOCK_H)
        c = tl.load(p_cs + t64 * stride_yt + o_ys, mask=m_s, other=0.0).to(tl.float32)
        first = s == T - 1  # the forward's first step: c_{t-1} is the initial state
        t_earlier = t - 1 + 2 * d
        c_prev = tl.load(p_cs + t_earlier.to(tl.int64) * stride_yt + o_ys, mask=m_s & (s < T - 1), other=0.0)
        c_prev = tl.where(first, c_first, c_prev.to(tl.float32))

        tc = _tanh(c)
        dc += dh * a_o * (1.0 - tc * tc)
        d_i = dc * a_g * a_i * (1.0 - a_i)
        d_f = dc * c_prev * a_f * (1.0 - a_f)
        d_g = dc * a_i * (1.0 - a_g * a_g)
        d_o = dh * tc * a_o * (1.0 - a_o)
        dc = dc * a_f
        b_dg = _join_gates(d_i, d_f, d_g, d_o, BLOCK_B, BLOCK_H)
        tl.store(p_dx + t64 * stride_xt + o_x, b_dg.to(p_dx.dtype.element_ty), mask=m_x)
        if USE_BARRIER:
            _grid_barrier(p_cnt + d * tl.cdiv(B, BLOCK_B) + b_tile, p_err, n_prog * (s - s_begin + 1), max_spins)
        t = t_earlier

    if final != 0:  # dh_0 from the dgates of the forward's first step (time 0, or T - 1 reversed)
        t_first = d * (T - 1)
        dh0 = _recurrent_dh(p_dx + t_first.to(tl.int64) * stride_xt, o_dg, m_dg, b_wt, SPLIT_K, PRECISION, UPCAST)
        tl.store(p_dh0 + o_s, dh0.to(p_dh0.dtype.element_ty), mask=m_s)
    tl.store(p_dc + o_s, dc, mask=m_s)
