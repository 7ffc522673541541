"""Without a GPU the kernels run under Triton's interpreter: it must be on before any kernel is
imported. Every test's output buffers start as NaN, so unwritten elements show."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    import lstm_triton.launch

    monkeypatch.setattr(lstm_triton.launch, "POISON_OUTPUTS", True)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
