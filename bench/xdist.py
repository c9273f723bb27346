"""pytest-xdist across groups: the same session serial (-n 0) and distributed (-n 3), wall times and verdicts.

    python bench/xdist.py                                   # the three Singapore groups, suites/ , -n 0 vs -n 3
    python bench/xdist.py --groups-dir tests/groups --group tiny --group tiny-app -n 2 --suite suites/test_drift.py

Runs each session as a user would (a subprocess, the embedded sandbox, its own
reports folder and runs folder) with ``IMMUTABLE_INFRA_TIMINGS`` set, then
compares what the two sessions' ``summary.json`` say: every group's check
verdicts and every test's outcome must be identical. It also counts the
Terraform ``init`` per group workspace in the distributed session (the
controller's apply, then one per rebuild or disaster drill that recreated the
group: no worker applied its own copy) and checks that each session
wrote one ``history.jsonl`` line and left no run folder behind.

The last lines are ``name: value`` pairs a script can read: ``serial_s``,
``xdist_s``, ``verdicts_identical``, ``xdist_speedup`` (serial wall time over
distributed wall time; issue 13's goal on 2 cores: >= 1.6), and each session's
peak resident memory (the session's whole process tree: workers, Terraform,
providers, moto, hosts), ``peak_rss_gib_serial`` and ``peak_rss_gib_xdist``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from overhead import tree_rss  # noqa: E402 - the same process-tree sampler as the overhead benchmark
SINGAPORE = ["ops-sg", "prd-sg-master", "prd-sg-slave"]


def session(workers: int, groups: list[str], groups_dir: str, suites: list[str], where: Path) -> dict:
    """Run one pytest session; return its wall time, exit code, summary, history lines and Terraform timings."""
    where.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, IMMUTABLE_INFRA_HOME=str(where / "home"), IMMUTABLE_INFRA_TIMINGS=str(where / "timings.jsonl"))
    args = [sys.executable, "-m", "pytest", *suites, "-p", "no:cacheprovider", "-q", "-n", str(workers),
            "--groups-dir", groups_dir, "--reports-dir", str(where / "reports")]
    for g in groups:
        args += ["--group", g]
    print(f"$ {' '.join(args[2:])}", flush=True)
    t0 = time.monotonic()
    out = where / "output.txt"
    with out.open("w") as fh:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
        peak = 0
        while proc.poll() is None:  # the resident memory of the session, its workers, Terraform and moto
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(1)
    wall = time.monotonic() - t0
    stdout = out.read_text()
    summary_path = where / "reports" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    history = where / "reports" / "history.jsonl"
    timings = where / "timings.jsonl"
    lines = [json.loads(line) for line in timings.read_text().splitlines()] if timings.is_file() else []
    runs = where / "home" / "runs"
    return {
        "wall": wall, "exit": proc.returncode, "summary": summary, "tail": stdout.strip().splitlines()[-1:], "peak_rss": peak,
        "history_lines": len(history.read_text().splitlines()) if history.is_file() else 0,
        "inits": collections.Counter(t["workdir"] for t in lines if t["verb"] == "init"),
        "runs_left": sorted(p.name for p in runs.iterdir()) if runs.is_dir() else [],
    }


def verdicts(summary: dict) -> dict:
    """group -> (check verdicts, test outcomes): what must not depend on -n."""
    out = {}
    for name, g in summary.get("groups", {}).items():
        out[name] = ({c: v["verdict"] for c, v in g.get("checks", {}).items()},
                     sorted((t["nodeid"], t["outcome"]) for t in g.get("test_outcomes", [])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", dest="groups")
    ap.add_argument("--groups-dir", default="fixtures/groups")
    ap.add_argument("-n", type=int, default=3, dest="workers")
    ap.add_argument("--suite", action="append", dest="suites", help="a suite file (default: suites/)")
    ap.add_argument("--keep-dir", help="keep outputs here instead of a temporary folder")
    a = ap.parse_args()
    groups, suites = a.groups or SINGAPORE, a.suites or ["suites/"]
    base = Path(a.keep_dir) if a.keep_dir else Path(tempfile.mkdtemp(prefix="bench-xdist-"))
    serial = session(0, groups, a.groups_dir, suites, base / "serial")
    print(f"serial: {serial['wall']:.0f} s, exit {serial['exit']}, {serial['tail']}", flush=True)
    dist = session(a.workers, groups, a.groups_dir, suites, base / "xdist")
    print(f"-n {a.workers}: {dist['wall']:.0f} s, exit {dist['exit']}, {dist['tail']}", flush=True)
    same = verdicts(serial["summary"]) == verdicts(dist["summary"]) and bool(serial["summary"])
    if not same:
        for name in sorted(set(verdicts(serial["summary"])) | set(verdicts(dist["summary"]))):
            s, d = verdicts(serial["summary"]).get(name), verdicts(dist["summary"]).get(name)
            if s != d:
                print(f"{name}: serial {s}\n{name}: xdist  {d}")
    # every recreate inits: a rebuild's (the group and its dependents) and a disaster drill's
    rebuilt = collections.Counter(g for group in dist["summary"].get("groups", {}).values()
                                  for check in ("rebuild", "disaster")
                                  for g in (group.get("checks", {}).get(check, {}).get("facts") or {}).get("groups", []))
    expected = {g: 1 + rebuilt[g] for g in dist["inits"]}
    once = dict(dist["inits"]) == expected
    print(f"inits per group under -n {a.workers}: {dict(dist['inits'])}; expected {expected} "
          "(the controller's apply, then one per rebuild or disaster drill that recreated the group)")
    print(f"history lines: serial {serial['history_lines']}, xdist {dist['history_lines']}; "
          f"run folders in the store (records, not resources): serial {serial['runs_left']}, xdist {dist['runs_left']}")
    print(f"outputs in {base}")
    print(f"serial_s: {serial['wall']:.1f}")
    print(f"xdist_s: {dist['wall']:.1f}")
    print(f"verdicts_identical: {str(same).lower()}")
    print(f"xdist_speedup: {serial['wall'] / dist['wall']:.2f}")
    print(f"peak_rss_gib_serial: {serial['peak_rss'] / 2**30:.2f}")
    print(f"peak_rss_gib_xdist: {dist['peak_rss'] / 2**30:.2f}")
    ok = same and serial["exit"] == dist["exit"] and once
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
