"""The long-format results CSV: one row per provider x case, appended as soon as it is measured,
so a run cut short keeps every finished row and a rerun resumes after them."""

import csv
import datetime
from pathlib import Path

import pandas as pd

RESULTS_CSV, FLOOR_CSV = "results.csv", "floor.csv"
ERRORS_LOG = "errors.log"  # the traceback of every error row, appended run after run

# Row statuses. Only OK rows carry timings; ERROR rows are measured again on a rerun.
OK = "ok"
WRONG = "wrong"  # failed the correctness gate: never timed
UNSUPPORTED = "unsupported"  # the provider raised NotImplementedError (e.g. our training path)
ROUTED = "routed"  # our module would run PyTorch's LSTM for this case: not our kernel, not timed
SKIPPED = "skipped"  # the provider cannot run here (no GPU, CUDA graph capture failed, ...)
ERROR = "error"
STATUSES = (OK, WRONG, UNSUPPORTED, ROUTED, SKIPPED, ERROR)

KEY = ("sweep", "provider", "mode", "dtype", "T", "B", "H", "I", "layers", "dirs", "proj")
MEASURES = (
    "status",
    "reason",
    "median_ms",
    "q20_ms",
    "q80_ms",
    "n_reps",
    "us_per_step",
    "tokens_per_s",
    "tflops",
    "peak_mem_mib",
    "compile_s",
    "rel_err",
    "tol",
    "config",
)
ENV = ("device", "gpu", "driver", "cuda", "torch", "triton", "cudnn", "tf32", "commit", "time")
SCHEMA = KEY + MEASURES + ENV

FLOOR_SCHEMA = ("programs", "n_iters", "us_per_barrier", "status", "reason") + ENV


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class CsvLog:
    """Append-only CSV with a fixed header; refuses a file written with another schema."""

    def __init__(self, path: Path, schema: tuple[str, ...]):
        self.path, self.schema = path, schema
        if path.exists() and path.stat().st_size:
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != schema:
                raise ValueError(f"{path} has columns {header}, expected {list(schema)}: write to a new --out folder")

    def append(self, row: dict) -> None:
        missing, extra = set(self.schema) - set(row), set(row) - set(self.schema)
        if missing or extra:
            raise ValueError(f"row does not match the schema: missing {sorted(missing)}, extra {sorted(extra)}")
        new = not self.path.exists() or not self.path.stat().st_size
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.schema)
            if new:
                w.writeheader()
            w.writerow(row)


def key_of(row: dict) -> tuple[str, ...]:
    """A row's identity as strings, the same whether it came from a Case or back from the CSV."""
    return tuple(str(row[k]) for k in KEY)


def load(path: Path) -> pd.DataFrame:
    """The results, last row per key (a rerun's row replaces an earlier error)."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "proj" not in df.columns:  # written before the bench measured projections: none
        df.insert(list(df.columns).index("dirs") + 1, "proj", 0)
    missing = set(SCHEMA) - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    return df.drop_duplicates(subset=list(KEY), keep="last").reset_index(drop=True)


def done_keys(path: Path) -> set[tuple[str, ...]]:
    """Keys of rows a rerun must not measure again: everything but errors."""
    if not path.exists():
        return set()
    df = load(path)
    df = df[df["status"] != ERROR]
    return {tuple(str(v) for v in r) for r in df[list(KEY)].itertuples(index=False)}


def ours_failure(df: pd.DataFrame, ours: set[str], finished: bool) -> str | None:
    """Why our side of a run failed, from its rows (``load``'s, last row per key): a row of ours
    that raised (the first one named), or, once every row ran (``finished``), none of ours
    timed. None when ours ran, or when the run asked for none of ours."""
    mine = df[df["provider"].isin(ours)]
    errors = mine[mine["status"] == ERROR]
    if not errors.empty:
        r = errors.iloc[0]
        shape = " ".join(str(r[k]) for k in ("sweep", "mode", "dtype"))
        shape += "".join(f" {k}={r[k]}" for k in ("T", "H", "proj", "B", "layers", "dirs"))
        first = f"{shape} | {r['provider']}: {r['reason']}"
        return f"{len(errors)} of {len(mine)} rows of ours raised an error; the first, {first}"
    if finished and not mine.empty and not (mine["status"] == OK).any():
        counts = ", ".join(f"{n} {s}" for s, n in mine["status"].value_counts().items())
        return f"no row of ours was timed ({counts}); the first reason: {mine.iloc[0]['reason']}"
    return None


def floor_failure(path: Path) -> str | None:
    """Why the barrier floor of a folder failed (its first error row), or None."""
    if not path.exists():
        return None
    floor = pd.read_csv(path, keep_default_na=False, na_values=[""])
    errors = floor[floor["status"] == ERROR]
    if errors.empty:
        return None
    return f"the barrier floor failed at {errors.iloc[0]['programs']} programs: {errors.iloc[0]['reason']}"
