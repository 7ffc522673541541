import dataclasses

import pandas as pd
import pytest

from bench.results import ENV, ERROR, KEY, OK, SCHEMA, WRONG, CsvLog, done_keys, key_of, load
from bench.runner import make_row
from bench.sweeps import SWEEPS, Case

CASE = Case("test", "fwd", "float32", T=3, B=2, H=8, I=5, layers=1, dirs=1)
ENV_ROW = dict.fromkeys(set(ENV) - {"time"}, "x")


def _row(provider="ours", status=OK, median=1.0, case=CASE):
    return make_row(case, provider, {"status": status, "reason": "", "median_ms": median}, ENV_ROW)


def test_schema_columns_are_stable():
    assert SCHEMA[: len(KEY)] == KEY
    for col in (
        "median_ms",
        "q20_ms",
        "q80_ms",
        "us_per_step",
        "tokens_per_s",
        "tflops",
        "peak_mem_mib",
        "compile_s",
        "gpu",
        "driver",
        "torch",
        "triton",
        "cudnn",
        "commit",
        "time",
        "status",
        "reason",
    ):
        assert col in SCHEMA, col
    assert len(set(SCHEMA)) == len(SCHEMA)
    assert set(KEY) - {"provider"} == {f.name for f in dataclasses.fields(Case)}


def test_csv_round_trip(tmp_path):
    log = CsvLog(tmp_path / "r.csv", SCHEMA)
    log.append(_row())
    log.append(_row("cudnn", median=2.5))
    df = pd.read_csv(tmp_path / "r.csv")
    assert list(df.columns) == list(SCHEMA)
    assert df["median_ms"].tolist() == [1.0, 2.5]
    assert df["T"].tolist() == [3, 3]
    assert key_of(df.iloc[0].to_dict()) == key_of(_row())


def test_row_must_match_schema(tmp_path):
    log = CsvLog(tmp_path / "r.csv", SCHEMA)
    with pytest.raises(ValueError, match="extra"):
        log.append(_row() | {"speed": 1})
    with pytest.raises(ValueError, match="missing"):
        log.append({k: v for k, v in _row().items() if k != "median_ms"})


def test_refuses_a_file_with_another_schema(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        CsvLog(path, SCHEMA)


def test_last_row_per_key_wins_and_errors_are_not_done(tmp_path):
    path = tmp_path / "r.csv"
    log = CsvLog(path, SCHEMA)
    log.append(_row(status=ERROR, median=None))
    log.append(_row(status=OK, median=3.0))
    log.append(_row("cudnn", status=ERROR, median=None))
    log.append(_row("pytorch", status=WRONG, median=None))
    df = load(path)
    assert len(df) == 3
    assert df.set_index("provider").loc["ours", "median_ms"] == 3.0
    assert done_keys(path) == {key_of(_row()), key_of(_row("pytorch"))}


def test_named_sweeps():
    grid = SWEEPS["default"].cases()
    assert len(grid) == 4 * 4 * 2 * 3
    assert {c.dtype for c in grid[:32]} == {"bfloat16"}  # dtype outermost: a cut run has whole dtypes
    assert {c.mode for c in SWEEPS["training"].cases()} == {"fwdbw"}
    custom = SWEEPS["quick"].override(H=[64], B=None)
    assert custom.name == "custom" and {c.H for c in custom.cases()} == {64}
    assert SWEEPS["quick"].override() is SWEEPS["quick"]


def test_flops():
    c = Case("t", "fwd", "float32", T=2, B=3, H=4, I=5, layers=2, dirs=2)
    layer0 = 2 * 2 * 3 * (8 * 4 * 5 + 8 * 4 * 4)
    layer1 = 2 * 2 * 3 * (8 * 4 * 8 + 8 * 4 * 4)
    assert c.flops() == layer0 + layer1
    assert dataclasses.replace(c, mode="fwdbw").flops() == 3 * c.flops()


def test_projections_in_cases_flops_and_old_csvs(tmp_path):
    proj = SWEEPS["proj"].cases()
    assert proj and all(c.proj == c.H // 4 and c.width == c.proj for c in proj)
    assert all(c.proj == 0 and c.width == c.H for c in SWEEPS["default"].cases())
    c = Case("t", "fwd", "float32", T=2, B=3, H=4, I=5, layers=2, dirs=2, proj=2)
    layer0 = 2 * 2 * 3 * (8 * 4 * 5 + 8 * 4 * 2 + 2 * 4 * 2)
    layer1 = 2 * 2 * 3 * (8 * 4 * 4 + 8 * 4 * 2 + 2 * 4 * 2)
    assert c.flops() == layer0 + layer1 and "R=2" in c.label()
    # a results file written before the proj column loads as cases without projections
    path = tmp_path / "old.csv"
    pd.DataFrame([_row()]).drop(columns="proj").to_csv(path, index=False)
    assert load(path)["proj"].tolist() == [0]
