"""Tests of history.py: the append-only history (also under concurrent writers) and the regression gate."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from immutable_infra.history import (
    Baseline,
    HistoryError,
    append_history,
    baseline,
    check_regression,
    explain_regression,
    entries_of,
    git_commit,
    group_series,
    history_entry,
    history_groups,
    kind_of,
    read_history,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def entry(i: int, **seconds: float | None) -> dict:
    groups = {name.replace("_", "-"): {"rebuild_seconds": s, "drift_count": 0, "verdicts": {"rebuild": "pass"},
                                       "budget_seconds": 300}
              for name, s in seconds.items()}
    return history_entry(f"r{i}", "c" * 40, groups, time=T0 + dt.timedelta(hours=i))


def history_of(*values: float | None, group: str = "prd_sg_slave") -> list[dict]:
    return [entry(i, **{group: v}) for i, v in enumerate(values)]


# ---------------------------------------------------------------- entries


def test_history_entry_shape():
    e = history_entry("r1a2b3", "9f3c", {"prd-sg-slave": {"rebuild_seconds": 74, "drift_count": 2,
                                                         "verdicts": {"drift": "fail", "rebuild": "pass"},
                                                         "budget_seconds": 300}},
                      time=dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    assert e == {
        "format": 1,
        "kind": "run",
        "time": "2026-05-01T04:00:00+00:00",
        "run_id": "r1a2b3",
        "commit": "9f3c",
        "groups": {"prd-sg-slave": {"rebuild_seconds": 74.0, "drift_count": 2,
                                    "verdicts": {"drift": "fail", "rebuild": "pass"}, "budget_seconds": 300.0}},
    }


def test_history_entry_defaults_to_now_in_utc():
    before = dt.datetime.now(UTC).replace(microsecond=0)
    e = history_entry("r1", None, {"g": {}})
    time = dt.datetime.fromisoformat(e["time"])
    assert time.utcoffset() == dt.timedelta(0)
    assert before <= time <= dt.datetime.now(UTC)
    assert e["groups"]["g"] == {"rebuild_seconds": None, "drift_count": 0, "verdicts": {}, "budget_seconds": None}


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"verdicts": {"drift": "ok"}}, "verdicts must be one of error, fail, not-run, pass, skip"),
        ({"rebuild_seconds": "74"}, "rebuild_seconds must be a number"),
        ({"budget_seconds": True}, "budget_seconds must be a number"),
        ({"drift_count": 1.5}, "drift_count must be an integer"),
    ],
)
def test_history_entry_refuses_bad_values(group, message):
    with pytest.raises(HistoryError, match=message):
        history_entry("r1", None, {"g": group})


def test_history_entry_refuses_a_naive_time():
    with pytest.raises(HistoryError, match="time zone"):
        history_entry("r1", None, {}, time=dt.datetime(2026, 5, 1))


# ---------------------------------------------------------------- file


def test_append_then_read(tmp_path: Path):
    path = tmp_path / "reports" / "history.jsonl"
    assert read_history(path) == []
    entries = [entry(i, prd_sg_slave=70.0 + i) for i in range(3)]
    for e in entries:
        assert append_history(path, e) == path
    assert read_history(path) == entries
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    append_history(path, entry(0, g=1.0))
    with open(path, "ab") as f:
        f.write(b'{"format": 1, "time": "2026-05-01T0')  # a writer killed mid-line
    assert read_history(path) == [entry(0, g=1.0)]
    append_history(path, entry(1, g=2.0))
    assert read_history(path) == [entry(0, g=1.0), entry(1, g=2.0)]


def test_invalid_lines_anywhere_are_skipped(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(b'not json\n[1, 2]\n\n' + json.dumps(entry(0, g=1.0)).encode() + b"\n\xff\xfe garbage")
    assert read_history(path) == [entry(0, g=1.0)]


def _writer(path: str, worker: int, count: int) -> None:
    for i in range(count):
        e = history_entry(f"w{worker}-{i}", None, {f"group-{worker}": {"rebuild_seconds": float(i)}})
        e["padding"] = "x" * 20_000  # lines longer than a pipe buffer or a page
        append_history(path, e)


def test_concurrent_writers_lose_and_tear_nothing(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    workers, count = 6, 25
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # every line is whole JSON
    assert len(parsed) == workers * count
    assert sorted(e["run_id"] for e in parsed) == sorted(f"w{w}-{i}" for w in range(workers) for i in range(count))
    for w in range(workers):  # each writer's lines stay in its own order
        mine = [e["run_id"] for e in parsed if e["run_id"].startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(count)]
    assert len(read_history(path)) == workers * count


# ---------------------------------------------------------------- series


def test_group_series_in_time_order_without_missing_times():
    history = [entry(2, a=30.0, b=5.0), entry(0, a=10.0), entry(1, a=None, b=4.0),
               {"time": "garbage", "groups": {"a": {"rebuild_seconds": 99}}},
               {"time": "2026-05-01T00:00:00Z", "groups": {"a": {"rebuild_seconds": "slow"}}},
               {"groups": "nope"}]
    assert group_series(history, "a") == [(T0, 10.0), (T0 + dt.timedelta(hours=2), 30.0)]
    assert group_series(history, "b") == [(T0 + dt.timedelta(hours=1), 4.0), (T0 + dt.timedelta(hours=2), 5.0)]
    assert group_series(history, "c") == []
    assert history_groups(history) == ["a", "b"]


def test_group_series_reads_a_naive_time_as_utc():
    assert group_series([{"time": "2026-05-01T02:00:00", "groups": {"a": {"rebuild_seconds": 1}}}], "a") == [(T0, 1.0)]


def audit_line(i: int, **drift: int) -> dict:
    """An audit line as audit_history writes it (no rebuild time; counts, verdicts, finding ids)."""
    return {"format": 1, "kind": "audit", "time": (T0 + dt.timedelta(hours=i)).isoformat(), "target": "deployed",
            "run_id": None, "commit": None,
            "groups": {name.replace("_", "-"): {"drift_count": n, "unmanaged_count": 0, "verdicts": {"drift": "fail"},
                                                "findings": [f"drift:x:{k}:a" for k in range(n)],
                                                "rebuild_seconds": 1.0}  # a stray field must not leak in
                       for name, n in drift.items()}}


def test_lines_without_a_kind_are_runs_and_stay_readable():
    legacy = {"format": 1, "time": T0.isoformat(), "run_id": "old", "commit": None,
              "groups": {"a": {"rebuild_seconds": 50.0, "drift_count": 0, "verdicts": {}, "budget_seconds": None}}}
    assert kind_of(legacy) == "run" and kind_of(entry(0, a=1.0)) == "run" and kind_of(audit_line(0, a=1)) == "audit"
    assert entries_of([legacy, audit_line(1, a=1), entry(2, a=60.0)], "run") == [legacy, entry(2, a=60.0)]
    assert group_series([legacy, entry(2, a=60.0)], "a") == [(T0, 50.0), (T0 + dt.timedelta(hours=2), 60.0)]


def test_readers_of_rebuild_times_ignore_audit_lines(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    for e in [entry(0, a=100.0), audit_line(1, a=3, audited_only=2), entry(2, a=100.0), audit_line(3, a=0)]:
        append_history(path, e)
    history = read_history(path)
    assert len(history) == 4
    assert group_series(history, "a") == [(T0, 100.0), (T0 + dt.timedelta(hours=2), 100.0)]
    assert history_groups(history) == ["a"]  # the group only audits saw is no rebuild series
    assert baseline("a", history) == Baseline("a", 100.0, 2)
    assert baseline("audited-only", history) is None


# ---------------------------------------------------------------- regression gate


def test_no_history_is_no_finding_and_says_why():
    assert check_regression("prd-sg-slave", 500.0, [], pct=20) == []
    assert check_regression("prd-sg-slave", 500.0, history_of(70.0, group="ops_sg"), pct=20) == []
    assert baseline("prd-sg-slave", []) is None
    assert "no recorded rebuild time yet" in explain_regression("prd-sg-slave", 500.0, [], pct=20)


def test_within_the_allowed_increase_is_no_finding():
    history = history_of(100.0, 90.0, 110.0)  # median 100
    assert check_regression("prd-sg-slave", 120.0, history, pct=20) == []
    assert "no regression" in explain_regression("prd-sg-slave", 120.0, history, pct=20)


def test_beyond_the_allowed_increase_is_a_finding_naming_group_times_and_runs():
    history = history_of(100.0, 90.0, 110.0, 300.0, 95.0)  # median 100: one slow run does not move it
    [finding] = check_regression("prd-sg-slave", 121.0, history, pct=20)
    assert finding.check == "rebuild" and finding.group == "prd-sg-slave"
    assert finding.expected == "rebuild within 120 s (median 100 s of the last 5 runs + 20%)"
    assert finding.found == "rebuild 121 s, +21% over the median"
    assert finding.detail == {"kind": "regression", "measured_seconds": 121.0, "median_seconds": 100.0, "runs": 5,
                              "pct": 20, "limit_seconds": 120.0}
    assert explain_regression("prd-sg-slave", 121.0, history, pct=20).startswith("prd-sg-slave: regression")


def test_only_the_last_n_runs_count():
    history = history_of(*([200.0] * 10 + [100.0] * 3))
    assert baseline("prd-sg-slave", history, last_n=3) == Baseline("prd-sg-slave", 100.0, 3)
    assert baseline("prd-sg-slave", history) == Baseline("prd-sg-slave", 200.0, 10)
    assert check_regression("prd-sg-slave", 150.0, history, pct=10, last_n=3)
    assert not check_regression("prd-sg-slave", 150.0, history, pct=10)


def test_runs_without_a_rebuild_time_are_not_part_of_the_median():
    history = history_of(100.0, None, None, 100.0)
    assert baseline("prd-sg-slave", history) == Baseline("prd-sg-slave", 100.0, 2)


def test_last_n_must_be_positive():
    with pytest.raises(ValueError, match="last_n"):
        check_regression("g", 1.0, [], pct=10, last_n=0)


def test_regression_over_a_history_file(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    for i, s in enumerate([80.0, 82.0, 78.0, 81.0]):
        append_history(path, entry(i, prd_sg_slave=s))
    assert check_regression("prd-sg-slave", 95.0, read_history(path), pct=15)
    assert not check_regression("prd-sg-slave", 92.0, read_history(path), pct=15)


# ---------------------------------------------------------------- commit


def test_git_commit_of_a_repository(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(git + ["init", "-q"], check=True)
    assert git_commit(repo) is None  # no commit yet
    (repo / "f").write_text("x")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head
    assert git_commit(repo / "f") == head
    assert git_commit(repo / "reports" / "history.jsonl") == head  # not there yet


def test_git_commit_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_commit(tmp_path) is None
