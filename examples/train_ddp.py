"""Data-parallel training of a BiLSTM classifier built on ``lstm_triton.LSTM``, with PyTorch's own
DistributedDataParallel. The same script runs as one process, as several CPU processes or on
several GPUs:

    python examples/train_ddp.py                                      # one process
    torchrun --standalone --nproc-per-node 2 examples/train_ddp.py    # 2 CPU processes, or 2 GPUs
    torchrun --standalone --nproc-per-node gpu examples/train_ddp.py --steps 500   # every GPU

With CUDA each process drives cuda:LOCAL_RANK and the ranks talk over NCCL. Without it they talk
over gloo and our kernels run on the CPU under Triton's interpreter: correct but slow, so the CPU
sizes are tiny.

The task is synthetic: a sequence of random vectors is labelled with the feature whose sum over
time is largest, so the model must read the whole sequence.
"""

import argparse
import itertools
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

BATCHES_PER_EPOCH = 16  # the synthetic data set holds this many batches of each rank


@dataclass(frozen=True)
class Sizes:
    seq_len: int
    classes: int  # also the input size: one input feature per class
    hidden: int
    layers: int
    batch: int  # per process
    steps: int


GPU_SIZES = Sizes(seq_len=128, classes=32, hidden=256, layers=2, batch=64, steps=200)
CPU_SIZES = Sizes(seq_len=6, classes=4, hidden=8, layers=2, batch=16, steps=6)  # interpreter: tiny


class Classifier(nn.Module):
    """BiLSTM -> mean over time -> linear: x [B, T, classes] -> logits [B, classes]."""

    def __init__(self, lstm: nn.LSTM, classes: int):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(2 * lstm.hidden_size, classes)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y.mean(dim=1))


def synthetic_data(sizes: Sizes, samples: int, seed: int) -> TensorDataset:
    """The same data set on every rank (the sampler splits it): x [samples, T, classes] and the
    index of the feature with the largest sum over time."""
    x = torch.randn(samples, sizes.seq_len, sizes.classes, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, x.sum(dim=1).argmax(dim=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 200 on GPUs, 6 on the CPU)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda:
        # before lstm_triton is imported: without a GPU our kernels run only under the interpreter
        os.environ["TRITON_INTERPRET"] = "1"
    from lstm_triton import LSTM  # imported here, after the line above

    # torchrun sets these; a plain `python` run is a world of one
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    sizes = GPU_SIZES if cuda else CPU_SIZES
    steps = args.steps if args.steps is not None else sizes.steps
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    try:
        torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        lstm = LSTM(sizes.classes, sizes.hidden, num_layers=sizes.layers, bidirectional=True, batch_first=True)
        model = Classifier(lstm, sizes.classes).to(device)
        data = synthetic_data(sizes, BATCHES_PER_EPOCH * sizes.batch * world, args.seed)
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        loader = DataLoader(data, batch_size=sizes.batch, sampler=sampler, drop_last=True)
        if rank == 0:
            _say_what_runs(lstm, data[: sizes.batch][0].to(device), device, world)
        if world > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        for step, (x, label) in enumerate(itertools.islice(_epochs(loader, sampler), steps)):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x.to(device)), label.to(device))
            loss.backward()  # DDP averages the gradients of all ranks here
            opt.step()
            _log(f"rank {rank}/{world} step {step} loss {loss.item():.4f}")
        # equal on every rank: each applied the same averaged gradients to the same weights
        checksum = sum(p.detach().double().sum().item() for p in model.parameters())
        _log(f"rank {rank}/{world} parameter checksum {checksum:.10e}")
        if world > 1:
            # Without this barrier, 1 run in 4 on two CPU ranks (torch 2.13, gloo) deadlocked in
            # the teardown below: a gloo worker thread freeing the last gradient all-reduce (which
            # holds the backward's Python context) waited for the GIL while the main thread,
            # holding it, joined that worker. Success path only: after a failure, the ranks'
            # collectives no longer pair up.
            dist.barrier()
    finally:
        if world > 1:
            dist.destroy_process_group()


def _epochs(loader: DataLoader, sampler: DistributedSampler):
    """The loader's batches, epoch after epoch, each epoch shuffled anew (the same on every rank)."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write per line: the lines of different ranks never interleave
    sys.stdout.flush()


def _say_what_runs(lstm, x, device: torch.device, world: int) -> None:
    plan = lstm.kernel_plan(x, training=True)
    if plan.reason is not None:
        runs = f"PyTorch's LSTM ({plan.reason})"
    elif device.type == "cpu":
        runs = "our kernels under Triton's interpreter (CPU: slow, tiny sizes)"
    else:
        runs = "our kernels"
    _log(f"{world} process(es) on {device.type}; the LSTM runs {runs}")


if __name__ == "__main__":
    main()
