"""What a step costs, read from the compiled sm_90 code: ``lstm_triton.sass`` on hand-written
SASS (its rules), and ``python -m lstm_triton.aot --stats`` on the kernels the launchers pick."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict

import pytest
import triton

from lstm_triton import aot
from lstm_triton.configs import GATES_ON_M_PAYS, H200
from lstm_triton.launch import launch_groups
from lstm_triton.layout import padded_hidden
from lstm_triton.sass import loop_stats

# CTA barriers a B <= 8 forward may keep between its last MMA and the store of h: the split-K
# sum as one shared-memory round trip (``kernels.common._sum_splits``). Its ``tl.sum`` over the
# warps took 4 under triton 3.6 and 15 under 3.8 (H=1024 with 16 units a program). A version
# without an entry fails: its compiled code is new, so its bound must be read from it first.
MAX_CRITICAL_BAR = {"3.6": 1, "3.8": 1, "3.9": 1}

# A time loop (.L_x_1 .. the BRA back to it) holding a barrier's poll loop (.L_x_2), in the
# shape nvdisasm prints; LOADS_AFTER_WAIT stands where a step's plain loads would sit.
SASS = """
        /*0000*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
.L_x_1:
        /*0010*/                   LDG.E.128.STRONG.GPU R8, desc[UR4][R6.64] ;
        /*0020*/                   HMMA.16816.F32.BF16 R12, R8, R4, R12 ;
        /*0030*/                   HMMA.16816.F32.BF16 R16, R8, R4, R16 ;
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0050*/                   STS [R20], R12 ;
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0070*/                   LDS R22, [R21] ;
        /*0080*/                   MUFU.EX2 R23, R22 ;
        /*0090*/                   FFMA R24, R23, R22, R23 ;
        /*00a0*/                   STG.E.U16 desc[UR4][R26.64], R24 ;
        /*00b0*/                   LDG.E.128 R28, desc[UR4][R30.64] ;
        /*00c0*/                   REDG.E.ADD.STRONG.GPU desc[UR4][R32.64], R33 ;
.L_x_2:
        /*00d0*/                   LDG.E.STRONG.GPU R34, desc[UR4][R32.64] ;
        /*00e0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*00f0*/              @!P0 BRA `(.L_x_2) ;
LOADS_AFTER_WAIT
        /*0200*/               @P1 BRA `(.L_x_1) ;
        /*0210*/                   EXIT ;
.L_x_3:
        /*0220*/                   BRA `(.L_x_3);
"""
PLAIN_LOAD = "        /*01{:02x}*/                   LDG.E R40, desc[UR4][R42.64] ;"


def test_loop_stats_counts_one_step_of_the_time_loop():
    stats = loop_stats(SASS.replace("LOADS_AFTER_WAIT", ""))
    counts = dict(mma=2, ldg=3, stg=1, lds=1, sts=1, bar=3, atom=1, mufu=1, ffma=1, spill=0, total=16)
    assert stats.counts == counts  # from .L_x_1 to its BRA; the load before the loop and the trailing self-loop are out
    assert stats.critical_bar == 2  # between the last HMMA and the STG
    assert stats.loads_after_wait == 0  # the LDG before the poll loop is the next step's, issued early


def test_loop_stats_sees_loads_behind_the_wait():
    loads = "\n".join(PLAIN_LOAD.format(i) for i in range(3))
    stats = loop_stats(SASS.replace("LOADS_AFTER_WAIT", loads))
    assert stats.loads_after_wait == 3 and stats.counts["ldg"] == 6


@pytest.mark.parametrize("in_loop, problem", [(False, False), (True, True)], ids=["outside", "inside"])
def test_spills_count_only_inside_the_time_loop(in_loop, problem):
    """Spilled registers cost a step only where the time loop touches local memory: the compile
    check rejects those spills, not the ones before or after the loop."""
    spill = "        /*0100*/                   STL [R1+0x10], R40 ;"
    text = SASS.replace("LOADS_AFTER_WAIT", spill if in_loop else "")
    if not in_loop:  # after the loop, before the EXIT
        text = text.replace(
            "        /*0210*/                   EXIT ;", spill.replace("0100", "0208") + "\n        /*0210*/ EXIT ;"
        )
    stats = loop_stats(text)
    assert stats.counts["spill"] == int(in_loop)
    report = aot.CompileReport(
        "fwd", False, 1024, "bfloat16", False, {}, 0, 255, 16, "mma.sync", 0.0, [], asdict(stats)
    )
    assert bool(report.problems()) == problem


def test_a_kernel_without_a_loop_has_no_stats():
    assert loop_stats("        /*0000*/                   EXIT ;\n") is None


@pytest.mark.compile
def test_aot_stats_on_the_small_batch_kernels():
    """The B <= 8 forward keeps few CTA barriers between its last MMA and the store of h
    (MAX_CRITICAL_BAR) and, where the transposed dot pays, half the MMAs; no backward without
    the batch loop issues a plain global load after its barrier's wait (with it, the next
    tile's saved values are loaded before the wait; its cell-state gradient, written by this
    program, after)."""
    version = ".".join(triton.__version__.split(".")[:2])
    assert version in MAX_CRITICAL_BAR, f"triton {version}: read its critical_bar with aot --stats, then add it"
    max_critical_bar = MAX_CRITICAL_BAR[version]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    only = r"^(fwd|bwd)-H1024-bfloat16-P(128|64)-BH(8|16)-BB8-dotT?-splitk[48]"
    cmd = [sys.executable, "-m", "lstm_triton.aot", "--stats", "--only", only]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {(row["kernel"], row["B"]) for row in rows} >= {("fwd", 8), ("bwd", 8)}, rows
    for row in rows:
        loop = row["loop"]
        assert row["launches"] >= 1 and loop["counts"]["mma"] > 0 and loop["counts"]["total"] > 0, row
        if row["kernel"] == "fwd" and row["B"] <= 8:
            assert loop["critical_bar"] <= max_critical_bar, row
            # the transposed dot where it pays: one m16n8k16 per 16 gate rows, 8 batch rows and
            # 16 of a warp's K-chunk, none padding (the untransposed dot pads 8 rows to 16: twice)
            block_h, split_k = (int(v) for v in re.search(r"-BH(\d+)-.*-splitk(\d+)", row["config"]).groups())
            transposed = GATES_ON_M_PAYS
            assert ("-dotT-" in row["config"]) == transposed, row
            mma = 4 * block_h // 16 * padded_hidden(row["hidden_size"]) // (16 * split_k)
            assert loop["counts"]["mma"] == (mma if transposed else 2 * mma), row
        if row["kernel"] == "bwd" and not row["batch_loop"]:  # the loop's next tile: dc after the wait
            assert loop["loads_after_wait"] == 0, row


def test_every_call_of_the_bench_grid_is_one_launch():
    """With the batch loop, each kernel of every bench-grid shape (inference, training forward,
    backward; per-sequence lengths too) runs as one launch on the H200, however large the batch:
    one per direction only where two directions' weight slices exceed the chip (float32 at
    H=1024: 2 x 128 programs on 132 SMs)."""
    serial = []
    for kind, cfg, H, B, dirs, dtype, exact, varlen in aot.shape_kernels(aot.grid_shapes()):
        P = cfg.programs(H)
        n_launches = len(launch_groups(P, triton.cdiv(B, cfg.block_b), dirs, H200, cfg.batch_loop))
        if n_launches != (1 if dirs * P <= H200.n_sm else dirs):
            serial.append(f"{aot.label(kind, cfg, H, dtype, exact, varlen)} B={B} dirs={dirs}: {n_launches} launches")
    assert not serial, "\n".join(serial)
