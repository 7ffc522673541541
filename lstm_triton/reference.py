"""A plain PyTorch LSTM loop: the oracle for tests and the benchmark's correctness gate.

Deliberately simple and independent of our kernels, layouts and cuDNN: one matmul per gate
block per step, in the dtype it is given (use float64 for a reference)."""

import torch
from torch import nn


def lstm_reference(module: nn.LSTM, input: torch.Tensor, hx=None, dtype: torch.dtype = torch.float64, lengths=None):
    """Run ``module``'s weights on ``input`` as nn.LSTM would (eval mode: no dropout), computing
    in ``dtype`` on the input's device. Accepts what nn.LSTM accepts for tensor input (batched or
    unbatched, batch_first, hx or None, ``proj_size``). ``lengths`` ([B]):
    padded input whose sequences end early, as nn.LSTM on the packed input computes them (zero
    output past each length, h_n/c_n at each sequence's last step). Returns
    ``(output, (h_n, c_n))`` in ``dtype``."""
    batched = input.dim() == 3
    x = input.to(dtype) if batched else input.to(dtype).unsqueeze(1)
    if module.batch_first and batched:
        x = x.transpose(0, 1)
    T, B, _ = x.shape
    D, H, L = 2 if module.bidirectional else 1, module.hidden_size, module.num_layers
    R = module.proj_size or H  # the width of h
    if hx is None:
        h0, c0 = x.new_zeros(L * D, B, R), x.new_zeros(L * D, B, H)
    else:
        h0, c0 = (t.to(dtype) if batched else t.to(dtype).unsqueeze(1) for t in hx)
    # live[t, b]: time t is one of sequence b's (all are, without lengths)
    ends = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    live = (torch.arange(T)[:, None] < ends[None, :]).to(x.device)[..., None]
    h_n, c_n = [], []
    for layer in range(L):
        outs = []
        for d, sfx in enumerate(("", "_reverse")[:D]):
            w_ih, w_hh = (getattr(module, f"{k}_l{layer}{sfx}").to(dtype) for k in ("weight_ih", "weight_hh"))
            b = 0
            if module.bias:
                b = sum(getattr(module, f"{k}_l{layer}{sfx}").to(dtype) for k in ("bias_ih", "bias_hh"))
            h, c = h0[layer * D + d], c0[layer * D + d]
            ys = [None] * T
            for t in reversed(range(T)) if d else range(T):
                i, f, g, o = (x[t] @ w_ih.t() + h @ w_hh.t() + b).chunk(4, dim=-1)
                c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_t = torch.sigmoid(o) * torch.tanh(c_t)
                if module.proj_size:
                    h_t = h_t @ getattr(module, f"weight_hr_l{layer}{sfx}").to(dtype).t()
                # past its length a sequence holds its state (so the reverse direction starts at
                # each sequence's own last step) and outputs zeros
                c, h = torch.where(live[t], c_t, c), torch.where(live[t], h_t, h)
                ys[t] = torch.where(live[t], h_t, 0.0)
            outs.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outs, dim=-1)
    y = x.transpose(0, 1) if (module.batch_first and batched) else x
    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    if not batched:
        y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
    return y, (h_n, c_n)
