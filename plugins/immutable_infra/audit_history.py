"""Audit history: one ``audit`` line in ``reports/history.jsonl`` per audit session, and what changed since the last.

An audit line holds every group the session audited::

    {"format": 1, "kind": "audit", "time": "2026-05-02T02:00:00+00:00", "target": "deployed", "run_id": null,
     "commit": "9f3c...",
     "groups": {"prd-sg-slave": {"drift_count": 2, "unmanaged_count": 1,
                                 "verdicts": {"drift": "fail", "unmanaged": "fail", "roles": "pass",
                                              "reachability": "skip"},
                                 "findings": ["drift:prd-sg-slave:aws_instance.web:instance_type", ...]}}}

``target`` is ``deployed`` (the group as its own backend holds it) or
``run:<id>`` (a run this tool brought up, audited with ``--run-id``); a group
is compared only with earlier audits of the same target. ``findings`` are
stable ids (:func:`immutable_infra.findings.finding_id`), so the same fault
seen twice has the same id. A count is ``null`` when its check did not look
(no test of it passed or failed: skipped, errored or not run): zero would
claim a clean group nobody checked.

:func:`compare` says what is new since the previous audit of the group and
what was fixed. Only checks that looked both times are compared; the others
are listed as not compared, with the reason, so a check that errored never
reads as "everything fixed".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from immutable_infra.findings import finding_id
from immutable_infra.history import AUDIT, FORMAT_VERSION, VERDICTS, HistoryError, _iso, entries_of, entry_time

DEPLOYED = "deployed"
#: A check looked at the group when one of its tests passed or failed.
LOOKED = frozenset({"pass", "fail"})
#: The counts an audit line keeps per group, and the check each one counts the findings of.
COUNTS = {"drift_count": "drift", "unmanaged_count": "unmanaged"}


def target_of(run_id: str | None) -> str:
    """``run:<id>`` for an audit of a run this tool brought up, ``deployed`` without a run id."""
    return f"run:{run_id}" if run_id else DEPLOYED


def audit_record(checks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One group's audit record from its ``checks`` in summary.json (check -> verdict, findings, ...)."""
    verdicts = {name: str(c.get("verdict", "not-run")) for name, c in checks.items()}
    record: dict[str, Any] = {}
    for key, check in COUNTS.items():
        record[key] = len(checks[check].get("findings") or []) if verdicts.get(check) in LOOKED else None
    record["verdicts"] = verdicts
    record["findings"] = sorted({finding_id(f) for c in checks.values() for f in c.get("findings") or []})
    return record


def audit_entry(target: str, run_id: str | None, commit: str | None, groups: Mapping[str, Mapping[str, Any]],
                time: dt.datetime | str | None = None) -> dict[str, Any]:
    """One history line for an audit session; ``groups`` maps a group to its :func:`audit_record`."""
    recorded: dict[str, Any] = {}
    for name, raw in groups.items():
        verdicts = dict(raw.get("verdicts") or {})
        bad = {check: v for check, v in verdicts.items() if v not in VERDICTS}
        if bad:
            raise HistoryError(f"audit entry for group {name}: verdicts must be one of "
                               f"{', '.join(sorted(VERDICTS))}, got {bad}")
        row: dict[str, Any] = {}
        for key in COUNTS:
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise HistoryError(f"audit entry for group {name}: {key} must be a count (>= 0) or null, not {value!r}")
            row[key] = value
        findings = raw.get("findings") or []
        if isinstance(findings, str) or not all(isinstance(f, str) and f for f in findings):
            raise HistoryError(f"audit entry for group {name}: findings must be a list of finding ids, not {findings!r}")
        row["verdicts"] = verdicts
        row["findings"] = sorted(set(findings))
        recorded[name] = row
    return {"format": FORMAT_VERSION, "kind": AUDIT, "time": _iso(time), "target": target, "run_id": run_id,
            "commit": commit, "groups": recorded}


def previous_audit(history: Iterable[Mapping[str, Any]], group: str,
                   target: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The latest audit line of ``target`` that audited ``group``, with the group's record; None if there is none.

    Call it before appending the current audit. Lines without a readable
    time, or whose record of the group is not an object, are passed over.
    """
    found = None
    for entry in entries_of(history, AUDIT):
        groups = entry.get("groups")
        record = groups.get(group) if isinstance(groups, Mapping) else None
        time = entry_time(entry)
        if entry.get("target") != target or not isinstance(record, Mapping) or time is None:
            continue
        if found is None or time >= found[0]:
            found = (time, entry, record)
    return (found[1], found[2]) if found else None


def _check_of(fid: str) -> str:
    return fid.split(":", 1)[0]


def _ids(record: Mapping[str, Any]) -> set[str]:
    found = record.get("findings")
    return {f for f in found if isinstance(f, str)} if isinstance(found, list) else set()


def _verdicts(record: Mapping[str, Any]) -> dict[str, str]:
    verdicts = record.get("verdicts")
    return {str(k): str(v) for k, v in verdicts.items()} if isinstance(verdicts, Mapping) else {}


@dataclass
class Changes:
    """What changed for one group since its previous audit (of the same target)."""

    group: str
    first: bool
    previous_time: str | None = None
    previous_commit: str | None = None
    new: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    #: check -> why its findings were not compared (it did not look in this audit or in the previous one)
    not_compared: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        """One line for the terminal: first audit, or the number new and fixed and what was not compared."""
        if self.first:
            return f"first audit of {self.group}"
        text = (f"{self.group} since the audit of {self.previous_time}: {len(self.new)} new, "
                f"{len(self.fixed)} fixed")
        if self.not_compared:
            text += "; not compared: " + ", ".join(f"{c} ({why})" for c, why in sorted(self.not_compared.items()))
        return text


def compare(group: str, previous: Mapping[str, Any] | None, current: Mapping[str, Any],
            previous_entry: Mapping[str, Any] | None = None) -> Changes:
    """New and fixed finding ids of ``group``: ``current`` against the ``previous`` audit record (None: first audit).

    A finding is new when its check looked both times and the previous audit
    did not have its id; fixed when its check looked both times and the id
    is gone. A check that looked only once is not compared.
    """
    if previous is None:
        return Changes(group, first=True)
    before, now = _verdicts(previous), _verdicts(current)
    looked_before = {c for c, v in before.items() if v in LOOKED}
    looked_now = {c for c, v in now.items() if v in LOOKED}
    both = looked_before & looked_now
    old_ids, new_ids = _ids(previous), _ids(current)
    not_compared = {}
    for check in sorted(looked_before - looked_now):
        not_compared[check] = f"{now.get(check, 'not-run')} in this audit"
    for check in sorted(looked_now - looked_before):
        not_compared[check] = f"{before.get(check, 'not-run')} in the previous audit"
    entry = previous_entry or {}
    return Changes(
        group, first=False,
        previous_time=str(entry.get("time")) if entry.get("time") else None,
        previous_commit=entry.get("commit") if isinstance(entry.get("commit"), str) else None,
        new=sorted(f for f in new_ids - old_ids if _check_of(f) in both),
        fixed=sorted(f for f in old_ids - new_ids if _check_of(f) in both),
        not_compared=not_compared,
    )


def changes_since_previous(history: Iterable[Mapping[str, Any]], target: str,
                           records: Mapping[str, Mapping[str, Any]]) -> dict[str, Changes]:
    """For each audited group, :func:`compare` with its previous audit of ``target`` in ``history``."""
    history = list(history)
    out = {}
    for group, record in records.items():
        prev = previous_audit(history, group, target)
        out[group] = compare(group, prev[1] if prev else None, record, prev[0] if prev else None)
    return out


# ---------------------------------------------------------------- series for the drift trend


def audit_series(history: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[dt.datetime, int | None]]]]:
    """label -> {"drift_count": [(time, n)], "unmanaged_count": [...]}, oldest first, from the audit lines.

    The label is the group for ``deployed`` audits and ``group (run <id>)``
    for audits of a run, so two targets never share a line. A count that is
    null (the check did not look) stays ``None``: a gap in the plot, not a 0.
    """
    series: dict[str, dict[str, list[tuple[dt.datetime, int | None]]]] = {}
    for entry in entries_of(history, AUDIT):
        time = entry_time(entry)
        groups = entry.get("groups")
        if time is None or not isinstance(groups, Mapping):
            continue
        target = entry.get("target")
        for group, record in groups.items():
            if not isinstance(record, Mapping):
                continue
            label = group if target == DEPLOYED or not isinstance(target, str) else (
                f"{group} (run {target.removeprefix('run:')})")
            per = series.setdefault(label, {key: [] for key in COUNTS})
            for key in COUNTS:
                value = record.get(key)
                per[key].append((time, value if isinstance(value, int) and not isinstance(value, bool) else None))
    for per in series.values():
        for points in per.values():
            points.sort(key=lambda point: point[0])
    return series
