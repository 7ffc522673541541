"""GPU stress: the kernels under traffic, every result checked against a float64 reference.

1. back to back: a mix of shapes (hidden sizes of the bench grid, batch 1..256, uni and bi,
   one and two layers, inference and training) launched round after round with no host sync
   between calls, checked after;
2. two streams at once, beside a large GEMM that holds every SM from a third stream;
3. a forced grid-barrier time-out between queued calls: it raises BarrierTimeoutError, and the
   calls before and after it are right;
4. randomized shapes (seeded): hidden size, batch, length, layers, direction, dtype and mode,
   until the time budget is spent.

    python3 -m bench.gpu_stress [--budget-s 30] [--seed 0] [--dry-run]

About 30 s on an H200 once the compile check has warmed Triton's cache (a new hidden size or
dtype compiles its kernels first). Without a GPU it runs a tiny plan of the same phases
through Triton's interpreter (tests/test_gpu_stress.py), so a broken script shows in the CPU
tests, not on the GPU lease.
"""

import argparse
import contextlib
import copy
import random
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from lstm_triton import LSTM, BarrierTimeoutError, LSTMConfig, launch
from lstm_triton.launch import PERSISTENT, lstm_recurrent_fwd
from lstm_triton.reference import lstm_reference

from .gate import rel_err, tolerance

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# The GEMM on the side stream: square bf16 matrices of this size, this many products queued.
HOG_N, HOG_REPS = 8192, 100
# Polls before a barrier wait gives up in the forced time-out: none on a GPU; under the
# interpreter a few (its programs run one after another, so the first one waits in vain).
FORCED_SPINS = {"cuda": 0, "cpu": 8}


@dataclass(frozen=True)
class Shape:
    H: int
    B: int
    T: int
    bi: bool = False
    layers: int = 1
    dtype: torch.dtype = torch.bfloat16
    train: bool = False
    I: int = 0  # input size; 0: the hidden size

    def __str__(self) -> str:
        return (
            f"H{self.H}-B{self.B}-T{self.T}-{'bi' if self.bi else 'uni'}-L{self.layers}-"
            f"{DTYPE_NAMES[self.dtype]}{'-train' if self.train else ''}"
        )


@dataclass(frozen=True)
class Plan:
    mixed: tuple[Shape, ...]  # phases 1 and 2
    rounds: int  # back-to-back rounds over the mix
    timeout: Shape  # the forced time-out's problem: more than one program per barrier group
    timeout_config: LSTMConfig
    max_random: tuple[int, int, int, int]  # randomized shapes: the largest H, B, T, I
    min_random: int  # randomized shapes run at least this many, budget or not


GPU_PLAN = Plan(
    mixed=(
        Shape(128, 1, 64),
        Shape(256, 8, 48, bi=True, dtype=torch.float16),
        Shape(512, 64, 32, train=True),
        Shape(1024, 8, 64, bi=True),
        Shape(1024, 256, 16),
        Shape(256, 64, 40, layers=2, bi=True, train=True),
        Shape(512, 1, 64, dtype=torch.float32),
        Shape(128, 256, 24, bi=True, train=True, dtype=torch.float16),
    ),
    rounds=3,
    timeout=Shape(512, 8, 64),
    timeout_config=LSTMConfig(block_h=16, block_b=8),
    max_random=(1024, 300, 200, 512),
    min_random=1,  # a new hidden size compiles its kernels first: seconds each
)
# The interpreter's cost is per program and step: tiny shapes, a forced P = 2 for the time-out.
CPU_PLAN = Plan(
    mixed=(Shape(5, 1, 3), Shape(16, 3, 2, bi=True, layers=2, train=True, dtype=torch.float16)),
    rounds=2,
    timeout=Shape(24, 2, 3, dtype=torch.float32),
    timeout_config=LSTMConfig(block_h=16, block_b=2),
    max_random=(20, 3, 4, 6),
    min_random=2,
)


class Job:
    """One shape: our module (a copy of a random nn.LSTM), fresh inputs and the float64
    reference of everything a call returns (outputs and, in training, gradients)."""

    def __init__(self, shape: Shape, device: str, seed: int):
        torch.manual_seed(seed)
        self.shape, s = shape, shape
        I = s.I or s.H
        self.ref = nn.LSTM(I, s.H, s.layers, bidirectional=s.bi, device=device, dtype=s.dtype)
        self.module = LSTM.from_torch(self.ref)
        D = 2 if s.bi else 1
        self.x = torch.randn(s.T, s.B, I, device=device, dtype=s.dtype)
        self.hx = tuple(torch.randn(s.layers * D, s.B, s.H, device=device, dtype=s.dtype) for _ in range(2))
        self.gy = torch.randn(s.T, s.B, D * s.H, device=device, dtype=s.dtype)
        self.want = self._reference()
        # why PyTorch's LSTM would run this shape instead of our kernels (None: ours run)
        self.routed = self.module.kernel_plan(self.x, self.hx, training=s.train).reason

    def _reference(self) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(self.ref).double()
        x = self.x.double().requires_grad_(self.shape.train)
        with torch.set_grad_enabled(self.shape.train):
            y, (h_n, c_n) = lstm_reference(model, x, tuple(t.double() for t in self.hx))
            if self.shape.train:
                y.backward(self.gy.double())
        out = {"y": y.detach(), "h_n": h_n.detach(), "c_n": c_n.detach()}
        if self.shape.train:
            out |= {"dx": x.grad} | {f"d{n}": p.grad for n, p in model.named_parameters()}
        return out

    def launch(self) -> dict[str, torch.Tensor]:
        """Queue one call (forward, and backward in training) on the current stream."""
        if not self.shape.train:
            with torch.no_grad():
                y, (h_n, c_n) = self.module(self.x, self.hx)
            return {"y": y, "h_n": h_n, "c_n": c_n}
        x = self.x.detach().requires_grad_()
        self.module.zero_grad(set_to_none=True)
        y, (h_n, c_n) = self.module(x, self.hx)
        y.backward(self.gy)
        grads = {f"d{n}": p.grad for n, p in self.module.named_parameters()}
        return {"y": y.detach(), "h_n": h_n, "c_n": c_n, "dx": x.grad} | grads

    def failures(self, got: dict[str, torch.Tensor]) -> list[str]:
        """Every output or gradient off the reference by more than its tolerance (NaN fails)."""
        dtype = DTYPE_NAMES[self.shape.dtype]
        bad = []
        for name, want in self.want.items():
            err, tol = rel_err(got.get(name), want), tolerance(dtype, name)
            if not err <= tol:
                bad.append(f"{self.shape} {name}: relative error {err:.2e} > {tol:.1e}")
        return bad


@contextlib.contextmanager
def no_host_sync():
    """Calls queue without reading their time-out flags (a host sync), as in an asynchronous
    multi-stream pipeline: a time-out then shows only as wrong outputs, which the checks catch."""
    saved = launch.CHECK_TIMEOUTS
    launch.CHECK_TIMEOUTS = False
    try:
        yield
    finally:
        launch.CHECK_TIMEOUTS = saved


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def back_to_back(jobs: list[Job], rounds: int, device: str) -> tuple[int, list[str]]:
    with no_host_sync():
        outs = [(job, job.launch()) for _ in range(rounds) for job in jobs]
    synchronize(device)
    return len(outs), [f for job, got in outs for f in job.failures(got)]


def two_streams_beside_a_gemm(jobs: list[Job], device: str) -> tuple[int, list[str]]:
    """The mix split over two streams, queued while a third stream's GEMMs hold the SMs."""
    if device != "cuda":  # no streams: the same calls, one after another
        return back_to_back(jobs, 1, device)
    hog = torch.randn(HOG_N, HOG_N, device=device, dtype=torch.bfloat16)
    side, streams = torch.cuda.Stream(), [torch.cuda.Stream(), torch.cuda.Stream()]
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        for _ in range(HOG_REPS):
            hog = hog @ hog.t() / HOG_N
    outs = []
    with no_host_sync():
        for i, job in enumerate(jobs):
            with torch.cuda.stream(streams[i % 2]):
                outs.append((job, job.launch()))
    torch.cuda.synchronize()
    return len(outs), [f for job, got in outs for f in job.failures(got)]


def forced_timeout(job: Job, config: LSTMConfig, neighbours: list[Job], device: str) -> tuple[int, list[str]]:
    """Calls queued before and after a launch whose barrier is made to time out: the time-out
    raises, and every other call is right."""
    with no_host_sync():
        before = [(j, j.launch()) for j in neighbours]
    layer = job.module._packed_layer(0, config)
    x, (h0, c0) = job.x, job.hx
    xp = torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.w_ih.t()).view(*x.shape[:2], -1)
    failures = []
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", RuntimeWarning)  # the interpreter's garbage gates overflow exp()
        try:
            lstm_recurrent_fwd(xp, layer, h0[:1], c0[:1], config, mode=PERSISTENT, max_spins=FORCED_SPINS[device])
            launch.check_timeouts(xp.device, wait=True)  # the call queued its own check, without a host sync
            failures.append(f"{job.shape}: the forced time-out did not raise")
        except BarrierTimeoutError:
            pass
    with no_host_sync():
        after = [(j, j.launch()) for j in [job, *neighbours]]
    synchronize(device)
    outs = before + after
    return len(outs) + 1, failures + [f for j, got in outs for f in j.failures(got)]


def random_shape(rng: random.Random, plan: Plan) -> Shape:
    max_h, max_b, max_t, max_i = plan.max_random
    train = rng.random() < 0.5
    return Shape(
        H=rng.randint(1, max_h),
        B=rng.randint(1, max_b),
        T=rng.randint(1, max_t),
        bi=rng.random() < 0.5,
        layers=rng.randint(1, 2),
        dtype=rng.choice(DTYPES),
        train=train,
        I=rng.randint(1, max_i),
    )


def randomized(plan: Plan, device: str, seed: int, deadline: float) -> tuple[int, list[str]]:
    """Random shapes, one call each (time-out flag read after each), until the deadline."""
    rng, n, failures = random.Random(seed), 0, []
    while n < plan.min_random or time.perf_counter() < deadline:
        job = Job(random_shape(rng, plan), device, seed + n)
        failures += job.failures(job.launch())
        synchronize(device)
        n += 1
        print("   random shape", job.shape, f"(routed to PyTorch: {job.routed})" if job.routed else "")
    return n, failures


def main(argv: list[str] | None = None, plan: Plan | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=30.0, help="stop starting randomized shapes after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dry-run", action="store_true", help="pick the plan and stop before the first kernel (no GPU needed)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = plan or (GPU_PLAN if device == "cuda" else CPU_PLAN)
    if args.dry_run:
        print(f"gpu_stress: dry run, the {device} plan: {len(plan.mixed)} shapes x {plan.rounds} rounds, no kernel run")
        return 0
    jobs = [Job(s, device, args.seed + i) for i, s in enumerate(plan.mixed)]
    failures = [f"{j.shape}: routed to PyTorch ({j.routed}), not a stress of our kernels" for j in jobs if j.routed]
    phases = [
        ("back to back", lambda: back_to_back(jobs, plan.rounds, device)),
        ("two streams + GEMM", lambda: two_streams_beside_a_gemm(jobs, device)),
        (
            "forced time-out",
            lambda: forced_timeout(Job(plan.timeout, device, args.seed), plan.timeout_config, jobs, device),
        ),
        ("randomized", lambda: randomized(plan, device, args.seed, start + args.budget_s)),
    ]
    print(f"{'phase':<20} {'calls':>5} {'failed':>6} {'seconds':>8}")
    for name, phase in phases:
        t0 = time.perf_counter()
        calls, bad = phase()
        print(f"{name:<20} {calls:>5} {len(bad):>6} {time.perf_counter() - t0:>8.1f}")
        failures += bad
    for f in failures:
        print("  ", f)
    print("gpu_stress:", f"FAILED ({len(failures)})" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
