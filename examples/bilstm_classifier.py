"""A small BiLSTM sentence classifier trained end to end, once with lstm_triton.LSTM and once
with torch.nn.LSTM from the same initial weights, printing both loss curves side by side.

Synthetic task: sentences of random tokens with random lengths; the label says whether token 1
occurs more often than token 2. The concatenated last forward and backward hidden states of
each sentence (h_n of a PackedSequence) feed a linear head.

    python examples/bilstm_classifier.py            # a GPU if there is one, else the CPU
    python examples/bilstm_classifier.py --steps 200

Without a GPU our kernels run under Triton's interpreter (slow), so the CPU sizes are tiny.
"""

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before lstm_triton is imported

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from lstm_triton import LSTM  # noqa: E402

VOCAB = 16
GPU_SIZES = dict(batch=64, max_len=64, embed=128, hidden=256, steps=100)
CPU_SIZES = dict(batch=8, max_len=8, embed=16, hidden=16, steps=10)


class Classifier(nn.Module):
    def __init__(self, lstm: nn.LSTM, embed: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.lstm = lstm
        self.head = nn.Linear(2 * lstm.hidden_size, 2)

    def forward(self, tokens, lengths):
        x = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(x)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))  # last forward and backward states


def batch(gen, n, max_len, device):
    lengths = torch.randint(1, max_len + 1, (n,), generator=gen)
    tokens = torch.randint(0, VOCAB, (n, max_len), generator=gen)
    tokens[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0  # padding
    counts = [(tokens[i, : lengths[i]] == 1).sum() - (tokens[i, : lengths[i]] == 2).sum() for i in range(n)]
    labels = (torch.stack(counts) > 0).long()
    return tokens.to(device), lengths, labels.to(device)


def main(argv=None):
    cuda = torch.cuda.is_available()
    sizes = GPU_SIZES if cuda else CPU_SIZES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=sizes["steps"])
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args(argv)
    device = "cuda" if cuda else "cpu"
    print(f"device: {device}" + ("" if cuda else " (our kernels under Triton's interpreter: tiny sizes)"))

    torch.manual_seed(0)
    reference = Classifier(nn.LSTM(sizes["embed"], sizes["hidden"], bidirectional=True), sizes["embed"]).to(device)
    ours = Classifier(LSTM(sizes["embed"], sizes["hidden"], bidirectional=True), sizes["embed"]).to(device)
    ours.load_state_dict(reference.state_dict())  # the same initial weights
    models = {"lstm_triton": ours, "nn.LSTM": reference}
    opts = {name: torch.optim.SGD(m.parameters(), lr=args.lr) for name, m in models.items()}

    gen = torch.Generator().manual_seed(1)
    print(f"{'step':>5} {'lstm_triton':>12} {'nn.LSTM':>12}")
    for step in range(args.steps):
        tokens, lengths, labels = batch(gen, sizes["batch"], sizes["max_len"], device)
        losses = {}
        for name, model in models.items():
            opts[name].zero_grad()
            loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
            loss.backward()
            opts[name].step()
            losses[name] = loss.item()
        print(f"{step:5d} {losses['lstm_triton']:12.4f} {losses['nn.LSTM']:12.4f}")
    plan = ours.lstm.kernel_plan(
        pack_padded_sequence(ours.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
    )
    print("lstm_triton ran", "our kernels" if plan.reason is None else f"PyTorch's LSTM ({plan.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
