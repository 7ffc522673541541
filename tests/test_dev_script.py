"""scripts/dev.py, the set-up behind the README's two commands: its version sets are the ends of
the range pyproject.toml declares, and what it reads of an installed torch."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import triton

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dev_script", ROOT / "scripts" / "dev.py")
dev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dev)


def declared_range(package: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lowest, highest) (major, minor) that pyproject.toml admits for ``package``: >=A.B,<C.D."""
    text = (ROOT / "pyproject.toml").read_text()
    lo, hi = re.search(rf'"{package}>=(\d+\.\d+),<(\d+\.\d+)"', text).groups()
    hi_major, hi_minor = dev.minor(hi + ".0")
    return dev.minor(lo + ".0"), (hi_major, hi_minor - 1)


@pytest.mark.parametrize("package", ["torch", "triton"])
def test_version_sets_are_the_declared_ends(package):
    lowest, highest = declared_range(package)
    versions = {name: dev.minor(getattr(vs, package)) for name, vs in dev.VERSION_SETS.items()}
    assert versions["oldest"] == lowest and versions["newest"] == highest, versions
    assert all(lowest <= v <= highest for v in versions.values()), versions


def test_triton_range_is_the_declared_one():
    assert dev.TRITON_RANGE == declared_range("triton")


@pytest.mark.parametrize(
    "version, expected",
    [("2.11.0+cu130", (2, 11)), ("3.9.0", (3, 9)), ("2.15.0", (2, 15))],
)
def test_minor(version, expected):
    assert dev.minor(version) == expected


@pytest.mark.parametrize("triton_version, wanted", [("3.6.0", ["numpy<2.4"]), ("3.8.0", []), ("3.9.0", [])])
def test_only_triton_3_6_sets_get_an_older_numpy(triton_version, wanted):
    assert dev.interpreter_requirements(triton_version) == wanted


def test_pinned_triton_reads_the_installed_torch():
    """A CUDA build of torch requires one triton exactly, the one installed beside it; a CPU
    build none."""
    pinned = dev.pinned_triton(Path(sys.executable))
    assert pinned is None or pinned == triton.__version__


@pytest.mark.parametrize(
    "text, key",
    [
        ('{"key": "k", "torch": "2.11.0", "triton": "3.6.0"}', "k"),
        ('{"venv": ".venv", "torch": "2.13.0", "triton": "3.6.0", "sources": "s"}', None),  # an older dev.py's
        ("not json", None),
        ('["k"]', None),
    ],
    ids=["current", "older", "garbage", "list"],
)
def test_a_stamp_from_elsewhere_means_set_up_again(tmp_path, text, key):
    stamp = tmp_path / dev.STAMP
    stamp.write_text(text)
    assert dev.stamped_key(stamp) == key
    assert dev.stamped_key(tmp_path / "missing") is None
