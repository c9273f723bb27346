"""History: ``reports/history.jsonl``, one line per session, and the rebuild-time regression gate.

The file is append-only JSON Lines, readable with ``jq`` or a spreadsheet.
Each line has a ``kind``: ``run`` (a session that applied a run; lines
written before kinds existed have no ``kind`` and are runs) or ``audit`` (a
read-only audit, see :mod:`immutable_infra.audit_history`). A run line::

    {"format": 1, "kind": "run", "time": "2026-05-01T10:00:00+00:00", "run_id": "r1a2b3", "commit": "9f3c...",
     "groups": {"prd-sg-slave": {"rebuild_seconds": 74.2, "drift_count": 0,
                                 "verdicts": {"drift": "pass", "rebuild": "fail", "chaos": "error"},
                                 "budget_seconds": 300.0}}}

Several sessions (parallel Jenkins jobs on one workspace, xdist workers)
may append at once: :func:`append_history` takes a file lock and writes each
line with a single write followed by ``fsync``. :func:`read_history` skips a
line it cannot parse (a writer killed mid-line) instead of failing.

The readers here (:func:`group_series`, :func:`history_groups`, the
baseline and the rebuild trend) read run lines only, so audit lines never
enter a rebuild baseline.

The regression gate (:func:`check_regression`) compares a measured rebuild
time with the median of the group's last N recorded ones. Call it *before*
appending the current run, so the run is not part of its own baseline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from immutable_infra.findings import Finding

FORMAT_VERSION = 1
CHECK = "rebuild"
FILE_NAME = "history.jsonl"
#: The kinds of history lines; a line without ``kind`` is a run.
RUN, AUDIT = "run", "audit"
#: A check's verdict, from its tests' outcomes (see ``report.verdict_of``).
VERDICTS = frozenset({"pass", "fail", "error", "skip", "not-run"})
#: Seconds to wait for another writer's lock before giving up (a writer holds it for one line).
LOCK_TIMEOUT = 60.0


class HistoryError(ValueError):
    """An entry that cannot be recorded as it is; the message says which field and why."""


def _iso(time: dt.datetime | str | None) -> str:
    if time is None:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    if isinstance(time, str):
        time = dt.datetime.fromisoformat(time)
    if time.tzinfo is None:
        raise HistoryError(f"history time {time.isoformat()} has no time zone: give an aware datetime (UTC)")
    return time.astimezone(dt.timezone.utc).isoformat()


def _number(group: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HistoryError(f"history entry for group {group}: {key} must be a number of seconds or null, not {value!r}")
    return float(value)


def history_entry(run_id: str, commit: str | None, groups: Mapping[str, Mapping[str, Any]],
                  time: dt.datetime | str | None = None) -> dict[str, Any]:
    """One history line for a run.

    ``groups`` maps a group name to ``rebuild_seconds`` (null when the group
    was not rebuilt), ``drift_count``, ``verdicts`` (check name -> ``"pass"``,
    ``"fail"``, ``"error"``, ``"skip"`` or ``"not-run"``, from the check's test outcomes) and ``budget_seconds`` (null without a budget). ``time``
    defaults to now; it is stored as ISO 8601 in UTC.
    """
    recorded: dict[str, Any] = {}
    for name, raw in groups.items():
        verdicts = dict(raw.get("verdicts") or {})
        bad = {check: v for check, v in verdicts.items() if v not in VERDICTS}
        if bad:
            raise HistoryError(f"history entry for group {name}: verdicts must be one of "
                               f"{', '.join(sorted(VERDICTS))}, got {bad}")
        drift = raw.get("drift_count", 0)
        if isinstance(drift, bool) or not isinstance(drift, int):
            raise HistoryError(f"history entry for group {name}: drift_count must be an integer, not {drift!r}")
        recorded[name] = {
            "rebuild_seconds": _number(name, "rebuild_seconds", raw.get("rebuild_seconds")),
            "drift_count": drift,
            "verdicts": verdicts,
            "budget_seconds": _number(name, "budget_seconds", raw.get("budget_seconds")),
        }
    return {"format": FORMAT_VERSION, "kind": RUN, "time": _iso(time), "run_id": run_id, "commit": commit,
            "groups": recorded}


def append_history(path: Path | str, entry: Mapping[str, Any]) -> Path:
    """Append ``entry`` as one JSON line to ``path`` (created with its folder), safe with concurrent writers.

    Writers serialise on ``<path>.lock``; the line goes out in one write,
    then flush and fsync. If a killed writer left a torn last line, the new
    line starts on a line of its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT):
        with open(path, "ab", buffering=0) as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                with open(path, "rb") as r:
                    r.seek(size - 1)
                    if r.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop only for a partial write
                view = view[f.write(view):]
            f.flush()
            os.fsync(f.fileno())
    return path


def read_history(path: Path | str) -> list[dict[str, Any]]:
    """Every run recorded in ``path``, oldest first; ``[]`` when there is no file yet.

    A line that is not a JSON object (torn by a killed writer, edited by
    hand) is skipped, never fatal.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def kind_of(entry: Mapping[str, Any]) -> str:
    """The line's kind: ``run`` for lines written before kinds existed."""
    kind = entry.get("kind")
    return kind if isinstance(kind, str) and kind else RUN


def entries_of(history: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    """The lines of one kind, in file order."""
    return [entry for entry in history if kind_of(entry) == kind]


def entry_time(entry: Mapping[str, Any]) -> dt.datetime | None:
    """The line's time (a time without zone is read as UTC), or None when it has no readable time."""
    try:
        time = dt.datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        return None
    return time if time.tzinfo else time.replace(tzinfo=dt.timezone.utc)


def group_series(history: Iterable[Mapping[str, Any]], group: str) -> list[tuple[dt.datetime, float]]:
    """``(run time, rebuild seconds)`` of ``group``, oldest first; runs without a rebuild time are left out.

    Only run lines count (audit lines carry no rebuild time).
    """
    series = []
    for entry in entries_of(history, RUN):
        groups = entry.get("groups")
        record = groups.get(group) if isinstance(groups, Mapping) else None
        seconds = record.get("rebuild_seconds") if isinstance(record, Mapping) else None
        time = entry_time(entry)
        if time is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            continue
        series.append((time, float(seconds)))
    series.sort(key=lambda point: point[0])
    return series


def history_groups(history: Iterable[Mapping[str, Any]]) -> list[str]:
    """Group names of the run lines, in order of first appearance."""
    names: dict[str, None] = {}
    for entry in entries_of(history, RUN):
        groups = entry.get("groups")
        if isinstance(groups, Mapping):
            names.update(dict.fromkeys(groups))
    return list(names)


def git_commit(path: Path | str) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``path``; None outside a repository or without git."""
    where = Path(path).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    if where.is_file():
        where = where.parent
    try:
        result = subprocess.run(["git", "-C", str(where), "rev-parse", "--verify", "--quiet", "HEAD"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


# ---------------------------------------------------------------- regression gate


@dataclass(frozen=True)
class Baseline:
    """The median rebuild time of a group over its last ``runs`` recorded runs."""

    group: str
    median_seconds: float
    runs: int

    def limit(self, pct: float) -> float:
        """The slowest rebuild that is not a regression."""
        return self.median_seconds * (1 + pct / 100)


def baseline(group: str, history: Iterable[Mapping[str, Any]], last_n: int = 10) -> Baseline | None:
    """The group's baseline, or None when the history holds no rebuild time for it yet."""
    if last_n < 1:
        raise ValueError(f"last_n must be at least 1, not {last_n}")
    values = [seconds for _, seconds in group_series(history, group)][-last_n:]
    if not values:
        return None
    return Baseline(group, statistics.median(values), len(values))


def explain_regression(group: str, measured_seconds: float, history: Iterable[Mapping[str, Any]],
                       pct: float, last_n: int = 10) -> str:
    """One sentence for the report: the verdict of the gate and the numbers behind it."""
    base = baseline(group, history, last_n)
    if base is None:
        return (f"{group}: no recorded rebuild time yet, so no regression check; "
                f"this run's {measured_seconds:.0f} s starts the history")
    verdict = "regression" if measured_seconds > base.limit(pct) else "no regression"
    return (f"{group}: {verdict}: rebuild {measured_seconds:.0f} s, median of the last {base.runs} "
            f"runs {base.median_seconds:.0f} s, limit {base.limit(pct):.0f} s (+{pct:g}%)")


def check_regression(group: str, measured_seconds: float, history: Iterable[Mapping[str, Any]],
                     pct: float, last_n: int = 10) -> list[Finding]:
    """A finding when ``measured_seconds`` exceeds the median of the last ``last_n`` runs by more than ``pct`` %.

    No history for the group yet gives no finding: there is nothing to
    regress from (:func:`explain_regression` says so in words).
    """
    base = baseline(group, history, last_n)
    if base is None or measured_seconds <= base.limit(pct):
        return []
    increase = (measured_seconds / base.median_seconds - 1) * 100 if base.median_seconds else float("inf")
    return [Finding(
        CHECK, group, "", "",
        f"rebuild within {base.limit(pct):.0f} s (median {base.median_seconds:.0f} s of the last "
        f"{base.runs} runs + {pct:g}%)",
        f"rebuild {measured_seconds:.0f} s, {increase:+.0f}% over the median",
        detail={"kind": "regression", "measured_seconds": measured_seconds, "median_seconds": base.median_seconds,
                "runs": base.runs, "pct": pct, "limit_seconds": base.limit(pct)},
    )]
