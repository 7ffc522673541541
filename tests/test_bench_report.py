import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

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
