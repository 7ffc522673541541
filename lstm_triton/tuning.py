"""Tuned launch configs: the config space the tuner (``python -m lstm_triton.tune``) searches,
and the cache of its winners that ``dispatch.select_config`` reads.

A cache is readable JSON for one GPU and one Triton version (the tuner writes it)::

    {"format": 1, "gpu": "NVIDIA H200", "triton": "3.6.0", "entries": [
      {"mode": "fwd", "dtype": "bfloat16", "dirs": 1, "hidden_size": 1024, "batch_bucket": 64,
       "config": {"block_h": 16, "block_b": 32, "split_k": 1, "use_fma": false, "num_warps": 4},
       "us_per_step": 5.9, "heuristic": {...}, "heuristic_us_per_step": 6.1,
       "batch": 64, "T": 128, "timed": 11, "rejected": 4}]}

An entry serves every batch of its bucket, ``(batch_bucket / 2, batch_bucket]`` (powers of
two). Only the inference forward (mode "fwd") is tuned; training and exact-fp32 dots keep the
heuristic. Lookup order: a user cache (``cache`` argument, else ``$LSTM_TRITON_TUNED``, else
``~/.cache/lstm_triton/<gpu>.json`` when it exists), then the cache shipped in
``lstm_triton/tuned/``. A cache that is missing (when named), unreadable, or measured on another
GPU or Triton version gives one warning and is ignored: the heuristic picks, nothing crashes.
"""

import contextlib
import functools
import json
import os
import re
import warnings
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import triton

from ._env import next_pow2
from .configs import (
    GATES_ON_M_PAYS,
    INTERPRETER,
    MIN_DOT_BLOCK_B,
    Chip,
    LSTMConfig,
    check_config,
    fits,
    heuristic,
    reject_reason,
)
from .launch import launch_groups
from .layout import padded_hidden

FORMAT = 1
FWD = "fwd"  # the inference forward: the only mode tuned so far
CACHE_ENV = "LSTM_TRITON_TUNED"
SHIPPED_DIR = Path(__file__).parent / "tuned"
LOOKUPS_KEPT = 4096  # memoized (shape, cache) lookups: far more shapes than a process runs
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# The config space (see ``candidates``). Each bound keeps the GPU tuning run short; the spike's
# H200 measurements (DESIGN.md) say what lies outside is slower.
TUNE_BLOCK_HS = 3  # the widest hidden slices that fit: fewer programs pass the barrier faster
TUNE_MAX_BLOCK_B = 64  # the tallest batch tile tried (64 rows on 8 warps picked wgmma in the spike)
# The dot path's (split_k, num_warps) by batch tile, from sm_90 compile reports of this space and
# the spike's H200 timings: split-K (a K-chunk per warp) only on tiles of up to 8 rows, where it
# won (on 16 rows it spilled in 7 of 11 compiles and never won); 4 warps up to 32 rows (on 64
# they spilled in 9 of 13 compiles), 8 warps from 16 rows on.
SPLIT_K, SPLIT_K_MAX_BLOCK_B = 4, 8
FOUR_WARPS_MAX_BLOCK_B, EIGHT_WARPS_MIN_BLOCK_B = 32, 16
FMA_NUM_WARPS = 8  # the FMA path's weights sit in registers: 4 warps hold twice as many each
FMA_MIN_HIDDEN = 256  # below, one program's dot does (the FMA path spilled in 3 of 5 compiles at H=128)
WAVE_SLACK = 2  # a wave walks one batch tile through all T steps: no config needing twice the fewest


class TunedCacheWarning(UserWarning):
    """A tuned-config cache could not be used: the heuristic picks the configs instead."""


class CacheError(ValueError):
    """A cache file that is not a valid tuned-config cache."""


def kernel_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def batch_bucket(batch: int) -> int:
    """The bucket a batch falls in: the next power of two, so ``(bucket / 2, bucket]``."""
    return next_pow2(batch)


@dataclass(frozen=True)
class Key:
    mode: str
    dtype: str  # "bfloat16", "float16", "float32" (TF32 dots)
    dirs: int
    hidden_size: int
    batch_bucket: int

    def label(self) -> str:
        d = "bi" if self.dirs == 2 else "uni"
        return f"{self.mode} {self.dtype} {d} H={self.hidden_size} B<={self.batch_bucket}"


def key_of(hidden_size: int, batch: int, dirs: int, dtype: torch.dtype, mode: str = FWD) -> Key:
    return Key(mode, kernel_dtype(dtype), dirs, hidden_size, batch_bucket(batch))


LATER_FIELDS = {"batch_loop", "gates_on_m"}  # LSTMConfig fields a cache of FORMAT 1 may lack


def config_from_json(d) -> LSTMConfig:
    """A config as the cache stores it; fields added later may be missing (caches from before
    they existed: then their defaults)."""
    names = {f.name for f in fields(LSTMConfig)}
    if not isinstance(d, dict) or not names - LATER_FIELDS <= set(d) <= names:
        raise CacheError(f"a config must have exactly the fields {sorted(names)}, got {d!r}")
    types = {"use_fma": bool, "batch_loop": bool, "gates_on_m": bool}
    for k, v in d.items():
        if type(v) is not types.get(k, int):
            raise CacheError(f"config field {k} has the wrong type: {v!r}")
    return LSTMConfig(**d)


@dataclass(frozen=True)
class Entry:
    """One measured winner and what it beat. ``heuristic``/``heuristic_us_per_step``: the
    heuristic's config and time on the same shape (None when it failed the check)."""

    key: Key
    config: LSTMConfig
    us_per_step: float
    heuristic: LSTMConfig | None
    heuristic_us_per_step: float | None
    batch: int  # the batch and sequence length it was measured at
    T: int
    timed: int  # candidates that passed the check and were timed
    rejected: int  # candidates that failed the compile check, the reference check, or raised

    def to_json(self) -> dict:
        d = asdict(self)
        return d.pop("key") | d

    @classmethod
    def from_json(cls, d) -> "Entry":
        try:
            key = Key(**{f.name: d[f.name] for f in fields(Key)})
            rest = {f.name: d[f.name] for f in fields(cls) if f.name != "key"}
        except (KeyError, TypeError) as e:
            raise CacheError(f"an entry lacks {e}: {d!r}") from e
        if key.mode != FWD or key.dtype not in DTYPES or key.dirs not in (1, 2):
            raise CacheError(f"unknown mode, dtype or dirs in {d!r}")
        counts = (key.hidden_size, key.batch_bucket, rest["batch"], rest["T"], rest["timed"], rest["rejected"])
        if not all(type(v) is int and v >= 0 for v in counts) or key.batch_bucket != batch_bucket(rest["batch"]):
            raise CacheError(f"sizes and counts must be integers, batch in its bucket: {d!r}")
        times = (rest["us_per_step"], rest["heuristic_us_per_step"] or 0.0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in times):
            raise CacheError(f"times must be numbers: {d!r}")
        rest["config"] = config_from_json(rest["config"])
        if rest["heuristic"] is not None:
            rest["heuristic"] = config_from_json(rest["heuristic"])
        try:
            check_config(rest["config"], key.hidden_size)
        except ValueError as e:
            raise CacheError(f"{key.label()}: {e}") from e
        return cls(key, **rest)


@dataclass
class TunedCache:
    gpu: str
    triton: str
    entries: dict[Key, Entry] = field(default_factory=dict)

    def lookup(self, key: Key) -> Entry | None:
        return self.entries.get(key)

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry

    def sorted_entries(self) -> list[Entry]:
        order = sorted(self.entries, key=lambda k: (k.mode, k.dtype, k.dirs, k.hidden_size, k.batch_bucket))
        return [self.entries[k] for k in order]

    def to_json(self) -> dict:
        entries = [e.to_json() for e in self.sorted_entries()]
        return {"format": FORMAT, "gpu": self.gpu, "triton": self.triton, "entries": entries}

    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a file), one entry per line."""
        path.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_json()
        lines = [json.dumps(e) for e in d.pop("entries")]
        head = json.dumps(d)[:-1]
        body = ",\n  ".join(lines)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(f'{head}, "entries": [\n  {body}\n]}}\n' if lines else f'{head}, "entries": []}}\n')
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "TunedCache":
        """Raises FileNotFoundError, or CacheError for anything but a valid cache."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CacheError(f"not readable JSON: {e}") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CacheError(f"not a format-{FORMAT} tuned-config cache")
        types = {"gpu": str, "triton": str, "entries": list}
        if not all(isinstance(d.get(k), t) for k, t in types.items()):
            raise CacheError("gpu, triton (strings) and entries (a list) are required")
        cache = cls(d["gpu"], d["triton"])
        for e in d["entries"]:
            if not isinstance(e, dict):
                raise CacheError(f"an entry is not an object: {e!r}")
            cache.add(Entry.from_json(e))
        return cache


def gpu_slug(gpu: str) -> str:
    """A file name for a GPU: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")


def shipped_path(gpu: str) -> Path:
    return SHIPPED_DIR / f"{gpu_slug(gpu)}.json"


def default_user_path(gpu: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lstm_triton" / f"{gpu_slug(gpu)}.json"


def user_cache_path(gpu: str, cache: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Where the user's cache is, and whether the user named it (a missing named cache warns)."""
    if cache is not None:
        return Path(cache), True
    env = os.environ.get(CACHE_ENV)
    return (Path(env), True) if env else (default_user_path(gpu), False)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, TunedCacheWarning, stacklevel=4)


def _usable(path: Path, gpu: str, triton_version: str, named: bool) -> TunedCache | None:
    """The cache at ``path`` when it is valid for this GPU and Triton version, else None (and
    one warning, except for a missing cache nobody named)."""
    fallback = "the heuristic picks the launch configs"
    try:
        cache = TunedCache.load(path)
    except FileNotFoundError:
        if named:
            _warn_once(f"lstm_triton: tuned-config cache {path} does not exist: {fallback}")
        return None
    except CacheError as e:
        _warn_once(f"lstm_triton: tuned-config cache {path} is corrupt ({e}): {fallback}")
        return None
    if cache.gpu != gpu or cache.triton != triton_version:
        _warn_once(
            f"lstm_triton: tuned-config cache {path} was measured on {cache.gpu} with triton {cache.triton}, "
            f"this is {gpu} with triton {triton_version}: {fallback}; retune with `python -m lstm_triton.tune`"
        )
        return None
    return cache


@functools.cache
def _caches(gpu: str, triton_version: str, user: Path, named: bool) -> tuple[TunedCache, ...]:
    """The caches to consult, user first; read and checked once per process and path."""
    sources = ((user, named), (shipped_path(gpu), False))
    found = [c for c in (_usable(path, gpu, triton_version, n) for path, n in sources) if c is not None]
    if not found and not named and not shipped_path(gpu).exists():
        _warn_once(
            f"lstm_triton: no tuned configs for {gpu} (none shipped, none in {user}): the heuristic picks the "
            "launch configs; `python -m lstm_triton.tune` measures the best ones for this GPU"
        )
    return tuple(found)


def clear_loaded() -> None:
    """Forget the caches read so far, the environment and the warnings given: the next lookup
    reads them again (after changing $LSTM_TRITON_TUNED or a cache file in a running process)."""
    _lookup.cache_clear()
    _caches.cache_clear()
    _env.cache_clear()
    _warned.clear()


_use_tuned: ContextVar[bool] = ContextVar("lstm_triton_use_tuned", default=True)


@contextlib.contextmanager
def heuristic_only():
    """Inside, ``select_config`` ignores every tuned cache (the benchmark's heuristic rows)."""
    token = _use_tuned.set(False)
    try:
        yield
    finally:
        _use_tuned.reset(token)


def tuned_config(
    hidden_size: int,
    batch: int,
    dirs: int,
    dtype: torch.dtype,
    chip: Chip,
    cache: str | os.PathLike | None = None,
    triton_version: str | None = None,
) -> LSTMConfig | None:
    """The tuned inference-forward config for this shape on ``chip``, or None (no entry, no
    usable cache, inside ``heuristic_only``, or the interpreter, which always runs one config).
    ``triton_version``: the running one by default. Runs per forward call: after the first call
    for a shape, one memoized lookup."""
    if chip is INTERPRETER or not _use_tuned.get():
        return None
    version = triton_version or triton.__version__
    return _lookup(hidden_size, batch_bucket(batch), dirs, dtype, chip, cache, _env(), version)


@functools.cache
def _env() -> tuple[str | None, str | None]:
    """The variables that name the user's cache, read once per process (reading the environment
    costs microseconds per forward call); ``clear_loaded`` reads them again."""
    return os.environ.get(CACHE_ENV), os.environ.get("XDG_CACHE_HOME")


@functools.lru_cache(maxsize=LOOKUPS_KEPT)
def _lookup(hidden_size, bucket, dirs, dtype, chip: Chip, cache, env, triton_version) -> LSTMConfig | None:
    """``tuned_config`` behind a memo keyed by everything it reads (``env``: the variables that
    name the user's cache)."""
    user, named = user_cache_path(chip.name, cache)
    key = Key(FWD, kernel_dtype(dtype), dirs, hidden_size, bucket)
    for c in _caches(chip.name, triton_version, user, named):
        entry = c.lookup(key)
        if entry is None:
            continue
        if fits(entry.config, hidden_size, dtype, chip):
            return entry.config
        _warn_once(f"lstm_triton: tuned config {entry.config} for {key.label()} does not fit {chip.name}: ignored")
    return None


def _batch_tiles(batch: int) -> list[int]:
    """Batch tiles worth trying: powers of two up to the batch (rounded up), at least a dot's
    MIN_DOT_BLOCK_B rows unless the whole batch is smaller."""
    top = min(batch_bucket(batch), TUNE_MAX_BLOCK_B)
    return [b for b in (1 << i for i in range(top.bit_length())) if b == top or b >= MIN_DOT_BLOCK_B]


def _dot_kinds(block_b: int) -> list[tuple[int, int]]:
    """(split_k, num_warps) pairs of the dot path worth compiling for this batch tile."""
    kinds = [(1, 4)] if block_b <= FOUR_WARPS_MAX_BLOCK_B else []
    kinds += [(SPLIT_K, 4)] if block_b <= SPLIT_K_MAX_BLOCK_B else []
    return kinds + ([(1, 8)] if block_b >= EIGHT_WARPS_MIN_BLOCK_B else [])


def waves(config: LSTMConfig, hidden_size: int, batch: int, dirs: int, chip: Chip) -> int:
    """Batch tiles one program walks in series over a call with this config: the launches in
    series (each walks all T steps) times the tiles each program of a launch walks per step."""
    n_tiles = -(-batch // config.block_b)
    return sum(
        -(-n_tiles // g.n_b) if g.loop else 1
        for g in launch_groups(config.programs(hidden_size), n_tiles, dirs, chip, config.batch_loop)
    )


def candidates(hidden_size: int, batch: int, dirs: int, dtype: torch.dtype, chip: Chip) -> list[LSTMConfig]:
    """Every config worth timing for this inference-forward shape on ``chip``, the heuristic's
    first: the space (batch tiles, fused or split-K dots, the FMA path below a dot's batch tile,
    warps) pruned by ``configs.reject_reason``, then the TUNE_BLOCK_HS widest hidden slices of
    each kind (and its serial variant where that differs), then no config that needs WAVE_SLACK
    times the fewest waves. The interpreter gets the one config it always runs. Empty when
    nothing fits."""
    base = heuristic(hidden_size, batch, dirs, dtype, chip)
    if chip is INTERPRETER:
        return [base]
    kinds = [LSTMConfig(1, bb, split, num_warps=warps) for bb in _batch_tiles(batch) for split, warps in _dot_kinds(bb)]
    if GATES_ON_M_PAYS:  # each split-K dot transposed too
        kinds += [replace(k, gates_on_m=True) for k in kinds if k.split_k > 1]
    if batch < MIN_DOT_BLOCK_B and padded_hidden(hidden_size) >= FMA_MIN_HIDDEN:
        kinds.append(LSTMConfig(1, 1, use_fma=True, num_warps=FMA_NUM_WARPS))
    widest_first = [1 << i for i in range(padded_hidden(hidden_size).bit_length() - 1, -1, -1)]
    space = []
    for kind in kinds:
        fit = [replace(kind, block_h=bh) for bh in widest_first]
        for c in [c for c in fit if reject_reason(c, hidden_size, dtype, chip) is None][:TUNE_BLOCK_HS]:
            serial = replace(c, batch_loop=False)  # the batch tiles as launches in series, where that differs
            space += [c, serial] if serial != c and waves(serial, hidden_size, batch, dirs, chip) > 1 else [c]
    if not space:
        return [base] if base else []
    fewest = min(waves(c, hidden_size, batch, dirs, chip) for c in space)
    space = [c for c in space if waves(c, hidden_size, batch, dirs, chip) < WAVE_SLACK * fewest]
    return list(dict.fromkeys(([base] if base else []) + space))
