"""The GPU session's one command, bench/gpu_check.sh, cannot fail on its set-up: its dry run (no
GPU) runs every step's command as far as it goes without CUDA and passes, a broken argument fails
it, and the checkout runs uninstalled from PYTHONPATH, the script's fallback when the editable
install fails (setuptools < 70.1 without the wheel package, offline)."""

import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path("bench", "gpu_check.sh")
# Each step of a dry run and what its command prints when it really ran: no step may pass by
# skipping its work
RAN = {
    "aot": r"aot: [1-9]\d* compiles, 0 with problems",
    "gpu_tests": r"\b[1-9]\d*(/\d+)? tests collected",
    "bench_fwd": r"[1-9]\d* cases x 5 providers .*\ndry run: .* created, no case run",
    "gpu_smoke": r"gpu_smoke: dry run, .*, no kernel run",
    "stress": r"gpu_stress: dry run, .*, no kernel run",
    "long_sequences": r"\b[1-9]\d*(/\d+)? tests collected",
    "bench_train": r"[1-9]\d* cases x 4 providers .*\ndry run: .* created, no case run",
    "bench_packed": r"[1-9]\d* cases x 2 providers .*\ndry run: .* created, no case run",
    "bench_proj": r"[1-9]\d* cases x 3 providers .*\ndry run: .* created, no case run",
    "bench_compiled": r"[1-9]\d* cases x 3 providers .*\ndry run: .* created, no case run",
}
SKIPPED = ("nvidia-smi: skipped in dry run", "memcheck, racecheck: compute-sanitizer skipped in dry run")
# The broken run needs only its first step (aot): a budget that starts it and little after it
FIRST_STEP_BUDGET_S = 40
TIMEOUT_S = 600


def dry_run(tmp_path: Path, root: Path = ROOT, budget_s: int | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """``bash bench/gpu_check.sh --dry-run`` in ``root`` with this interpreter as ``python3``, as the
    GPU machine runs it: no TRITON_INTERPRET (the compile step refuses it), no PYTHONPATH (the
    script finds the checkout itself). Returns the process and gpu_check.log."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    python3 = bin_dir / "python3"  # a wrapper, not a link: a venv's python knows its venv from its own path
    python3.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python3.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "OUT": str(out)}
    if budget_s is not None:
        env["GPU_CHECK_BUDGET_S"] = str(budget_s)
    cmd = ["bash", str(root / SCRIPT), "--dry-run"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    return r, (out / "gpu_check.log").read_text()


def sections(log: str) -> dict[str, str]:
    """The log's text after each step's header (``== NAME (N s left): CMD``), by step name."""
    parts = re.split(r"^== (\w+) \(\d+ s left\): ", log, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def installed_version() -> str | None:
    """The lstm-triton this interpreter's environment holds (an editable install), or None."""
    code = "import importlib.metadata as m\ntry: print(m.version('lstm-triton'))\nexcept m.PackageNotFoundError: pass"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip() or None


def test_dry_run_runs_every_step(tmp_path):
    installed = installed_version()
    r, log = dry_run(tmp_path)
    assert installed_version() == installed, "the dry run changed the environment's lstm-triton"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    uninstalled = re.escape(f": the checkout runs uninstalled, PYTHONPATH={ROOT}")
    assert re.search(rf"^(python3 -m pip install .* failed|dry run: .* installed nothing){uninstalled}$", log, re.M)
    for line in SKIPPED:
        assert line in log
    steps = sections(log)
    assert list(steps) == list(RAN), log
    for name, printed in RAN.items():
        assert re.search(printed, steps[name]), f"{name}:\n{steps[name]}"
    assert "FAILED" not in log and "budget spent" not in log
    assert log.rstrip().splitlines()[-1].startswith("gpu_check: ok")
    with tarfile.open(tmp_path / "out" / "report.tgz") as tar:
        assert [m.name for m in tar.getmembers()] == [re.search(r"^report: (\S+)", log, re.M)[1]]


def test_a_broken_argument_fails_the_dry_run(tmp_path):
    """A copy of the checkout whose compile step passes a bad --jobs: the step fails, and so does
    the script."""
    root = tmp_path / "checkout"
    (root / "bench").mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name != "bench" and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    for entry in (ROOT / "bench").iterdir():
        (root / "bench" / entry.name).symlink_to(entry)
    script = (ROOT / SCRIPT).read_text()
    assert "--jobs $(nproc)" in script
    (root / SCRIPT).unlink()
    (root / SCRIPT).write_text(script.replace("--jobs $(nproc)", "--jobs all"))
    r, log = dry_run(tmp_path, root, budget_s=FIRST_STEP_BUDGET_S)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "argument --jobs: invalid int value: 'all'" in sections(log)["aot"]
    assert "== aot FAILED (exit 2)" in log
    assert log.rstrip().splitlines()[-1].startswith("gpu_check: FAILED")


UNINSTALLED_FORWARD = """
import sys

import torch
from torch import nn

import lstm_triton
import lstm_triton.kernels.lstm_fwd

# as after an install: the kernels are the package's attribute too, not only in sys.modules
assert getattr(lstm_triton, "kernels", None) is sys.modules["lstm_triton.kernels"], "lstm_triton.kernels unset"
torch.manual_seed(0)
ref = nn.LSTM(8, 16, bidirectional=True)
ours = lstm_triton.LSTM.from_torch(ref)
x = torch.randn(3, 2, 8)
assert ours.kernel_plan(x, training=False).reason is None  # our kernels, not PyTorch's LSTM
with torch.no_grad():
    err = (ours(x)[0] - ref(x)[0]).abs().max().item()
print(lstm_triton.__file__, lstm_triton.kernels.lstm_fwd.__file__, err)
"""
UNINSTALLED_TOL = 1e-4  # float32 through the interpreter, against PyTorch's CPU LSTM


def test_checkout_runs_uninstalled_from_another_folder(tmp_path):
    """``PYTHONPATH=<checkout>`` alone, the GPU check's fallback: the package and its kernels
    import from the checkout, and a forward runs (under Triton's interpreter)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    cmd = [sys.executable, "-c", UNINSTALLED_FORWARD]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    package, kernel, err = r.stdout.split()
    assert Path(package) == ROOT / "lstm_triton" / "__init__.py"
    assert Path(kernel) == ROOT / "kernels" / "lstm_fwd.py"
    assert float(err) < UNINSTALLED_TOL
