"""Where the benchmark runs: device, versions, git commit, and the report folder's name."""

import datetime
import re
import subprocess
from pathlib import Path

import torch
import triton

CPU_INTERPRETER = "cpu-interpreter"
CPU_BANNER = (
    "CPU-interpreter timings: Triton's interpreter runs our kernels on the CPU against PyTorch's CPU LSTM. "
    "They show the benchmark runs end to end and say nothing about GPU performance."
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """Short commit of the working tree, ``-dirty`` when tracked files differ from it."""
    commit = _git("rev-parse", "--short=10", "HEAD")
    if commit is None:
        return "nogit"
    return commit + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def _driver() -> str:
    """The NVIDIA driver version, from nvidia-smi (torch does not expose it)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def environment(device: str) -> dict:
    """The columns every results row carries about where it was measured."""
    cuda = device == "cuda"
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if cuda else CPU_INTERPRETER,
        "driver": _driver() if cuda else "",
        "cuda": torch.version.cuda or "",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn": (torch.backends.cudnn.version() or "") if cuda else "",
        "tf32": torch.backends.cudnn.allow_tf32,
        "commit": git_commit(),
    }


def report_dir(root: Path, env: dict, date: datetime.date | None = None) -> Path:
    """``reports/<gpu>-<date>-<commit>/``; ``cpu-interpreter-...`` without a GPU (git ignores those)."""
    date = date or datetime.datetime.now(datetime.timezone.utc).date()
    name = re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-").removeprefix("nvidia-")
    return root / f"{name}-{date.isoformat()}-{env['commit']}"
