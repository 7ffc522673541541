"""The config a call runs: the tuned cache's for the inference forward, else the heuristic
(``configs`` knows the configs, ``tuning`` the cache; both sit below this module)."""

import contextlib
import contextvars
import os
from dataclasses import replace

import torch

from ._env import interpreting
from .configs import INTERPRETER, LSTMConfig, backward_config, chip_of, heuristic
from .tuning import tuned_config

_plain = contextvars.ContextVar("lstm_triton_plain_configs", default=False)


@contextlib.contextmanager
def plain_configs():
    """Inside, the configs calls run leave out the batch loop (batch tiles beyond the chip run as
    launches in series) and the transposed dot, as before either existed: the benchmark's
    comparison of the two against what came before."""
    token = _plain.set(True)
    try:
        yield
    finally:
        _plain.reset(token)


def select_config(
    hidden_size: int,
    batch: int,
    dirs: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    training: bool | None = None,
    cache: str | os.PathLike | None = None,
):
    """The config the module runs. Under the interpreter, always its one config; on a GPU, the
    tuned config of the inference forward when a cache has one for this shape
    (``tuning.tuned_config``: ``cache`` or the user's cache, then the one shipped for the GPU),
    else the heuristic: for training (its forward and backward are not tuned yet), exact fp32
    dots, or a shape or GPU without an entry. ``training``: whether autograd will differentiate
    the call; None: whether grad mode is on. Inside ``plain_configs``, without the batch loop
    and the transposed dot."""
    config = _select(hidden_size, batch, dirs, dtype, device, training, cache)
    return replace(config, batch_loop=False, gates_on_m=False) if config and _plain.get() else config


def _select(hidden_size, batch, dirs, dtype, device, training, cache) -> LSTMConfig | None:
    if interpreting():
        return heuristic(hidden_size, batch, dirs, dtype, INTERPRETER)
    chip = chip_of(device)
    exact_fp32 = not torch.backends.cudnn.allow_tf32
    training = torch.is_grad_enabled() if training is None else training
    if not training and not (exact_fp32 and dtype == torch.float32):
        tuned = tuned_config(hidden_size, batch, dirs, dtype, chip, cache)
        if tuned is not None:
            return tuned
    return heuristic(hidden_size, batch, dirs, dtype, chip, exact_fp32=exact_fp32)


def select_backward_config(config: LSTMConfig, hidden_size: int, dtype: torch.dtype, device: torch.device):
    chip = INTERPRETER if interpreting() else chip_of(device)
    return backward_config(config, hidden_size, dtype, chip, exact_fp32=not torch.backends.cudnn.allow_tf32)
