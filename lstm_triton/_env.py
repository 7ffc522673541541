"""Facts about where the kernels run."""

import os

import numpy
import triton


def interpreting() -> bool:
    """True when Triton's interpreter runs the kernels (TRITON_INTERPRET=1, CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Triton reads TRITON_INTERPRET once, when a kernel is defined; ours are defined when lstm_triton
# is imported, which imports this module first. Setting it later cannot make them interpreted.
KERNELS_INTERPRETED = interpreting()


def next_pow2(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()


class InterpreterVersionError(RuntimeError):
    """Triton's interpreter cannot run the kernels with the installed packages."""


def check_interpreter() -> None:
    """Raise InterpreterVersionError where Triton's interpreter breaks on our kernels: triton 3.6's
    turns a scalar kernel argument into a Python int through a 1-element array, which numpy >= 2.4
    refuses (triton#9171; from triton 3.7 on it takes the element). Only the interpreter needs the
    older numpy: compiled kernels run with any."""
    tri, npy = minor_version(triton.__version__), minor_version(numpy.__version__)
    if tri < (3, 7) and npy >= (2, 4):
        raise InterpreterVersionError(
            f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) cannot run with numpy "
            f"{numpy.__version__} (triton#9171): in this environment install numpy<2.4, or triton>=3.7"
        )


def minor_version(version: str) -> tuple[int, int]:
    """(major, minor) of a release string such as "3.9.0" or "2.5.0rc1"."""
    major, minor, *_ = version.split(".")
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
