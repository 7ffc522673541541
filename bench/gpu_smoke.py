"""One small case of each kernel on the GPU, checked against the float64 reference: the
inference forward, the training forward and the backward, with several programs per barrier
group and both directions. Small enough to run under compute-sanitizer (memcheck, racecheck):

    compute-sanitizer --tool memcheck python3 -m bench.gpu_smoke

Without a GPU it runs the same case through Triton's interpreter (TRITON_INTERPRET=1), so a
broken script shows in the CPU tests, not on the GPU lease.
"""

import argparse
import sys

import torch
from torch import nn

from lstm_triton import LSTM, LSTMConfig
from lstm_triton.reference import lstm_reference

T, B, I, H = 6, 3, 16, 48
# three programs per barrier group (48 units / 16), a ragged batch tile
CONFIG = LSTMConfig(block_h=16, block_b=2)
TOL = 2e-3  # TF32 dots


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="stop before the first kernel (no GPU needed)")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(f"gpu_smoke: dry run, T={T} B={B} I={I} H={H} at {CONFIG.label(H)}, no kernel run")
        return 0
    import lstm_triton.module

    lstm_triton.module.select_config = lambda *args, **kwargs: CONFIG  # P > 1 on any GPU
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, device=device)
    ours = LSTM.from_torch(ref)
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    hx = tuple(torch.randn(4, B, H, device=device, requires_grad=True) for _ in range(2))
    errors = {}
    with torch.no_grad():
        errors["inference y"] = rel(ours(x, hx)[0], lstm_reference(ref, x, hx)[0])
    y, (h_n, c_n) = ours(x, hx)
    (y.sum() + h_n.sum() + c_n.sum()).backward()
    got = [x.grad.clone(), *(t.grad.clone() for t in hx), *(p.grad for p in ours.parameters())]
    for t in (x, *hx):
        t.grad = None
    want_y, (want_h, want_c) = lstm_reference(ref, x, hx)
    (want_y.sum() + want_h.sum() + want_c.sum()).backward()
    want = [x.grad, *(t.grad for t in hx), *(p.grad for p in ref.parameters())]
    errors["training y"] = rel(y, want_y)
    errors["worst gradient"] = max(rel(g, w) for g, w in zip(got, want, strict=True))
    for name, err in errors.items():
        print(f"{name}: relative error {err:.2e}")
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    print("gpu_smoke:", "FAILED " + str(bad) if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
