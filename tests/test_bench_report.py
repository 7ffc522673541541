import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from bench.plots import PANEL_IN, heatmap_figures, line_figures, log_y_ticks
from bench.report import CPU_BANNER, REPORT_MD, build
from bench.results import load
from bench.speedup import geomeans, speedups

FIXTURE = Path(__file__).parent / "fixtures" / "bench_report"  # invented numbers on a "TEST-GPU"
PLOTS = [
    "us_per_step-vs-B-default-fwd-bfloat16-uni.png",
    "us_per_step-vs-B-default-fwd-bfloat16-bi.png",
    "speedup-heatmap-default-fwd-bfloat16-T256-L1.png",
    "tokens_per_s-vs-T-seqlen-fwd-bfloat16-uni.png",
    "us_per_step-vs-B-training-fwdbw-bfloat16-uni.png",
]


def _copy_fixture(out: Path) -> Path:
    for f in FIXTURE.glob("*.csv"):
        shutil.copy(f, out)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = _copy_fixture(tmp_path_factory.mktemp("report"))
    build(out)
    return out


def test_geomean_speedups_from_the_fixture():
    gm = geomeans(speedups(load(FIXTURE / "results.csv"))).set_index(["sweep", "dirs", "ours", "baseline"])
    assert gm.loc[("default", 1, "ours", "cudnn"), "geomean"] == pytest.approx(4.0)  # 2x and 8x, twice
    assert gm.loc[("default", 1, "ours", "cudnn"), "min"] == pytest.approx(2.0)
    assert gm.loc[("default", 2, "ours", "cudnn"), "cases"] == 3  # ours routed at H=256, B=8: no speedup
    assert gm.loc[("default", 2, "ours", "cudnn"), "geomean"] == pytest.approx(32 ** (1 / 3))
    assert gm.loc[("default", 1, "ours", "pytorch"), "cases"] == 3  # the wrong pytorch row is not a speedup
    assert gm.loc[("seqlen", 1, "ours", "cudnn_graph"), "geomean"] == pytest.approx(2.0)
    assert ("training", 1, "ours", "cudnn") not in gm.index  # ours unsupported in training


def test_plots_exist_and_are_not_blank(report):
    for name in PLOTS:
        path = report / name
        assert path.exists(), name
        img = imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert np.std(img[..., :3]) > 0.05, f"{name} looks blank"


def test_report_markdown(report):
    text = (report / REPORT_MD).read_text()
    assert text.startswith("# lstm-triton benchmark: TEST-GPU (fixture)")
    assert CPU_BANNER not in text
    for want in (
        "## Environment",
        "## Geometric-mean speedups",
        "**4.00x**",
        "**3.17x**",
        "## Floor",
        "| 132 | 0.9 |",
        "routed to PyTorch's LSTM",
        "| ours | unsupported |",
        "| pytorch | wrong |",
    ):
        assert want in text, want
    for name in PLOTS:
        assert f"]({name})" in text


def test_report_cli_needs_only_the_csvs(tmp_path):
    report = _copy_fixture(tmp_path)
    code = (
        "import sys; from bench.__main__ import main; main(['report', sys.argv[1]]); "
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'report imported torch or triton'"
    )
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [sys.executable, "-c", code, str(report)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "4.00x" in res.stdout
    assert (report / REPORT_MD).exists() and all((report / n).exists() for n in PLOTS)


MAX_Y_LABELS = 8


def _figures(cpu: bool):
    """The fixture's figures drawn; ``cpu``: as a CPU run draws them, one baseline (the narrowest
    heat map) under the interpreter's stamp."""
    df = load(FIXTURE / "results.csv")
    if cpu:
        df = df[df["provider"].isin(["ours", "pytorch"])].assign(device="cpu")
    figures = list(line_figures(df)) + list(heatmap_figures(df, speedups(df)))
    for fig, _ in figures:
        FigureCanvasAgg(fig).draw()
    return figures


def _inside(fig, text) -> bool:
    box, page = text.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


def _labels(fig, ax):
    """The y tick labels drawn: non-empty and inside the axis's view."""
    lo, hi = sorted(ax.get_ylim())
    return [t for t in ax.get_yticklabels(which="both") if t.get_text() and lo <= t.get_position()[1] <= hi]


@pytest.mark.parametrize("cpu", [False, True], ids=["fixture", "cpu-stamped"])
def test_titles_fit_inside_their_figures(cpu):
    for fig, name in _figures(cpu):
        titles = [fig._suptitle] + [ax.title for ax in fig.axes if ax.get_visible()]
        for t in titles:
            assert _inside(fig, t), f"{name}: title {t.get_text()!r} is cut off"


@pytest.mark.parametrize("cpu", [False, True], ids=["fixture", "cpu-stamped"])
def test_heatmaps_have_a_colorbar(cpu):
    heatmaps = [(fig, name) for fig, name in _figures(cpu) if name.startswith("speedup-heatmap")]
    assert heatmaps
    for fig, name in heatmaps:
        bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
        assert len(bars) == 1, name
        assert [t.get_text() for t in bars[0].get_yticklabels()][::3] == ["1/8x", "1x", "8x"], name


@pytest.mark.parametrize("span", [(1, 1e5), (0.5, 300), (2, 90), (2, 9), (3.1e6, 3.4e6)], ids=str)
def test_log_axis_labels_over_any_span(span):
    fig = Figure(figsize=PANEL_IN)
    ax = fig.subplots()
    ax.plot([1, 2], span)
    log_y_ticks(ax)
    FigureCanvasAgg(fig).draw()
    _few_apart(fig, ax, str(span))


def _few_apart(fig, ax, name: str) -> None:
    """Between 2 and MAX_Y_LABELS y labels, none over another, none in scientific notation."""
    labels = _labels(fig, ax)
    assert 2 <= len(labels) <= MAX_Y_LABELS, (name, [t.get_text() for t in labels])
    boxes = sorted((t.get_window_extent(fig.canvas.get_renderer()) for t in labels), key=lambda b: b.y0)
    for below, above in zip(boxes, boxes[1:], strict=False):
        assert below.y1 <= above.y0, f"{name}: y tick labels overlap"
    assert all("e+" not in t.get_text() for t in labels), name


def test_log_axes_have_few_labels_that_do_not_overlap():
    lines = [(fig, name) for fig, name in _figures(cpu=False) if not name.startswith("speedup-heatmap")]
    assert lines
    for fig, name in lines:
        for ax in fig.axes:
            if ax.get_visible():
                _few_apart(fig, ax, name)
