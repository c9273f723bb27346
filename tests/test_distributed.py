"""pytest-xdist support: group locks across processes, the shared run.json, reports merged from workers."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from immutable_infra import distributed
from immutable_infra.ephemeral import Run
from immutable_infra.report import Reporter


def _hold(run_path: str, groups: list[str], exclusive: bool, seconds: float, start_at: float, out) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    with distributed.group_locks(Path(run_path), groups, exclusive=exclusive):
        t0 = time.time()
        time.sleep(seconds)
        t1 = time.time()
    out.put((tuple(groups), exclusive, t0, t1))


def _intervals(tmp_path: Path, holders: list[tuple[list[str], bool, float, float]]) -> list[tuple]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), g, ex, hold, start + delay, out))
             for g, ex, hold, delay in holders]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return got


def _overlap(a: tuple, b: tuple) -> bool:
    return a[2] < b[3] and b[2] < a[3]


def test_a_writer_never_overlaps_readers_of_its_groups_and_readers_share(tmp_path: Path) -> None:
    # two readers start first (one reads b only), a writer on a+b arrives while they hold, a third reader after it
    got = _intervals(tmp_path, [
        (["a", "b"], False, 0.6, 0.0),
        (["b"], False, 0.6, 0.0),
        (["b", "a"], True, 0.4, 0.2),
        (["a"], False, 0.3, 0.3),
    ])
    writers = [g for g in got if g[1]]
    readers = [g for g in got if not g[1]]
    assert len(writers) == 1 and len(readers) == 3
    for r in readers:
        assert not _overlap(writers[0], r), (writers[0], r)
    first_two = [r for r in readers if r[0] in (("a", "b"), ("b",))]
    assert _overlap(*first_two), "two readers of the same group must run side by side"
    assert writers[0][2] >= max(r[3] for r in first_two) - 0.01  # the writer waited for the readers holding


def test_locks_on_unrelated_groups_do_not_wait(tmp_path: Path) -> None:
    got = _intervals(tmp_path, [(["a"], True, 0.5, 0.0), (["c"], True, 0.5, 0.0)])
    assert _overlap(got[0], got[1])


def test_two_writers_taking_the_same_groups_in_any_order_do_not_deadlock(tmp_path: Path) -> None:
    got = _intervals(tmp_path, [(["x", "y"], True, 0.2, 0.0), (["y", "x"], True, 0.2, 0.0)] * 2)
    ordered = sorted(got, key=lambda g: g[2])
    assert all(not _overlap(a, b) for a, b in zip(ordered, ordered[1:]))


def _catalog(groups: dict[str, dict]) -> SimpleNamespace:
    def get(name: str) -> SimpleNamespace:
        g = groups[name]
        return SimpleNamespace(depends_on=g.get("inputs", []), peers=g.get("peers", []))

    return SimpleNamespace(names=lambda: list(groups), get=get)


def test_related_groups_follow_inputs_both_ways_and_peers() -> None:
    catalog = _catalog({
        "ops-sg": {"peers": ["prd-sg-master"]},
        "prd-sg-master": {"inputs": ["ops-sg"]},
        "prd-sg-slave": {"peers": ["prd-sg-master"]},
        "ops-cn": {},
        "prd-cn": {"inputs": ["ops-cn"]},
        "alone": {},
    })
    assert distributed.related(catalog, "prd-sg-slave") == ["ops-sg", "prd-sg-master", "prd-sg-slave"]
    assert distributed.related(catalog, "ops-cn") == ["ops-cn", "prd-cn"]
    assert distributed.related(catalog, "alone") == ["alone"]


def _run(tmp_path: Path) -> Run:
    run = Run.create(tmp_path, "r1", tmp_path / "groups", "http://127.0.0.1:1")
    for name in ("g1", "g2", "g3"):
        rec = run.record(name)
        rec.status, rec.outputs = "applied", {"id": f"{name}-0"}
    run.save()
    return run


def test_two_workers_saving_the_shared_run_keep_each_others_changes(tmp_path: Path) -> None:
    _run(tmp_path)
    w1 = distributed.share_run(Run.load(tmp_path, "r1"))
    w2 = distributed.share_run(Run.load(tmp_path, "r1"))
    w1.groups["g1"].outputs = {"id": "g1-rebuilt"}
    w1.save()
    w2.groups["g2"].status = "pending"  # w2 mid-rebuild of g2: its view of g1 is stale
    w2.save()
    disk = Run.load(tmp_path, "r1")
    assert disk.groups["g1"].outputs == {"id": "g1-rebuilt"}  # a plain save would have put g1-0 back
    assert disk.groups["g2"].status == "pending"
    assert w2.groups["g1"].outputs == {"id": "g1-rebuilt"}  # and w2 now sees it


class _Cached:
    """Stands for an AppliedGroup: a name and a cached state."""

    def __init__(self, name: str, state: dict) -> None:
        self.name, self._state = name, state


def test_refresh_updates_records_in_place_and_drops_the_stale_state_cache(tmp_path: Path) -> None:
    _run(tmp_path)
    w1 = distributed.share_run(Run.load(tmp_path, "r1"))
    w2 = distributed.share_run(Run.load(tmp_path, "r1"))
    held = w2.groups["g3"]  # a thread of w2 may hold the record
    cached = distributed.watch(_Cached("g3", {"old": True}))
    other = distributed.watch(_Cached("g1", {"kept": True}))
    w1.groups["g3"].outputs = {"id": "g3-new"}
    w1.save()
    assert distributed.refresh(w2) == ["g3"]
    assert held is w2.groups["g3"] and held.outputs == {"id": "g3-new"}
    assert cached._state is None and other._state == {"kept": True}


def test_refresh_keeps_this_process_unsaved_changes(tmp_path: Path) -> None:
    _run(tmp_path)
    w1 = distributed.share_run(Run.load(tmp_path, "r1"))
    w1.groups["g1"].status = "destroying"
    distributed.refresh(w1)
    assert w1.groups["g1"].status == "destroying"


def _worker_reporter(tmp_path: Path, group: str, nodeid: str, outcome: str) -> Reporter:
    rep = Reporter(tmp_path)
    rep.current_test = nodeid
    rep.findings(group, "drift", [])
    rep.fact(group, "rebuild", total_seconds=12.5)
    rep.table(group, "reachability", "matrix", [{"flow": "a->b", "verdict": "open"}])
    rep.outcome(group, outcome, nodeid=nodeid, reason="why" if outcome != "passed" else "", checks=["drift"])
    return rep


def test_reports_merged_from_workers_equal_the_serial_ones(tmp_path: Path) -> None:
    serial = Reporter(tmp_path)
    for group, nodeid, outcome in (("tiny", "s.py::t[tiny]", "passed"), ("tiny-app", "s.py::t[tiny-app]", "failed")):
        serial.current_test = nodeid
        serial.findings(group, "drift", [])
        serial.fact(group, "rebuild", total_seconds=12.5)
        serial.table(group, "reachability", "matrix", [{"flow": "a->b", "verdict": "open"}])
        serial.outcome(group, outcome, nodeid=nodeid, reason="why" if outcome != "passed" else "", checks=["drift"])
    controller = Reporter(tmp_path)
    problems = []
    problems += distributed.merge_reporter(
        controller, distributed.reporter_data(_worker_reporter(tmp_path, "tiny", "s.py::t[tiny]", "passed"), []))
    problems += distributed.merge_reporter(controller, distributed.reporter_data(
        _worker_reporter(tmp_path, "tiny-app", "s.py::t[tiny-app]", "failed"), ["gw1: something"]))
    assert problems == ["gw1: something"]
    a, b = serial.summary(None, 1, []), controller.summary(None, 1, [])
    for s in (a, b):
        s.pop("started"), s.pop("finished")
    assert a == b
    assert b["groups"]["tiny-app"]["checks"]["drift"]["verdict"] == "fail"


def _config(dist: str, args: list[str], worker: bool = False) -> SimpleNamespace:
    cfg = SimpleNamespace(option=SimpleNamespace(dist=dist, tx=["popen"] * 2, collectonly=False),
                          invocation_params=SimpleNamespace(args=args), getini=lambda name: [])
    if worker:
        cfg.workerinput = {}
    return cfg


def test_the_plugin_picks_loadgroup_unless_the_user_chose_a_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    cfg = _config("load", ["-n", "2"])
    assert distributed.is_controller(cfg) and distributed.choose_dist(cfg) is None
    assert cfg.option.dist == "loadgroup"
    cfg = _config("load", ["-n", "2", "--dist", "load"])
    assert "--dist load" in distributed.choose_dist(cfg) and "loadgroup" in distributed.choose_dist(cfg)
    for mode in ("each", "loadscope", "loadfile", "worksteal"):
        assert f"--dist {mode}:" in distributed.choose_dist(_config(mode, ["-n", "2", f"--dist={mode}"]))
    assert distributed.choose_dist(_config("loadgroup", ["--dist", "loadgroup"])) is None
    assert not distributed.is_controller(_config("no", []))
    assert not distributed.is_controller(_config("load", [], worker=True))


def test_a_suite_test_is_scheduled_by_its_group() -> None:
    groups = ["tiny", "tiny-app", "ops-sg"]
    assert distributed.group_of_nodeid("suites/test_drift.py::test_no_drift[tiny]", groups) == "tiny"
    assert distributed.group_of_nodeid("suites/test_drift.py::test_no_drift[tiny-app]", groups) == "tiny-app"
    assert distributed.group_of_nodeid("suites/test_chaos.py::test_fault[tiny-app-sg-open-world]", groups) == "tiny-app"
    assert distributed.group_of_nodeid("suites/test_chaos.py::test_fault[sg-open-world-ops-sg]", groups) == "ops-sg"
    assert distributed.group_of_nodeid("tests/test_x.py::test_y", groups) is None
    assert distributed.group_of_nodeid("tests/test_x.py::test_y[other]", groups) is None


def test_an_audit_of_deployed_groups_under_xdist_is_a_usage_error() -> None:
    """Its run lives in one process's memory: workers could not share it, so -n is refused before anything starts."""
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "-n", "2", "--groups-dir", "tests/groups",
         "--group", "tiny", "--audit", "--aws-endpoint", "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "an audit of the groups as deployed" in result.stderr and "drop -n" in result.stderr, result.stderr[-2000:]
