#!/usr/bin/env python3
"""Set up a virtual environment with a tested set of versions, then run the benchmark or the
tests in it. Needs Python 3.10+ and nothing else.

    python3 scripts/dev.py bench                    # python -m bench: the CPU sweep without a GPU, the grid with one
    python3 scripts/dev.py test                     # python -m pytest -q -n 2
    python3 scripts/dev.py test -k forward          # further arguments go to pytest (or to the benchmark)
    python3 scripts/dev.py test --versions newest   # the other end of the supported range (CI runs both)
    python3 scripts/dev.py test --versions triton38 -m compile   # the sm_90 compile check under triton 3.8
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


# The two ends of the torch and triton ranges pyproject.toml declares (CI runs the tests on both),
# and the newest triton before them (CI runs the sm_90 compile check under it too). The oldest is
# the GPU machine's image; torch's CUDA wheels pin exactly these tritons.
VERSION_SETS = {
    "oldest": VersionSet(".venv", torch="2.11.0", triton="3.6.0"),
    "newest": VersionSet(".venv-newest", torch="2.15.0", triton="3.9.0"),
    "triton38": VersionSet(".venv-triton38", torch="2.14.1", triton="3.8.0"),
}
# The triton releases the package supports (pyproject.toml), as (major, minor), both ends included
TRITON_RANGE = ((3, 6), (3, 9))
# torch's CPU builds (~200 MB, no triton pin): PyPI's Linux torch is the CUDA build (~3 GB), which
# runs on a CPU too but pins its own triton
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# A machine-wide pip constraint (a cap on torch, say) would refuse a set: this environment is the
# project's own, so its installs set constraints aside; indexes and mirrors stay as configured
PIP_ENV = dict(os.environ, PIP_CONSTRAINT=os.devnull)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def default_versions() -> str:
    """The newest set with a GPU (a GPU takes torch's CUDA build, and the newest triton's code is
    what we measure), the oldest without one, as CI's first run."""
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
    subprocess.run(cmd, check=True, env=PIP_ENV, **kw)


def minor(version: str) -> tuple[int, int]:
    major, minor_, *_ = version.split("+")[0].split(".")
    return int(major), int(minor_)


def interpreter_requirements(triton: str) -> list[str]:
    """What the tests' interpreter needs beside the package: triton 3.6's breaks on numpy >= 2.4
    (lstm_triton._env.check_interpreter); the package itself takes any numpy."""
    return ["numpy<2.4"] if minor(triton) < (3, 7) else []


def pinned_triton(py: Path) -> str | None:
    """The triton release the installed torch requires exactly (its CUDA builds do), or None."""
    code = (
        "import importlib.metadata as m, re\n"
        "for r in m.requires('torch') or []:\n"
        "    v = re.match(r'triton\\s*==\\s*([0-9.]+)', r)\n"
        "    if v: print(v.group(1))"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return out[0] if out else None


def install_torch(py: Path, pip: list, name: str, vs: VersionSet) -> tuple[str, str]:
    """torch and triton of set ``vs`` into the environment of ``py``; returns the (torch, triton)
    installed. Without a GPU torch's CPU build, where its index can be reached; otherwise the build
    the package index serves, whose CUDA build pins a triton: taken when it is in TRITON_RANGE."""
    gpu = has_nvidia_gpu()
    if not gpu and reachable(f"{TORCH_CPU_INDEX}/torch/"):
        run([*pip, f"torch=={vs.torch}", "--index-url", TORCH_CPU_INDEX])
        build = "CPU build"
    else:
        if not gpu:
            print(
                f"torch's CPU index ({TORCH_CPU_INDEX}) cannot be reached: its CUDA build, which runs on a CPU too",
                flush=True,
            )
        run([*pip, f"torch=={vs.torch}"])
        build = "CUDA build"
    triton = pinned_triton(py) or vs.triton
    if not TRITON_RANGE[0] <= minor(triton) <= TRITON_RANGE[1]:
        lo, hi = (".".join(map(str, v)) for v in TRITON_RANGE)
        sys.exit(
            f"torch {vs.torch}'s {build} pins triton {triton}, outside the supported {lo} to {hi}: "
            f"take torch's CPU build ({TORCH_CPU_INDEX}) or another --versions set"
        )
    print(f"{name} set: torch {vs.torch} ({build}), triton {triton}", flush=True)
    return vs.torch, triton


def stamped_key(stamp: Path) -> str | None:
    """The set-up key a stamp records; None for none, or one from an older dev.py."""
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return recorded.get("key") if isinstance(recorded, dict) else None


def ensure_env(name: str) -> Path:
    """The environment of version set ``name``, installed if its stamp is missing or stale;
    returns its python."""
    vs = VERSION_SETS[name]
    venv = ROOT / vs.venv
    py, stamp, key = venv_python(venv), venv / STAMP, setup_key(vs)
    if py.exists() and stamped_key(stamp) == key:
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
    try:
        torch, triton = install_torch(py, pip, name, vs)
        run([*pip, f"torch=={torch}", f"triton=={triton}", *interpreter_requirements(triton), "-e", ".[dev]"], cwd=ROOT)
    except subprocess.CalledProcessError:
        sys.exit(f"installing the {name} set into {vs.venv} failed (see the pip output above)")
    stamp.write_text(json.dumps(dict(key=key, torch=torch, triton=triton)))
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
