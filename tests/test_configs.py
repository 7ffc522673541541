"""Config selection and the weight layout, without launching anything."""

import pytest
import torch

from lstm_triton import LSTMConfig
from lstm_triton.aot import GRID_B, GRID_H, GRID_PRECISIONS
from lstm_triton.configs import H200, Chip, check_config, fits, heuristic
from lstm_triton.layout import gate_rows, num_programs, pack_layer, padded_hidden


@pytest.mark.parametrize("dtype, exact", GRID_PRECISIONS, ids=["bf16", "fp16", "fp32-tf32", "fp32-ieee"])
def test_heuristic_fits_the_h200_on_the_bench_grid(dtype, exact):
    for H in GRID_H:
        for B in GRID_B:
            for dirs in (1, 2):
                cfg = heuristic(H, B, dirs, dtype, H200, exact_fp32=exact)
                assert cfg is not None, (H, B, dirs)
                check_config(cfg, H)
                assert fits(cfg, H, dtype, H200), (H, B, dirs, cfg)
                assert cfg.programs(H) <= H200.n_sm


def test_heuristic_returns_none_when_the_weights_cannot_stay_on_chip():
    assert heuristic(4096, 8, 1, torch.bfloat16, H200) is None
    small = Chip("small", n_sm=4, smem_per_block=48 * 1024)
    assert heuristic(1024, 8, 1, torch.float32, small) is None


def test_heuristic_keeps_both_directions_in_one_wave_where_they_fit():
    """H=1024, B=8: 64 programs per direction, so both directions are co-resident."""
    cfg = heuristic(1024, 8, 2, torch.bfloat16, H200)
    assert 2 * cfg.programs(1024) <= H200.n_sm


def test_check_config_rejects_what_cannot_compile():
    check_config(LSTMConfig(block_h=16, block_b=8, split_k=2), 48)
    for bad in (
        LSTMConfig(block_h=12, block_b=8),
        LSTMConfig(block_h=16, block_b=8, split_k=8),
        LSTMConfig(block_h=128, block_b=8),
        LSTMConfig(block_h=8, block_b=1, split_k=2, use_fma=True),
    ):
        with pytest.raises(ValueError):
            check_config(bad, 48)


@pytest.mark.parametrize("H, block_h", [(48, 16), (61, 16), (5, 8), (64, 64), (20, 32)])
def test_gate_rows_is_a_padded_permutation(H, block_h):
    rows = gate_rows(H, block_h)
    P = num_programs(H, block_h)
    assert rows.numel() == P * 4 * block_h
    real = rows[rows < 4 * H]
    assert torch.equal(real.sort().values, torch.arange(4 * H))  # every gate row exactly once
    assert (rows == 4 * H).sum() == P * 4 * block_h - 4 * H


def test_pack_layer_columns_hold_the_right_gates():
    """Column j of program p holds gate 2*g1 + g0 of unit p*BLOCK_H + u, j = g1*2*BH + 2u + g0."""
    H, I, BH = 6, 3, 4
    w_ih = [torch.arange(4 * H * I, dtype=torch.float32).view(4 * H, I)]
    w_hh = [torch.arange(4 * H * H, dtype=torch.float32).view(4 * H, H)]
    p = pack_layer(w_ih, w_hh, [None], [None], BH)
    assert p.bias is None and p.w_hh.shape == (1, padded_hidden(H), 2 * 4 * BH)
    for prog in range(2):
        for j in range(4 * BH):
            g1, u, g0 = j // (2 * BH), (j % (2 * BH)) // 2, j % 2
            unit, col = prog * BH + u, prog * 4 * BH + j
            if unit < H:
                row = (2 * g1 + g0) * H + unit
                assert torch.equal(p.w_ih[col], w_ih[0][row])
                assert torch.equal(p.w_hh[0, :H, col], w_hh[0][row])
            else:
                assert not p.w_ih[col].any() and not p.w_hh[0, :, col].any()
    assert not p.w_hh[0, H:].any()  # padded reduction rows
