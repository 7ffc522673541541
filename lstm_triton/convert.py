"""``replace_lstm``: swap the ``torch.nn.LSTM`` layers of a model for ``lstm_triton.LSTM``."""

from dataclasses import dataclass, field

import torch
from torch import nn

from .module import LSTM


@dataclass
class Replacement:
    """What ``replace_lstm`` did: the qualified names it swapped, and those it left alone with why."""

    swapped: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


def _why_kept(module: nn.LSTM) -> str | None:
    if isinstance(module, LSTM):
        return "already an lstm_triton.LSTM"
    if type(module) is not nn.LSTM:
        return f"a subclass of nn.LSTM ({type(module).__qualname__}): its own forward may differ"
    return None


def swap(module: nn.LSTM) -> LSTM:
    """An lstm_triton.LSTM that holds ``module``'s own Parameter objects (so optimizers, weight
    tying and the device, dtype and requires_grad stay as they were) in its training mode.
    Hooks registered on ``module`` are not carried over."""
    new = LSTM.like(module, device="meta")  # no storage: the parameters are module's own
    for name in module._flat_weights_names:
        setattr(new, name, getattr(module, name))
    return new.train(module.training)


def replace_lstm(model: nn.Module) -> Replacement:
    """Swap, in place, every ``torch.nn.LSTM`` inside ``model`` for an ``lstm_triton.LSTM`` on
    the same parameters; leave alone what would not gain or might change behaviour (our own
    LSTMs, subclasses of nn.LSTM with their own forward). Returns what it
    swapped and what it kept, by qualified name."""
    if isinstance(model, (nn.LSTM, LSTM)):
        raise TypeError(
            "replace_lstm swaps the LSTMs inside a model; for an LSTM itself use lstm_triton.LSTM.from_torch"
        )
    report = Replacement()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, (nn.LSTM, LSTM)):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            why = _why_kept(child)
            if why is not None:
                report.kept[name] = why
                continue
            with torch.no_grad():
                setattr(parent, child_name, swap(child))
            report.swapped.append(name)
    return report
