#!/usr/bin/env python3
"""Check the package as a user gets it: build the sdist from the checkout and the wheel from that
sdist, install the wheel into a fresh environment that already holds torch, triton and the newest
numpy, and run it from outside the checkout. Needs Python 3.10+ and the package index.

    python3 scripts/check_wheel.py                                  # torch 2.15.0, triton 3.9.0
    python3 scripts/check_wheel.py --torch 2.14.1 --triton 3.8.0    # another user stack
    python3 scripts/check_wheel.py --keep                           # keep the work folder to look into

One line per check; the first failure stops the run with its reason (exit status 1):

    sdist      built from the checkout's files (tracked and untracked, not ignored): kernels/, the
               package with its tuned caches, and what the tests read (tests/, bench/, docs/, examples/)
    wheel      built from the sdist, which proves the sdist complete: lstm_triton/ with kernels/ and
               tuned/*.json inside, nothing else at the top (no `kernels` of its own)
    stack      torch, triton and the newest numpy, installed first as a user would have them
    install    pip install <wheel>, its dependencies resolved as for a user: torch, triton and numpy
               stay as they were
    import     from a folder outside the checkout, PYTHONPATH unset: the installed package, its
               kernels and tuned caches
    interpret  forward and backward under TRITON_INTERPRET=1 against torch.nn.LSTM
    tune       python -m lstm_triton.tune --plan, on one small shape
    aot        python -m lstm_triton.aot --only <one config>: compiled for sm_90, no GPU needed

Each run takes a fresh environment (minutes: torch is large; pip's cache saves the downloads):
one reused would check an install over an earlier one.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lstm_triton"
# A user's newest stack (scripts/dev.py's "newest" set); numpy is always the newest the index has
DEFAULT_TORCH, DEFAULT_TRITON = "2.15.0", "3.9.0"
STACK = ("torch", "triton", "numpy")  # what installing the wheel must leave alone
# The checkout's folders the sdist carries whole: the package's sources and what its tests read
SDIST_TREES = ("kernels", PACKAGE, "tests", "bench", "docs", "examples")
# Folders that are never sources, for a checkout without git (an unpacked sdist, say)
NOT_SOURCES = re.compile(r"^(\.git|\.venv.*|__pycache__|build|dist|.*\.egg-info|\.pytest_cache|\.ruff_cache)$")
# A machine-wide pip constraint (a cap on torch, say) would refuse the stack: this environment is
# the check's own, so its installs set constraints aside; indexes and mirrors stay as configured
PIP_ENV = dict(os.environ, PIP_CONSTRAINT=os.devnull)
# The interpreter check: odd sizes (hidden not a power of two, batch not a tile), two bidirectional
# layers, in float32 against nn.LSTM's float32 (the interpreter's dots are exact: errors near 1e-6)
INTERPRET_SHAPE = dict(input_size=5, hidden_size=6, num_layers=2, batch=3, steps=4)
INTERPRET_TOL = 1e-4  # ||ours - nn.LSTM|| / ||nn.LSTM|| per output and gradient
# The tune check: one small shape, as a user would first try --plan
TUNE_PLAN_ARGS = ("--plan", "--H", "64", "--B", "4", "--dirs", "1", "--dtype", "bfloat16")
OUTPUT_TAIL = 4000  # characters of a failed command's output shown


class CheckFailed(Exception):
    pass


def run(cmd: list, **kw) -> str:
    """``cmd``'s stdout and stderr together; CheckFailed with their tail when it fails."""
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise CheckFailed(f"`{' '.join(map(str, cmd))}` exited {r.returncode}:\n{r.stdout[-OUTPUT_TAIL:]}")
    return r.stdout


def require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def source_files() -> list[str]:
    """The checkout's files a build may see: tracked and untracked ones that git does not ignore
    (everything but build outputs without git), relative to ROOT."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
        return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())  # deleted, not yet staged: gone
    files = []
    for d, dirs, names in os.walk(ROOT):
        dirs[:] = [n for n in dirs if not NOT_SOURCES.match(n)]
        files += [str((Path(d) / n).relative_to(ROOT)) for n in names if not n.endswith((".pyc", ".pyo"))]
    return sorted(files)


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_venv(path: Path) -> Path:
    try:
        venv.create(path, with_pip=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CheckFailed(f"creating a venv failed ({e}): on Debian/Ubuntu, `apt install python3-venv` first") from e
    return venv_python(path)


def pip(py: Path) -> list:
    return [py, "-m", "pip", "--disable-pip-version-check"]


def installed(py: Path) -> dict[str, str]:
    """Name -> version of every distribution in ``py``'s environment."""
    rows = json.loads(run([*pip(py), "list", "--format=json"], env=PIP_ENV))
    return {re.sub(r"[-_.]+", "-", r["name"]).lower(): r["version"] for r in rows}


def user_env(py: Path, work: Path, interpret: bool) -> dict:
    """A user's shell with the fresh environment active: nothing of the checkout on the path, no
    tuned cache of ours named, a Triton cache of its own (so aot compiles, never reuses)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "LSTM_TRITON_TUNED")}
    env.update(VIRTUAL_ENV=str(py.parent.parent), PATH=os.pathsep.join([str(py.parent), env.get("PATH", "")]))
    env["TRITON_CACHE_DIR"] = str(work / "triton-cache")
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return env


def check_members(kind: str, names: set[str], prefix: str, expected: list[str]) -> None:
    missing = [f for f in expected if prefix + f not in names]
    require(not missing, f"the {kind} lacks {len(missing)} of the checkout's files: {', '.join(missing[:10])}")


def check_sdist(sdist: Path, sources: list[str]) -> str:
    with tarfile.open(sdist) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    prefix = sdist.name.removesuffix(".tar.gz") + "/"
    expected = [f for f in sources if f.split("/")[0] in SDIST_TREES] + ["pyproject.toml", "README.md"]
    check_members("sdist", names, prefix, expected)
    kernels = [f for f in expected if f.startswith("kernels/") and f.endswith(".py")]
    tuned = [f for f in expected if re.fullmatch(rf"{PACKAGE}/tuned/[^/]+\.json", f)]
    require(kernels and tuned, f"kernels/*.py: {len(kernels)}, {PACKAGE}/tuned/*.json: {len(tuned)} (none?)")
    return f"{sdist.name}: {len(names)} files, kernels/ {len(kernels)} .py, {PACKAGE}/tuned/ {len(tuned)} .json"


def check_wheel(wheel: Path, sources: list[str]) -> str:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = [f for f in sources if re.fullmatch(rf"{PACKAGE}/(.+\.py|tuned/[^/]+\.json)", f)]
    kernels = [f for f in sources if re.fullmatch(r"kernels/[^/]+\.py", f)]
    check_members("wheel", names, "", package)
    check_members("wheel", names, f"{PACKAGE}/", kernels)
    top = {n.split("/")[0] for n in names}
    others = sorted(t for t in top if t != PACKAGE and not t.endswith(".dist-info"))
    require(not others, f"the wheel installs more than {PACKAGE}/ at the top: {others}")
    tuned = [f for f in package if f.endswith(".json")]
    return f"{wheel.name}: {len(names)} files, {PACKAGE}/kernels/ {len(kernels)} .py, {len(tuned)} tuned .json"


IMPORT_CODE = """
import importlib.util, json
from importlib import resources
import lstm_triton, lstm_triton.kernels
tuned = resources.files("lstm_triton") / "tuned"
caches = {p.name: json.loads(p.read_text())["gpu"] for p in tuned.iterdir() if p.name.endswith(".json")}
print(json.dumps(dict(version=lstm_triton.__version__, package=lstm_triton.__file__,
                      kernels=lstm_triton.kernels.__file__, top_kernels=importlib.util.find_spec("kernels") is not None,
                      caches=caches)))
"""


def check_import(py: Path, work: Path, run_dir: Path, sources: list[str]) -> str:
    info = json.loads(run([py, "-c", IMPORT_CODE], cwd=run_dir, env=user_env(py, work, False)).splitlines()[-1])
    prefix = str(py.parent.parent.resolve())
    for key in ("package", "kernels"):
        where = str(Path(info[key]).resolve())
        require(where.startswith(prefix), f"{key} imports from {where}, not from the environment")
    require(not info["top_kernels"], "a top-level `kernels` imports in the environment (ours must not be one)")
    shipped = sorted(Path(f).name for f in sources if re.fullmatch(rf"{PACKAGE}/tuned/[^/]+\.json", f))
    require(sorted(info["caches"]) == shipped, f"tuned caches {sorted(info['caches'])}, the checkout has {shipped}")
    return f"{PACKAGE} {info['version']} from the environment, tuned caches for {', '.join(info['caches'].values())}"


INTERPRET_CODE = """
import json, sys, torch
from torch import nn
from lstm_triton import LSTM
s = json.loads(sys.argv[1])
torch.manual_seed(0)
ref = nn.LSTM(s["input_size"], s["hidden_size"], num_layers=s["num_layers"], bidirectional=True, batch_first=True)
ours = LSTM.from_torch(ref)
dirs = 2 * s["num_layers"]
inputs = [torch.randn(s["batch"], s["steps"], s["input_size"]), torch.randn(dirs, s["batch"], s["hidden_size"]),
          torch.randn(dirs, s["batch"], s["hidden_size"])]
plan = ours.kernel_plan(inputs[0], tuple(inputs[1:]), training=True)
results = []
for module in (ours, ref):
    x, h0, c0 = (t.clone().requires_grad_() for t in inputs)
    out, (h, c) = module(x, (h0, c0))
    torch.manual_seed(1)  # the same cotangents for both: contiguous (randn_like follows strides, other draws)
    sum((t * torch.randn(t.shape)).sum() for t in (out, h, c)).backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    results.append(dict(out=out, h_n=h, c_n=c, grad_x=x.grad, grad_h0=h0.grad, grad_c0=c0.grad, **grads))
with torch.no_grad():
    errors = {k: float((v - results[1][k]).norm() / results[1][k].norm()) for k, v in results[0].items()}
print(json.dumps(dict(plan=plan.label, kernels=plan.reason is None, errors=errors)))
"""


def check_interpret(py: Path, work: Path, run_dir: Path) -> str:
    env = user_env(py, work, True)
    out = run([py, "-c", INTERPRET_CODE, json.dumps(INTERPRET_SHAPE)], cwd=run_dir, env=env)
    res = json.loads(out.splitlines()[-1])
    require(res["kernels"], f"the call runs PyTorch's LSTM, not our kernels: {res['plan']}")
    errors = {k: math.inf if math.isnan(v) else v for k, v in res["errors"].items()}
    worst = max(errors, key=errors.get)
    err = errors[worst]
    require(err <= INTERPRET_TOL, f"{worst} is {err:.2e} off nn.LSTM's (relative; at most {INTERPRET_TOL:.0e})")
    return f"{len(errors)} outputs and gradients match nn.LSTM's (worst {worst}: {err:.1e}); {res['plan']}"


def check_tune(py: Path, work: Path, run_dir: Path) -> str:
    out = run([py, "-m", f"{PACKAGE}.tune", *TUNE_PLAN_ARGS], cwd=run_dir, env=user_env(py, work, False))
    require("candidates" in out, f"tune --plan printed no candidates:\n{out[-OUTPUT_TAIL:]}")
    return f"tune {' '.join(TUNE_PLAN_ARGS)}: {out.strip().splitlines()[-1]}"


# The first config aot compiles, as its --only labels it (aot names a config by its shape and
# heuristic pick, which change with the heuristic: asked, never written here)
FIRST_LABEL_CODE = """
from lstm_triton.aot import grid_configs, label
kind, config, hidden, _, _, dtype, exact_fp32, varlen = grid_configs()[0]
print(label(kind, config, hidden, dtype, exact_fp32, varlen))
"""


def check_aot(py: Path, work: Path, run_dir: Path) -> str:
    env = user_env(py, work, False)
    name = run([py, "-c", FIRST_LABEL_CODE], cwd=run_dir, env=env).strip().splitlines()[-1]
    out = run([py, "-m", f"{PACKAGE}.aot", "--only", f"^{re.escape(name)}$", "--jobs", "1"], cwd=run_dir, env=env)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    require(len(rows) == 1, f"aot --only {name} printed {len(rows)} reports, not one:\n{out[-OUTPUT_TAIL:]}")
    rep = rows[0]
    require(not rep["problems"], f"aot compiled {name} with problems: {rep['problems']}")
    return f"aot --only {name}: {rep['matmul']}, {rep['regs']} registers, {rep['spill_bytes']} B spilled"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 scripts/check_wheel.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--torch", default=DEFAULT_TORCH, help="torch release of the user's stack (default %(default)s)")
    p.add_argument("--triton", default=DEFAULT_TRITON, help="triton release of the user's stack (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (sdist, wheel, environment)")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lstm_triton_check_wheel_"))
    dist, src, run_dir = work / "dist", work / "src", work / "run"
    run_dir.mkdir()
    state: dict = {}
    t_start = time.monotonic()

    def stage_source():
        # the build runs on a copy: nothing lands in the working tree (egg-info, build/), and a stale
        # egg-info there cannot add files to the sdist
        state["sources"] = source_files()
        for f in state["sources"]:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
        bpy = make_venv(work / "build-env")
        run([*pip(bpy), "install", "build"], env=PIP_ENV)
        # without --sdist/--wheel: the sdist, then the wheel from the unpacked sdist, each in an
        # isolated environment holding only [build-system] requires
        run([bpy, "-m", "build", "--outdir", dist, src], env=PIP_ENV)
        built = {ext: sorted(dist.glob(f"*{ext}")) for ext in (".tar.gz", ".whl")}
        require(all(len(v) == 1 for v in built.values()), f"the build made {sorted(os.listdir(dist))}")
        state["sdist"], state["wheel"] = built[".tar.gz"][0], built[".whl"][0]
        return check_sdist(state["sdist"], state["sources"])

    def stack():
        py = state["py"] = make_venv(work / "env")
        spec = [f"torch=={args.torch}", f"triton=={args.triton}", "numpy"]
        run([*pip(py), "install", "--no-compile", *spec], env=PIP_ENV)
        before = state["before"] = installed(py)
        for name, want in (("torch", args.torch), ("triton", args.triton)):
            require(before.get(name, "").split("+")[0] == want, f"{name} {before.get(name)} installed, not {want}")
        return ", ".join(f"{n} {before[n]}" for n in STACK) + f" ({len(before)} distributions)"

    def install():
        py, before = state["py"], state["before"]
        run([*pip(py), "install", "--no-compile", state["wheel"]], env=PIP_ENV)
        after = installed(py)
        changed = {n: f"{v} -> {after.get(n, 'removed')}" for n, v in before.items() if after.get(n) != v}
        touched = {n: changed[n] for n in STACK if n in changed}
        require(not touched, f"installing the wheel changed {touched}")
        added = sorted(set(after) - set(before))
        others = f"; also changed: {changed}" if changed else ""
        return f"torch, triton, numpy unchanged; added {len(added)}: {', '.join(added)}{others}"

    checks = (
        ("sdist", stage_source),
        ("wheel", lambda: check_wheel(state["wheel"], state["sources"])),
        ("stack", stack),
        ("install", install),
        ("import", lambda: check_import(state["py"], work, run_dir, state["sources"])),
        ("interpret", lambda: check_interpret(state["py"], work, run_dir)),
        ("tune", lambda: check_tune(state["py"], work, run_dir)),
        ("aot", lambda: check_aot(state["py"], work, run_dir)),
    )
    status = 0
    try:
        for name, check in checks:
            print(f"{name:<10}", end="", flush=True)
            t0 = time.monotonic()
            try:
                detail = check()
            except CheckFailed as e:
                hint = "" if args.keep else " (--keep keeps the sdist, wheel and environment to look into)"
                print(f"FAIL ({time.monotonic() - t0:.0f} s): {e}{hint}", flush=True)
                status = 1
                break
            print(f"ok   {detail} ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    verdict = "failed" if status else "passed"
    print(f"check_wheel {verdict} (torch {args.torch}, triton {args.triton}) in {time.monotonic() - t_start:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
