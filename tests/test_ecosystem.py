"""lstm_triton.LSTM in the PyTorch ecosystem: torch.compile without graph breaks (the recurrence
is a registered custom op with a fake implementation; opcheck), replace_lstm, torch.save."""

import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lstm_triton import LSTM, LSTMConfig, replace_lstm
from lstm_triton.layout import pack_layer
from lstm_triton.ops import config_args, recurrence, recurrence_backward
from tests.helpers import DEVICE, assert_close, tolerance


def outputs_and_grads(module, x, hx, lengths):
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y, (h_n, c_n) = module(x, hx, lengths=lengths)
    (y.sum() + h_n.sum() + (c_n * c_n).sum()).backward()
    return [y, h_n, c_n, x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("variant", ["bi-batch_first-h0", "uni-lengths", "bi-lengths-h0", "bi-proj-lengths-h0"])
def test_compile_fullgraph_matches_eager(backend, variant):
    torch._dynamo.reset()
    bi, batch_first = "bi" in variant, "batch_first" in variant
    proj = 6 if "proj" in variant else 0
    ours = LSTM(5, 16, num_layers=2, bidirectional=bi, batch_first=batch_first, proj_size=proj).to(DEVICE)
    x = torch.randn((3, 4, 5) if batch_first else (4, 3, 5), device=DEVICE)
    states = 4 if bi else 2
    hx = (torch.randn(states, 3, proj or 16, device=DEVICE), torch.randn(states, 3, 16, device=DEVICE))
    hx = hx if "h0" in variant else None
    lengths = torch.tensor([4, 2, 3]) if "lengths" in variant else None
    want = outputs_and_grads(ours, x, hx, lengths)
    got = outputs_and_grads(torch.compile(ours, fullgraph=True, backend=backend), x, hx, lengths)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g, w), i
    with torch.no_grad():  # the inference graph
        y, _ = torch.compile(ours, fullgraph=True, backend=backend)(x, hx, lengths=lengths)
    assert torch.equal(y, want[0])


def test_compiled_model_around_our_lstm():
    """A model with our LSTM inside (embedding, head) compiles whole."""
    torch._dynamo.reset()
    model = nn.ModuleDict(
        {"embed": nn.Embedding(10, 8), "lstm": LSTM(8, 16, batch_first=True), "head": nn.Linear(16, 2)}
    )
    model = model.to(DEVICE)

    def run(tokens):
        y, (h_n, _) = model["lstm"](model["embed"](tokens))
        return model["head"](h_n[-1]) + y.mean()

    tokens = torch.randint(0, 10, (3, 5), device=DEVICE)
    with torch.no_grad():
        assert torch.equal(torch.compile(run, fullgraph=True, backend="aot_eager")(tokens), run(tokens))


def test_compiled_lstm_across_changing_shapes():
    """A compiled LSTM called with new sequence lengths and batch sizes (dynamo then traces
    them symbolically) gives eager's results, in training too, with initial states, lengths=
    and projections."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    ours = LSTM(5, 16, bidirectional=True, proj_size=4).to(DEVICE)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    for T, B in ((4, 3), (6, 5), (3, 2)):
        x = torch.randn(T, B, 5, device=DEVICE)
        hx = (torch.randn(2, B, 4, device=DEVICE), torch.randn(2, B, 16, device=DEVICE))
        lengths = torch.randint(1, T + 1, (B,))
        want = outputs_and_grads(ours, x, hx, lengths)
        for i, (got, w) in enumerate(zip(outputs_and_grads(compiled, x, hx, lengths), want, strict=True)):
            assert torch.equal(got, w), (T, B, i)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_torch_export_keeps_our_op(strict):
    """torch.export (for serving) traces the recurrence as our custom op, and the exported
    program gives the module's results."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    ours = LSTM(5, 16, bidirectional=True, batch_first=True).to(DEVICE).eval()
    x = torch.randn(3, 4, 5, device=DEVICE)
    exported = torch.export.export(ours, (x,), strict=strict)
    assert any(str(n.target) == "lstm_triton.recurrence.default" for n in exported.graph.nodes)
    y, (h_n, c_n) = exported.module()(x)
    with torch.no_grad():
        want, (want_h, want_c) = ours(x)
    assert torch.equal(y, want) and torch.equal(h_n, want_h) and torch.equal(c_n, want_c)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpointing_gives_the_same_gradients(reentrant):
    """torch.utils.checkpoint reruns the forward in backward: the gradients are the same bits."""
    torch.manual_seed(0)
    ours = LSTM(5, 16, num_layers=2, bidirectional=True, proj_size=4).to(DEVICE)
    x = torch.randn(6, 3, 5, device=DEVICE)
    want = outputs_and_grads(ours, x, None, None)[3:]

    def flat(x):  # reentrant checkpointing differentiates only tensors it returns directly
        y, (h_n, c_n) = ours(x)
        return y, h_n, c_n

    ours.zero_grad(set_to_none=True)
    x_leaf = x.clone().requires_grad_()
    y, h_n, c_n = checkpoint(flat, x_leaf, use_reentrant=reentrant)
    (y.sum() + h_n.sum() + (c_n * c_n).sum()).backward()
    got = [x_leaf.grad, *(p.grad for p in ours.parameters())]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g, w), i


def test_torch_jit_trace_records_pytorchs_lstm():
    """A TorchScript trace cannot hold our kernels: it records PyTorch's LSTM (never a crash),
    and the traced module computes what ours does."""
    torch.manual_seed(0)
    ours = LSTM(5, 16, bidirectional=True, proj_size=4).to(DEVICE).eval()
    x = torch.randn(4, 3, 5, device=DEVICE)
    with torch.no_grad():
        traced = torch.jit.trace(ours, (x,))
        assert [n.kind() for n in traced.graph.nodes() if "lstm" in n.kind()] == ["aten::lstm"]
        x_new = torch.randn(4, 3, 5, device=DEVICE)
        assert_close("traced", traced(x_new)[0], ours(x_new)[0], tolerance(torch.float32))


def test_torch_func_transforms_run_pytorchs_lstm():
    """torch.func.grad over functional_call gets nn.LSTM's gradients (our op's autograd does
    not support torch.func transforms, so PyTorch's LSTM runs there), and vmap fails as it
    does for nn.LSTM (the same error)."""
    torch.manual_seed(0)
    ours = LSTM(5, 16, bidirectional=True).to(DEVICE)
    ref = nn.LSTM(5, 16, bidirectional=True).to(DEVICE)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 5, device=DEVICE)
    grads = [
        torch.func.grad(lambda p, m=m: torch.func.functional_call(m, p, (x,))[0].sum())(
            {k: v.detach() for k, v in m.named_parameters()}
        )
        for m in (ours, ref)
    ]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert_close(f"d {name}", grads[0][name], grads[1][name], tolerance(torch.float32))
    errors = []
    for module in (ours, ref):
        with pytest.raises(RuntimeError) as e:
            torch.vmap(lambda x, m=module: m(x)[0])(x[None].expand(2, -1, -1, -1))
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def test_opcheck_recurrence_forward_and_backward():
    torch.manual_seed(0)
    H, I, T, B, cfg = 12, 5, 4, 3, LSTMConfig(block_h=16, block_b=4)
    ref = nn.LSTM(I, H, bidirectional=True)
    sfx = ("", "_reverse")
    layer = pack_layer(
        *([getattr(ref, f"{k}_l0{s}").detach() for s in sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
        block_h=16,
    )
    xp = torch.addmm(layer.bias, torch.randn(T * B, I), layer.w_ih.t()).view(T, B, -1).to(DEVICE)
    w_hh = layer.w_hh.to(DEVICE)
    h0, c0 = (torch.randn(2, B, H, device=DEVICE) for _ in range(2))
    lengths = torch.tensor([4, 1, 3], dtype=torch.int32, device=DEVICE)
    for save in (False, True):
        args = (
            xp.requires_grad_(save),
            w_hh.requires_grad_(save),
            h0,
            c0,
            lengths,
            H,
            config_args(cfg),
            config_args(cfg),
            False,
            save,
        )
        torch.library.opcheck(recurrence, args)
    y, h_n, c_n, gates, cs = recurrence(xp, w_hh, h0, c0, lengths, H, config_args(cfg), config_args(cfg), True, True)
    bwd_args = (
        torch.randn_like(y),
        torch.randn_like(h_n),
        torch.randn_like(c_n),
        w_hh.detach(),
        y.detach(),
        h0,
        c0,
        lengths,
        gates.detach(),
        cs.detach(),
        H,
        16,
        config_args(cfg),
    )
    torch.library.opcheck(recurrence_backward, bwd_args)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(6, 8, bidirectional=True, batch_first=True)
        self.decoder = nn.ModuleList([nn.LSTM(16, 8), nn.LSTM(8, 8, proj_size=4)])
        self.head = nn.Linear(16, 3)


class CustomLSTM(nn.LSTM):
    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs)


def test_replace_lstm_swaps_in_place_and_keeps_the_parameters():
    model = Tagger()
    model.extra = CustomLSTM(3, 3)
    model.encoder.eval()
    params = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    report = replace_lstm(model)
    assert report.swapped == ["encoder", "decoder.0", "decoder.1"]
    assert set(report.kept) == {"extra"} and "subclass" in report.kept["extra"]
    assert model.decoder[1].proj_size == 4
    assert isinstance(model.encoder, LSTM) and not model.encoder.training and model.encoder.batch_first
    for name, p in model.named_parameters():  # the same Parameter objects: the optimizer still holds them
        assert p is params[name], name
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        want, _ = nn.LSTM.forward(model.encoder, x)  # PyTorch's LSTM on the same parameters
    model.encoder.train()
    y, _ = model.encoder(x.to(DEVICE)) if DEVICE.type == "cpu" else (want, None)
    assert_close("swapped", y, want, tolerance(torch.float32))
    y.sum().backward()
    opt.step()  # steps the swapped module's parameters
    again = replace_lstm(model)
    assert again.swapped == [] and again.kept["encoder"] == "already an lstm_triton.LSTM"
    with pytest.raises(TypeError, match="from_torch"):
        replace_lstm(nn.LSTM(3, 3))


def test_save_and_load_a_model_using_our_lstm():
    model = nn.Sequential()
    model.lstm = LSTM(4, 6, num_layers=2, bidirectional=True).to(DEVICE)
    x = torch.randn(5, 2, 4, device=DEVICE)
    with torch.no_grad():
        want, _ = model.lstm(x)  # fills the packed-weight cache, which is not saved
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.lstm._packed == {}
    with torch.no_grad():
        assert torch.equal(loaded.lstm(x)[0], want)
    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    state.seek(0)
    fresh = nn.Sequential()
    fresh.lstm = LSTM(4, 6, num_layers=2, bidirectional=True).to(DEVICE)
    fresh.load_state_dict(torch.load(state))
    with torch.no_grad():
        assert torch.equal(fresh.lstm(x)[0], want)


def test_bilstm_classifier_example_tracks_nn_lstm():
    """examples/bilstm_classifier.py on the CPU: both loss curves print and agree."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run(
        [sys.executable, "examples/bilstm_classifier.py", "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    for _, ours, theirs in rows:
        assert abs(float(ours) - float(theirs)) <= 1e-3 * abs(float(theirs))
    assert "lstm_triton ran our kernels" in r.stdout
