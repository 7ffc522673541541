"""``python -m bench``: lstm-triton against cuDNN, from the repository root.

sweeps -> providers -> correctness gate -> timing -> long CSV (``results.py``) -> plots and
REPORT.md (``report.py``, which needs only the CSVs: ``python -m bench report DIR``).
Nothing here imports ``lstm_triton`` at import time: the CLI must first decide whether
Triton's interpreter runs the kernels (no GPU) and say so in ``TRITON_INTERPRET``.
"""
