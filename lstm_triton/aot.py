"""Compile the kernels for a GPU that is not here (default: sm_90, the H100/H200) with the
ptxas inside Triton's wheel, and report what each config costs on chip: shared memory,
registers, spills, the matmul instructions, and what the PTX checks of ``lstm_triton.ptx`` find
(weights read in the time loop, an unsynchronized or L1-cached exchange, a grid barrier without
release/acquire). Used by the compile check in the tests; also a CLI for developers:

    python -m lstm_triton.aot            # every config the launcher picks on the bench grid
                                         # and at hidden sizes that are not powers of two
    python -m lstm_triton.aot --stats    # per bench-grid shape: serial launches and what one
                                         # step of the time loop costs (SASS instruction counts)

Must run without TRITON_INTERPRET (the kernels are compiled, not interpreted).
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from .configs import (
    CONFIG_NAME_HELP,
    H200,
    Chip,
    LSTMConfig,
    backward_config,
    heuristic,
    training_config,
    varlen_config,
)
from .kernels.lstm_bwd import _lstm_bwd_kernel
from .kernels.lstm_fwd import _lstm_fwd_kernel
from .launch import Saved, Step, bwd_kernel_args, fwd_kernel_args, launch_groups, loops_over_batch
from .layout import PackedLayer, padded_hidden
from .ptx import check_ptx
from .sass import loop_stats, nvdisasm

SM90 = GPUTarget("cuda", 90, 32)
GRID_H = (128, 256, 512, 1024)
GRID_B = (1, 8, 64, 256)
# (dtype, exact fp32 dots): float32 runs TF32 dots unless torch.backends.cudnn.allow_tf32 is off
GRID_PRECISIONS = ((torch.bfloat16, False), (torch.float16, False), (torch.float32, False), (torch.float32, True))
# Hidden sizes that are not powers of two (padded reductions, masked units, P*BLOCK_H > H), at
# the grid's batch sizes; fp16 compiles as bf16 does
ODD_H = (20, 50, 100, 200, 768)
ODD_PRECISIONS = ((torch.bfloat16, False), (torch.float32, False), (torch.float32, True))


FWD, FWD_TRAIN, BWD = "fwd", "fwd-train", "bwd"  # inference forward, training forward (saves), backward
VARLEN_DTYPES = (torch.bfloat16,)  # per-sequence lengths change the code: compiled for these dtypes too


@dataclass
class CompileReport:
    kernel: str
    varlen: bool
    hidden_size: int
    dtype: str
    exact_fp32: bool
    config: dict
    shared_bytes: int
    regs: int
    spill_bytes: int
    matmul: str  # "wgmma", "mma.sync" or "fma"
    compile_s: float
    ptx_problems: list[str]  # what lstm_triton.ptx.check_ptx finds
    loop: dict | None  # one step of the time loop in SASS (``sass.loop_stats``), None without a loop

    def problems(self, chip: Chip = H200) -> list[str]:
        out = []
        if self.shared_bytes > chip.smem_per_block:
            out.append(f"shared memory {self.shared_bytes} B > {chip.smem_per_block} B")
        in_loop = self.loop is None or self.loop["counts"]["spill"] > 0
        if self.spill_bytes and in_loop:  # spills before or after the time loop cost nothing per step
            out.append(f"{self.spill_bytes} B of register spills, in the time loop")
        return out + self.ptx_problems


def compile_kernel(
    kind: str,
    config: LSTMConfig,
    hidden_size: int,
    batch: int,
    dirs: int,
    dtype: torch.dtype,
    exact_fp32: bool = False,
    varlen: bool = False,
    target: GPUTarget = SM90,
    chip: Chip = H200,
) -> CompileReport:
    """Compile one kernel (FWD, FWD_TRAIN or BWD; with per-sequence lengths when ``varlen``) as
    a persistent launch of this shape would: the same argument builder as the launcher, so the
    same specialization (pointer alignment and integer attributes change the code), and the
    batch loop where ``chip`` needs it for this shape. Tensors are empty CPU stand-ins."""
    H, h_pad = hidden_size, padded_hidden(hidden_size)
    n_cols = 4 * config.block_h * config.programs(H)
    T = 1  # the sequence length is not specialized; the strides do not depend on it
    xp = torch.empty(T, batch, dirs * n_cols, dtype=dtype)
    layer = PackedLayer(None, None, torch.empty(dirs, h_pad, n_cols, dtype=dtype), H, config.block_h)
    state = torch.empty(dirs, batch, H, dtype=dtype)
    state32 = torch.empty(dirs, batch, H)
    y = torch.empty(T, batch, dirs * H, dtype=dtype)
    cnt = torch.empty(dirs, triton.cdiv(batch, config.block_b), dtype=torch.int32)
    err = torch.empty(1, dtype=torch.int32)
    loop = loops_over_batch(config, H, batch, dirs, chip)
    step = Step(0, T, 0, 0, final=True, loop=loop, barrier=config.programs(H) > 1, interp=False, exact_fp32=exact_fp32)
    saved = Saved(torch.empty_like(xp), torch.empty_like(y))
    lengths = torch.empty(batch, dtype=torch.int32) if varlen else None
    if kind == BWD:
        kernel = _lstm_bwd_kernel
        args, kwargs = bwd_kernel_args(
            y, saved, state, layer, state32, state32, torch.empty_like(xp), state, lengths, cnt, err, config, step
        )
    else:
        kernel = _lstm_fwd_kernel
        train = saved if kind == FWD_TRAIN else None
        args, kwargs = fwd_kernel_args(xp, layer, state, state32, y, train, lengths, cnt, err, config, step)
    t0 = time.time()
    compiled, names = compile_call(kernel, args, kwargs, target)
    compile_s = time.time() - t0
    ptx = compiled.asm["ptx"]
    regs, spills = _ptxas_resources(ptx, target)
    ptx_problems = check_ptx(
        ptx,
        names,
        weights="p_w",
        exchange="p_dx" if kind == BWD else "p_y",
        counter="p_cnt" if step.barrier else None,
    )
    matmul = "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "fma"
    loop = loop_stats(nvdisasm(compiled.asm["cubin"]))
    return CompileReport(
        kind,
        varlen,
        H,
        str(dtype).removeprefix("torch."),
        exact_fp32,
        asdict(config),
        compiled.metadata.shared,
        regs,
        spills,
        matmul,
        round(compile_s, 1),
        ptx_problems,
        None if loop is None else asdict(loop),
    )


def compile_call(kernel, args, kwargs, target: GPUTarget = SM90):
    """Compile ``kernel`` as a launch with these arguments would specialize it (Triton's own
    binder). Returns the compiled kernel and the names of its non-constexpr arguments, in the
    order of its PTX parameters."""
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, options)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compiled, [name for name, ty in signature.items() if ty != "constexpr"]


def _ptxas_resources(ptx: str, target: GPUTarget) -> tuple[int, int]:
    """(registers per thread, spill bytes stored + loaded) from ptxas -v, the ptxas Triton itself
    assembles this target with (triton 3.9 emits PTX that only its ``ptxas-blackwell`` reads)."""
    ptxas = get_ptxas(target.arch).path
    arch = f"sm_{target.arch}a" if target.arch >= 90 else f"sm_{target.arch}"
    with tempfile.TemporaryDirectory(prefix="lstm_triton_aot_") as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        r = subprocess.run(
            [ptxas, f"-arch={arch}", "-v", path, "-o", os.path.join(d, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        )
    text = r.stdout + r.stderr
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return regs, int(spills.group(1)) + int(spills.group(2))


def grid_shapes(odd: bool = True):
    """(dtype, exact_fp32, H, B): the bench grid, then (with ``odd``) ODD_H at the grid's batch sizes."""
    for hidden, precisions in ((GRID_H, GRID_PRECISIONS), (ODD_H, ODD_PRECISIONS))[: 2 if odd else 1]:
        for dtype, exact in precisions:
            for H in hidden:
                for B in GRID_B:
                    yield dtype, exact, H, B


def shape_kernels(shapes, chip: Chip = H200, varlen_dtypes=VARLEN_DTYPES):
    """Per shape (dtype, exact_fp32, H, B) and direction count, each kernel a call runs,
    inference and training (with per-sequence lengths too for ``varlen_dtypes``):
    (kind, config, H, B, dirs, dtype, exact_fp32, varlen)."""
    for dtype, exact, H, B in shapes:
        for dirs in (1, 2):
            cfg = heuristic(H, B, dirs, dtype, chip, exact_fp32=exact)
            if cfg is None:
                continue
            for varlen in (False, True) if dtype in varlen_dtypes else (False,):
                fwd = varlen_config(cfg) if varlen else cfg
                bwd = backward_config(fwd, H, dtype, chip, exact_fp32=exact)
                for kind, c in ((FWD, fwd), (FWD_TRAIN, training_config(fwd)), (BWD, bwd)):
                    if c is not None:
                        yield kind, c, H, B, dirs, dtype, exact, varlen


def grid_configs(chip: Chip = H200):
    """Every distinct kernel compile the launchers need on the bench grid and at ODD_H,
    inference and training (with per-sequence lengths for VARLEN_DTYPES), one shape per
    distinct compile."""
    seen = {}
    for job in shape_kernels(grid_shapes(), chip):
        seen.setdefault(_compile_key(job), job)
    return list(seen.values())


def stats_row(job, rep: CompileReport, chip: Chip = H200) -> dict:
    """One shape's kernel: its config, the serial launches of one call (barrier groups that are
    not co-resident at once run one after another, each for every step) and its time loop."""
    kind, cfg, H, B, dirs, dtype, exact, _ = job
    n_tiles = triton.cdiv(B, cfg.block_b)
    return dict(
        kernel=kind,
        hidden_size=H,
        B=B,
        dirs=dirs,
        dtype=str(dtype).removeprefix("torch."),
        exact_fp32=exact,
        config=cfg.label(H),
        launches=len(launch_groups(cfg.programs(H), n_tiles, dirs, chip, cfg.batch_loop)),
        batch_loop=loops_over_batch(cfg, H, B, dirs, chip),
        loop=rep.loop,
    )


def label(kind, config, H, dtype, exact, varlen) -> str:
    flags = ("-ieee" if exact else "") + ("-varlen" if varlen else "")
    return f"{kind}-H{H}-{str(dtype).removeprefix('torch.')}{flags}-{config.label(H)}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only",
        default="",
        help=f"regex over '<kind>-H<h>-<dtype>[-ieee][-varlen]-<config>' labels; {CONFIG_NAME_HELP}",
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles in parallel")
    ap.add_argument(
        "--stats",
        action="store_true",
        help="per bench-grid shape and kernel: serial launches per call and the time loop's SASS "
        "instructions per step by class, CTA barriers between the last MMA and the step's store "
        "(critical_bar), plain global loads after the grid barrier's wait (loads_after_wait); a "
        "proxy for a step's cost, never a time",
    )
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: this compiles the kernels for the GPU")
    jobs = list(shape_kernels(grid_shapes(odd=False), varlen_dtypes=())) if args.stats else grid_configs()
    todo = [j for j in jobs if not args.only or re.search(args.only, label(*j[:3], *j[5:]))]
    if not todo:
        raise SystemExit(f"--only {args.only!r} matches no config")
    compiles = {}  # each distinct compile once, at the first shape that needs it
    for job in todo:
        compiles.setdefault(_compile_key(job), job)
    with ProcessPoolExecutor(args.jobs) as pool:
        reports = dict(zip(compiles, pool.map(_compile_one, compiles.values()), strict=True))
    for job in todo:
        rep = reports[_compile_key(job)]
        row = stats_row(job, rep) if args.stats else dict(asdict(rep), B=job[3], dirs=job[4], problems=rep.problems())
        print(json.dumps(row), flush=True)


def _compile_key(job):
    """A compile's identity, as ``grid_configs`` counts them: the batch size and directions
    change only strides and whether the batch loop runs, so one shape stands for the others of
    its kernel and loop."""
    kind, cfg, H, B, dirs, dtype, exact, varlen = job
    return kind, cfg, H, dtype, exact, varlen, loops_over_batch(cfg, H, B, dirs, H200)


def _compile_one(job) -> CompileReport:
    kind, cfg, H, B, dirs, dtype, exact, varlen = job
    return compile_kernel(kind, cfg, H, B, dirs, dtype, exact, varlen)


if __name__ == "__main__":
    main()
