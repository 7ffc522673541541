import copy
import dataclasses
import functools
import math

import pytest
import torch

from bench.gate import check, reference, rel_err
from bench.providers import PROVIDERS, Provider
from bench.results import OK, ROUTED, SKIPPED, UNSUPPORTED, WRONG
from bench.runner import CPU_TORCH_THREADS, base_module, measure_row
from bench.sweeps import Case
from bench.timing import Policy
from bench.workload import Inputs
from lstm_triton._env import interpreting

interpreter = pytest.mark.skipif(not interpreting(), reason="our kernels run on CPU tensors only under the interpreter")
POLICY = Policy(warmup=1, min_reps=3, max_reps=3, target_ms=0.0, n_sets=2)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As a CPU run does (runner.CPU_TORCH_THREADS): torch's pool and the interpreter's numpy
    spin against each other otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_TORCH_THREADS)
    yield
    torch.set_num_threads(before)


def counted(build):
    """A provider build that counts the module's forward calls in ``calls``."""
    calls = []

    def make(base):
        module = build(base)
        module.register_forward_hook(lambda *_: calls.append(1))
        return module

    return make, calls


def perturbed(base):
    """nn.LSTM with one weight nudged: runs fine, computes the wrong function."""
    module = copy.deepcopy(base)
    with torch.no_grad():
        module.weight_hh_l0.add_(0.05)
    return module


def _measure(provider, case):
    base = base_module(case, "cpu")
    inputs = Inputs(case, "cpu", POLICY.n_sets)
    expected = functools.cache(lambda: reference(case, base, inputs))
    return measure_row(provider, case, base, inputs, expected, POLICY, "cpu")


@pytest.mark.parametrize("mode", ["fwd", "fwdbw"])
def test_wrong_provider_is_reported_wrong_and_never_timed(mode):
    build, calls = counted(perturbed)
    case = Case("test", mode, "float32", T=5, B=2, H=8, I=6, layers=1, dirs=2)
    m = _measure(Provider("wrong", "a deliberately wrong LSTM", build, cudnn=False), case)
    assert m["status"] == WRONG
    assert m["rel_err"] > m["tol"]
    assert "median_ms" not in m
    assert len(calls) == 1  # the gate's call only


def test_right_provider_passes_and_is_timed():
    build, calls = counted(PROVIDERS["pytorch"].build)
    case = Case("test", "fwdbw", "float32", T=5, B=2, H=8, I=6, layers=2, dirs=2)
    m = _measure(Provider("pytorch", "nn.LSTM", build, cudnn=False), case)
    assert m["status"] == OK, m
    assert m["rel_err"] <= m["tol"]
    assert len(calls) == 1 + POLICY.warmup + POLICY.min_reps
    assert m["q20_ms"] <= m["median_ms"] <= m["q80_ms"]
    assert m["us_per_step"] == pytest.approx(m["median_ms"] * 1e3 / case.T)


@interpreter
def test_ours_passes_the_gate_under_the_interpreter():
    case = Case("test", "fwd", "bfloat16", T=4, B=3, H=16, I=8, layers=1, dirs=2)
    m = _measure(PROVIDERS["ours"], case)
    assert m["status"] == OK, m
    assert m["config"].startswith("P1-")


class NoBackward(torch.nn.LSTM):
    def forward(self, input, hx=None):
        if torch.is_grad_enabled():
            raise NotImplementedError("no backward here")
        return super().forward(input, hx)


def no_backward(base):
    module = NoBackward(base.input_size, base.hidden_size, base.num_layers, bidirectional=base.bidirectional)
    module.load_state_dict(base.state_dict())
    return module


def test_not_implemented_is_unsupported_in_training_and_timed_in_inference():
    provider = Provider("nobwd", "forward only", no_backward, cudnn=False)
    case = Case("test", "fwdbw", "float32", T=3, B=2, H=16, I=8, layers=1, dirs=1)
    m = _measure(provider, case)
    assert m["status"] == UNSUPPORTED and m["reason"] == "no backward here"
    assert _measure(provider, dataclasses.replace(case, mode="fwd"))["status"] == OK


@interpreter
def test_ours_training_is_timed_or_unsupported():
    # unsupported until the backward kernel lands, then gated and timed with no bench change
    case = Case("test", "fwdbw", "float32", T=3, B=2, H=16, I=8, layers=1, dirs=2)
    m = _measure(PROVIDERS["ours"], case)
    assert m["status"] in (OK, UNSUPPORTED), m


def test_ours_routed_to_pytorch_is_not_timed():
    case = Case("test", "fwd", "float64", T=3, B=2, H=16, I=8, layers=1, dirs=1)
    m = _measure(PROVIDERS["ours"], case)
    assert m["status"] == ROUTED
    assert "PyTorch" in m["reason"]


@interpreter
def test_ours_training_without_a_backward_config_is_routed(monkeypatch):
    import lstm_triton.module

    monkeypatch.setattr(lstm_triton.module, "select_backward_config", lambda *args: None)
    case = Case("test", "fwdbw", "float32", T=3, B=2, H=16, I=8, layers=1, dirs=1)
    m = _measure(PROVIDERS["ours"], case)
    assert m["status"] == ROUTED and "backward" in m["reason"]


def test_gpu_providers_skip_on_cpu():
    case = Case("test", "fwd", "float32", T=3, B=2, H=16, I=8, layers=1, dirs=1)
    for name in ("cudnn", "cudnn_graph", "ours_graph"):
        m = _measure(PROVIDERS[name], case)
        assert m["status"] == SKIPPED and "CUDA" in m["reason"], name


def test_nan_and_missing_outputs_never_pass():
    ref = {"y": torch.ones(3, dtype=torch.float64)}
    assert check("float32", {"y": torch.ones(3)}, ref).ok
    assert not check("float32", {"y": torch.tensor([1.0, math.nan, 1.0])}, ref).ok
    assert not check("float32", {"y": torch.tensor([1.0, math.inf, 1.0])}, ref).ok
    assert not check("float32", {}, ref).ok
    assert math.isnan(rel_err(torch.ones(2), ref["y"]))


@interpreter
@pytest.mark.parametrize("mode", ["fwd-packed", "fwdbw-packed"])
def test_packed_modes_pass_the_gate_for_ours_and_pytorch(mode):
    """A packed row feeds a PackedSequence of mixed lengths to both; the float64 oracle runs
    the same lengths, so both pass, and a perturbed module still fails."""
    case = Case("test", mode, "float32", T=6, B=3, H=16, I=8, layers=1, dirs=2)
    assert sorted(case.lengths()) == [3, 5, 6] and case.lengths() != sorted(case.lengths(), reverse=True)
    assert case.tokens() == 14
    for name in ("ours", "pytorch"):
        m = _measure(PROVIDERS[name], case)
        assert m["status"] == OK, (name, m)
    m = _measure(dataclasses.replace(PROVIDERS["pytorch"], build=perturbed), case)
    assert m["status"] == WRONG
