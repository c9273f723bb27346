"""Trends: ``reports/rebuild-trend.png`` (rebuild time per group over its runs) and
``reports/drift-trend.png`` (drift and unmanaged counts per group over its audits).

Drawn from the history (:mod:`immutable_infra.history`) with matplotlib's
object API (a :class:`~matplotlib.figure.Figure` on an Agg canvas): no
pyplot, no global state, no display needed, safe on a CI box.

One line with markers per group, and a dashed line in the same colour at
the group's rebuild budget, so a jump after a commit shows at a glance; a
run above its group's budget is also ringed in red.

The drift trend has two panels sharing the time axis, drift findings above
and unmanaged resources below, one line with markers per group (per group
and run, for audits of a run brought up with ``--run-id``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from immutable_infra.audit_history import audit_series
from immutable_infra.history import group_series, history_groups

FILE_NAME = "rebuild-trend.png"
TITLE = "Rebuild time per group"
X_LABEL = "run (UTC)"
Y_LABEL = "rebuild time (s)"
#: Colour-blind-friendly qualitative palette (matplotlib's tab10), one colour per group.
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
          "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
OVER_BUDGET_LABEL = "over budget"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

DRIFT_FILE_NAME = "drift-trend.png"
DRIFT_TITLE = "Drift and unmanaged findings per group (audits)"
DRIFT_X_LABEL = "audit (UTC)"
DRIFT_Y_LABELS = {"drift_count": "drift findings", "unmanaged_count": "unmanaged findings"}


def build_trend_figure(history: Iterable[Mapping[str, Any]],
                       budgets: Mapping[str, float | None] | None = None) -> Figure:
    """The trend chart as a Figure (not yet saved): for tests and for callers that add to it."""
    history = list(history)
    budgets = dict(budgets or {})
    fig = Figure(figsize=(10, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(TITLE)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.grid(True, axis="y", alpha=0.3)

    plotted = [(name, group_series(history, name)) for name in history_groups(history)]
    plotted = [(name, series) for name, series in plotted if series]
    if not plotted:
        ax.text(0.5, 0.5, "no rebuild times recorded yet", transform=ax.transAxes,
                ha="center", va="center", color="gray")
        ax.set_yticks([])
        ax.set_xticks([])
        return fig

    times: list[dt.datetime] = []
    top = 0.0
    over_marked = False
    for i, (name, series) in enumerate(plotted):
        color, marker = COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]
        xs = [t for t, _ in series]
        ys = [s for _, s in series]
        times += xs
        top = max(top, *ys)
        ax.plot(xs, ys, color=color, marker=marker, linewidth=1.8, markersize=6, label=name)
        budget = budgets.get(name)
        if budget is not None:
            top = max(top, float(budget))
            ax.axhline(float(budget), color=color, linestyle="--", linewidth=1.2, alpha=0.8,
                       label=f"{name} budget")
            over = [(t, s) for t, s in series if s > budget]
            if over:
                ax.scatter([t for t, _ in over], [s for _, s in over], s=160, facecolors="none",
                           edgecolors="red", linewidths=1.8, zorder=3,
                           label=None if over_marked else OVER_BUDGET_LABEL)
                over_marked = True

    _time_axis(ax, times)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    # Outside the axes, so the legend never hides a point or a budget line.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    return fig


def _time_axis(ax: Any, times: list[dt.datetime]) -> None:
    """Readable date ticks, and x limits around ``times`` (a single point centred in a day)."""
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(
        locator,
        # Every tick readable on its own ("May 03", not "03"); the year goes to the offset text.
        formats=["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"],
        zero_formats=["", "%Y", "%b %d", "%b %d", "%b %d %H:%M", "%H:%M"],
        offset_formats=["", "%Y", "%Y", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d %H:%M"],
    ))
    first, last = min(times), max(times)
    if first == last:  # a single run: centre it in a window of a day
        first, last = first - dt.timedelta(hours=12), last + dt.timedelta(hours=12)
    else:
        pad = (last - first) * 0.04
        first, last = first - pad, last + pad
    ax.set_xlim(first, last)


def build_drift_figure(history: Iterable[Mapping[str, Any]]) -> Figure:
    """The drift trend as a Figure (not yet saved): drift count above, unmanaged count below, a line per group."""
    series = audit_series(history)
    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    fig.suptitle(DRIFT_TITLE)
    plotted = {label: per for label, per in series.items()
               if any(n is not None for points in per.values() for _, n in points)}
    for ax, (key, ylabel) in zip(axes, DRIFT_Y_LABELS.items()):
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xlabel(DRIFT_X_LABEL)
    if not plotted:
        for ax in axes:
            ax.text(0.5, 0.5, "no audit counts recorded yet", transform=ax.transAxes,
                    ha="center", va="center", color="gray")
            ax.set_yticks([])
            ax.set_xticks([])
        return fig
    times: list[dt.datetime] = []
    for ax, key in zip(axes, DRIFT_Y_LABELS):
        top = 0
        for i, (label, per) in enumerate(plotted.items()):
            points = per[key]
            if all(n is None for _, n in points):
                continue
            # a count nobody took (the check did not look) is NaN: a gap in the line, never a 0
            xs, ys = [t for t, _ in points], [math.nan if n is None else n for _, n in points]
            times += [t for t, n in points if n is not None]
            top = max(top, *(n for _, n in points if n is not None))
            ax.plot(xs, ys, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                    linewidth=1.8, markersize=6, label=label)
        ax.set_ylim(0, top * 1.15 + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
    _time_axis(axes[-1], times)
    # Outside the axes, so the legend never hides a point; one legend for both panels.
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", frameon=False)
    return fig


def plot_drift_trend(history: Iterable[Mapping[str, Any]], path: Path | str) -> Path:
    """Write the drift trend (PNG) to ``path`` (its folder created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_drift_figure(history)
    fig.savefig(path, format="png")
    return path


def plot_rebuild_trend(history: Iterable[Mapping[str, Any]], path: Path | str,
                       budgets: Mapping[str, float | None] | None = None) -> Path:
    """Write the trend chart (PNG) to ``path`` (its folder created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_trend_figure(history, budgets)
    fig.savefig(path, format="png")
    return path
