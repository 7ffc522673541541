"""Facts about where the kernels run."""

import os


def interpreting() -> bool:
    """True when Triton's interpreter runs the kernels (TRITON_INTERPRET=1, CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Triton reads TRITON_INTERPRET once, when a kernel is defined; ours are defined when lstm_triton
# is imported, which imports this module first. Setting it later cannot make them interpreted.
KERNELS_INTERPRETED = interpreting()


def next_pow2(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()
