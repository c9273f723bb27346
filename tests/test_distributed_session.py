"""Real sessions under pytest-xdist: ``-n 2`` on tiny + tiny-app against the serial session of the same suites.

Two subprocess sessions (serial, then ``-n 2``) of read-only suites and the
rebuild suite (destructive: rebuilding tiny destroys and recreates tiny-app,
which the other worker tests), each with its own runs folder, reports folder
and the engine's Terraform timings file. About 3 minutes each on 2 cores.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ["suites/test_drift.py", "suites/test_peering.py", "suites/test_rebuild.py"]


def _session(where: Path, workers: int) -> dict:
    where.mkdir(parents=True)
    env = dict(os.environ, IMMUTABLE_INFRA_HOME=str(where / "home"), IMMUTABLE_INFRA_TIMINGS=str(where / "t.jsonl"))
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", *SUITES, "-p", "no:cacheprovider", "-n", str(workers), "-rs", "-v",
            "--groups-dir", "tests/groups", "--group", "tiny", "--group", "tiny-app", "--reports-dir", str(where / "rep")]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (where / "output.txt").write_text(proc.stdout + proc.stderr)
    timings = [json.loads(line) for line in (where / "t.jsonl").read_text().splitlines()]
    runs = list((where / "home" / "runs").glob("*/run.json"))
    return {
        "out": proc.stdout + proc.stderr, "exit": proc.returncode,
        "summary": json.loads((where / "rep" / "summary.json").read_text()),
        "history": (where / "rep" / "history.jsonl").read_text().splitlines(),
        "timings": timings, "runs": [json.loads(p.read_text()) for p in runs],
    }


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    base = tmp_path_factory.mktemp("xdist")
    return _session(base / "serial", 0), _session(base / "xdist", 2)


def _verdicts(summary: dict) -> dict:
    return {name: ({c: v["verdict"] for c, v in g["checks"].items()},
                   sorted((t["nodeid"], t["outcome"], t["reason"]) for t in g["test_outcomes"]))
            for name, g in summary["groups"].items()}


def test_xdist_session_gives_the_serial_verdicts(sessions: tuple[dict, dict]) -> None:
    serial, dist = sessions
    assert "2 workers" in dist["out"], dist["out"][-3000:]
    assert serial["exit"] == dist["exit"] == 0, dist["out"][-3000:]
    assert _verdicts(serial["summary"]) == _verdicts(dist["summary"])
    assert dist["summary"]["groups"]["tiny"]["checks"]["rebuild"]["verdict"] == "pass"
    for session in (serial, dist):  # tiny-app applied before tiny's tests in both: rebuilt with it in both
        facts = session["summary"]["groups"]["tiny"]["checks"]["rebuild"]["facts"]
        assert facts["groups"] == ["tiny", "tiny-app"] and facts["dependents"] == ["tiny-app"]
        # the budget and the history take tiny's own destroy + apply; tiny-app's is timed apart
        assert facts["total_seconds"] == pytest.approx(facts["destroy_seconds"] + facts["apply_seconds"], abs=0.02)
        assert facts["dependents_seconds"] > 0


def test_each_group_is_applied_once_by_the_controller(sessions: tuple[dict, dict]) -> None:
    serial, dist = sessions

    def count(s: dict, verb: str) -> dict:
        return dict(collections.Counter(t["workdir"] for t in s["timings"] if t["verb"] == verb and not t["refresh_only"]))

    # Every apply phase inits its workspace: one by the controller per group, then one per rebuild that recreated
    # the group (tiny's rebuild recreates tiny-app too). A worker applying its own copy would add one per group.
    # The serial session applies every requested group before the first group's tests too: the same counts.
    rebuilt = collections.Counter(g for group in dist["summary"]["groups"].values()
                                  for g in group["checks"].get("rebuild", {}).get("facts", {}).get("groups", []))
    assert rebuilt == {"tiny": 1, "tiny-app": 2}
    assert count(dist, "init") == {g: 1 + rebuilt[g] for g in ("tiny", "tiny-app")}
    assert count(serial, "init") == count(dist, "init")
    out = dist["out"]
    for group in ("tiny", "tiny-app"):  # each group's tests on one worker, so its session fixtures exist once
        workers = {line.split()[0] for line in out.splitlines() if line.startswith("[gw") and line.rstrip().endswith(f"[{group}]")}
        assert len(workers) == 1, (group, workers)
    assert out.index("[tiny-app] applied") < out.index("created: 2/2 workers")  # applied before the workers started
    assert out.count("[tiny] applied") == 1 and out.count("[tiny-app] applied") == 1


def test_one_set_of_reports_merged_from_the_workers(sessions: tuple[dict, dict]) -> None:
    serial, dist = sessions
    assert len(dist["history"]) == 1 and len(serial["history"]) == 1
    entry = json.loads(dist["history"][0])
    assert entry["run_id"] == dist["summary"]["run_id"]
    assert set(entry["groups"]) == {"tiny", "tiny-app"}
    counts = {name: g["tests"] for name, g in dist["summary"]["groups"].items()}
    assert counts == {name: g["tests"] for name, g in serial["summary"]["groups"].items()}
    out = dist["out"]
    assert out.count("= immutable-infra =") == 1 or out.count(" immutable-infra ") >= 1
    assert "tiny checks: " in out and "tiny-app checks: " in out and "reports: " in out
    assert not any("@tiny" in t["nodeid"] for g in dist["summary"]["groups"].values() for t in g["test_outcomes"])


def test_nothing_is_left_after_the_xdist_session(sessions: tuple[dict, dict]) -> None:
    _, dist = sessions
    assert len(dist["runs"]) == 1  # one shared run, not one per worker
    run = dist["runs"][0]
    assert {n: g["status"] for n, g in run["groups"].items()} == {"tiny": "destroyed", "tiny-app": "destroyed"}
    assert run["leftovers"] == []
    assert "nothing tagged with it remains" in dist["out"]
    assert dist["summary"]["teardown_problems"] == []
