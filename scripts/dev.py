#!/usr/bin/env python3
"""Set up a virtual environment with a tested set of versions, then run the benchmark or the
tests in it. Needs Python 3.10+ and nothing else.

    python3 scripts/dev.py bench                    # python -m bench: the CPU sweep without a GPU, the grid with one
    python3 scripts/dev.py test                     # python -m pytest -q -n 2
    python3 scripts/dev.py test -k forward          # further arguments go to pytest (or to the benchmark)
    python3 scripts/dev.py test --versions newest   # the other end of the supported range (CI runs both)
    python3 scripts/dev.py setup                    # only the set-up; then `. .venv/bin/activate`

The first run creates the environment and installs into it (minutes: torch is large). Later runs
go straight to the command while the version set, pyproject.toml and this file are unchanged
(a stamp inside the environment records them).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = "lstm-triton-setup.json"


@dataclass(frozen=True)
class VersionSet:
    venv: str
    torch: str
    triton: str


# The two ends of the torch and triton ranges pyproject.toml declares; CI runs the tests on both.
VERSION_SETS = {
    "oldest": VersionSet(".venv", torch="2.13.0", triton="3.6.0"),
    "newest": VersionSet(".venv-newest", torch="2.14.1", triton="3.8.0"),
}
# torch's CPU builds (~200 MB, no triton pin): PyPI's Linux torch is the CUDA build (~3 GB)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def default_versions() -> str:
    """torch's CUDA wheels pin their own triton (2.14.1 pins 3.8.0, 2.13.0 pins 3.7.1), so on a
    GPU only the newest set installs as it stands; its CPU builds pin none."""
    return "newest" if has_nvidia_gpu() else "oldest"


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except OSError:
        return False


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup_key(vs: VersionSet) -> str:
    """What the environment was installed from: a change reinstalls."""
    h = hashlib.sha256()
    for f in ("pyproject.toml", "scripts/dev.py"):
        h.update((ROOT / f).read_bytes())
    return json.dumps(dict(asdict(vs), sources=h.hexdigest()), sort_keys=True)


def run(cmd: list, **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ensure_env(name: str) -> Path:
    """The environment of version set ``name``, installed if its stamp is missing or stale;
    returns its python."""
    vs = VERSION_SETS[name]
    venv = ROOT / vs.venv
    py, stamp, key = venv_python(venv), venv / STAMP, setup_key(vs)
    if py.exists() and stamp.exists() and stamp.read_text() == key:
        return py
    print(f"setting up {vs.venv} ({name}: torch {vs.torch}, triton {vs.triton}); the first time takes minutes")
    if not py.exists():
        try:
            run([sys.executable, "-m", "venv", str(venv)])
        except subprocess.CalledProcessError:
            sys.exit("python3 -m venv failed: on Debian/Ubuntu, `apt install python3-venv` first")
    stamp.unlink(missing_ok=True)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-compile"]  # .pyc on first import
    if not sys.stdout.isatty():
        pip.append("-q")
    torch = [*pip, f"torch=={vs.torch}"]
    if not has_nvidia_gpu() and reachable(f"{TORCH_CPU_INDEX}/torch/"):
        torch += ["--index-url", TORCH_CPU_INDEX]
    try:
        run(torch)
        run([*pip, f"torch=={vs.torch}", f"triton=={vs.triton}", "-e", ".[dev]"], cwd=ROOT)
    except subprocess.CalledProcessError:
        sys.exit(
            f"installing the {name} set into {vs.venv} failed (see above). A CUDA build of torch pins its own "
            f"triton: without a GPU take torch's CPU build ({TORCH_CPU_INDEX}, e.g. through PIP_EXTRA_INDEX_URL)."
        )
    stamp.write_text(key)
    return py


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 scripts/dev.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # pytest's own options pass through untouched
    )
    p.add_argument("command", choices=("setup", "test", "bench"))
    p.add_argument(
        "--versions",
        choices=list(VERSION_SETS),
        help="torch/triton set (default: oldest without an NVIDIA GPU, newest with one)",
    )
    args, rest = p.parse_known_args(argv)
    name = args.versions or default_versions()
    py = ensure_env(name)
    venv = py.parent.parent
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=os.pathsep.join([str(py.parent), os.environ.get("PATH", "")]))
    if args.command == "setup":
        print(f"{venv.name} is ready ({name}): `. {venv.name}/bin/activate`")
        return 0
    cmd = ["-m", "pytest", "-q", "-n", "2"] if args.command == "test" else ["-m", "bench"]
    print(f"+ [{venv.name}] python", *cmd, *rest, flush=True)
    return subprocess.run([str(py), *cmd, *rest], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
