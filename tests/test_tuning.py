"""The config space and its pruning rule, the tuned-config cache (round trip, lookup, bad
caches), the tuner's choice of a winner, and the benchmark's tuned-against-heuristic rows."""

import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import triton
from torch import nn

import lstm_triton.configs as configs
import lstm_triton.dispatch as dispatch
from bench.providers import PROVIDERS, HeuristicLSTM, route
from bench.report import REPORT_MD, build
from bench.results import SCHEMA
from bench.sweeps import FWD, Case
from lstm_triton import LSTM, LSTMConfig
from lstm_triton._env import interpreting
from lstm_triton.aot import GRID_B, GRID_H, GRID_PRECISIONS
from lstm_triton.configs import (
    H200,
    INTERPRETER,
    MIN_DOT_BLOCK_B,
    Chip,
    backward_config,
    heuristic,
    reject_reason,
    training_config,
)
from lstm_triton.dispatch import plain_configs, select_config
from lstm_triton.tune import (
    ERROR,
    MIN_GAIN,
    OK,
    REJECTED,
    TOL,
    WRONG,
    Problem,
    Shape,
    main,
    make_entry,
    measure,
    open_cache,
    pending,
    pick,
    tune,
)
from lstm_triton.tuning import (
    CACHE_ENV,
    FOUR_WARPS_MAX_BLOCK_B,
    SHIPPED_DIR,
    SPLIT_K_MAX_BLOCK_B,
    WAVE_SLACK,
    Entry,
    TunedCache,
    TunedCacheWarning,
    candidates,
    clear_loaded,
    gpu_slug,
    heuristic_only,
    key_of,
    tuned_config,
    waves,
)

FAKE = Chip("Fake GPU", n_sm=132, smem_per_block=232448)
TINY = Chip("Tiny GPU", n_sm=8, smem_per_block=48 * 1024, regs_per_sm=16384)
TRITON = "9.9.9"  # the Triton version the test caches claim, passed to the lookup as the running one
BF16 = torch.bfloat16
TUNED = LSTMConfig(block_h=8, block_b=64, num_warps=8)  # not the heuristic's pick at H=1024, B=64


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch, tmp_path):
    """No cache read or warning given in one test leaks into the next; no user cache of the
    machine running the tests is read."""
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clear_loaded()
    yield
    clear_loaded()


def entry(H=1024, batch=64, dirs=1, dtype=BF16, config=TUNED, us=5.0) -> Entry:
    base = heuristic(H, batch, dirs, dtype, H200)
    return Entry(key_of(H, batch, dirs, dtype), config, us, base, us * 1.5, batch, 128, timed=4, rejected=1)


def write_cache(path, *entries, gpu=FAKE.name, triton_version=TRITON):
    cache = TunedCache(gpu, triton_version)
    for e in entries:
        cache.add(e)
    cache.save(path)
    return path


def lookups(H, batches, path, dtype=BF16, dirs=1, chip=FAKE):
    return [tuned_config(H, b, dirs, dtype, chip, path, TRITON) for b in batches]


# -- the pruning rule and the config space


def test_reject_reason_names_each_chip_limit():
    cases = [
        (LSTMConfig(16, 8), 256, "co-resident"),  # 16 programs per group on 8 SMs
        (LSTMConfig(128, 32, num_warps=8), 128, "registers"),  # >= 80 live registers, 64 per thread at 8 warps
        (LSTMConfig(128, 8), 128, "shared memory"),  # the W_hh slice alone is 128 KB
        (LSTMConfig(12, 8), 64, "power of two"),  # check_config: cannot compile
    ]
    for cfg, H, why in cases:
        reason = reject_reason(cfg, H, BF16, TINY)
        assert reason is not None and why in reason, (cfg, H, reason)
        assert not configs.fits(cfg, H, BF16, TINY) or why == "power of two"
    fma = LSTMConfig(8, 1, use_fma=True, num_warps=4)  # 256 fp32 weights per thread
    assert "weight registers" in reject_reason(fma, 1024, BF16, H200)
    assert reject_reason(replace(fma, num_warps=8), 1024, BF16, H200) is None
    assert reject_reason(LSTMConfig(16, 8), 64, BF16, TINY) is None
    assert reject_reason(LSTMConfig(16, 8), 256, BF16, H200) is None


@pytest.mark.parametrize("dtype, exact", GRID_PRECISIONS, ids=["bf16", "fp16", "fp32-tf32", "fp32-ieee"])
def test_the_heuristic_passes_the_pruning_rule_on_the_bench_grid(dtype, exact):
    for H in GRID_H:
        for B in GRID_B:
            for dirs in (1, 2):
                cfg = heuristic(H, B, dirs, dtype, H200, exact_fp32=exact)
                assert reject_reason(cfg, H, dtype, H200) is None, (H, B, dirs, cfg)


@pytest.mark.parametrize("chip", [H200, TINY], ids=["h200", "tiny"])
@pytest.mark.parametrize("dtype", [BF16, torch.float32], ids=["bf16", "fp32"])
def test_candidates_fit_and_start_with_the_heuristic(chip, dtype):
    for H in (48, 128, 512, 1024):
        for B in (1, 3, 8, 64, 256):
            for dirs in (1, 2):
                cands = candidates(H, B, dirs, dtype, chip)
                base = heuristic(H, B, dirs, dtype, chip)
                assert (cands[:1] == [base]) if base else not cands, (H, B, dirs)
                assert len(set(cands)) == len(cands)
                assert all(reject_reason(c, H, dtype, chip) is None for c in cands), (H, B, dirs)
                assert all(c.block_b <= max(B, MIN_DOT_BLOCK_B) for c in cands)
                assert B < MIN_DOT_BLOCK_B or not any(c.use_fma for c in cands)  # FMA only below a dot tile
                space = cands[1:]  # the heuristic's may lie outside the space
                assert all(c.split_k == 1 or c.block_b <= SPLIT_K_MAX_BLOCK_B for c in space)
                assert all(c.num_warps == 8 or c.block_b <= FOUR_WARPS_MAX_BLOCK_B for c in space)
                fewest = min(waves(c, H, B, dirs, chip) for c in cands) if cands else 0
                assert all(waves(c, H, B, dirs, chip) < WAVE_SLACK * fewest for c in cands[1:])


def test_candidates_are_few_and_empty_when_nothing_fits():
    assert 1 < len(candidates(1024, 64, 2, BF16, H200)) <= 8
    assert LSTMConfig(8, 1, use_fma=True, num_warps=8) in candidates(1024, 1, 1, BF16, H200)  # the spike's B=1 best
    assert candidates(4096, 8, 1, BF16, H200) == []  # no hidden split keeps W_hh on 132 SMs
    assert candidates(1024, 8, 1, torch.float32, TINY) == []


def test_candidates_hold_the_batch_loop_and_launches_in_series():
    """Where the batch tiles do not fit on the chip at once, the space holds each config with the
    batch loop and without it; where they fit, the two are the same kernel and only one is kept."""
    big = candidates(1024, 256, 2, BF16, H200)
    assert any(c.batch_loop for c in big) and any(not c.batch_loop for c in big)
    assert all(c.batch_loop for c in candidates(256, 8, 1, BF16, H200))


def test_plain_configs_reach_the_backward_config():
    with plain_configs():
        fwd = select_config(1024, 256, 2, BF16, torch.device("cpu"))
    assert not fwd.batch_loop and not fwd.gates_on_m
    assert select_config(1024, 256, 2, BF16, torch.device("cpu")).batch_loop
    assert not backward_config(
        replace(heuristic(1024, 256, 2, BF16, H200), batch_loop=False), 1024, BF16, H200
    ).batch_loop
    assert not training_config(replace(heuristic(1024, 256, 2, BF16, H200), batch_loop=False)).batch_loop


DOT_T = LSTMConfig(block_h=8, block_b=8, split_k=4, gates_on_m=True)  # the transposed dot at H=1024, B=8


@pytest.mark.parametrize("source", ["heuristic", "tuned"])
def test_plain_configs_leave_out_a_picked_transposed_dot(source, tmp_path, monkeypatch):
    """On a (pretend) GPU whose call picks the transposed dot, from the heuristic (where it pays:
    triton >= 3.8) or from a tuned entry, plain_configs runs that config without it and without
    the batch loop (the interpreter's and triton 3.6's picks never hold it)."""
    monkeypatch.setattr(dispatch, "interpreting", lambda: False)
    monkeypatch.setattr(dispatch, "chip_of", lambda device: FAKE)
    monkeypatch.setattr("lstm_triton.tuning.triton.__version__", TRITON)
    monkeypatch.setattr(configs, "GATES_ON_M_PAYS", source == "heuristic")  # the tuned dotT: not the heuristic's
    training = source == "heuristic"  # training runs the heuristic; inference the tuned entry
    heuristic.cache_clear()  # its picks are memoized: none made with the patched flag may outlive the test
    try:
        path = write_cache(tmp_path / "c.json", entry(batch=8, config=DOT_T))
        pick = select_config(1024, 8, 1, BF16, torch.device("cuda"), training=training, cache=path)
        with plain_configs():
            plain_pick = select_config(1024, 8, 1, BF16, torch.device("cuda"), training=training, cache=path)
    finally:
        heuristic.cache_clear()
    assert pick.gates_on_m and pick.batch_loop and (source == "heuristic" or pick == DOT_T)
    assert plain_pick == replace(pick, gates_on_m=False, batch_loop=False)


def test_the_interpreter_gets_one_candidate():
    assert candidates(256, 64, 2, BF16, INTERPRETER) == [heuristic(256, 64, 2, BF16, INTERPRETER)]


# -- the cache


def test_cache_round_trip_is_readable_json(tmp_path):
    e1, e2 = entry(), entry(H=256, batch=1, dirs=2, dtype=torch.float16, config=LSTMConfig(8, 1, use_fma=True))
    path = write_cache(tmp_path / "c.json", e1, e2)
    text = path.read_text()
    d = json.loads(text)
    assert d["gpu"] == FAKE.name and d["triton"] == TRITON and len(d["entries"]) == 2
    assert len(text.splitlines()) == 4  # header, one line per entry, footer
    back = TunedCache.load(path)
    assert back.entries == {e1.key: e1, e2.key: e2}
    assert back.lookup(key_of(1024, 64, 1, BF16)).config == TUNED


def test_lookup_covers_its_batch_bucket_only(tmp_path):
    path = write_cache(tmp_path / "c.json", entry(batch=64))
    assert lookups(1024, (33, 48, 64), path) == [TUNED] * 3
    assert lookups(1024, (32, 65), path) == [None, None]
    assert tuned_config(1024, 64, 2, BF16, FAKE, path, TRITON) is None  # another direction count
    assert tuned_config(1024, 64, 1, torch.float16, FAKE, path, TRITON) is None  # another dtype
    assert tuned_config(512, 64, 1, BF16, FAKE, path, TRITON) is None  # another hidden size


def test_cache_is_read_once_per_path(tmp_path, monkeypatch):
    path = write_cache(tmp_path / "c.json", entry())
    calls = []
    load = TunedCache.load
    monkeypatch.setattr(TunedCache, "load", classmethod(lambda cls, p: calls.append(p) or load(p)))
    for _ in range(3):
        assert lookups(1024, (64,), path) == [TUNED]
    assert calls.count(path) == 1


def test_env_var_names_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(write_cache(tmp_path / "c.json", entry())))
    assert tuned_config(1024, 64, 1, BF16, FAKE, triton_version=TRITON) == TUNED


def _one_warning(fn, match: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [fn() for _ in range(3)]
    ours = [w for w in caught if issubclass(w.category, TunedCacheWarning)]
    assert len(ours) == 1 and match in str(ours[0].message), [str(w.message) for w in caught]
    return results


def _entry_edited(**changes) -> str:
    """A valid cache's text with its entry's fields changed (``config_*``: the config's)."""
    d = entry().to_json()
    for k, v in changes.items():
        if k.startswith("config_"):
            d["config"][k.removeprefix("config_")] = v
        else:
            d[k] = v
    return json.dumps({"format": 1, "gpu": FAKE.name, "triton": TRITON, "entries": [d]})


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "corrupt"),
        ('{"format": 1, "gpu": "Fake GPU"}', "corrupt"),
        ('{"format": 99, "gpu": "Fake GPU", "triton": "9.9.9", "entries": []}', "corrupt"),
        (_entry_edited(config_block_h=12), "corrupt"),
        (_entry_edited(config_use_fma="yes"), "corrupt"),
        (_entry_edited(batch_bucket=32), "corrupt"),
        (_entry_edited(us_per_step="fast"), "corrupt"),
        (_entry_edited(mode="fwdbw"), "corrupt"),
        ("foreign triton", "retune"),
        ("foreign gpu", "retune"),
    ],
    ids=[
        "not-json",
        "no-entries",
        "format",
        "block_h",
        "use_fma",
        "bucket",
        "time",
        "mode",
        "foreign-triton",
        "foreign-gpu",
    ],
)
def test_a_bad_cache_warns_once_and_leaves_the_heuristic(tmp_path, content, match):
    path = tmp_path / "c.json"
    if content == "foreign triton":
        content = write_cache(path, entry(), triton_version="0.0.1").read_text()
    elif content == "foreign gpu":
        content = write_cache(path, entry(), gpu="Other GPU").read_text()
    path.write_text(content)
    assert _one_warning(lambda: tuned_config(1024, 64, 1, BF16, FAKE, path, TRITON), match) == [None] * 3


def test_a_missing_cache_warns_once(tmp_path):
    missing = tmp_path / "nope.json"
    _one_warning(lambda: tuned_config(1024, 64, 1, BF16, FAKE, missing, TRITON), "does not exist")
    clear_loaded()  # no cache named, none shipped for this GPU, none in the user's cache folder
    _one_warning(lambda: tuned_config(1024, 64, 1, BF16, FAKE, None, TRITON), "no tuned configs for Fake GPU")


def test_an_entry_that_does_not_fit_the_chip_is_ignored(tmp_path):
    path = write_cache(tmp_path / "c.json", entry(), gpu=TINY.name)
    _one_warning(lambda: tuned_config(1024, 64, 1, BF16, TINY, path, TRITON), "does not fit")


def test_heuristic_only_switches_the_caches_off(tmp_path):
    path = write_cache(tmp_path / "c.json", entry())
    with heuristic_only():
        assert lookups(1024, (64,), path) == [None]
    assert lookups(1024, (64,), path) == [TUNED]


def test_shipped_caches_are_valid():
    files = sorted(SHIPPED_DIR.glob("*.json"))
    assert files, "the H200 cache ships (empty until a GPU session measures it)"
    for f in files:
        cache = TunedCache.load(f)
        assert f.stem == gpu_slug(cache.gpu)
        for e in cache.entries.values():
            assert e.config in candidates(e.key.hidden_size, e.batch, e.key.dirs, getattr(torch, e.key.dtype), H200)


def test_select_config_uses_the_cache_for_inference_only(tmp_path, monkeypatch):
    """On a (pretend) GPU: the tuned config for the inference forward, the heuristic for
    training, for exact fp32 dots, and where the cache has no entry."""
    monkeypatch.setattr(dispatch, "interpreting", lambda: False)
    monkeypatch.setattr(dispatch, "chip_of", lambda device: FAKE)
    monkeypatch.setattr("lstm_triton.tuning.triton.__version__", TRITON)
    fp32 = LSTMConfig(8, 16)
    path = write_cache(tmp_path / "c.json", entry(), entry(dtype=torch.float32, config=fp32))
    base = heuristic(1024, 64, 1, BF16, FAKE)
    cuda = torch.device("cuda")

    def pick_for(**kw):
        return select_config(1024, 64, 1, kw.pop("dtype", BF16), cuda, cache=path, **kw)

    assert pick_for(training=False) == TUNED and pick_for(training=True) == base
    with torch.no_grad():
        assert pick_for() == TUNED  # training=None: grad mode decides
    assert pick_for() == base
    assert select_config(1024, 8, 1, BF16, cuda, training=False, cache=path) == heuristic(1024, 8, 1, BF16, FAKE)
    assert pick_for(training=False, dtype=torch.float32) == fp32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert pick_for(training=False, dtype=torch.float32) == heuristic(1024, 64, 1, torch.float32, FAKE, True)


@pytest.mark.skipif(not interpreting(), reason="the interpreter's path")
def test_the_interpreter_ignores_every_cache(tmp_path, monkeypatch):
    other = LSTMConfig(8, 8, split_k=1)
    path = write_cache(tmp_path / "c.json", entry(H=64, batch=8, config=other), gpu=INTERPRETER.name)
    monkeypatch.setenv(CACHE_ENV, str(path))
    got = select_config(64, 8, 1, BF16, torch.device("cpu"), training=False)
    assert got == heuristic(64, 8, 1, BF16, INTERPRETER) != other


# -- the tuner's choice


def test_a_wrong_or_failing_candidate_is_never_the_winner():
    base, fast_wrong, raises, spills, right = (LSTMConfig(16, 8, num_warps=w) for w in (1, 2, 4, 8, 16))
    checked = []

    def check(cfg):
        checked.append(cfg)
        if cfg == raises:
            raise RuntimeError("out of resources")
        return {fast_wrong: 0.5, base: 1e-3}.get(cfg, 1e-4)

    us = {base: 10.0, fast_wrong: 1.0, raises: 1.0, spills: 1.0, right: 8.0}
    trials = measure([base, fast_wrong, raises, spills, right], check, us.get, 1e-2, {spills: "spills"})
    assert [t.status for t in trials] == [OK, WRONG, ERROR, REJECTED, OK]
    assert spills not in checked  # rejected by the compile check: never run
    assert pick(trials, base).config == right
    e = make_entry(Shape(BF16, 1, 64, 8), trials, base, 128)
    assert (e.config, e.us_per_step, e.heuristic_us_per_step, e.timed, e.rejected) == (right, 8.0, 10.0, 2, 3)
    nan = measure([right], lambda cfg: float("nan"), us.get, 1e-2, {})
    assert nan[0].status == WRONG and pick(nan, base) is None


def test_the_heuristic_stays_unless_clearly_beaten():
    base, other = LSTMConfig(16, 8), LSTMConfig(8, 8)
    for other_us, winner in ((10.0 / (1 + MIN_GAIN / 2), base), (10.0 / (1 + 2 * MIN_GAIN), other)):
        trials = measure([base, other], lambda cfg: 0.0, {base: 10.0, other: other_us}.get, 1e-2, {})
        assert pick(trials, base).config == winner


@pytest.mark.parametrize(
    "dtype, cfgs",
    [
        (torch.float32, [LSTMConfig(16, 2), LSTMConfig(32, 4, split_k=2), LSTMConfig(16, 1, use_fma=True)]),
        (BF16, [LSTMConfig(32, 4)]),
    ],
    ids=["fp32", "bf16"],
)
def test_candidate_check_against_the_reference_runs_any_config(dtype, cfgs):
    """The tuner's check on the CPU (interpreter): two programs per group, split-K, the FMA path."""
    problem = Problem(Shape(dtype, 2, 32, 3), T=2, device=torch.device("cpu"), n_sets=2)
    for cfg in cfgs:
        assert problem.check(cfg) <= TOL[str(dtype).removeprefix("torch.")], cfg
    y, _, _ = problem.run(cfgs[0], 1)  # another input draw: another output
    assert not torch.allclose(y.double(), problem.ref[0])


@pytest.mark.skipif(not interpreting(), reason="checks candidates on the CPU")
def test_tune_writes_the_winner_resumes_and_stops_at_its_budget(tmp_path, monkeypatch):
    shape = Shape(torch.float32, 1, 16, 2)
    base, other = heuristic(16, 2, 1, torch.float32, FAKE), LSTMConfig(8, 2)
    monkeypatch.setattr("lstm_triton.tune.candidates", lambda *args: [base, other])
    out, cache = tmp_path / "c.json", TunedCache(FAKE.name, TRITON)
    kw = dict(device=torch.device("cpu"), time_us=lambda problem, cfg: {base: 2.0, other: 1.0}[cfg], T=2, n_sets=1)
    assert tune([shape], cache, out, FAKE, budget_s=0, **kw) == 1 and not out.exists()
    assert tune([shape], cache, out, FAKE, **kw) == 0
    e = TunedCache.load(out).lookup(shape.key())
    assert (e.config, e.us_per_step, e.heuristic, e.heuristic_us_per_step, e.timed) == (other, 1.0, base, 2.0, 2)
    todo = [shape, replace(shape, batch=1), replace(shape, dirs=2), replace(shape, batch=3), replace(shape, batch=4)]
    assert pending(todo, cache, retune=False) == todo[1:4]  # B=2 is in the cache; B=3 and 4 share a bucket
    assert pending(todo, cache, retune=True) == todo[:4]


def test_open_cache_extends_its_own_and_never_mixes_gpus(tmp_path):
    mine = write_cache(tmp_path / "mine.json", entry(), triton_version=triton.__version__)
    assert open_cache(mine, FAKE.name, retune=True).entries == {entry().key: entry()}
    other = write_cache(tmp_path / "other.json", entry(), gpu="Other GPU", triton_version=triton.__version__)
    with pytest.raises(SystemExit, match="--retune"):
        open_cache(other, FAKE.name, retune=False)
    assert open_cache(other, FAKE.name, retune=True).entries == {}
    assert open_cache(tmp_path / "new.json", FAKE.name, retune=False).entries == {}


COMPILE_CHECK = """
import json, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
import torch
from lstm_triton.aot import SM90
from lstm_triton.configs import H200, LSTMConfig
from lstm_triton.tune import Shape, _rejected, compile_problems
shape = Shape(torch.bfloat16, 1, 1024, 64)
cfgs = [LSTMConfig(8, 1, use_fma=True, num_warps=8), LSTMConfig(16, 32, num_warps=4)]
with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
    jobs = {(c, 1024, shape.dtype): pool.submit(compile_problems, c, shape, H200, SM90) for c in cfgs}
    print(json.dumps({str(c): why for c, why in _rejected(shape, cfgs, jobs).items()}))
"""


@pytest.mark.compile
def test_compile_check_in_spawned_workers_rejects_a_spilling_candidate():
    """The tuner's compile check as it runs on a GPU machine: spawned workers compile for sm_90
    (no GPU needed). 32-row tiles on 4 warps spill at H=1024 (why the heuristic gives them 8
    warps, configs.WIDE_BLOCK_B); the FMA path does not."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    r = subprocess.run([sys.executable, "-c", COMPILE_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rejected = json.loads(r.stdout.strip().splitlines()[-1])
    spilling = str(LSTMConfig(16, 32, num_warps=4))
    assert list(rejected) == [spilling] and "spills" in rejected[spilling]


# -- the command line and the benchmark


def test_cli_plan_and_show_need_no_gpu(tmp_path, capsys):
    assert main(["--plan", "--H", "1024", "--B", "64", "--dirs", "1", "--dtype", "bfloat16"]) == 0
    assert "1 shapes, " in capsys.readouterr().out
    path = write_cache(tmp_path / "c.json", entry())
    assert main(["--show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "P128-BH8-BB64-dot-splitk1-w8" in out and "| 1.50x |" in out


def test_cli_show_says_why_it_has_nothing_to_show(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        main(["--show", str(tmp_path / "missing.json")])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="not a tuned-config cache"):
        main(["--show", str(tmp_path / "broken.json")])
    shipped = SHIPPED_DIR / "nvidia-h200.json"
    if not TunedCache.load(shipped).entries:  # the shipped cache, until it is filled
        with pytest.raises(SystemExit, match=r"no entries yet; fill it on that GPU with `python -m lstm_triton.tune"):
            main(["--show", str(shipped)])
    empty = tmp_path / "empty.json"
    TunedCache("NVIDIA H200", TRITON).save(empty)
    with pytest.raises(SystemExit, match="has no entries yet") as e:
        main(["--show", str(empty)])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("prog", ["bench", "lstm_triton.tune", "lstm_triton.aot"])
def test_help_explains_config_names(prog):
    """The one explanation of LSTMConfig.label's abbreviations, in each CLI that prints a name."""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", prog, "--help"], capture_output=True, text=True, timeout=120, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "".join(configs.CONFIG_NAME_HELP.split()) in "".join(r.stdout.split()), prog  # wrapped anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="without a GPU")
def test_cli_tuning_needs_a_gpu():
    with pytest.raises(SystemExit, match="CUDA GPU"):
        main(["--H", "64", "--B", "1"])


@pytest.mark.skipif(not interpreting(), reason="plans CPU tensors as a GPU's (the interpreter lets them in)")
def test_bench_heuristic_provider_bypasses_the_cache(tmp_path, monkeypatch):
    assert not PROVIDERS["ours_heuristic"].default and PROVIDERS["ours"].default
    monkeypatch.setattr(dispatch, "interpreting", lambda: False)
    monkeypatch.setattr(dispatch, "chip_of", lambda device: FAKE)
    monkeypatch.setattr("lstm_triton.tuning.triton.__version__", TRITON)
    monkeypatch.setenv(CACHE_ENV, str(write_cache(tmp_path / "c.json", entry())))
    x = torch.randn(2, 64, 16, dtype=BF16)
    case = Case("default", FWD, "bfloat16", T=2, B=64, H=1024, I=16, layers=1, dirs=1)
    ours, heur = LSTM(16, 1024, dtype=BF16), HeuristicLSTM.from_torch(nn.LSTM(16, 1024, dtype=BF16))
    assert route(case, ours, x)[0].config == TUNED  # asked in the timed call's grad mode: no grad
    assert route(case, heur, x)[0].config == heuristic(1024, 64, 1, BF16, FAKE)
    assert route(case, ours, x)[0].label == TUNED.label(1024)  # the config column's name
    with torch.no_grad():
        assert heur.kernel_plan(x).config == heuristic(1024, 64, 1, BF16, FAKE)


def test_report_shows_tuned_against_heuristic_rows(tmp_path):
    rows = []
    for provider, config, us in (("ours", "P128-BH8-BB64", 4.0), ("ours_heuristic", "P64-BH16-BB32", 6.0)):
        case = dict(sweep="default", mode="fwd", dtype="bfloat16", T=256, B=64, H=1024, I=1024, layers=1, dirs=1)
        rows.append(dict.fromkeys(SCHEMA) | case | dict(provider=provider, status="ok", config=config))
        rows[-1] |= dict(median_ms=us * 0.256, us_per_step=us, device="cuda", gpu="TEST-GPU", time="2000-01-01")
    pd.DataFrame(rows, columns=SCHEMA).to_csv(tmp_path / "results.csv", index=False)
    text = (build(tmp_path) and tmp_path / REPORT_MD).read_text()
    assert "## Tuned against heuristic configs" in text
    assert "| default | fwd | bfloat16 | uni | 1024 | 64 | P64-BH16-BB32 | 6 | P128-BH8-BB64 | 4 | 1.50x |" in text
    assert "ours vs ours_heuristic" in text
