"""lstm_triton.LSTM as a drop-in nn.LSTM: parameters, state_dict, initialisation, shapes,
layouts, fallbacks, dropout, and what happens when autograd is asked for."""

import logging
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import lstm_triton._env
import lstm_triton.module
from lstm_triton import LSTM
from lstm_triton.module import KernelPlan, PyTorchFallbackWarning, _note_fallback
from lstm_triton.reference import lstm_reference
from tests.helpers import DEVICE, DTYPES, assert_close, dtype_id, tolerance

TOL32 = tolerance(torch.float32)
ROOT = Path(__file__).resolve().parents[1]


def pair(*args, **kwargs):
    ref = nn.LSTM(*args, **kwargs)
    return LSTM.from_torch(ref).to(DEVICE), ref


def test_same_parameters_names_and_initialisation():
    torch.manual_seed(3)
    ref = nn.LSTM(5, 7, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    ours = LSTM(5, 7, num_layers=2, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_state_dict_round_trips_both_ways():
    ours = LSTM(4, 6, num_layers=2, bias=False, bidirectional=True)
    ref = nn.LSTM(4, 6, num_layers=2, bias=False, bidirectional=True)
    ref.load_state_dict(ours.state_dict())
    back = LSTM(4, 6, num_layers=2, bias=False, bidirectional=True)
    back.load_state_dict(ref.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]) and torch.equal(v, back.state_dict()[k]), k


def test_from_torch_keeps_hyperparameters_mode_dtype():
    ref = nn.LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.25, bidirectional=True, dtype=torch.float16)
    ref.eval()
    ours = LSTM.from_torch(ref)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert ours.weight_hh_l1_reverse.dtype == torch.float16 and not ours.training
    # an nn.RNNBase in LSTM mode, as nn.LSTM: not its subclass, which torch.compile refuses to trace
    assert isinstance(ours, nn.RNNBase) and ours.mode == "LSTM" and not isinstance(ours, nn.LSTM)
    with pytest.raises(TypeError, match="torch.nn.LSTM"):
        LSTM.from_torch(nn.GRU(3, 5))


def test_unbatched_input_with_and_without_state():
    ours, ref = pair(5, 8, num_layers=2, bidirectional=True)
    x = torch.randn(6, 5)
    hx = (torch.randn(4, 8), torch.randn(4, 8))
    for state in (None, hx):
        want_y, (want_h, want_c) = lstm_reference(ref, x, state)
        with torch.no_grad():
            y, (h_n, c_n) = ours(x.to(DEVICE), None if state is None else tuple(t.to(DEVICE) for t in state))
        assert_close("output", y, want_y, TOL32)
        assert_close("h_n", h_n, want_h, TOL32)
        assert_close("c_n", c_n, want_c, TOL32)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_non_contiguous_input_and_state(batch_first):
    ours, ref = pair(5, 8, bidirectional=True, batch_first=batch_first)
    T, B = 9, 7
    x = torch.randn(B, T, 10)[:, :, ::2]  # strided last dim, batch-major underneath
    x = x if batch_first else x.transpose(0, 1)
    h0 = torch.randn(2, B, 1).expand(2, B, 8)  # expanded (stride 0)
    c0 = torch.randn(B, 2, 8).transpose(0, 1)
    want_y, (want_h, want_c) = lstm_reference(ref, x, (h0, c0))
    with torch.no_grad():
        y, (h_n, c_n) = ours(x.to(DEVICE), (h0.to(DEVICE), c0.to(DEVICE)))
    assert_close("output", y, want_y, TOL32)
    assert_close("h_n", h_n, want_h, TOL32)
    assert_close("c_n", c_n, want_c, TOL32)


def test_zero_batch_behaves_as_nn_lstm():
    ours, ref = pair(3, 4, num_layers=2, bidirectional=True)
    with torch.no_grad():
        y, (h_n, c_n) = ours(torch.randn(5, 0, 3, device=DEVICE))
        want_y, (want_h, want_c) = ref(torch.randn(5, 0, 3))
    assert y.shape == want_y.shape and h_n.shape == want_h.shape and c_n.shape == want_c.shape


def test_inputs_are_not_modified():
    ours, _ = pair(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3, device=DEVICE)
    hx = tuple(torch.randn(2, 2, 4, device=DEVICE) for _ in range(2))
    copies = [t.clone() for t in (x, *hx)]
    with torch.no_grad():
        ours(x, hx)
    for before, after in zip(copies, (x, *hx), strict=True):
        assert torch.equal(before, after)


def test_float64_runs_pytorch():
    """float64 runs PyTorch's own LSTM: the module always works."""
    ours = LSTM(3, 6, proj_size=2).double()
    ref = nn.LSTM(3, 6, proj_size=2).double()
    ref.load_state_dict(ours.state_dict())
    assert ours.kernel_plan(torch.randn(4, 2, 3, dtype=torch.float64)).reason == "torch.float64 input"
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        y, (h_n, c_n) = ours(x)
        want_y, (want_h, want_c) = ref(x)
    assert torch.equal(y, want_y) and torch.equal(h_n, want_h) and torch.equal(c_n, want_c)


def test_float64_packed_sequence_runs_pytorch():
    """A PackedSequence our kernels cannot take (float64) gets nn.LSTM's own result."""
    ours = LSTM(3, 4).double()
    ref = nn.LSTM(3, 4).double()
    ref.load_state_dict(ours.state_dict())
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3, dtype=torch.float64), torch.tensor([5, 3]))
    assert ours.kernel_plan(packed).reason == "torch.float64 input"
    with torch.no_grad():
        y, (h_n, _) = ours(packed)
        want_y, (want_h, _) = ref(packed)
    assert torch.equal(y.data, want_y.data) and torch.equal(h_n, want_h)


def test_a_cuda_fallback_warns_once_per_reason(monkeypatch):
    """A call on CUDA tensors that runs PyTorch's LSTM warns, once per reason, naming the reason
    and kernel_plan (the helper forward calls; no CUDA tensor needed)."""
    monkeypatch.setattr(lstm_triton.module, "_noted", set())
    cuda = torch.device("cuda")
    with pytest.warns(PyTorchFallbackWarning) as caught:
        for _ in range(3):
            _note_fallback("torch.float64 input", cuda)
        _note_fallback("no kernel config keeps the weights on chip (H=4096, B=1, dirs=1)", cuda)
    messages = [str(w.message) for w in caught if issubclass(w.category, PyTorchFallbackWarning)]
    assert len(messages) == 2, messages
    assert "torch.float64 input" in messages[0] and "H=4096" in messages[1]
    assert all("PyTorch's LSTM" in m and "kernel_plan" in m for m in messages)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_forward_reports_the_plans_reason_with_the_inputs_device(monkeypatch, packed):
    """Whatever the plan's reason, forward reports it with the device the call ran on (what
    decides between a warning and a log line)."""
    monkeypatch.setattr(LSTM, "kernel_plan", lambda self, *a, **k: KernelPlan(reason="a made-up reason"))
    seen = []
    monkeypatch.setattr(lstm_triton.module, "_note_fallback", lambda reason, device: seen.append((reason, device)))
    x = torch.randn(5, 2, 3)
    LSTM(3, 4)(nn.utils.rnn.pack_padded_sequence(x, [5, 3]) if packed else x)
    assert seen == [("a made-up reason", x.device)]


def test_kernel_plan_names_its_configs_as_the_tools_do():
    """A plan prints its configs by LSTMConfig.label, the name in the benchmark's config
    column, the tuner's tables and aot's labels."""
    ours = LSTM(3, 48).to(DEVICE)
    x = torch.randn(5, 2, 3, device=DEVICE)
    with torch.no_grad():
        plan = ours.kernel_plan(x)
    assert str(plan) == plan.label == plan.config.label(48)
    assert re.fullmatch(r"P\d+-BH\d+-BB\d+-(dot-splitk\d+|fma)-w\d+", plan.label)
    train = ours.kernel_plan(x, training=True)
    assert train.label == f"{train.config.label(48)} backward {train.backward.label(48)}"
    assert str(KernelPlan(reason="torch.float64 input")) == "PyTorch's LSTM: torch.float64 input"


def test_cpu_fallback_is_logged_once_per_reason_not_warned(monkeypatch, caplog):
    """CPU tensors without the interpreter, and float64, run PyTorch's LSTM: one INFO line per
    reason from the module's logger, no warning."""
    monkeypatch.setattr(lstm_triton.module, "_noted", set())
    caplog.set_level(logging.INFO, logger="lstm_triton.module")
    ours = LSTM(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PyTorchFallbackWarning)
        for _ in range(2):
            ours.double()(torch.randn(5, 2, 3, dtype=torch.float64))
        monkeypatch.setattr(lstm_triton._env, "interpreting", lambda: False)
        for _ in range(2):
            ours.float()(torch.randn(5, 2, 3))
    lines = [r.getMessage() for r in caplog.records if r.name == "lstm_triton.module"]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in caplog.records), lines
    assert "torch.float64 input" in lines[0] and "cpu tensors without TRITON_INTERPRET=1" in lines[1]


def test_interpreter_switched_on_after_import_is_a_one_line_error():
    """TRITON_INTERPRET=1 set after ``import lstm_triton`` cannot take effect (Triton reads it when
    the kernels are defined): one line says to set it before importing, not Triton's crash deep
    in its driver lookup."""
    code = (
        "import os, torch, lstm_triton\n"
        "lstm = lstm_triton.LSTM(3, 4)\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "lstm(torch.randn(5, 2, 3))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("lstm_triton.module.LateInterpreterError: TRITON_INTERPRET=1 was set after"), res.stderr
    assert "before importing lstm_triton" in last and "active drivers" not in res.stderr


def test_training_mode_applies_dropout_between_layers():
    """dropout=1 zeroes the second layer's input in training mode, as nn.LSTM does; eval
    mode applies none."""
    ours, ref = pair(3, 5, num_layers=2, dropout=1.0)
    x = torch.randn(6, 2, 3)
    layer2 = nn.LSTM(5, 5)
    layer2.load_state_dict({k.replace("_l1", "_l0"): v for k, v in ref.state_dict().items() if "_l1" in k})
    want_train, _ = lstm_reference(layer2, torch.zeros(6, 2, 5))
    want_eval, _ = lstm_reference(ref, x)
    with torch.no_grad():
        y_train, _ = ours.train()(x.to(DEVICE))
        y_eval, _ = ours.eval()(x.to(DEVICE))
    assert_close("train", y_train, want_train, TOL32)
    assert_close("eval", y_eval, want_eval, TOL32)


def test_no_grad_keeps_nothing_for_backward():
    """Inference saves no activations: outputs carry no autograd graph."""
    ours, _ = pair(3, 4)
    x = torch.randn(5, 2, 3, device=DEVICE)
    with torch.no_grad():
        y, (h_n, _) = ours(x)
    assert y.grad_fn is None and h_n.grad_fn is None
    ours.requires_grad_(False)
    y, _ = ours(x)  # nothing to differentiate: the inference path
    assert y.grad_fn is None


def test_weights_changed_in_place_are_seen():
    """The packed-weight cache follows in-place updates (optimizer steps, load_state_dict)."""
    ours, ref = pair(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        ours(x.to(DEVICE))
        for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
            p.mul_(1.5)
            q.mul_(1.5)
        y, _ = ours(x.to(DEVICE))
    assert_close("after update", y, lstm_reference(ref, x)[0], TOL32)


def test_weights_that_are_fresh_tensors_each_call_are_seen():
    """Inference over weights that are new tensors at every call (torch.func.functional_call,
    a weight-norm parametrization), which an allocator may place where the last call's were,
    with the same version: every call sees its own weights, never the cached ones."""
    torch.manual_seed(4)
    ours, _ = pair(3, 8, bidirectional=True)
    x = torch.randn(5, 2, 3, device=DEVICE)
    memory = {n: torch.empty_like(p) for n, p in ours.named_parameters()}
    for step in range(3):
        for t in memory.values():
            t.data.copy_(torch.randn_like(t) * 0.3)  # new values; .data: the version stays
        params = {n: t.view_as(t) for n, t in memory.items()}  # new tensors at the same addresses
        with torch.no_grad():
            y, _ = torch.func.functional_call(ours, params, (x,))
        alone = LSTM(3, 8, bidirectional=True).to(DEVICE)
        alone.load_state_dict(params)
        assert_close(f"functional_call {step}", y, lstm_reference(alone, x)[0], TOL32)

    weight_norm = torch.nn.utils.parametrizations.weight_norm
    normed = weight_norm(LSTM(3, 8).to(DEVICE), "weight_hh_l0")
    for step in range(3):
        with torch.no_grad():
            normed.parametrizations.weight_hh_l0.original0.mul_(0.5)  # a new weight_hh_l0
            y, _ = normed(x)
        assert_close(f"weight norm {step}", y, lstm_reference(normed, x)[0], TOL32)


def test_pickle_round_trip_drops_the_cache():
    ours, _ = pair(3, 4)
    x = torch.randn(5, 2, 3, device=DEVICE)
    with torch.no_grad():
        y, _ = ours(x)
        copy = pickle.loads(pickle.dumps(ours))
        assert copy._packed == {}
        y2, _ = copy(x)
    assert torch.equal(y, y2)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_module_to_dtype_runs_kernels_in_that_dtype(dtype):
    ours, ref = pair(4, 16, num_layers=2, bidirectional=True)
    ours = ours.to(dtype)
    x = torch.randn(7, 3, 4)
    want, _ = lstm_reference(ref.to(dtype), x.to(dtype))
    with torch.no_grad():
        y, _ = ours(x.to(DEVICE, dtype))
    assert y.dtype == dtype
    assert_close("output", y, want, tolerance(dtype))
