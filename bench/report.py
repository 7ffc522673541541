"""REPORT.md and the plots of a report folder, from its CSVs alone (no torch, no GPU):
``python -m bench report DIR``."""

from pathlib import Path

import pandas as pd

from . import plots
from .results import FLOOR_CSV, OK, RESULTS_CSV, SKIPPED, load
from .speedup import CASE, geomeans, ratio, speedups

REPORT_MD = "REPORT.md"
CPU_DEVICE = "cpu"
CPU_TITLE = "# CPU-interpreter timings: they say nothing about GPU performance"
CPU_BANNER = (
    "Triton's interpreter ran our kernels on the CPU against PyTorch's CPU LSTM. This shows that the benchmark "
    "runs end to end; the numbers are not a measure of anything on a GPU."
)
ENV_FIELDS = ("gpu", "driver", "cuda", "torch", "triton", "cudnn", "tf32", "commit")
SHAPE_COLS = ["dirs", "layers", "T", "H", "I", "B"]


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v: float) -> str:
    """Three significant digits without exponents, for latencies from 0.1 us to seconds."""
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _dirs(dirs: int) -> str:
    return "bi" if dirs == 2 else "uni"


def _env_section(df: pd.DataFrame) -> str:
    rows = [[k, ", ".join(str(v) for v in df[k].dropna().unique())] for k in ENV_FIELDS]
    span = f"{df['time'].min()} to {df['time'].max()}"
    return "## Environment\n\n" + md_table(["", ""], rows + [["measured", span]])


def _floor_section(out: Path) -> str:
    path = out / FLOOR_CSV
    if not path.exists():
        return "## Floor: grid-barrier latency\n\nNot measured (no floor.csv)."
    floor = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if not (floor["status"] == OK).any():
        return "## Floor: grid-barrier latency\n\nNot measured: " + "; ".join(floor["reason"].dropna().unique())
    rows = [
        [r.programs, fmt(r.us_per_barrier) if r.status == OK else f"{r.status}: {r.reason}"] for r in floor.itertuples()
    ]
    intro = (
        "One grid barrier across P programs, the one the recurrent kernels pass every step, measured in the same "
        "run: (t(N barriers) - t(0)) / N. No step of a multi-program kernel can be faster."
    )
    return "## Floor: grid-barrier latency\n\n" + intro + "\n\n" + md_table(["programs", "us per barrier"], rows)


def _geomean_section(gm: pd.DataFrame) -> str:
    head = "## Geometric-mean speedups\n\nSpeedup = baseline median time / ours median time (> 1: ours faster), "
    head += "over the cases where both passed the correctness gate and were timed.\n\n"
    if gm.empty:
        return head + "No case has both ours and a baseline timed."
    rows = [
        [
            r.sweep,
            r.mode,
            r.dtype,
            _dirs(r.dirs),
            f"{r.ours} vs {r.baseline}",
            r.cases,
            f"**{ratio(r.geomean)}**",
            ratio(r.min),
            ratio(r.max),
        ]
        for r in gm.itertuples()
    ]
    return head + md_table(["sweep", "mode", "dtype", "dirs", "pair", "cases", "geomean", "min", "max"], rows)


def _cell(r) -> str:
    return fmt(r.us_per_step) if r.status == OK else r.status


def _tables_section(df: pd.DataFrame, sp: pd.DataFrame) -> str:
    """Per sweep, mode and dtype: us/step (median) per provider and the speedups of each case."""
    parts = [
        "## Per-step latency\n\nMedian microseconds per time step (one call / T) per provider; a status "
        "where a provider was not timed (see below). q20/q80, tokens/s, TFLOP/s and memory are in results.csv."
    ]
    shown = df[df["status"] != SKIPPED]
    for (sweep, mode, dtype), g in shown.groupby(["sweep", "mode", "dtype"], sort=False):
        providers = list(dict.fromkeys(g["provider"]))
        gsp = sp[(sp["sweep"] == sweep) & (sp["mode"] == mode) & (sp["dtype"] == dtype)]
        pairs = list(dict.fromkeys(zip(gsp["ours"], gsp["baseline"], strict=True)))
        cells = g.set_index(SHAPE_COLS + ["provider"])
        spi = gsp.set_index(SHAPE_COLS + ["ours", "baseline"])["speedup"]
        rows = []
        for shape in sorted(set(zip(*(g[c] for c in SHAPE_COLS), strict=True))):
            row = [_dirs(shape[0]), *shape[1:]]
            row += [_cell(cells.loc[shape + (p,)]) if shape + (p,) in cells.index else "" for p in providers]
            row += [ratio(spi[shape + p]) if shape + p in spi.index else "" for p in pairs]
            rows.append(row)
        header = ["dirs", "layers", "T", "H", "I", "B"] + providers + [f"{o} vs {b}" for o, b in pairs]
        parts.append(f"### {sweep}, {mode}, {dtype}\n\n" + md_table(header, rows))
    return "\n\n".join(parts)


def _tuning_section(df: pd.DataFrame) -> str | None:
    """Tuned configs against the heuristic's, per case where both were timed (None when the run
    had no ours_heuristic rows)."""
    ok = df[df["status"] == OK]
    tuned, base = (ok[ok["provider"] == p][CASE + ["config", "us_per_step"]] for p in ("ours", "ours_heuristic"))
    m = tuned.merge(base, on=CASE, suffixes=("_tuned", "_heur"))
    if m.empty:
        return None
    rows = [
        [
            r.sweep,
            r.mode,
            r.dtype,
            _dirs(r.dirs),
            r.H,
            r.B,
            r.config_heur,
            fmt(r.us_per_step_heur),
            "same" if r.config_tuned == r.config_heur else r.config_tuned,
            fmt(r.us_per_step_tuned),
            ratio(r.us_per_step_heur / r.us_per_step_tuned),
        ]
        for r in m.sort_values(CASE).itertuples()
    ]
    header = ["sweep", "mode", "dtype", "dirs", "H", "B", "heuristic config", "us/step", "tuned config", "us/step"]
    intro = (
        "ours (the tuned config where the cache has one) against ours_heuristic (the heuristic's config), "
        "median us per step; gain = heuristic time / tuned time. Rows whose config is the same show the noise."
    )
    return "## Tuned against heuristic configs\n\n" + intro + "\n\n" + md_table(header + ["gain"], rows)


def _not_timed_section(df: pd.DataFrame) -> str:
    bad = df[df["status"] != OK]
    head = "## Rows not timed\n\n"
    if bad.empty:
        return head + "Every row passed the correctness gate and was timed."
    g = bad.groupby(["provider", "status", "reason"], sort=False, dropna=False).size().reset_index(name="rows")
    return head + md_table(
        ["provider", "status", "rows", "reason"], [[r.provider, r.status, r.rows, r.reason] for r in g.itertuples()]
    )


def build(out: Path) -> Path:
    """Write the plots and REPORT.md into ``out`` from ``out/results.csv`` (and floor.csv)."""
    df = load(out / RESULTS_CSV)
    sp = speedups(df)
    gm = geomeans(sp)
    files = plots.line_plots(df, out) + plots.heatmaps(df, sp, out)
    cpu = (df["device"] == CPU_DEVICE).any()
    gpu = ", ".join(df["gpu"].unique())  # one GPU, unless someone pointed two runs at one folder
    parts = [CPU_TITLE, CPU_BANNER] if cpu else [f"# lstm-triton benchmark: {gpu}"]
    parts += [
        f"{len(df)} rows, {int((df['status'] == OK).sum())} timed. Rebuild the plots and this file from the CSVs "
        f"with `python -m bench report {out}`.",
        _env_section(df),
        _geomean_section(gm),
        _floor_section(out),
        _tables_section(df, sp),
        _tuning_section(df),
        _not_timed_section(df),
        "## Plots\n\n" + "\n\n".join(f"![{f.stem}]({f.name})" for f in files),
    ]
    path = out / REPORT_MD
    path.write_text("\n\n".join(p for p in parts if p is not None) + "\n")
    return path


def summary(out: Path) -> str:
    """A few lines for the terminal: the geometric-mean speedups."""
    gm = geomeans(speedups(load(out / RESULTS_CSV)))
    lines = [
        f"{r['sweep']} {r['mode']} {r['dtype']} {_dirs(r['dirs'])} {r['ours']} vs {r['baseline']}: "
        f"{ratio(r['geomean'])} geomean over "
        f"{r['cases']} cases (min {ratio(r['min'])})"
        for _, r in gm.iterrows()
    ]
    return "\n".join(lines) or "no case has both ours and a baseline timed"
