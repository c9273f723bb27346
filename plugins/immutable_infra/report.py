"""Reports: ``summary.json`` and ``summary.md`` for the latest session, a copy per run.

The format grows by sections: every group entry has ``resources``,
``timings`` and ``teardown`` from the run, ``tests`` (counts) and
``test_outcomes`` (one row per test: node id, outcome, reason, checks) from
pytest, and a ``checks`` map where each check (drift, mutation, roles,
reachability, parity, rebuild, chaos, ...) records its verdict, the tests
behind it, its findings and any table.

A check's verdict comes from the outcomes of its tests, never from whether
findings were recorded: ``error`` if any test of the check errored, else
``fail`` if any failed, else ``pass`` if any passed, else ``skip`` (every
test skipped; the reasons are listed). A test belongs to the checks named by
its ``infra_check`` marker, and to every check it recorded findings, tables
or facts for while it ran (its fixtures included). ``not-run`` marks a check
that recorded data outside any test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutable_infra.ephemeral import Run
from immutable_infra.findings import Finding

FORMAT_VERSION = 1


#: Verdicts, worst first; a check takes the worst verdict among its tests.
VERDICTS = ("error", "fail", "pass", "skip", "not-run")
_VERDICT_OF = {"error": "error", "failed": "fail", "passed": "pass", "skipped": "skip"}


@dataclass
class TestOutcome:
    """One test's outcome for one group, as pytest reported it."""

    nodeid: str
    outcome: str  # passed, failed, error, skipped
    reason: str = ""
    checks: list[str] = field(default_factory=list)  # named by the test's infra_check marker


def verdict_of(outcomes: list[str]) -> str:
    """The verdict of a check from its tests' outcomes (pytest words): the worst of them."""
    got = {_VERDICT_OF.get(o, "error") for o in outcomes}
    return next((v for v in VERDICTS if v in got), "not-run")


@dataclass
class CheckRecord:
    findings: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Collects what a session learned and writes it to the reports folder."""

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = Path(reports_dir)
        self.started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.tests: dict[str, dict[str, int]] = {}
        self.test_outcomes: dict[str, list[TestOutcome]] = {}
        #: node id of the test running now (set by the plugin), and the (group, check) pairs each test recorded
        self.current_test: str | None = None
        self.touched: dict[str, set[tuple[str, str]]] = {}
        self.checks: dict[str, dict[str, CheckRecord]] = {}
        self.written: list[Path] = []
        self.extra: list[Path] = []  # files other parts wrote into the reports folder (chaos matrix, ...)
        #: after an audit's write: group -> what changed since its previous audit (audit_history.Changes)
        self.audit_changes: dict[str, Any] = {}

    # -- collecting --------------------------------------------------------------

    def check(self, group: str, check: str) -> CheckRecord:
        if self.current_test:
            self.touched.setdefault(self.current_test, set()).add((group, check))
        return self.checks.setdefault(group, {}).setdefault(check, CheckRecord())

    def findings(self, group: str, check: str, findings: list[Finding]) -> None:
        rec = self.check(group, check)
        rec.findings.extend({**f.to_dict(), "id": f.id} for f in findings)

    def table(self, group: str, check: str, name: str, rows: list[dict[str, Any]]) -> None:
        self.check(group, check).tables[name] = rows

    def fact(self, group: str, check: str, **facts: Any) -> None:
        self.check(group, check).facts.update(facts)

    def outcome(self, group: str, outcome: str, nodeid: str = "", reason: str = "",
                checks: list[str] | None = None) -> None:
        """Record one test's outcome (``passed``, ``failed``, ``error``, ``skipped``) for a group.

        A test that already has an outcome for the group (an error at teardown
        after its call) is counted once, with the worse outcome.
        """
        counts = self.tests.setdefault(group, {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
        rows = self.test_outcomes.setdefault(group, [])
        old = next((t for t in rows if nodeid and t.nodeid == nodeid), None)
        if old is not None:
            if outcome == "error" and old.outcome != "error":
                counts[old.outcome] -= 1
                counts["error"] += 1
                old.outcome, old.reason = "error", reason or old.reason
            return
        counts[outcome] = counts.get(outcome, 0) + 1
        rows.append(TestOutcome(nodeid, outcome, reason, list(checks or [])))

    def checks_of(self, group: str, test: TestOutcome) -> list[str]:
        """The checks a test gives a verdict for: its marker's, then those it recorded data for."""
        names = list(test.checks)
        names += sorted(c for g, c in self.touched.get(test.nodeid, ()) if g == group and c not in names)
        return names

    def verdicts(self, group: str) -> dict[str, dict[str, Any]]:
        """check -> {verdict, tests}: every check with data or with a test, verdict from the tests' outcomes."""
        tests: dict[str, list[TestOutcome]] = {c: [] for c in self.checks.get(group, {})}
        for test in self.test_outcomes.get(group, []):
            for check in self.checks_of(group, test):
                tests.setdefault(check, []).append(test)
        return {check: {"verdict": verdict_of([t.outcome for t in rows]),
                        "tests": [{"nodeid": t.nodeid, "outcome": t.outcome, "reason": t.reason} for t in rows]}
                for check, rows in tests.items()}

    # -- writing -----------------------------------------------------------------

    def summary(self, run: Run | None, exit_status: int, teardown_problems: list[str],
                endpoint: str | None = None) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        names = list(run.order) if run else []
        names += [g for g in list(self.checks) + list(self.tests) if g not in names]
        for name in names:
            rec = run.groups.get(name) if run else None
            entry: dict[str, Any] = {}
            if rec is not None:
                entry.update(
                    region=rec.region,
                    status=rec.status,
                    resource_count=len(rec.resources),
                    resources=rec.resources,
                    timings=rec.timings,
                    resource_seconds=rec.resource_seconds,
                    destroy_resource_seconds=rec.destroy_resource_seconds,
                    teardown=rec.teardown or ("kept" if run and run.keep else "not destroyed by this session"),
                    error=rec.error,
                )
            entry["tests"] = self.tests.get(name, {})
            entry["test_outcomes"] = [
                {"nodeid": t.nodeid, "outcome": t.outcome, "reason": t.reason, "checks": self.checks_of(name, t)}
                for t in self.test_outcomes.get(name, [])
            ]
            entry["checks"] = {}
            for check, v in self.verdicts(name).items():
                c = self.checks.get(name, {}).get(check, CheckRecord())
                entry["checks"][check] = {
                    "verdict": v["verdict"],
                    "tests": v["tests"],
                    "findings": c.findings,
                    "tables": c.tables,
                    **({"facts": c.facts} if c.facts else {}),
                }
            groups[name] = entry
        return {
            "format": FORMAT_VERSION,
            "run_id": run.id if run else None,
            "started": self.started.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "endpoint": endpoint,
            "exit_status": exit_status,
            "kept": bool(run and run.keep),
            "teardown_problems": teardown_problems,
            "groups": groups,
        }

    def write(self, summary: dict[str, Any], audit_trail: bool = True, commit_of: Path | None = None,
              budgets: dict[str, float | None] | None = None, audit: str | None = None) -> list[Path]:
        """Write summary.json and summary.md (and a copy per run); append history and redraw the trend.

        ``audit_trail`` appends a ``run`` line and redraws rebuild-trend.png
        (sessions that applied a run). ``audit`` (the audit's target, see
        ``audit_history.target_of``) adds what changed since the previous
        audit of each audited group to the summary, appends an ``audit``
        line and redraws drift-trend.png.
        """
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        if audit:
            summary, audit_records = self._audit_changes(summary, audit)
        paths = [self._write_json(self.reports_dir / "summary.json", summary)]
        md = self.reports_dir / "summary.md"
        md.write_text(render_markdown(summary), encoding="utf-8")
        paths.append(md)
        if summary.get("run_id"):
            run_dir = self.reports_dir / "runs" / summary["run_id"]
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths[0], run_dir / "summary.json")
            shutil.copyfile(md, run_dir / "summary.md")
        if audit_trail and summary.get("run_id"):
            paths += self._history(summary, commit_of, budgets or {})
        if audit:
            paths += self._audit_history(audit, audit_records, commit_of)
        self.written = paths + self.extra
        return self.written

    def _audit_changes(self, summary: dict[str, Any], target: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The summary with an ``audit`` section (new and fixed per group since its previous audit), and the records."""
        from immutable_infra.audit_history import audit_record, changes_since_previous
        from immutable_infra.history import read_history

        records = {name: audit_record(g.get("checks", {})) for name, g in summary["groups"].items()
                   if g.get("test_outcomes")}  # groups the session tested, not the groups they only depend on
        self.audit_changes = changes_since_previous(read_history(self.reports_dir / "history.jsonl"), target, records)
        summary = {**summary, "audit": {"target": target,
                                        "groups": {n: c.to_dict() for n, c in self.audit_changes.items()}}}
        return summary, records

    def _audit_history(self, target: str, records: dict[str, Any], commit_of: Path | None) -> list[Path]:
        """One ``audit`` line in history.jsonl for the session, and the drift trend drawn from every audit line."""
        from immutable_infra.audit_history import audit_entry
        from immutable_infra.history import append_history, git_commit, read_history
        from immutable_infra.trend import DRIFT_FILE_NAME, plot_drift_trend

        history_path = self.reports_dir / "history.jsonl"
        run_id = target.removeprefix("run:") if target.startswith("run:") else None
        append_history(history_path, audit_entry(target, run_id, git_commit(commit_of) if commit_of else None, records))
        trend = plot_drift_trend(read_history(history_path), self.reports_dir / DRIFT_FILE_NAME)
        return [history_path, trend]

    def _history(self, summary: dict[str, Any], commit_of: Path | None, budgets: dict[str, float | None]) -> list[Path]:
        """One line per session in history.jsonl, and the rebuild trend drawn from the whole history."""
        from immutable_infra.history import append_history, git_commit, history_entry, read_history
        from immutable_infra.trend import plot_rebuild_trend

        groups = {}
        for name, g in summary["groups"].items():
            checks = g.get("checks", {})
            rebuild = checks.get("rebuild", {}).get("facts", {})
            groups[name] = {
                "rebuild_seconds": rebuild.get("total_seconds"),
                "drift_count": len(checks.get("drift", {}).get("findings", [])),
                "verdicts": {c: v["verdict"] for c, v in checks.items()},
                "budget_seconds": budgets.get(name),
            }
        history_path = self.reports_dir / "history.jsonl"
        append_history(history_path, history_entry(summary["run_id"], git_commit(commit_of) if commit_of else None, groups))
        trend = plot_rebuild_trend(read_history(history_path), self.reports_dir / "rebuild-trend.png", budgets)
        return [history_path, trend]

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> Path:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)
        return path


def render_markdown(summary: dict[str, Any]) -> str:
    """A human summary that reads well in a Jenkins artifact view."""
    lines = [f"# Infrastructure verification: run {summary.get('run_id') or '-'}", ""]
    lines.append(f"Started {summary['started']}, finished {summary['finished']}; pytest exit status {summary['exit_status']}.")
    if summary.get("kept"):
        lines.append(f"The run is kept deployed: destroy it with `immutable-infra down --run-id {summary['run_id']}`.")
    lines.append("")
    if summary.get("audit"):
        lines += _audit_markdown(summary)
    lines.append("| group | status | resources | init s | apply s | destroy s | rebuild s | tests passed | failed | findings |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, g in summary["groups"].items():
        t = g.get("timings", {})
        tests = g.get("tests", {})
        nfind = sum(len(c["findings"]) for c in g.get("checks", {}).values())
        lines.append(
            f"| {name} | {g.get('status', '-')} | {g.get('resource_count', '-')} | {_s(t.get('init'))} | "
            f"{_s(t.get('apply'))} | {_s(t.get('destroy'))} | "
            f"{_s(g.get('checks', {}).get('rebuild', {}).get('facts', {}).get('total_seconds'))} | {tests.get('passed', 0)} | "
            f"{tests.get('failed', 0) + tests.get('error', 0)} | {nfind} |"
        )
    for name, g in summary["groups"].items():
        slow = sorted(g.get("resource_seconds", {}).items(), key=lambda kv: -kv[1])[:5]
        findings = [f for c in g.get("checks", {}).values() for f in c["findings"]]
        if not (slow or findings or g.get("error") or g.get("checks") or g.get("test_outcomes")):
            continue
        lines += ["", f"## {name}", ""]
        if g.get("error"):
            lines += ["Apply error:", "", "```", g["error"], "```", ""]
        if slow:
            lines.append("Slowest resources to create: " + ", ".join(f"`{a}` {s:.0f} s" for a, s in slow) + ".")
        rebuild = g.get("checks", {}).get("rebuild", {}).get("facts")
        if rebuild:
            lines.append(
                f"Rebuild: destroy {_s(rebuild.get('destroy_seconds'))} s + apply {_s(rebuild.get('apply_seconds'))} s"
                f" = {_s(rebuild.get('total_seconds'))} s (budget {_s(rebuild.get('budget_seconds'))} s)."
                + (f" Its dependents {', '.join(rebuild['dependents'])} were destroyed and re-applied around it in "
                   f"{_s(rebuild.get('dependents_seconds'))} s (not counted)." if rebuild.get("dependents") else "")
            )
        chaos = g.get("checks", {}).get("chaos", {}).get("facts")
        if chaos:
            missed = ", ".join(chaos.get("missed") or []) or "none"
            alarms = len(chaos.get("false_alarms") or [])
            lines.append(f"Chaos: detection ratio {chaos.get('detection_ratio', 0):.0%}; missed: {missed}; "
                         f"false alarms: {alarms}.")
        checks = g.get("checks", {})
        if checks:
            lines += ["", "| check | verdict | tests passed | failed | error | skipped | findings |",
                      "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
            for check, c in checks.items():
                outcomes = [t["outcome"] for t in c.get("tests", [])]
                lines.append(f"| {_cell(check)} | {_VERDICT_MD.get(c['verdict'], c['verdict'])} | "
                             + " | ".join(str(outcomes.count(o)) for o in ("passed", "failed", "error", "skipped"))
                             + f" | {len(c['findings'])} |")
        skipped = [t for t in g.get("test_outcomes", []) if t["outcome"] == "skipped"]
        if skipped:
            lines += ["", "Not checked (skipped tests and why):", ""]
            lines += [f"- `{t['nodeid']}`" + (f" ({', '.join(t['checks'])})" if t.get("checks") else "")
                      + f": {_line(t['reason']) or 'no reason given'}" for t in skipped]
        for check, c in checks.items():
            matrix = c.get("tables", {}).get("matrix") if check == "reachability" else None
            if matrix:
                lines += ["", "| flow | expected | verdict | blocking component |", "| --- | --- | --- | --- |"]
                lines += [f"| {_cell(r['flow'])} | {_cell(r['expected'])} | {_cell(r['verdict'])} | "
                          f"{_cell(r.get('blocking_component') or '-')} |" for r in matrix]
        if findings:
            lines += ["", "| check | resource | AWS id | expected | found |", "| --- | --- | --- | --- | --- |"]
            for f in findings:
                address = f"`{_cell(f['address'])}`" if f["address"] else "-"
                lines.append(f"| {_cell(f['check'])} | {address} | {_cell(f['aws_id'])} | {_cell(f['expected'])} | "
                             f"{_cell(f['found'])} |")
        lines += ["", f"Teardown: {g.get('teardown', '-')}."]
    if summary.get("teardown_problems"):
        lines += ["", "## Teardown problems", ""] + [f"- {p}" for p in summary["teardown_problems"]]
    return "\n".join(lines) + "\n"


_VERDICT_MD = {"fail": "**FAIL**", "error": "**ERROR**"}


def _audit_markdown(summary: dict[str, Any]) -> list[str]:
    """What is new and what was fixed since each group's previous audit (or that this is its first)."""
    audit = summary["audit"]
    findings = {f.get("id"): f for g in summary["groups"].values() for c in g.get("checks", {}).values()
                for f in c.get("findings", [])}
    target = audit.get("target", "")
    what = "the deployed groups" if target == "deployed" else f"run {target.removeprefix('run:')}"
    lines = [f"## Since the previous audit ({what})", ""]
    for name, c in audit.get("groups", {}).items():
        if c.get("first"):
            lines.append(f"- {name}: first audit of {name}.")
            continue
        commit = f" (commit {c['previous_commit'][:12]})" if c.get("previous_commit") else ""
        lines.append(f"- {name}: {len(c['new'])} new, {len(c['fixed'])} fixed since the audit of "
                     f"{c.get('previous_time') or '-'}{commit}.")
        for fid in c["new"]:
            f = findings.get(fid)
            lines.append(f"  - NEW `{_line(fid)}`" + (f": {_line(_finding_text(f))}" if f else ""))
        lines += [f"  - FIXED `{_line(fid)}`" for fid in c["fixed"]]
        lines += [f"  - not compared: {check} ({why})" for check, why in c.get("not_compared", {}).items()]
    return lines + [""]


def _finding_text(f: dict[str, Any]) -> str:
    where = f.get("address") or "-"
    if f.get("aws_id"):
        where += f" ({f['aws_id']})"
    return f"{where}: expected {f.get('expected')}, found {f.get('found')}"


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks as <br>."""
    text = str(value if value is not None else "")
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _line(value: Any) -> str:
    """Text on one line (for list items)."""
    return " ".join(str(value or "").split())


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
