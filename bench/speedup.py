"""Speedups from the results table (pandas only: runs without torch or a GPU)."""

import numpy as np
import pandas as pd

from .results import KEY, OK

# (ours, baseline) pairs a report compares, fairest cuDNN second: our win must survive it. The
# last two: what the tuned configs gain over the heuristic's, and the batch loop and the
# transposed dot over the configs before them.
PAIRS = (
    ("ours", "cudnn"),
    ("ours", "cudnn_graph"),
    ("ours_graph", "cudnn_graph"),
    ("ours", "pytorch"),
    ("ours_compiled", "cudnn_graph"),
    ("ours", "ours_heuristic"),
    ("ours", "ours_plain"),
)
CASE = [k for k in KEY if k != "provider"]
GROUP = ["sweep", "mode", "dtype", "dirs"]


def ratio(v: float) -> str:
    """A speedup for people: 2.37x, and 0.0042x rather than 0.00x."""
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per pair and case where both providers were timed: the case columns, ``ours``,
    ``baseline`` and ``speedup`` = baseline median time / ours median time (> 1: ours faster)."""
    ok = df[df["status"] == OK]
    frames = []
    for ours, base in PAIRS:
        a, b = (ok[ok["provider"] == p][CASE + ["median_ms"]] for p in (ours, base))
        m = a.merge(b, on=CASE, suffixes=("_ours", "_base"))
        m["speedup"] = m["median_ms_base"] / m["median_ms_ours"]
        frames.append(m[CASE + ["speedup"]].assign(ours=ours, baseline=base))
    return pd.concat(frames, ignore_index=True)


def geomeans(sp: pd.DataFrame) -> pd.DataFrame:
    """Geometric-mean, min and max speedup and the number of cases, per sweep, mode, dtype,
    directions and pair."""
    if sp.empty:
        return pd.DataFrame(columns=GROUP + ["ours", "baseline", "cases", "geomean", "min", "max"])
    g = sp.groupby(GROUP + ["ours", "baseline"], sort=False)["speedup"]
    out = g.agg(cases="count", geomean=lambda s: float(np.exp(np.log(s).mean())), min="min", max="max")
    return out.reset_index()
