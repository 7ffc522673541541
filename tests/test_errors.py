"""Bad input gets the exception type nn.LSTM raises (code that catches it keeps working) with a
message that names the bad argument; never a Triton crash or a silent wrong answer. Odd but
valid input (NaN/Inf, empty batches, non-contiguous or expanded tensors, ...) gives what
nn.LSTM gives.

One table drives the tests and docs/errors.md; a test fails when the page is not what the
table renders. Rewrite the page with ``python -m tests.test_errors``."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm_triton import LSTM
from tests.helpers import DEVICE, assert_close, tolerance

L, D, H, I, B, T = 2, 2, 4, 3, 2, 5
DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
NAN, INF = float("nan"), float("inf")
INPUT, STATES, WEIGHTS = "input", "states", "weights"


def rand(*shape, **kw):
    return torch.randn(*shape, **kw)


def state(*shape, **kw):
    return (rand(*shape, **kw), rand(*shape, **kw))


def with_value(t: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    t[index] = value
    return t


def inference_tensor(*shape):
    with torch.inference_mode():
        return rand(*shape)


def batch_input():
    return rand(T, B, I)


def padded_input(value: float):
    """A batch whose second sequence (length 2 of T) has ``value`` in its padding."""
    x = rand(T, B, I)
    x[2:, 1] = value
    return x


def packed_input():
    return pack_padded_sequence(rand(T, B, I), torch.tensor([2, T]), enforce_sorted=False)


@dataclass(frozen=True)
class Row:
    """One call of ``LSTM(3, 4, num_layers=2, bidirectional=True)``: ``forward(input, hx)``."""

    id: str
    what: str  # the input, in words (the page's second column)
    make_input: Callable
    make_hx: Callable | None = None
    exc: type | None = None  # what nn.LSTM raises; None: accepted, with nn.LSTM's results
    message: str = ""  # a regex our message matches
    # nn.LSTM has a message of its own for this input (not Python's, not oneDNN's): ours starts
    # with it, word for word
    torch_text: bool = False
    grads: tuple[str, ...] = ()  # what requires grad (INPUT, STATES, WEIGHTS): a training call
    gap: str | None = None  # a known difference from nn.LSTM: an xfail until fixed
    # ``lengths=`` (ours, for padded input): nn.LSTM has none and gets the packed input instead
    make_lengths: Callable | None = None


ROWS = [
    # rejected: the input
    Row("input-1d", "input of 1 dimension", lambda: rand(I), None, ValueError, r"input shape \(3,\)", True),
    Row("input-0d", "a 0-dimensional input (a scalar)", lambda: torch.tensor(1.0), None, ValueError, r"got 0D", True),
    Row("input-4d", "input of 4 dimensions", lambda: rand(T, B, I, 1), None, ValueError, r"got 4D", True),
    Row(
        "input_size",
        "input.size(-1) != input_size",
        lambda: rand(T, B, I + 1),
        None,
        RuntimeError,
        r"Expected 3, got 4 \(LSTM input of shape \(5, 2, 4\)\)",
        True,
    ),
    Row("seq-len-0", "sequence length 0", lambda: rand(0, B, I), None, RuntimeError, r"shape \(0, 2, 3\)", True),
    Row("seq-len-0-unbatched", "sequence length 0, unbatched", lambda: rand(0, I), None, RuntimeError, "", True),
    Row(
        "input-float64",
        "float64 input, float32 weights",
        lambda: rand(T, B, I, dtype=torch.float64),
        None,
        ValueError,
        r"input dtype \(torch.float64\)",
        True,
    ),
    Row(
        "input-float16",
        "float16 input (a kernel dtype), float32 weights",
        lambda: rand(T, B, I, dtype=torch.float16),
        None,
        ValueError,
        r"input dtype \(torch.float16\) does not match weight dtype",
        True,
    ),
    Row(
        "input-int",
        "integer input",
        lambda: torch.ones(T, B, I, dtype=torch.long),
        None,
        ValueError,
        r"torch\.int64",
        True,
    ),
    Row(
        "input-bool",
        "boolean input",
        lambda: torch.ones(T, B, I, dtype=torch.bool),
        None,
        ValueError,
        r"torch\.bool",
        True,
    ),
    Row(
        "input-complex",
        "complex input",
        lambda: rand(T, B, I, dtype=torch.complex64),
        None,
        ValueError,
        r"input dtype \(torch\.complex64\)",
        True,
    ),
    Row(
        "input-device",
        "input on another device",
        lambda: rand(T, B, I, device="meta"),
        None,
        RuntimeError,
        r"model.to\('meta'\)",
        True,
    ),
    Row("input-list", "a nested list as input", lambda: [[0.0] * I] * T, None, AttributeError, "must be a Tensor"),
    Row("input-none", "None as input", lambda: None, None, AttributeError, r"input must be a Tensor"),
    Row("input-numpy", "a numpy array as input", lambda: rand(T, B, I).numpy(), None, AttributeError, r"got ndarray"),
    Row(
        "inference-tensor",
        "a tensor made under inference_mode as the input of a training call",
        lambda: inference_tensor(T, B, I),
        None,
        RuntimeError,
        r"Inference tensors cannot be saved for backward",
        True,
        grads=(WEIGHTS,),
    ),
    # rejected: the initial state hx = (h_0, c_0)
    Row(
        "h0-shape",
        "h_0 with the wrong batch size",
        batch_input,
        lambda: (rand(L * D, B + 1, H), rand(L * D, B, H)),
        RuntimeError,
        r"h_0 must be of shape \(4, 2, 4\)",
        True,
    ),
    Row(
        "c0-shape",
        "c_0 with the wrong hidden size",
        batch_input,
        lambda: (rand(L * D, B, H), rand(L * D, B, H + 1)),
        RuntimeError,
        r"c_0 must be of shape",
        True,
    ),
    Row(
        "hx-layers",
        "h_0 and c_0 for the wrong number of layers x directions",
        batch_input,
        lambda: state(L * D - 1, B, H),
        RuntimeError,
        r"got \[3, 2, 4\]: h_0",
        True,
    ),
    Row(
        "hx-2d-for-batched",
        "2-D h_0 and c_0 for batched input",
        batch_input,
        lambda: state(L * D, H),
        RuntimeError,
        r"h_0 must be of shape \(4, 2, 4\)",
        True,
    ),
    Row(
        "hx-3d-for-unbatched",
        "3-D h_0 and c_0 for unbatched input",
        lambda: rand(T, I),
        lambda: state(L * D, 1, H),
        RuntimeError,
        r"h_0 must be of shape \(4, 4\)",
        True,
    ),
    Row(
        "hx-dtype",
        "float64 h_0 and c_0, float32 input",
        batch_input,
        lambda: state(L * D, B, H, dtype=torch.float64),
        RuntimeError,
        r"h_0 dtype \(torch.float64\)",
    ),
    Row(
        "c0-dtype",
        "c_0 alone in float64",
        batch_input,
        lambda: (rand(L * D, B, H), rand(L * D, B, H, dtype=torch.float64)),
        RuntimeError,
        r"c_0 dtype \(torch.float64\)",
    ),
    Row(
        "hx-int",
        "integer h_0 and c_0",
        batch_input,
        lambda: (torch.ones(L * D, B, H, dtype=torch.long),) * 2,
        RuntimeError,
        r"h_0 dtype \(torch.int64\)",
    ),
    Row(
        "hx-device",
        "h_0 and c_0 on another device",
        batch_input,
        lambda: state(L * D, B, H, device="meta"),
        RuntimeError,
        r"h_0 is on meta",
        True,
    ),
    Row(
        "c0-device",
        "c_0 alone on another device",
        batch_input,
        lambda: (rand(L * D, B, H), rand(L * D, B, H, device="meta")),
        RuntimeError,
        r"c_0 is on meta",
        True,
    ),
    Row("hx-tensor", "one tensor as hx", batch_input, lambda: rand(L * D, B, H), RuntimeError, r"hx must be a tuple"),
    Row("hx-one-tensor", "a 1-tuple as hx", batch_input, lambda: (rand(L * D, B, H),), IndexError, "must be a tuple"),
    Row("hx-empty", "an empty tuple as hx", batch_input, lambda: (), IndexError, r"hx must be a tuple"),
    Row(
        "hx-three-tensors",
        "a 3-tuple of tensors as hx",
        batch_input,
        lambda: state(L * D, B, H) + (rand(L * D, B, H),),
        RuntimeError,
        r"hx must be a tuple .* got a tuple of 3",
        True,
    ),
    Row(
        "hx-c0-none",
        "(h_0, None) as hx",
        batch_input,
        lambda: (rand(L * D, B, H), None),
        AttributeError,
        r"hx must be a tuple",
    ),
    Row(
        "hx-string",
        "a string as hx",
        batch_input,
        lambda: "hx",
        AttributeError,
        r"hx must be a tuple",
    ),
    Row(
        "hx-nested",
        "a pair of 1-tuples as hx",
        batch_input,
        lambda: ((rand(L * D, B, H),), (rand(L * D, B, H),)),
        AttributeError,
        r"hx must be a tuple",
    ),
    # lengths= (ours): the checks pack_padded_sequence makes, and more
    Row(
        "lengths-float",
        "float lengths",
        batch_input,
        exc=TypeError,
        message=r"lengths must hold integers, got torch.float32",
        make_lengths=lambda: [1.5, 2.0],
    ),
    Row(
        "lengths-count",
        "more lengths than sequences",
        batch_input,
        exc=RuntimeError,
        message=r"lengths must have one entry per batch element \(2\), got shape \(3,\)",
        make_lengths=lambda: [T, 2, 1],
    ),
    Row(
        "lengths-zero", "a length of 0", batch_input, exc=RuntimeError, message=r"in 1..5", make_lengths=lambda: [0, 2]
    ),
    Row(
        "lengths-too-long",
        "a length above the padded length",
        batch_input,
        exc=RuntimeError,
        message=r"every length must be in 1..5 .* from 2 to 6",
        make_lengths=lambda: [T + 1, 2],
    ),
    Row(
        "lengths-with-packed",
        "lengths= with a PackedSequence",
        packed_input,
        exc=ValueError,
        message=r"lengths= is for padded input",
        make_lengths=lambda: [2, T],
    ),
    Row(
        "lengths-none-entry",
        "None among the lengths",
        batch_input,
        exc=TypeError,
        message=r"lengths",
        make_lengths=lambda: [None, 2],
    ),
    # accepted: what nn.LSTM gives
    Row("nan-input", "a NaN in the input", lambda: with_value(rand(T, B, I), (2, 1, 0), NAN)),
    Row("inf-input", "+Inf in the input", lambda: with_value(rand(T, B, I), (2, 1, 0), INF)),
    Row("neg-inf-input", "-Inf in the input", lambda: with_value(rand(T, B, I), (0, 0, 2), -INF)),
    Row(
        "nan-h0",
        "a NaN in h_0",
        batch_input,
        lambda: (with_value(rand(L * D, B, H), (1, 0, 3), NAN), rand(L * D, B, H)),
    ),
    Row(
        "inf-c0",
        "+Inf in c_0",
        batch_input,
        lambda: (rand(L * D, B, H), with_value(rand(L * D, B, H), (0, 1, 2), INF)),
    ),
    Row(
        "nan-input-training",
        "a NaN in the input of a training call",
        lambda: with_value(rand(T, B, I), (4, 0, 1), NAN),
        grads=(INPUT, WEIGHTS),
    ),
    Row("empty-batch", "batch size 0", lambda: rand(T, 0, I)),
    Row("empty-batch-hx", "batch size 0 with h_0 and c_0", lambda: rand(T, 0, I), lambda: state(L * D, 0, H)),
    Row("empty-batch-training", "batch size 0 in a training call", lambda: rand(T, 0, I), grads=(INPUT, WEIGHTS)),
    Row("unbatched", "unbatched 2-D input with 2-D states", lambda: rand(T, I), lambda: state(L * D, H)),
    Row("hx-list", "[h_0, c_0], a list, as hx", batch_input, lambda: list(state(L * D, B, H))),
    Row("input-strided", "input with a strided last dimension", lambda: rand(T, B, 2 * I)[..., ::2]),
    Row("input-expanded", "input expanded over the batch (stride 0)", lambda: rand(T, 1, I).expand(T, B, I)),
    Row("input-transposed", "batch-major memory seen time-major", lambda: rand(B, T, I).transpose(0, 1)),
    Row(
        "hx-expanded-transposed",
        "expanded h_0, transposed c_0",
        batch_input,
        lambda: (rand(L * D, 1, H).expand(L * D, B, H), rand(B, L * D, H).transpose(0, 1)),
    ),
    Row("packed-unsorted", "a PackedSequence, lengths not sorted", packed_input),
    Row("lengths-unsorted", "lengths=[2, 5], unsorted", batch_input, make_lengths=lambda: [2, T]),
    Row(
        "lengths-training",
        "lengths= in a training call",
        batch_input,
        grads=(INPUT, WEIGHTS),
        make_lengths=lambda: [T, 3],
    ),
    Row(
        "nan-in-padding",
        "NaN in the padding past a length",
        lambda: padded_input(NAN),
        make_lengths=lambda: [T, 2],
    ),
    Row(
        "nan-in-padding-training",
        "NaN in the padding past a length, training",
        lambda: padded_input(NAN),
        grads=(INPUT, WEIGHTS),
        make_lengths=lambda: [T, 2],
    ),
    Row(
        "hx-requires-grad-only",
        "h_0 and c_0 require grad; the input and the weights do not",
        batch_input,
        lambda: state(L * D, B, H),
        grads=(STATES,),
    ),
]

# nn.LSTM's constructor checks, which LSTM inherits: (id, arguments, exception type)
CONSTRUCTOR_ROWS = [
    ("hidden_size-0", dict(hidden_size=0), ValueError),
    ("hidden_size-float", dict(hidden_size=4.0), TypeError),
    ("input_size-0", dict(input_size=0), ValueError),
    ("num_layers-0", dict(num_layers=0), ValueError),
    ("dropout-1.5", dict(dropout=1.5), ValueError),
    ("proj_size-not-below-hidden_size", dict(proj_size=H), ValueError),
    ("proj_size-negative", dict(proj_size=-1), ValueError),
]


def on(device, value):
    """Move tensors and PackedSequences, alone or in a tuple or list, to ``device`` (meta
    tensors stay: they stand for another device)."""
    if isinstance(value, PackedSequence):
        return value.to(device)
    if isinstance(value, torch.Tensor):
        return value if value.is_meta else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(on(device, v) for v in value)
    return value


def inputs(row: Row):
    torch.manual_seed(0)
    return row.make_input(), (row.make_hx() if row.make_hx else None), (row.make_lengths and row.make_lengths())


def modules(device):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, num_layers=L, bidirectional=True)
    return LSTM.from_torch(ref).to(device), ref


def forward(module, x, hx, lengths):
    """``module(x, hx)``, ours with ``lengths=`` and nn.LSTM on the packed input instead; the
    output padded (a PackedSequence's too)."""
    if lengths is not None and not isinstance(module, LSTM):
        x = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
        y, states = module(x, hx)
        return pad_packed_sequence(y, total_length=T)[0], states
    y, states = module(x, hx) if lengths is None else module(x, hx, lengths=lengths)
    return (pad_packed_sequence(y)[0] if isinstance(y, PackedSequence) else y), states


def call(module, x, hx, grads: tuple[str, ...], lengths=None):
    """Forward; for a training row, with ``grads`` requiring grad, then a backward of the sum of
    all outputs. Returns the outputs and the gradients of what required grad."""
    if not grads:
        with torch.no_grad():
            return forward(module, x, hx, lengths), []
    module.requires_grad_(WEIGHTS in grads)
    if INPUT in grads:
        x = x.detach().requires_grad_()
    if STATES in grads:
        hx = type(hx)(t.detach().requires_grad_() for t in hx)
    y, (h_n, c_n) = forward(module, x, hx, lengths)
    (y.sum() + h_n.sum() + c_n.sum()).backward()
    leaves = ([x] if INPUT in grads else []) + (list(hx) if STATES in grads else [])
    params = list(module.parameters()) if WEIGHTS in grads else []
    return (y, (h_n, c_n)), [t.grad for t in leaves + params]


def raised(module, x, hx, grads, lengths=None) -> Exception | None:
    try:
        call(module, x, hx, grads, lengths)
    except Exception as e:
        return e
    return None


def assert_same_values(name, out, ref):
    """The same NaN and +-Inf positions as nn.LSTM; the finite values close to its."""
    assert (out is None) == (ref is None), f"{name}: ours is {out!r:.20}, nn.LSTM's {ref!r:.20}"
    if ref is None:
        return
    out, ref = out.detach().cpu(), ref.detach()
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != nn.LSTM's {tuple(ref.shape)}"
    for kind, mask in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        assert torch.equal(mask(out), mask(ref)), f"{name}: {kind} positions differ from nn.LSTM's"
    finite = torch.isfinite(ref)
    assert_close(name, out[finite], ref[finite], tolerance(torch.float32))


def param(row: Row):
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=row.gap)] if row.gap else []
    return pytest.param(row, id=row.id, marks=marks)


@pytest.mark.parametrize("row", [param(r) for r in ROWS if r.exc is not None])
def test_bad_input_raises_like_nn_lstm(row):
    x, hx, lengths = inputs(row)
    ours, ref = modules(DEVICE)
    if lengths is None:  # the yardstick: nn.LSTM raises this type on the same input
        with pytest.raises(row.exc):
            call(ref, x, hx, row.grads)
    e = raised(ours, on(DEVICE, x), on(DEVICE, hx), row.grads, lengths)
    assert isinstance(e, row.exc), f"expected {row.exc.__name__}, ours raised {e!r}"
    assert re.search(row.message, str(e)), f"message {str(e)!r} does not match {row.message!r}"
    if row.torch_text:  # nn.LSTM's text on the device ours ran on (cuDNN's on a GPU)
        want = str(raised(ref.to(DEVICE), on(DEVICE, x), on(DEVICE, hx), row.grads))
        assert str(e).startswith(want), f"message {str(e)!r} does not start with nn.LSTM's {want!r}"


# Regexes of PyTorch's own nn.LSTM tests (test_nn.py's test_cudnn_forward_exception, the
# ModuleInfo error inputs of test_modules.py's test_errors), run against our module
@pytest.mark.parametrize("proj_size", [0, 10], ids=["no-proj", "proj"])
def test_pytorch_own_hidden_and_input_size_checks(proj_size):
    ours = LSTM(10, 20, batch_first=True, proj_size=proj_size).to(DEVICE)
    wrong = (torch.zeros(1, 2, 19, device=DEVICE),) * 2
    with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
        ours(torch.randn(2, 3, 10, device=DEVICE), wrong)
    with pytest.raises(RuntimeError, match=re.escape("input.size(-1) must be equal to input_size")):
        ours(torch.randn(2, 3, 3, device=DEVICE))


@pytest.mark.parametrize("dtype, other", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_pytorch_own_dtype_mismatch_check(dtype, other):
    ours = LSTM(3, 5, dtype=dtype, device=DEVICE)
    pattern = (
        r"RNN input dtype .* does not match weight dtype .* "
        r"Convert input: input\.to\(.*\), or convert model: model\.to\(.*\)"
    )
    with pytest.raises(ValueError, match=pattern):
        ours(torch.randn(2, 4, 3, dtype=other, device=DEVICE))


@pytest.mark.parametrize("row", [param(r) for r in ROWS if r.exc is None])
def test_odd_input_gives_what_nn_lstm_gives(row):
    x, hx, lengths = inputs(row)
    ours, ref = modules(DEVICE)
    (y, (h_n, c_n)), grads = call(ours, on(DEVICE, x), on(DEVICE, hx), row.grads, lengths)
    (want_y, (want_h, want_c)), want_grads = call(ref, x, hx, row.grads, lengths)
    for name, out, want in (("output", y, want_y), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        assert_same_values(name, out, want)
    assert len(grads) == len(want_grads)
    for i, (g, want) in enumerate(zip(grads, want_grads, strict=True)):
        assert_same_values(f"gradient {i}", g, want)


@pytest.mark.parametrize("kwargs, exc", [pytest.param(*r[1:], id=r[0]) for r in CONSTRUCTOR_ROWS])
def test_bad_constructor_argument_raises_as_nn_lstm(kwargs, exc):
    args = dict(input_size=I, hidden_size=H) | kwargs
    with pytest.raises(exc) as want:
        nn.LSTM(**args)
    with pytest.raises(exc) as got:
        LSTM(**args)
    assert str(got.value) == str(want.value)


def _constructor_error(kwargs) -> Exception | None:
    try:
        LSTM(**kwargs)
    except Exception as e:
        return e
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """docs/errors.md from the tables: each rejected input with the message our module gives
    (run on the CPU, before any kernel), each accepted one with what it gets."""
    ours, _ = modules("cpu")
    rejected, lengths_rows, gaps, accepted = [], [], [], []
    for row in ROWS:
        x, hx, lengths = inputs(row)
        e = raised(ours, x, hx, row.grads, lengths) if row.exc is not None else None
        cells = [f"`{row.id}`", _cell(row.what)]
        if row.gap:
            today = f". Ours raises `{type(e).__name__}`: {_cell(str(e))}" if row.exc is not None else ""
            gaps.append(cells + [_cell(row.gap) + today])
        elif row.exc is not None:
            same = ["yes" if row.torch_text else ""] if lengths is None else []
            (rejected if lengths is None else lengths_rows).append(
                cells + [f"`{row.exc.__name__}`", *same, _cell(str(e))]
            )
        else:
            training = " and gradients" if row.grads else ""
            accepted.append(cells + [f"outputs{training} as nn.LSTM's"])
    constructor = []
    for rid, kwargs, exc in CONSTRUCTOR_ROWS:
        args = ", ".join(f"{k}={v!r}" for k, v in (dict(input_size=I, hidden_size=H) | kwargs).items())
        e = _constructor_error(dict(input_size=I, hidden_size=H) | kwargs)
        constructor.append([f"`{rid}`", f"`LSTM({args})`", f"`{exc.__name__}`", _cell(str(e))])

    def table(header: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

    known = ""
    if gaps:
        known = f"""## Known differences from nn.LSTM

Tests marked `xfail(strict=True)`: they start failing, on purpose, once the difference is fixed.

{table(["case", "input", "difference"], gaps)}

"""
    return f"""# Bad input

`lstm_triton.LSTM` checks its input before any kernel runs. Bad input raises the exception
type `torch.nn.LSTM` raises on it, so code that catches that keeps working, with a message
that names the bad argument. Where `nn.LSTM` has a message of its own for the input, ours
starts with that message word for word (column "nn.LSTM's text"), so a pattern written for
`nn.LSTM`'s message matches ours too; what follows it is ours. Odd but valid input gets
exactly what `nn.LSTM` gives.

Every row is a test in `tests/test_errors.py`, and this page is generated from the same table
(`python -m tests.test_errors`); a test fails when the two differ. The calls go to
`LSTM(input_size={I}, hidden_size={H}, num_layers={L}, bidirectional=True)` with input of shape
`(T={T}, B={B}, {I})` and states `({L * D}, {B}, {H})` unless the row says otherwise; the messages
below are the ones it gives.

## Rejected

{table(["case", "input", "raises (as nn.LSTM)", "nn.LSTM's text", "message"], rejected)}

## lengths= (ours)

`nn.LSTM` has no `lengths=`; ours checks what `pack_padded_sequence` checks, and that no
length exceeds the padded length.

{table(["case", "input", "raises", "message"], lengths_rows)}

{known}## Accepted

Compared element by element with `nn.LSTM` on the same weights and input (with `lengths=`:
`nn.LSTM` on the packed input, padded back): NaN and +-Inf in the same positions, finite
values within float32 rounding.

{table(["case", "input", "result"], accepted)}

## Constructor arguments

`LSTM` inherits `nn.LSTM`'s constructor checks: the same exception and message.

{table(["case", "call", "raises", "message"], constructor)}
"""


def test_errors_doc_is_current():
    assert DOC.read_text() == render(), "docs/errors.md is stale: run python -m tests.test_errors"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC}")
