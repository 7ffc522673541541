"""Plots from the results table (matplotlib, no GPU): per-step latency or tokens/s against the
dimension a sweep varies, and speedup heat maps over H x B."""

import math
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # not pyplot: files only, no backend or display
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .results import OK
from .speedup import PAIRS, ratio

COLORS = {
    "ours": "C3",
    "ours_graph": "C1",
    "ours_heuristic": "C5",
    "ours_compiled": "C4",
    "ours_plain": "C6",
    "cudnn": "C0",
    "cudnn_graph": "C2",
    "pytorch": "C7",
}
PANEL_IN = (4.2, 3.4)  # inches per panel
TITLE_IN = 0.3  # per line of the figure's title
TITLE_CHARS_PER_IN = 8  # characters of the title's font per inch of figure width, with room to spare
COLORBAR_IN = 0.9
MAX_COLS = 4
DPI = 110
# The x axis of a sweep's line plots: the first of these it varies, and what is drawn against it.
X_METRIC = {"T": ("tokens_per_s", "tokens/s"), "layers": ("us_per_step", "us/step"), "B": ("us_per_step", "us/step")}
SHAPE = ["T", "H", "B", "layers", "in_size"]  # in_size: "H" where I == H, else I
CPU_STAMP = "CPU INTERPRETER, says nothing about GPU performance\n"
STATUS_MARK = {"routed": "routed", "unsupported": "unsup.", "wrong": "WRONG", "error": "error", "skipped": "skip"}
HEAT_SPAN = 3.0  # the heat maps' colours saturate at 2**3 = 8x either way, the same in every panel
# Log-axis labels at 1, 2 and 5 of each decade (matplotlib falls back to even steps when fewer
# than two are in view), at each decade alone past LOG_TICKS_DECADES; the other minor ticks only
# draw grid lines: a label on each overlaps.
LOG_TICKS, LOG_TICKS_DECADES = (1.0, 2.0, 5.0), 2.0


def plain(v: float, _pos=None) -> str:
    """20, 500k, 2M: not 2x10^1 or 2e+06 on a log axis."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _cpu(df: pd.DataFrame) -> bool:
    return bool((df["device"] == "cpu").any())


def _dirs(dirs: int) -> str:
    return "bi" if dirs == 2 else "uni"


def with_in_size(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(in_size=np.where(df["I"] == df["H"], "H", df["I"].astype(str)))


def _figure(rows: int, cols: int, title: str, cpu: bool, extra_w: float = 0.0):
    """A figure of ``rows`` x ``cols`` panels (``extra_w`` inches beside them, for a colorbar)
    under a title wrapped to the figure's width; constrained layout keeps every label inside."""
    width = PANEL_IN[0] * cols + extra_w
    chars = max(int(width * TITLE_CHARS_PER_IN), 20)
    lines = [line for part in ([CPU_STAMP.strip()] if cpu else []) + [title] for line in textwrap.wrap(part, chars)]
    fig = Figure(figsize=(width, PANEL_IN[1] * rows + TITLE_IN * len(lines)), layout="constrained")
    fig.suptitle("\n".join(lines))
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(figures: Iterator[tuple[Figure, str]], out: Path) -> list[Path]:
    files = []
    for fig, name in figures:
        fig.savefig(out / name, dpi=DPI)
        files.append(out / name)
    return files


def line_plots(df: pd.DataFrame, out: Path) -> list[Path]:
    """``line_figures`` written into ``out`` as PNGs."""
    return _save(line_figures(df), out)


def heatmaps(df: pd.DataFrame, sp: pd.DataFrame, out: Path) -> list[Path]:
    """``heatmap_figures`` written into ``out`` as PNGs."""
    return _save(heatmap_figures(df, sp), out)


def line_figures(df: pd.DataFrame) -> Iterator[tuple[Figure, str]]:
    """For each sweep that varies T, layers or B (first match is the x axis): one figure per
    mode, dtype and direction count, a panel per combination of the other varied shape
    columns, a line per timed provider. Yields (figure, file name)."""
    df = with_in_size(df)
    for sweep, sdf in df.groupby("sweep", sort=False):
        x = next((c for c in X_METRIC if sdf[c].nunique() > 1), None)
        if x is None:
            continue
        metric, ylabel = X_METRIC[x]
        facets = [c for c in SHAPE if c != x and sdf[c].nunique() > 1]
        ok = sdf[sdf["status"] == OK]
        for (mode, dtype, dirs), g in ok.groupby(["mode", "dtype", "dirs"], sort=False):
            panels = list(g.groupby(facets, sort=True)) if facets else [((), g)]
            cols = min(len(panels), MAX_COLS)
            title = f"{sweep}: {ylabel} against {x}, {mode}, {dtype}, {_dirs(dirs)}"
            fig, axes = _figure(math.ceil(len(panels) / cols), cols, title, _cpu(g))
            for ax in axes.flat[len(panels) :]:
                ax.set_visible(False)
            for ax, (values, pg) in zip(axes.flat, panels, strict=False):
                _lines(ax, pg, x, metric, ylabel)
                ax.set_title(", ".join(f"{k}={v}" for k, v in zip(facets, values, strict=True)), fontsize="medium")
            yield fig, f"{metric}-vs-{x}-{sweep}-{mode}-{dtype}-{_dirs(dirs)}.png"


def _lines(ax, df: pd.DataFrame, x: str, metric: str, ylabel: str) -> None:
    for provider, g in df.groupby("provider", sort=False):
        g = g.sort_values(x)
        ax.plot(g[x], g[metric], marker="o", label=provider, color=COLORS.get(provider))
    xs = sorted(df[x].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.minorticks_off()
    log_y_ticks(ax)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def log_y_ticks(ax) -> None:
    """A log y axis with a few plain labels (see LOG_TICKS), for the data plotted so far."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    wide = math.log10(hi / lo) > LOG_TICKS_DECADES
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0,) if wide else LOG_TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(NullFormatter())


def heatmap_figures(df: pd.DataFrame, sp: pd.DataFrame) -> Iterator[tuple[Figure, str]]:
    """Speedup of ours over each baseline on an H x B grid, per sweep, mode and dtype (and T,
    layers and input size where a sweep varies those): a row of panels per direction count,
    a column per pair, one colorbar. A cell without a speedup names the status that left it
    empty. Yields (figure, file name)."""
    df, sp = with_in_size(df), with_in_size(sp)
    group = ["sweep", "mode", "dtype", "T", "layers", "in_size"]
    for keys, g in sp.groupby(group, sort=False):
        cases = df[np.logical_and.reduce([df[k] == v for k, v in zip(group, keys, strict=True)])]
        hs, bs = sorted(cases["H"].unique()), sorted(cases["B"].unique())
        if len(hs) * len(bs) < 2:
            continue
        pairs = [p for p in PAIRS if ((g["ours"] == p[0]) & (g["baseline"] == p[1])).any()]
        dirs = sorted(g["dirs"].unique())
        sweep, mode, dtype, T, layers, in_size = keys
        title = f"{sweep}: speedup of ours (baseline time / ours), {mode}, {dtype}, T={T} L={layers} I={in_size}"
        fig, axes = _figure(len(dirs), len(pairs), title, _cpu(cases), extra_w=COLORBAR_IN)
        status = cases.set_index(["dirs", "provider", "H", "B"])["status"]
        for r, d in enumerate(dirs):
            for c, (ours, base) in enumerate(pairs):
                sel = g[(g["dirs"] == d) & (g["ours"] == ours) & (g["baseline"] == base)]
                grid = sel.pivot_table(index="H", columns="B", values="speedup").reindex(index=hs, columns=bs)
                notes = [[_why(status, d, ours, base, h, b) for b in bs] for h in hs]
                image = _heatmap(axes[r, c], grid, notes)
                axes[r, c].set_title(f"{_dirs(d)}: {ours} vs {base}", fontsize="medium")
        _colorbar(fig, image, axes)
        name = f"speedup-heatmap-{sweep}-{mode}-{dtype}-T{T}-L{layers}" + ("" if in_size == "H" else f"-I{in_size}")
        yield fig, f"{name}.png"


def _colorbar(fig: Figure, image, axes) -> None:
    """One colorbar for every panel (they share the scale), labelled in speedups, not log2."""
    steps = np.arange(-HEAT_SPAN, HEAT_SPAN + 1)
    bar = fig.colorbar(image, ax=axes, ticks=steps, shrink=0.9)
    bar.ax.set_yticklabels([f"{2**s:g}x" if s >= 0 else f"1/{2**-s:g}x" for s in steps])
    bar.set_label("speedup (green: ours faster)")


def _why(status: pd.Series, dirs: int, ours: str, base: str, h: int, b: int) -> str:
    """Why a cell has no speedup: our row's status, else the baseline's, else not measured."""
    for who, provider in (("ours", ours), ("base", base)):
        s = status.get((dirs, provider, h, b))
        if s is not None and s != OK:
            return f"{who}: {STATUS_MARK.get(s, s)}"
    return "-"


def _heatmap(ax, grid: pd.DataFrame, notes: list[list[str]]):
    """Log2 colour scale centred on 1x (green: ours faster), the values (else ``notes``) written
    in the cells. Returns the image, for the colorbar."""
    image = ax.imshow(
        np.log2(grid.to_numpy(dtype=float)), cmap="RdYlGn", vmin=-HEAT_SPAN, vmax=HEAT_SPAN, aspect="auto"
    )
    ax.set_facecolor("0.85")
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            v = grid.iat[r, c]
            ax.text(c, r, ratio(v) if np.isfinite(v) else notes[r][c], ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(grid.columns)), [str(b) for b in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(h) for h in grid.index])
    ax.set_xlabel("B")
    ax.set_ylabel("H")
    return image
