"""lstm-triton: persistent LSTM and BiLSTM kernels in Triton, as a drop-in ``torch.nn.LSTM``."""

import importlib.util
import sys
from pathlib import Path


def _kernels_beside_package() -> None:
    """An install ships ``kernels/`` inside this package (``lstm_triton.kernels``); a checkout has it
    beside the package: import it from there under the same name, so the checkout runs with
    ``PYTHONPATH=<checkout>`` and no install, and a second checkout never takes another's kernels."""
    name, pkg = __name__ + ".kernels", Path(__file__).resolve().parent
    src = pkg.parent / "kernels" / "__init__.py"
    if name in sys.modules or (pkg / "kernels").is_dir() or not src.is_file():
        return
    spec = importlib.util.spec_from_file_location(name, src, submodule_search_locations=[str(src.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    sys.modules[__name__].kernels = module  # as the import system sets a subpackage


_kernels_beside_package()

from .configs import LSTMConfig
from .convert import Replacement, replace_lstm
from .launch import BarrierTimeoutError, check_timeouts
from .module import LSTM, PyTorchFallbackWarning

__all__ = [
    "LSTM",
    "LSTMConfig",
    "BarrierTimeoutError",
    "PyTorchFallbackWarning",
    "check_timeouts",
    "replace_lstm",
    "Replacement",
]
__version__ = "0.1.0"
