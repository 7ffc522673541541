"""lstm-triton: persistent LSTM and BiLSTM kernels in Triton, as a drop-in ``torch.nn.LSTM``."""

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
