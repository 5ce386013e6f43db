"""The comparison of runs: compression verdicts, seed aggregates, group names, one-setting families and the
merge of comparisons."""

import math
import os
from pathlib import Path

import pytest

from utils.analysis.markdown_summary import summary_markdown
from utils.analysis.run_groups import RunInfo, families, group_names
from utils.analysis.seed_aggregate import aggregate_rows
from utils.analysis.verdicts import compression_rows


def _summary(rows):
    return summary_markdown(rows, compression_rows(rows))


def _rows(run, seed, values, error):
    return [
        {
            "group": "g",
            "layer": "dropout",
            "split": "train",
            "estimator": "mixture",
            "run": run,
            "seed": seed,
            "epoch": e,
            "mi_xz": v,
            "mi_xz_stderr": error,
            "mi_xz_sampling_stderr": error,
            "mi_zy": 1.0,
            "saturation": 0.1,
            "skipped": None,
        }
        for e, v in zip((0, 2, 4, 6, 8), values)
    ]


def test_compression_needs_a_fall_after_the_peak_larger_than_three_errors():
    rows = (
        _rows("a", 0, [0.0, 5.0, 6.0, 5.5, 5.2], 0.01)  # falls by 0.8 after epoch 4: compression
        + _rows("b", 1, [0.0, 5.0, 6.0, 5.97, 5.96], 0.01)  # 0.04 < 3 x 0.02: within the errors
        + _rows("c", 2, [0.0, 5.0, 5.5, 6.0, 6.5], 0.01)
    )  # still rising
    calls = {r["run"]: r for r in compression_rows(rows)}
    assert calls["a"]["compressed"] and calls["a"]["peak_epoch"] == 4 and calls["a"]["drop"] == pytest.approx(0.8)
    assert calls["a"]["first_epoch"] == 2  # epoch 0 (before training) is left out
    assert calls["a"]["largest_fall"] == pytest.approx(0.8) and calls["c"]["largest_fall"] == 0.0
    assert not calls["b"]["compressed"] and not calls["c"]["compressed"]
    assert "1 of 3" in _summary(rows) and "limited by N" not in _summary(rows)
    for r in rows:
        r["saturation"] = 0.9 if r["run"] == "c" else 0.1
    calls = {r["run"]: r for r in compression_rows(rows)}
    assert calls["c"]["limited_by_n"] and not calls["a"]["limited_by_n"]
    assert "1 of 3 (1 limited by N)" in _summary(rows)


def test_aggregates_over_seeds():
    rows = _rows("a", 0, [0.0, 1.0, 2.0, 3.0, 4.0], 0.1) + _rows("b", 1, [0.0, 3.0, 2.0, 3.0, 6.0], 0.3)
    cell = next(r for r in aggregate_rows(rows) if r["epoch"] == 8)
    assert cell["n_seeds"] == 2 and cell["mi_xz_mean"] == 5.0
    assert cell["mi_xz_seed_sd"] == pytest.approx(2**0.5)
    assert cell["mi_xz_seed_error"] == pytest.approx((0.1 * 2**0.5 + 0.3 * 2**0.5) / 2)


def test_seeds_estimated_with_different_n_are_not_averaged():
    rows = (
        _rows("a", 0, [0.0, 1.0, 2.0, 3.0, 4.0], 0.1)
        + _rows("b", 1, [0.0, 3.0, 2.0, 3.0, 6.0], 0.3)
        + _rows("c", 2, [0.0, 3.0, 2.0, 3.0, 9.0], 0.3)
    )
    for row in rows:
        row["n_inputs"] = 60000 if row["run"] == "c" else 10000
    cells = {r["group"]: r for r in aggregate_rows(rows) if r["epoch"] == 8}
    assert set(cells) == {"g N=10000", "g N=60000"}
    assert cells["g N=10000"]["n_seeds"] == 2 and cells["g N=10000"]["mi_xz_mean"] == 5.0
    assert cells["g N=60000"]["n_seeds"] == 1 and cells["g N=60000"]["mi_xz_mean"] == 9.0
    callback = [dict(r, estimator="callback", n_inputs=None) for r in rows]  # no N: joins every N
    cells = {r["group"]: r for r in aggregate_rows(callback + rows) if r["epoch"] == 8 and r["estimator"] == "callback"}
    assert set(cells) == {"g N=10000", "g N=60000"} and all(c["n_seeds"] == 3 for c in cells.values())

    # the per-run calls and the summary are split the same way; a run's callback series goes with its N
    calls = {(c["group"], c["estimator"], c["run"]) for c in compression_rows(callback + rows)}
    assert calls == {("g N=10000", e, r) for e in ("mixture", "callback") for r in "ab"} | {
        ("g N=60000", e, "c") for e in ("mixture", "callback")
    }
    summary = _summary(callback + rows)
    assert "### g N=10000" in summary and "### g N=60000" in summary and "### g\n" not in summary
    last = [line for line in summary.splitlines() if line.startswith("| mixture | train | last")]
    assert [line.split(" | ")[4] for line in last] == ["5.000 ± 1.414", "9.000"]


def _info(name, **flags):
    base = {"net": "fc", "dropout": "gaussian", "p": 0.2, "epochs": 10, "lr": 0.1}
    defining = tuple(sorted({**base, **flags}.items()))
    return RunInfo(Path(name), {"layers": [{"dropout": "gaussian", "p": 0.2}], "flags": {}}, defining)


def test_groups_are_named_by_what_tells_them_apart_and_families_differ_in_one_flag():
    runs = [_info("a", p=0.1), _info("b", p=0.5), _info("c", p=0.5, lr=0.01)]
    names = group_names(runs)
    assert sorted(names.values()) == [
        "fc gaussian p=0.1 lr=0.1",
        "fc gaussian p=0.5 lr=0.01",
        "fc gaussian p=0.5 lr=0.1",
    ]
    found = {flag: members for flag, members in families(runs)}
    assert found["p"] == ["fc gaussian p=0.1 lr=0.1", "fc gaussian p=0.5 lr=0.1"]
    assert found["lr"] == ["fc gaussian p=0.5 lr=0.01", "fc gaussian p=0.5 lr=0.1"]


def test_estimators_without_errors_are_called_on_the_sign_of_the_fall_and_say_so():
    rows = _rows("a", 0, [0.0, 5.0, 6.0, 5.9, 5.8], None) + _rows("b", 1, [0.0, 5.0, 6.0, 6.1, 6.2], None)
    calls = {r["run"]: r for r in compression_rows(rows)}
    assert calls["a"]["drop_error"] is None and calls["a"]["compressed"] and not calls["b"]["compressed"]
    assert "1 of 2 (no error bars) | 0.100 ± 0.141 (no error bars) |" in _summary(rows)


def test_a_flag_that_one_dropout_kind_does_not_have_is_left_out_of_its_name():
    runs = [
        _info("a"),
        RunInfo(
            Path("b"),
            {"layers": [{"dropout": "information"}], "flags": {}},
            tuple(
                sorted(
                    {
                        "net": "fc",
                        "dropout": "information",
                        "beta": 3.0,
                        "alpha_max": 0.7,
                        "epochs": 10,
                        "lr": 0.1,
                    }.items()
                )
            ),
        ),
    ]
    assert sorted(group_names(runs).values()) == ["fc gaussian p=0.2", "fc information beta=3"]


def test_summary_shows_a_sampling_error_without_a_monte_carlo_one():
    rows = _rows("a", 0, [0.0, 5.0, 6.0, 5.9, 5.8], None)
    for r in rows:
        r["mi_xz_sampling_stderr"] = 0.01
    assert "| - / 0.01 |" in _summary(rows)


def test_the_largest_fall_catches_a_dip_that_training_undoes():
    rows = _rows("a", 0, [0.0, 5.0, 6.0, 4.5, 7.0], 0.01) + _rows("b", 1, [0.0, 5.0, 6.0, 5.99, 7.0], 0.01)
    calls = {r["run"]: r for r in compression_rows(rows)}
    assert not calls["a"]["compressed"] and calls["a"]["largest_fall"] == pytest.approx(1.5)
    assert (calls["a"]["fall_from_epoch"], calls["a"]["fall_to_epoch"]) == (4, 6)
    assert calls["a"]["fall_error"] == pytest.approx(0.02)  # four errors of 0.01 in quadrature
    assert "(1 of 2 beyond 4 errors)" in _summary(rows)
    rising = {r["run"]: r for r in compression_rows(_rows("c", 2, [0.0, 5.0, 6.0, 6.5, 7.0], 0.01))}["c"]
    assert rising["largest_fall"] == 0.0 and rising["fall_from_epoch"] is None and rising["fall_error"] is None


def _table(folder, rows):
    from utils.analysis.estimate_table import CONFIG_COLUMNS, ESTIMATE_COLUMNS, csv_text

    folder.mkdir()
    (folder / "estimates.csv").write_text(csv_text(rows, CONFIG_COLUMNS + ESTIMATE_COLUMNS))
    return folder / "estimates.csv"


def test_comparisons_of_different_sessions_merge_into_one(tmp_path):
    """Seeds estimated in two sessions aggregate as if compared at once; one table merges into itself;
    a run that two tables describe differently is refused, naming both."""
    from utils.analysis.estimate_table import read_csv
    from utils.analysis.merge_comparisons import main, merge_comparisons

    first = _rows("a", 0, [0.0, 1.0, 2.0, 3.0, 4.0], 0.1)
    second = _rows("b", 1, [0.0, 3.0, 2.0, 3.0, 6.0], 0.3)
    for row in first + second:
        row.update(n_inputs=1000, dataset="mnist", net="fc", dropout="gaussian", p=0.2)
    a, b = _table(tmp_path / "a", first), _table(tmp_path / "b", second)
    merge_comparisons([a, b], tmp_path / "merged", plots=False)
    cell = next(r for r in read_csv(tmp_path / "merged" / "aggregate.csv") if r["epoch"] == 8)
    assert cell["n_seeds"] == 2 and cell["mi_xz_mean"] == 5.0
    merge_comparisons([a], tmp_path / "again", plots=False)
    assert (tmp_path / "again" / "estimates.csv").read_bytes() == a.read_bytes()
    changed = [dict(r, mi_xz=r["mi_xz"] + 1) for r in first]
    with pytest.raises(ValueError, match="disagree on run a"):
        merge_comparisons([a, _table(tmp_path / "c", changed)], tmp_path / "bad", plots=False)
    assert main([str(a), str(tmp_path / "c" / "estimates.csv"), "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_bad_tables_and_outputs_of_a_merge_are_one_line_before_any_write(tmp_path, capsys):
    """A table that is a FIFO or holds a NaN estimate, or an --out that is a file: one error line, nothing written."""
    from utils.analysis.merge_comparisons import main

    good = _table(tmp_path / "a", _rows("a", 0, [0.0, 1.0, 2.0], 0.1))
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    nan = _table(tmp_path / "n", [dict(r, mi_xz=math.nan) for r in _rows("n", 1, [0.0, 1.0], 0.1)])
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for tables, out, needle in (
        ([good, fifo], tmp_path / "out", "is a FIFO"),
        ([good, nan], tmp_path / "out", "mi_xz must be a finite number"),
        ([good], afile, "is not a folder"),
    ):
        capsys.readouterr()
        assert main([*map(str, tables), "--out", str(out), "--no-plots"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out").exists() and afile.read_text() == "mine\n"


def test_merged_groups_that_differ_only_in_a_flag_without_a_column_stay_apart(tmp_path):
    from utils.analysis.run_groups import families_by_name, row_defining

    config = dict(dataset="mnist", net="fc", dropout="gaussian", epochs=10)
    groups = {"fc gaussian p=0.2 lr=0.1": 0.2, "fc gaussian p=0.2 lr=0.05": 0.2, "fc gaussian p=0.5 lr=0.1": 0.5}
    defining = {g: row_defining(dict(config, group=g, p=p, beta=None)) for g, p in groups.items()}
    assert sorted(families_by_name(defining)) == [
        ("lr", ["fc gaussian p=0.2 lr=0.05", "fc gaussian p=0.2 lr=0.1"]),
        ("p", ["fc gaussian p=0.2 lr=0.1", "fc gaussian p=0.5 lr=0.1"]),
    ]


def test_the_merge_command_takes_figure_formats(tmp_path, capsys):
    from utils.analysis import merge_comparisons

    args = merge_comparisons._parser().parse_args(["a.csv", "--out", str(tmp_path), "--formats", "png,pdf"])
    assert args.formats == ("png", "pdf")
    assert merge_comparisons.main(["a.csv", "--out", str(tmp_path / "out"), "--formats", "gif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["merge_comparisons: error: argument --formats: unknown figure format(s) ['gif']; use png, pdf, svg"]
    assert not (tmp_path / "out").exists()
