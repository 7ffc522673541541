"""``python -m bench``: measure a sweep into ``reports/<gpu>-<date>-<commit>/`` (results.csv,
floor.csv, plots, REPORT.md); ``python -m bench report DIR``: rebuild plots and REPORT.md
from a folder's CSVs, without a GPU.

Without a GPU it runs a small sweep through Triton's interpreter against PyTorch on the CPU:
the same files, stamped as CPU-interpreter timings that say nothing about GPU performance.

It exits with 1 when a row of ours raised an error, when none of ours was timed, or when the
barrier floor failed; its last lines say why. Tracebacks go to the folder's errors.log.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .results import ERRORS_LOG
from .sweeps import DTYPES, MODES, SWEEPS

REPORTS = Path("reports")


class RunParser(argparse.ArgumentParser):
    """Its help ends with what a config name says, from lstm_triton, imported only when help is
    printed: importing lstm_triton fixes whether its kernels are interpreted, which ``main``
    decides after parsing."""

    def format_help(self) -> str:
        from lstm_triton.configs import CONFIG_NAME_HELP

        self.epilog = f"In results.csv's config column and REPORT.md, {CONFIG_NAME_HELP}."
        return super().format_help()


def run_parser() -> argparse.ArgumentParser:
    p = RunParser(
        prog="python -m bench",
        description="lstm-triton against cuDNN. Also: `python -m bench report DIR` rebuilds a report from its CSVs.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", nargs="+", choices=list(SWEEPS), help="named sweeps (default: default; cpu on a CPU)")
    which.add_argument("--quick", action="store_true", help="a few points in seconds (the cpu sweep on a CPU)")
    p.add_argument(
        "--providers",
        nargs="+",
        help="providers to run (default: all but ours_heuristic, ours_plain, ours_compiled; see --list)",
    )
    p.add_argument("--T", type=int, nargs="+", help="sequence lengths, replacing the sweep's")
    p.add_argument("--H", type=int, nargs="+", help="hidden sizes, replacing the sweep's")
    p.add_argument("--B", type=int, nargs="+", help="batch sizes, replacing the sweep's")
    p.add_argument("--I", type=int, nargs="+", help="input sizes (default: equal to H)")
    p.add_argument("--layers", type=int, nargs="+", help="layer counts, replacing the sweep's")
    p.add_argument("--dirs", type=int, nargs="+", choices=(1, 2), help="1: LSTM, 2: BiLSTM")
    p.add_argument("--dtype", nargs="+", choices=DTYPES, help="dtypes, replacing the sweep's")
    p.add_argument("--mode", nargs="+", choices=MODES, help="fwd (inference) and/or fwdbw (training)")
    p.add_argument("--budget-s", type=float, help="stop starting rows after this many seconds; rerun to resume")
    p.add_argument("--out", type=Path, help="report folder (default: reports/<gpu>-<date>-<commit>/)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--list", action="store_true", help="list sweeps and providers, then exit")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve the sweeps and providers and create the report folder, then stop before the first case "
        "(bench/gpu_check.sh --dry-run: a GPU run's arguments checked without a GPU)",
    )
    return p


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench report", description="rebuild plots and REPORT.md")
    p.add_argument("dir", type=Path, help="a report folder holding results.csv")
    args = p.parse_args(argv)
    from .report import build, summary
    from .results import RESULTS_CSV

    if not (args.dir / RESULTS_CSV).exists():
        sys.exit(f"{args.dir} holds no {RESULTS_CSV}")

    print(f"wrote {build(args.dir)}")
    print(summary(args.dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = run_parser().parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Triton reads TRITON_INTERPRET when our kernels are defined, so before lstm_triton is imported.
    interpret = device == "cpu"
    if "lstm_triton" in sys.modules and (os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")) != interpret:
        sys.exit("lstm_triton was imported before the benchmark could set TRITON_INTERPRET; run `python -m bench`")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"

    from . import report, runner
    from .env import environment, report_dir
    from .providers import PROVIDERS
    from .results import RESULTS_CSV
    from .timing import CPU_POLICY, GPU_POLICY

    if args.list:
        for s in SWEEPS.values():
            print(f"sweep {s.name:9} {len(s.cases()):4} cases: {s.doc}")
        for p in PROVIDERS.values():
            print(f"provider {p.name:12} {p.doc}")
        return 0
    unknown = set(args.providers or ()) - set(PROVIDERS)
    if unknown:
        sys.exit(f"unknown providers {sorted(unknown)}; known: {list(PROVIDERS)}")
    providers = (
        [PROVIDERS[n] for n in args.providers] if args.providers else [p for p in PROVIDERS.values() if p.default]
    )
    names = args.sweep or ["cpu" if interpret else ("quick" if args.quick else "default")]
    values = dict(T=args.T, H=args.H, B=args.B, I=args.I, layers=args.layers, dirs=args.dirs)
    values |= dict(dtypes=args.dtype, modes=args.mode)
    cases = list(dict.fromkeys(c for n in names for c in SWEEPS[n].override(**values).cases()))

    env = environment(device)
    out = args.out or report_dir(REPORTS, env)
    if interpret:
        print(report.CPU_TITLE.removeprefix("# "), report.CPU_BANNER, sep="\n")
    budget = f", budget {args.budget_s:.0f} s" if args.budget_s is not None else ""
    print(f"{len(cases)} cases x {len(providers)} providers on {env['gpu']}{budget} -> {out}", flush=True)
    if args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        print(f"dry run: {out} created, no case run")
        return 0
    policy = GPU_POLICY if device == "cuda" else CPU_POLICY
    try:
        outcome = runner.run(out, cases, providers, device, policy, args.budget_s, env)
    except Exception as e:  # the run stopped (a broken CUDA context, ...): the traceback joins the rows'
        outcome = e
    finally:
        if (out / RESULTS_CSV).exists():
            print(f"wrote {report.build(out)}")
            print(report.summary(out))
    if isinstance(outcome, Exception):
        stopped = runner.error_row(outcome, out / ERRORS_LOG, "the run, stopped")["reason"]
        return failed([f"the run stopped: {stopped}"], out, env)
    if outcome.left:
        print(f"budget spent: {outcome.left} rows left; run the same command again to resume")
    return verdict(out, cases, providers, finished=not outcome.left, env=env)


def verdict(out: Path, cases, providers, finished: bool, env: dict) -> int:
    """0, or ``failed``'s 1: a row of ours raised an error, none of ours was timed (once every
    row ran), or the barrier floor failed. Counts the rows of this command's cases and
    providers in the folder, those of earlier runs it resumed included."""
    from .results import FLOOR_CSV, RESULTS_CSV, floor_failure, key_of, load, ours_failure

    keys = {key_of(dataclasses.asdict(c) | {"provider": p.name}) for c in cases for p in providers}
    why = [floor_failure(out / FLOOR_CSV)]
    if (out / RESULTS_CSV).exists():
        df = load(out / RESULTS_CSV)
        df = df[[key_of(r) in keys for r in df.to_dict("records")]]
        why.insert(0, ours_failure(df, {p.name for p in providers if p.ours}, finished))
    why = [w for w in why if w]
    return failed(why, out, env) if why else 0


def failed(why: list[str], out: Path, env: dict) -> int:
    """The last two lines of a failed run, why and where; returns the exit status, 1."""
    log = out / ERRORS_LOG
    where = f"; tracebacks in {log}" if log.exists() else ""
    print(f"FAILED: {'; '.join(why)}")
    print(f"on {env['gpu']}, torch {env['torch']}, triton {env['triton']}{where}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
