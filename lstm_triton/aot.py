"""Compile the kernels for a GPU that is not here (default: sm_90, the H100/H200) with the
ptxas inside Triton's wheel, and report what each config costs on chip: shared memory,
registers, spills, the matmul instructions. Used by the compile check in the tests; also a
CLI for developers:

    python -m lstm_triton.aot            # every config the launcher picks on the bench grid

Must run without TRITON_INTERPRET (the kernels are compiled, not interpreted).
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from .configs import H200, Chip, LSTMConfig, heuristic
from .kernels.lstm_fwd import _lstm_fwd_kernel
from .launch import BARRIER_MAX_SPINS, fwd_kernel_args
from .layout import PackedLayer, padded_hidden

SM90 = GPUTarget("cuda", 90, 32)
GRID_H = (128, 256, 512, 1024)
GRID_B = (1, 8, 64, 256)
# (dtype, exact fp32 dots): float32 runs TF32 dots unless torch.backends.cudnn.allow_tf32 is off
GRID_PRECISIONS = ((torch.bfloat16, False), (torch.float16, False), (torch.float32, False), (torch.float32, True))


@dataclass
class CompileReport:
    hidden_size: int
    dtype: str
    exact_fp32: bool
    config: dict
    shared_bytes: int
    regs: int
    spill_bytes: int
    matmul: str  # "wgmma", "mma.sync" or "fma"
    compile_s: float

    def problems(self, chip: Chip = H200) -> list[str]:
        out = []
        if self.shared_bytes > chip.smem_per_block:
            out.append(f"shared memory {self.shared_bytes} B > {chip.smem_per_block} B")
        if self.spill_bytes:
            out.append(f"{self.spill_bytes} B of register spills")
        return out


def compile_fwd(
    config: LSTMConfig,
    hidden_size: int,
    batch: int,
    dirs: int,
    dtype: torch.dtype,
    exact_fp32: bool = False,
    target: GPUTarget = SM90,
) -> CompileReport:
    """Compile the forward kernel as a persistent launch of this shape would (same arguments,
    so the same specialization: pointer alignment and integer attributes change the code)."""
    H, h_pad = hidden_size, padded_hidden(hidden_size)
    n_cols = 4 * config.block_h * config.programs(H)
    T = 1  # the sequence length is not specialized; the strides do not depend on it
    xp = torch.empty(T, batch, dirs * n_cols, dtype=dtype)
    layer = PackedLayer(
        torch.empty(0, dtype=dtype), None, torch.empty(dirs, h_pad, n_cols, dtype=dtype), H, config.block_h
    )
    state = torch.empty(dirs, batch, H, dtype=dtype)
    c = torch.empty(dirs, batch, H)
    y = torch.empty(T, batch, dirs * H, dtype=dtype)
    cnt = torch.empty(dirs, triton.cdiv(batch, config.block_b), dtype=torch.int32)
    err = torch.empty(1, dtype=torch.int32)
    args, kwargs = fwd_kernel_args(
        xp,
        layer,
        state,
        c,
        y,
        state,
        cnt,
        err,
        config,
        s_begin=0,
        n_steps=T,
        b_tile0=0,
        d0=0,
        barrier=config.programs(H) > 1,
        max_spins=BARRIER_MAX_SPINS,
        interp=False,
        exact_fp32=exact_fp32,
    )
    kernel = _lstm_fwd_kernel
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, options)
    t0 = time.time()
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)
    compile_s = time.time() - t0
    regs, spills = _ptxas_resources(compiled.asm["ptx"], target)
    ptx = compiled.asm["ptx"]
    matmul = "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "fma"
    return CompileReport(
        H,
        str(dtype).removeprefix("torch."),
        exact_fp32,
        asdict(config),
        compiled.metadata.shared,
        regs,
        spills,
        matmul,
        round(compile_s, 1),
    )


def _ptxas_resources(ptx: str, target: GPUTarget) -> tuple[int, int]:
    """(registers per thread, spill bytes stored + loaded) from the bundled ptxas -v."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
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


def grid_configs(chip: Chip = H200):
    """Every distinct (config, H, dtype, exact_fp32) the heuristic picks on the bench grid, with
    one shape that picks it: (config, H, B, dirs, dtype, exact_fp32)."""
    seen = {}
    for dtype, exact in GRID_PRECISIONS:
        for H in GRID_H:
            for B in GRID_B:
                for dirs in (1, 2):
                    cfg = heuristic(H, B, dirs, dtype, chip, exact_fp32=exact)
                    if cfg is not None:
                        seen.setdefault((cfg, H, dtype, exact), (cfg, H, B, dirs, dtype, exact))
    return list(seen.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="regex over 'H<h>-<dtype>[-ieee]-<config>' labels")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: this compiles the kernels for the GPU")
    for cfg, H, B, dirs, dtype, exact in grid_configs():
        label = f"H{H}-{str(dtype).removeprefix('torch.')}{'-ieee' if exact else ''}-{cfg}"
        if args.only and not re.search(args.only, label):
            continue
        rep = compile_fwd(cfg, H, B, dirs, dtype, exact)
        print(json.dumps(dict(asdict(rep), B=B, dirs=dirs, problems=rep.problems())), flush=True)


if __name__ == "__main__":
    main()
