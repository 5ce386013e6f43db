"""Bracket verdicts between epochs, and the upper estimate in the comparison tables and planes."""

import pytest

from utils.analysis.markdown_summary import bracket_cell
from utils.analysis.plane_drawing import Panel, PlaneSeries, plot_information_plane
from utils.analysis.seed_aggregate import aggregate_rows
from utils.analysis.verdicts import BRACKET_ERRORS, bracket_verdict, compression_rows


def point(epoch, lower, upper, error=0.01):
    return {
        "epoch": epoch,
        "mi_xz": lower,
        "mi_xz_stderr": error,
        "mi_xz_sampling_stderr": 0.0,
        "mi_xz_upper": upper,
        "mi_xz_upper_stderr": error,
        "mi_xz_upper_sampling_stderr": 0.0,
    }


def test_fall_shown_only_when_the_later_upper_is_below_the_earlier_lower_by_the_errors():
    error = 0.01
    threshold = BRACKET_ERRORS * error * 2**0.5
    shown = bracket_verdict([point(2, 5.0, 5.1), point(4, 4.0, 5.0 - 1.01 * threshold)])
    assert shown["bracket_verdict"] == "fall shown" and shown["bracket_falls"] == 1
    assert (shown["bracket_fall_from"], shown["bracket_fall_to"]) == (2, 4)
    assert shown["bracket_fall_margin"] == pytest.approx(1.01 * BRACKET_ERRORS)
    within = bracket_verdict([point(2, 5.0, 5.1), point(4, 4.0, 5.0 - 0.99 * threshold)])
    assert within["bracket_verdict"] == "not identified" and within["bracket_falls"] == 0
    # A lower estimate that falls while the bracket stays wide shows nothing.
    wide = bracket_verdict([point(2, 9.0, 30.0), point(4, 8.0, 35.0)])
    assert wide["bracket_verdict"] == "not identified"
    assert (wide["bracket_width_first"], wide["bracket_width_last"], wide["bracket_width_min"]) == (21.0, 27.0, 21.0)


def test_rise_and_both():
    rise = bracket_verdict([point(2, 1.0, 1.1), point(4, 2.0, 2.2)])
    assert rise["bracket_verdict"] == "rise shown" and rise["bracket_rises"] == 1
    both = bracket_verdict([point(2, 1.0, 1.1), point(4, 2.0, 2.2), point(6, 1.0, 1.05)])
    assert both["bracket_verdict"] == "fall and rise shown" and both["bracket_pairs"] == 3
    assert bracket_cell([rise, both]) == ("rise shown 1, fall and rise shown 1 of 2 (last width 0.05-0.2 nats)")


def test_estimators_without_an_upper_estimate_get_empty_columns():
    empty = bracket_verdict([{"epoch": 2, "mi_xz": 1.0}, {"epoch": 4, "mi_xz": 0.5}])
    assert set(empty.values()) == {None}
    assert bracket_cell([empty]) == "-"


def rows_of(run, seed, estimates, estimator="mixture"):
    return [
        {
            "group": "g",
            "layer": "d",
            "split": "train",
            "estimator": estimator,
            "run": run,
            "seed": seed,
            "dataset": "mnist",
            "net": "fc",
            "dropout": "gaussian",
            "p": 0.2,
            "beta": None,
            "epochs": 6,
            "log_n": 9.2,
            "h_y": 2.3,
            "saturation": 0.9,
            **p,
        }
        for p in estimates
    ]


def test_compression_and_aggregate_tables_carry_the_bracket():
    rows = rows_of("a", 0, [point(2, 5.0, 5.1), point(4, 4.0, 4.2)]) + rows_of(
        "b", 1, [point(2, 5.2, 5.3), point(4, 5.0, 9.0)]
    )
    compression = {c["run"]: c for c in compression_rows(rows)}
    assert compression["a"]["bracket_verdict"] == "fall shown"
    assert compression["b"]["bracket_verdict"] == "not identified"
    agg = {r["epoch"]: r for r in aggregate_rows(rows)}
    assert agg[4]["mi_xz_upper_mean"] == pytest.approx(6.6)
    assert agg[4]["mi_xz_upper_seed_sd"] == pytest.approx(4.8 / 2**0.5)
    assert agg[4]["mi_xz_upper_seed_error"] == pytest.approx(0.01)


def test_plane_turns_logarithmic_where_the_upper_estimate_is_far_above():
    import matplotlib.pyplot as plt

    for upper, scale in (([2.5, 3.0], "linear"), ([10.0, 40.0], "log")):  # 1.5 and 20 times the lowest point
        fig, ax = plt.subplots()
        series = PlaneSeries([2, 4], [2.0, 2.2], [0.5, 1.0], mi_xz_upper=upper)
        plot_information_plane(ax, Panel("p", [series], log_n=2.3, h_y=2.3))
        assert ax.get_xscale() == scale
        assert any("upper" in t.get_text() for t in ax.get_legend().get_texts())
        plt.close(fig)
