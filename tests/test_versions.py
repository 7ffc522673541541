"""The supported versions: the package takes any numpy, and Triton's interpreter, where it cannot
run with the installed numpy, says so in one line instead of failing inside a kernel."""

import numpy
import pytest
import torch
import triton

import lstm_triton
from lstm_triton._env import InterpreterVersionError, check_interpreter


@pytest.mark.parametrize(
    "triton_version, numpy_version, refused",
    [
        pytest.param("3.6.0", "2.4.0", True, id="triton3.6-numpy2.4"),
        pytest.param("3.6.0", "2.3.5", False, id="triton3.6-numpy2.3"),
        pytest.param("3.7.1", "2.4.6", False, id="triton3.7-numpy2.4"),
        pytest.param("3.9.0", "2.5.0rc1", False, id="triton3.9-numpy2.5rc"),
    ],
)
def test_check_interpreter(monkeypatch, triton_version, numpy_version, refused):
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    if refused:
        with pytest.raises(InterpreterVersionError, match=r"numpy 2\.4\.0 .*install numpy<2\.4, or triton>=3\.7"):
            check_interpreter()
    else:
        check_interpreter()


def test_an_interpreted_call_refused_says_why(monkeypatch):
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.4.0")
    lstm = lstm_triton.LSTM(3, 4)
    with pytest.raises(InterpreterVersionError, match="TRITON_INTERPRET=1"):
        lstm(torch.randn(2, 1, 3))
