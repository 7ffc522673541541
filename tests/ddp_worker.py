"""The processes of tests/test_ddp.py: one tiny BiLSTM regressor trained by each rank of a
DistributedDataParallel or FSDP group, or alone on the ranks' concatenated batches (the
reference). Every process runs on the CPU with our kernels under Triton's interpreter and saves
what it ends with to ``<out_dir>/<name>.pt`` for the test to compare."""

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

WORLD = 2
WRAPPERS = ("ddp", "fsdp")
SEQ, FEATURES, HIDDEN, LAYERS = 5, 3, 8, 2
BATCH_PER_RANK = 3
STEPS = 3
LR = 0.5
SEED = 0  # rank 0's initial weights, which DDP broadcasts: the reference starts from them
PROBE_SEED = 99
COLLECTIVE_TIMEOUT = timedelta(seconds=120)  # a dead peer fails a collective instead of hanging it


class Regressor(nn.Module):
    """BiLSTM -> mean over time -> linear: x [B, SEQ, FEATURES] -> [B, 1]."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(2 * lstm.hidden_size, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y.mean(dim=1))


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of all ranks at ``step``: x [WORLD * BATCH_PER_RANK, SEQ, FEATURES] and the sum
    over time of its first feature as the target."""
    x = torch.randn(WORLD * BATCH_PER_RANK, SEQ, FEATURES, generator=torch.Generator().manual_seed(step))
    return x, x[:, :, :1].sum(dim=1)


def run(index: int, out_dir: str, wrapper: str) -> None:
    """Process ``index`` of WORLD + 1: ranks 0..WORLD-1 train under ``wrapper``, the last one
    trains the reference alone."""
    os.environ["TRITON_INTERPRET"] = "1"  # before lstm_triton is imported: CPU tensors run our kernels
    torch.set_num_threads(1)
    from lstm_triton import LSTM  # only now, with the interpreter on

    if index == WORLD:
        _train(_model(LSTM, SEED), range(WORLD * BATCH_PER_RANK), f"{out_dir}/single.pt")
        return
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/rendezvous", rank=index, world_size=WORLD, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        # DDP broadcasts rank 0's weights, so the other ranks start elsewhere on purpose; FSDP
        # shards each rank's own weights, so they must agree from the start
        model = _model(LSTM, SEED + index if wrapper == "ddp" else SEED)
        _probe(model)  # fills the inference cache of weights in kernel layout with this rank's own
        if wrapper == "ddp":
            model = nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (WORLD,))
            fully_shard(model.lstm, mesh=mesh)
            fully_shard(model, mesh=mesh)
        rows = range(index * BATCH_PER_RANK, (index + 1) * BATCH_PER_RANK)
        _train(model, rows, f"{out_dir}/rank{index}.pt")
        dist.barrier()  # the teardown deadlock this avoids: see examples/train_ddp.py
    finally:
        dist.destroy_process_group()


def _model(lstm_cls, seed: int) -> Regressor:
    torch.manual_seed(seed)
    model = Regressor(lstm_cls(FEATURES, HIDDEN, num_layers=LAYERS, bidirectional=True, batch_first=True))
    model.reasons = []  # what each LSTM call ran: None for our kernels, else why PyTorch's LSTM
    model.lstm.register_forward_pre_hook(lambda m, args: model.reasons.append(m.kernel_plan(args[0]).reason))
    return model


def _probe(model: nn.Module) -> torch.Tensor:
    """An inference forward (eval, no grad: the cached kernel-layout weights) on a fixed batch."""
    x = torch.randn(BATCH_PER_RANK, SEQ, FEATURES, generator=torch.Generator().manual_seed(PROBE_SEED))
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.train()
    return y


def _train(model: nn.Module, rows: range, path: str) -> None:
    """STEPS of SGD on the mean squared error over ``rows`` of each global batch; saves the
    inference output before and after, the losses, the final parameters and what ran."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    # before any forward: FSDP keeps its root's parameters unsharded after one, and an optimizer
    # made then would update those copies instead of the shards
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    start = _probe(model)
    losses = []
    for step in range(STEPS):
        x, target = global_batch(step)
        opt.zero_grad()
        loss = ((model(x[rows.start : rows.stop]) - target[rows.start : rows.stop]) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    end = _probe(model)
    params = {
        name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for name, p in inner.named_parameters()
    }
    torch.save(dict(start=start, end=end, losses=losses, params=params, reasons=inner.reasons), path)
