"""On a CUDA GPU (skipped elsewhere): the compiled kernels against a float64 reference on the
bench grid, next to cuDNN's own error, and the kernels sharing the GPU with other work."""

import copy

import pytest
import torch
from torch import nn

import lstm_triton.launch
from lstm_triton import LSTM, BarrierTimeoutError, LSTMConfig
from lstm_triton.aot import GRID_B, GRID_H, ODD_H
from lstm_triton.dispatch import select_config
from lstm_triton.launch import PERSISTENT, STEPWISE, check_timeouts, lstm_recurrent_fwd, timeout_flag
from lstm_triton.layout import pack_layer
from lstm_triton.reference import lstm_reference
from tests.helpers import DTYPES, assert_close, dtype_id, tolerance
from tests.test_backward import grad_tolerance

pytestmark = pytest.mark.gpu
T_CHECK = 64  # long enough for errors to compound, short enough for the float64 reference


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def grid_problem(H, B, bi, dtype, T=T_CHECK):
    torch.manual_seed(H * 1000 + B)
    ref = nn.LSTM(H, H, bidirectional=bi, device="cuda", dtype=dtype)
    ours = LSTM.from_torch(ref)
    x = torch.randn(T, B, H, device="cuda", dtype=dtype)
    D = 2 if bi else 1
    hx = tuple(torch.randn(D, B, H, device="cuda", dtype=dtype) for _ in range(2))
    return ours, ref, x, hx


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("H", GRID_H + ODD_H)
def test_grid_against_float64_and_cudnn(H, bi, dtype):
    """Every batch size of the bench grid, at its hidden sizes and at ones that are not powers
    of two (masked units; warps reloading h other warps stored): our error against float64
    within the dtype's tolerance, and never far above cuDNN's own error on the same inputs."""
    for B in GRID_B:
        ours, ref, x, hx = grid_problem(H, B, bi, dtype)
        with torch.no_grad():
            want_y, (want_h, want_c) = lstm_reference(ref, x, hx)
            y, (h_n, c_n) = ours(x, hx)
            cudnn_y, _ = ref(x, hx)
        tol = tolerance(dtype)
        assert_close(f"B={B} output", y, want_y, tol)
        assert_close(f"B={B} h_n", h_n, want_h, tol)
        assert_close(f"B={B} c_n", c_n, want_c, tol)
        assert rel_err(y, want_y) <= max(tol / 2, 4 * rel_err(cudnn_y, want_y)), (B, "far above cuDNN's error")


def test_stepwise_and_persistent_agree_on_gpu():
    ours, ref, x, hx = grid_problem(256, 8, True, torch.float32)
    cfg = LSTMConfig(block_h=32, block_b=8)
    sfx = ("", "_reverse")
    layer = pack_layer(
        *([getattr(ref, f"{k}_l0{s}").detach() for s in sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
        block_h=32,
    )
    xp = torch.addmm(layer.bias, x.reshape(-1, 256), layer.w_ih.t()).view(T_CHECK, 8, -1)
    y_p, h_p, c_p, _ = lstm_recurrent_fwd(xp, layer, hx[0], hx[1], cfg, mode=PERSISTENT)
    y_s, h_s, c_s, _ = lstm_recurrent_fwd(xp, layer, hx[0], hx[1], cfg, mode=STEPWISE)
    assert torch.equal(y_p, y_s) and torch.equal(h_p, h_s) and torch.equal(c_p, c_s)


def test_runs_beside_a_large_gemm_on_another_stream():
    """A GEMM that occupies every SM on another stream delays our launch, never hangs it."""
    ours, ref, x, hx = grid_problem(1024, 64, False, torch.bfloat16)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    side, main = torch.cuda.Stream(), torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.no_grad():
        with torch.cuda.stream(side):
            for _ in range(20):
                a = a @ a.t() / 8192
        with torch.cuda.stream(main):
            y, _ = ours(x, hx)
    torch.cuda.synchronize()
    assert_close("output", y, lstm_reference(ref, x, hx)[0], tolerance(torch.bfloat16))


def test_two_lstms_on_two_streams_at_once(monkeypatch):
    """Two launches whose programs together exceed the SMs: each is co-resident on its own
    (cooperative launch), so both finish and both are right. No host sync between the calls
    (time-out checks off), so the launches really overlap."""
    monkeypatch.setattr(lstm_triton.launch, "CHECK_TIMEOUTS", False)
    dev = torch.device("cuda")
    problems = [grid_problem(1024, 64, False, torch.bfloat16), grid_problem(512, 256, True, torch.bfloat16)]
    n_sm = torch.cuda.get_device_properties(dev).multi_processor_count
    progs = []
    for ours, _, x, _ in problems:
        cfg = select_config(ours.hidden_size, x.shape[1], ours.num_directions, x.dtype, dev)
        progs.append(cfg.programs(ours.hidden_size) * -(-x.shape[1] // cfg.block_b) * ours.num_directions)
    assert sum(min(p, n_sm) for p in progs) > n_sm, progs  # they cannot all be resident at once
    streams = [torch.cuda.Stream() for _ in problems]
    torch.cuda.synchronize()
    outs = []
    with torch.no_grad():
        for _ in range(3):
            for (ours, _, x, hx), s in zip(problems, streams, strict=True):
                with torch.cuda.stream(s):
                    outs.append(ours(x, hx)[0])
    torch.cuda.synchronize()
    for i, (_, ref, x, hx) in enumerate(problems * 3):
        assert_close(f"launch {i}", outs[i], lstm_reference(ref, x, hx)[0], tolerance(torch.bfloat16))


def test_forced_barrier_timeout_raises_and_leaves_the_gpu_usable():
    ours, ref, x, hx = grid_problem(512, 8, False, torch.bfloat16)
    cfg = select_config(512, 8, 1, torch.bfloat16, torch.device("cuda"))
    assert cfg.programs(512) > 1
    layer = ours._packed_layer(0, cfg)
    xp = torch.addmm(layer.bias, x.reshape(-1, 512), layer.w_ih.t()).view(T_CHECK, 8, -1)
    lstm_recurrent_fwd(xp, layer, hx[0], hx[1], cfg, max_spins=0)
    with pytest.raises(BarrierTimeoutError):
        check_timeouts(xp.device, wait=True)  # the call itself queued its check, without a host sync
    assert not timeout_flag(xp.device).any(), "the reported time-out's flag was not cleared"
    with torch.no_grad():
        y, _ = ours(x, hx)
    check_timeouts(xp.device, wait=True)  # the next call timed nothing out: nothing to report
    assert_close("after a time-out", y, lstm_reference(ref, x, hx)[0], tolerance(torch.bfloat16))


SLEEP_CYCLES = 1 << 28  # ~0.15 s of a GPU's clock: the flag is set long after the host's checks are queued


def test_a_waiting_check_reports_a_flag_set_behind_running_work():
    """A time-out flag set behind a long kernel: a check without ``wait`` returns at once and
    reports nothing yet (no host sync; the copy it queued has not landed), and
    ``check_timeouts(wait=True)`` raises at once (it reads the flag after the queued work, not a
    copy still in flight), clears the flag, and the next check reports nothing."""
    dev = torch.device("cuda", torch.cuda.current_device())
    flag = timeout_flag(dev)
    torch.cuda.synchronize()
    assert not flag.any(), "an earlier call's time-out was left unreported"
    check_timeouts(dev, wait=True)  # no copy of an earlier check left in flight
    torch.cuda._sleep(SLEEP_CYCLES)
    flag.fill_(1)  # as a timed-out launch queued behind the long kernel sets it
    check_timeouts(dev)
    assert not torch.cuda.current_stream().query(), "the check without wait synchronized with the GPU"
    with pytest.raises(BarrierTimeoutError, match="timed out"):
        check_timeouts(dev, wait=True)
    assert not flag.any(), "the reported time-out's flag was not cleared"
    check_timeouts(dev, wait=True)


def test_calls_queue_without_a_host_sync():
    """Inference and a training step never wait for the GPU: the time-out flag is read from a
    copy that has already landed (PyTorch's sync debug mode raises on any synchronizing call)."""
    ours, _, x, hx = grid_problem(512, 8, True, torch.bfloat16)
    x = x.requires_grad_()

    def calls():
        with torch.no_grad():
            ours(x, hx)
        y, (h_n, c_n) = ours(x, hx)
        (y.float().sum() + h_n.float().sum() + c_n.float().sum()).backward()

    calls()  # compiles and packs first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        calls()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    check_timeouts(x.device, wait=True)


def grads_of(module, x, hx, gy):
    """Gradients of a fixed linear loss of all outputs w.r.t. x, h_0, c_0 and every parameter."""
    x = x.detach().clone().requires_grad_()
    hx = tuple(t.detach().clone().requires_grad_() for t in hx)
    module.zero_grad(set_to_none=True)
    y, (h_n, c_n) = module(x, hx)
    ((y.double() * gy).sum() + h_n.double().sum() + c_n.double().sum()).backward()
    return [x.grad, *(t.grad for t in hx), *(p.grad for p in module.parameters())]


def float64_grads(ref, x, hx, gy):
    """The reference: a float64 copy of ``ref`` on PyTorch's native (non-cuDNN) LSTM."""
    with torch.backends.cudnn.flags(enabled=False):
        return grads_of(copy.deepcopy(ref).double(), x.double(), tuple(t.double() for t in hx), gy)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("H", GRID_H + ODD_H)
def test_grid_gradients_against_float64_and_cudnn(H, bi, dtype):
    """Every gradient on the bench grid against a float64 reference, and never far above
    cuDNN's own error on the same inputs."""
    tol = grad_tolerance(dtype)
    for B in GRID_B:
        ours, ref, x, hx = grid_problem(H, B, bi, dtype)
        gy = torch.randn(*x.shape[:2], ours.num_directions * H, device="cuda", dtype=torch.float64)
        want = float64_grads(ref, x, hx, gy)
        got = grads_of(ours, x, hx, gy)
        cudnn = grads_of(ref, x, hx, gy)
        for i, (g, w, c) in enumerate(zip(got, want, cudnn, strict=True)):
            assert_close(f"B={B} grad {i}", g, w, tol)
            assert rel_err(g, w) <= max(tol / 2, 4 * rel_err(c, w)), (B, i, "far above cuDNN's error")


PROJ_H, PROJ_R, PROJ_B = 512, 128, 16  # a speech-style LSTM with projections


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_projections_against_float64_and_cudnn(dtype):
    """proj_size > 0, two bidirectional layers: outputs and every gradient against float64,
    never far above cuDNN's own error."""
    torch.manual_seed(7)
    ref = nn.LSTM(PROJ_H, PROJ_H, num_layers=2, bidirectional=True, proj_size=PROJ_R, device="cuda", dtype=dtype)
    ours = LSTM.from_torch(ref)
    x = torch.randn(T_CHECK, PROJ_B, PROJ_H, device="cuda", dtype=dtype)
    hx = (
        torch.randn(4, PROJ_B, PROJ_R, device="cuda", dtype=dtype),
        torch.randn(4, PROJ_B, PROJ_H, device="cuda", dtype=dtype),
    )
    assert ours.kernel_plan(x, hx, training=True).reason is None
    with torch.no_grad():
        y, _ = ours(x, hx)
        want_y, _ = lstm_reference(ref, x, hx)
        cudnn_y, _ = ref(x, hx)
    assert_close("output", y, want_y, tolerance(dtype))
    assert rel_err(y, want_y) <= max(tolerance(dtype) / 2, 4 * rel_err(cudnn_y, want_y)), "far above cuDNN's error"
    gy = torch.randn(T_CHECK, PROJ_B, 2 * PROJ_R, device="cuda", dtype=torch.float64)
    tol = grad_tolerance(dtype)
    want, got, cudnn = float64_grads(ref, x, hx, gy), grads_of(ours, x, hx, gy), grads_of(ref, x, hx, gy)
    for i, (g, w, c) in enumerate(zip(got, want, cudnn, strict=True)):
        assert_close(f"grad {i}", g, w, tol)
        assert rel_err(g, w) <= max(tol / 2, 4 * rel_err(c, w)), (i, "far above cuDNN's error")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_module_on_another_gpu_than_the_current_one():
    """Triton launches on the current device: the launcher must switch to the tensors'."""
    torch.manual_seed(5)
    ref = nn.LSTM(256, 256, bidirectional=True, device="cuda:1", dtype=torch.bfloat16)
    ours = LSTM.from_torch(ref)
    x = torch.randn(T_CHECK, 8, 256, device="cuda:1", dtype=torch.bfloat16)
    with torch.cuda.device(0):
        y, _ = ours(x)
        y.float().sum().backward()  # the training path too: a fresh forward and the backward kernel
        with torch.no_grad():
            y_eval, _ = ours(x)
    assert y.device == x.device and ours.weight_hh_l0.grad is not None
    assert_close("output on cuda:1", y_eval, lstm_reference(ref, x)[0], tolerance(torch.bfloat16))


def test_gradients_reproducible_on_gpu():
    ours, _, x, hx = grid_problem(512, 64, True, torch.bfloat16)
    gy = torch.randn(*x.shape[:2], 1024, device="cuda", dtype=torch.float64)
    first, second = grads_of(ours, x, hx, gy), grads_of(ours, x, hx, gy)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_cuda_graph_capture_inference_and_training():
    """Forward and backward replay from CUDA graphs (no host sync, barrier counters zeroed
    inside the graph) and stay right on new inputs."""
    ours, ref, x, hx = grid_problem(512, 8, True, torch.bfloat16)
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            ours(static_x, hx)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_y, _ = ours(static_x, hx)
    for _ in range(2):
        static_x.copy_(torch.randn_like(x))
        graph.replay()
        assert_close("replayed output", static_y, lstm_reference(ref, static_x, hx)[0], tolerance(torch.bfloat16))

    trained = torch.cuda.make_graphed_callables(ours, (x.clone().requires_grad_(),))
    x_new = torch.randn_like(x).requires_grad_()
    y, _ = trained(x_new)
    y.float().sum().backward()
    x64 = x_new.detach().double().requires_grad_()
    with torch.backends.cudnn.flags(enabled=False):
        copy.deepcopy(ref).double()(x64)[0].sum().backward()
    assert_close("replayed dx", x_new.grad, x64.grad, 4e-2)


def test_cuda_graph_capture_with_device_lengths_and_projections():
    """lengths= as a device tensor inside capture (a CPU one would need a sync), projections and
    h_0: the replay follows new inputs and new lengths written into the captured tensors."""
    torch.manual_seed(9)
    ref = nn.LSTM(128, 256, bidirectional=True, proj_size=64, device="cuda", dtype=torch.bfloat16)
    ours = LSTM.from_torch(ref)
    x = torch.randn(T_CHECK, 8, 128, device="cuda", dtype=torch.bfloat16)
    hx = (
        torch.randn(2, 8, 64, device="cuda", dtype=torch.bfloat16),
        torch.randn(2, 8, 256, device="cuda", dtype=torch.bfloat16),
    )
    lengths = torch.randint(1, T_CHECK + 1, (8,), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            ours(x, hx, lengths=lengths)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_y, _ = ours(x, hx, lengths=lengths)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        lengths.copy_(torch.randint(1, T_CHECK + 1, (8,), device="cuda"))
        graph.replay()
        want, _ = lstm_reference(ref, x, hx, lengths=lengths.cpu())
        assert_close("replayed output", static_y, want, tolerance(torch.bfloat16))


def test_torch_compile_with_inductor_on_gpu():
    ours, ref, x, hx = grid_problem(256, 8, True, torch.bfloat16)
    compiled = torch.compile(ours, fullgraph=True)
    with torch.no_grad():
        y, _ = compiled(x, hx)
    assert_close("compiled output", y, lstm_reference(ref, x, hx)[0], tolerance(torch.bfloat16))
