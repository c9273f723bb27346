"""Tests of trend.py: the rebuild-time chart, drawn headless from a history."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path

import matplotlib
from matplotlib.colors import to_rgba

from immutable_infra.history import history_entry
from immutable_infra.trend import (
    OVER_BUDGET_LABEL,
    TITLE,
    X_LABEL,
    Y_LABEL,
    build_trend_figure,
    plot_rebuild_trend,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = dt.datetime(2026, 5, 1, 2, 0, tzinfo=dt.timezone.utc)
BUDGETS = {"ops-sg": 300.0, "prd-sg-master": 240.0, "prd-sg-slave": 180.0}


def synthetic_history() -> list[dict]:
    """3 groups x 6 runs, prd-sg-slave regressing (over its budget) on the fifth run."""
    base = {"ops-sg": 210.0, "prd-sg-master": 150.0, "prd-sg-slave": 118.0}
    history = []
    for i in range(6):
        groups = {g: {"rebuild_seconds": 205.0 if (g == "prd-sg-slave" and i == 4) else b + 3 * i}
                  for g, b in base.items()}
        history.append(history_entry(f"r{i}", None, groups, time=T0 + dt.timedelta(days=i)))
    return history


def lines_by_label(fig) -> dict:
    [ax] = fig.axes
    return {line.get_label(): line for line in ax.get_lines()}


def test_the_chart_has_a_line_per_group_and_a_budget_line_in_the_same_colour(tmp_path: Path):
    fig = build_trend_figure(synthetic_history(), BUDGETS)
    [ax] = fig.axes
    assert ax.get_title() == TITLE == "Rebuild time per group"
    assert ax.get_xlabel() == X_LABEL and X_LABEL.startswith("run")
    assert ax.get_ylabel() == Y_LABEL == "rebuild time (s)"
    lines = lines_by_label(fig)
    assert set(lines) == {*BUDGETS, *(f"{g} budget" for g in BUDGETS)}
    colours = {to_rgba(lines[g].get_color()) for g in BUDGETS}
    assert len(colours) == 3  # distinct
    for group, budget in BUDGETS.items():
        line, budget_line = lines[group], lines[f"{group} budget"]
        assert len(line.get_xdata()) == 6 and line.get_marker() not in (None, "None", "")
        assert budget_line.get_linestyle() == "--"
        assert to_rgba(budget_line.get_color()) == to_rgba(line.get_color())
        assert list(budget_line.get_ydata()) == [budget, budget]
    assert list(lines["prd-sg-slave"].get_ydata())[4] == 205.0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["ops-sg", "ops-sg budget"] and OVER_BUDGET_LABEL in legend
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 300


def test_only_runs_over_budget_are_ringed():
    fig = build_trend_figure(synthetic_history(), BUDGETS)
    [ax] = fig.axes
    [rings] = ax.collections
    assert rings.get_offsets().shape == (1, 2)
    assert rings.get_offsets()[0][1] == 205.0
    fig = build_trend_figure(synthetic_history(), {"prd-sg-slave": 1000})
    assert len(fig.axes[0].collections) == 0
    assert OVER_BUDGET_LABEL not in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_date_ticks_are_readable_on_their_own():
    fig = build_trend_figure(synthetic_history(), BUDGETS)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and all(label.startswith("May ") for label in labels)


def test_the_png_is_written(tmp_path: Path):
    path = plot_rebuild_trend(synthetic_history(), tmp_path / "reports" / "rebuild-trend.png", BUDGETS)
    assert path == tmp_path / "reports" / "rebuild-trend.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000


def test_a_single_run_of_a_single_group(tmp_path: Path):
    history = [history_entry("r0", None, {"prd-cn": {"rebuild_seconds": 95.0}}, time=T0)]
    fig = build_trend_figure(history, {"prd-cn": 120.0})
    lines = lines_by_label(fig)
    assert set(lines) == {"prd-cn", "prd-cn budget"}
    left, right = fig.axes[0].get_xlim()
    assert left < matplotlib.dates.date2num(T0) < right
    assert plot_rebuild_trend(history, tmp_path / "t.png", {"prd-cn": 120.0}).read_bytes()[:8] == PNG_MAGIC


def test_groups_without_a_budget_or_without_times(tmp_path: Path):
    history = [history_entry(f"r{i}", None, {"a": {"rebuild_seconds": 10.0 + i}, "b": {"rebuild_seconds": None}},
                             time=T0 + dt.timedelta(hours=i)) for i in range(3)]
    fig = build_trend_figure(history, {"a": None, "b": 50.0})
    assert set(lines_by_label(fig)) == {"a"}
    assert plot_rebuild_trend(history, tmp_path / "t.png", {}).exists()


def test_an_empty_history_says_so(tmp_path: Path):
    fig = build_trend_figure([], BUDGETS)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no rebuild times recorded yet"]
    assert plot_rebuild_trend([], tmp_path / "t.png", BUDGETS).read_bytes()[:8] == PNG_MAGIC


def test_drawing_leaves_no_pyplot_figures_and_needs_no_display(tmp_path: Path):
    code = (
        "import sys; sys.modules['tkinter'] = None\n"
        "import datetime as dt\n"
        "from immutable_infra.trend import plot_rebuild_trend\n"
        "from immutable_infra.history import history_entry\n"
        "h = [history_entry('r', None, {'g': {'rebuild_seconds': 1.0}}, time=dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc))]\n"
        f"plot_rebuild_trend(h, {str(tmp_path / 'headless.png')!r}, {{'g': 2.0}})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'trend imported pyplot'\n"
    )
    plugins = Path(__file__).resolve().parents[1] / "plugins"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(plugins), "MPLBACKEND": "", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "headless.png").read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- drift trend (audit lines)


def audit_history() -> list[dict]:
    """2 groups x 5 nightly audits (deployed), one audit of a kept run, and run lines in between."""
    from immutable_infra.audit_history import audit_entry

    drift = {"prd-sg-slave": [0, 2, 5, 1, 0], "prd-sg-master": [1, 1, 0, 0, 3]}
    unmanaged = {"prd-sg-slave": [0, 1, 1, None, 0], "prd-sg-master": [0, 0, 0, 2, 2]}
    history = []
    for i in range(5):
        groups = {g: {"drift_count": drift[g][i], "unmanaged_count": unmanaged[g][i], "verdicts": {}, "findings": []}
                  for g in drift}
        history.append(audit_entry("deployed", None, None, groups, time=T0 + dt.timedelta(days=i)))
        history.append(history_entry(f"r{i}", None, {"ops-sg": {"rebuild_seconds": 200.0}},
                                     time=T0 + dt.timedelta(days=i, hours=1)))
    history.append(audit_entry("run:aud1", "aud1", None, {"prd-sg-slave": {"drift_count": 4, "unmanaged_count": 1}},
                               time=T0 + dt.timedelta(days=2, hours=3)))
    return history


def drift_lines(fig) -> tuple[dict, dict]:
    drift_ax, unmanaged_ax = fig.axes
    return ({ln.get_label(): ln for ln in drift_ax.get_lines()}, {ln.get_label(): ln for ln in unmanaged_ax.get_lines()})


def test_the_drift_chart_has_a_panel_per_count_and_a_line_per_group():
    from immutable_infra.trend import DRIFT_TITLE, DRIFT_Y_LABELS, build_drift_figure

    fig = build_drift_figure(audit_history())
    drift_ax, unmanaged_ax = fig.axes
    assert fig.get_suptitle() == DRIFT_TITLE
    assert (drift_ax.get_ylabel(), unmanaged_ax.get_ylabel()) == tuple(DRIFT_Y_LABELS.values())
    assert unmanaged_ax.get_xlabel() == "audit (UTC)"
    drift, unmanaged = drift_lines(fig)
    assert set(drift) == set(unmanaged) == {"prd-sg-slave", "prd-sg-master", "prd-sg-slave (run aud1)"}  # no ops-sg
    assert list(drift["prd-sg-slave"].get_ydata()) == [0, 2, 5, 1, 0]
    ys = list(unmanaged["prd-sg-slave"].get_ydata())
    assert ys[:3] == [0, 1, 1] and math.isnan(ys[3]) and ys[4] == 0  # the audit that did not count is a gap, not 0
    assert list(unmanaged["prd-sg-master"].get_ydata()) == [0, 0, 0, 2, 2]
    for name in drift:  # one colour per group, the same in both panels
        assert to_rgba(drift[name].get_color()) == to_rgba(unmanaged[name].get_color())
    assert len({to_rgba(line.get_color()) for line in drift.values()}) == 3
    assert drift_ax.get_ylim()[0] == 0 and drift_ax.get_ylim()[1] > 5
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(drift)


def test_the_drift_png_is_written_for_one_audit_of_one_group(tmp_path: Path):
    from immutable_infra.audit_history import audit_entry
    from immutable_infra.trend import build_drift_figure, plot_drift_trend

    history = [audit_entry("deployed", None, None, {"prd-cn": {"drift_count": 2, "unmanaged_count": 0}}, time=T0)]
    drift, unmanaged = drift_lines(build_drift_figure(history))
    assert list(drift["prd-cn"].get_ydata()) == [2] and list(unmanaged["prd-cn"].get_ydata()) == [0]
    left, right = build_drift_figure(history).axes[1].get_xlim()
    assert left < matplotlib.dates.date2num(T0) < right
    path = plot_drift_trend(history, tmp_path / "reports" / "drift-trend.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    assert plot_drift_trend(audit_history(), tmp_path / "several.png").stat().st_size > 10_000


def test_a_history_without_audit_counts_says_so(tmp_path: Path):
    from immutable_infra.audit_history import audit_entry
    from immutable_infra.trend import build_drift_figure, plot_drift_trend

    only_runs = synthetic_history() + [audit_entry("deployed", None, None, {"g": {"drift_count": None}}, time=T0)]
    fig = build_drift_figure(only_runs)
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["no audit counts recorded yet"] * 2
    assert plot_drift_trend([], tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC
