"""The session's own overhead: the main job's wall time against the Terraform time inside it.

    python bench/overhead.py                          # the main job: pytest suites/ --group prd-sg-slave
    python bench/overhead.py --group ops-sg --group prd-sg-master --group prd-sg-slave --group ops-cn --group prd-cn

Runs the job as a user would (a subprocess, the embedded sandbox, its own reports
folder) with ``IMMUTABLE_INFRA_TIMINGS`` set, so the engine appends one line per
Terraform command it ran (verb, seconds, when it ended). The *Terraform floor* is
the wall time during which at least one apply or destroy was running (the union
of their intervals: two groups applied side by side count once), as issue 13
defines it: the group's applies, chaos repair applies, the rebuild and the
destroys. Everything else (``show -json`` reads of states, refresh-only plans
of the drift check, refresh-only applies, outputs, the checks' AWS calls) is
the tool's own work. The overhead ratio is the job's wall time over that floor
(issue 13's goal: <= 1.15). For reference it also prints the ratio over every
Terraform command (reads included).

Since the host checks, the main job also boots embedded hosts (one per
instance, the stand-in for the instance's own boot) and runs the roles'
playbooks on them; those steps are timed too (``host-boot``, ``playbook``).
``overhead_ratio_with_hosts`` counts them in the floor beside the applies:
the job's wall time over the union of applies, destroys, boots and playbooks.

It also samples the resident memory of the whole process tree (the session, its
Terraform workers and providers, the moto server) every half second and prints
the peak (goal for a five-group session: < 1.5 GiB).

The last lines are ``name: value`` pairs a script can read:
``overhead_ratio``, ``wall_s``, ``terraform_floor_s``, ``provisioning_floor_s``, ``overhead_ratio_with_hosts``,
``terraform_all_ratio``, ``peak_rss_gib``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Timed steps that are not Terraform commands: an embedded host's boot, a role playbook run.
HOST_STEPS = ("host-boot", "playbook")


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(entry))
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", action="append", help="group to test (repeatable; default prd-sg-slave)")
    parser.add_argument("--keep", type=Path, help="keep the session's output and the timings here (a folder)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    groups = args.group or ["prd-sg-slave"]

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        timings = Path(tmp) / "timings.jsonl"
        env = {**os.environ, "IMMUTABLE_INFRA_TIMINGS": str(timings), "IMMUTABLE_INFRA_HOME": str(Path(tmp) / "home")}
        argv = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider",
                "--reports-dir", str(Path(tmp) / "reports"), *[f"--group={g}" for g in groups], *args.pytest_args]
        print("running:", " ".join(argv[2:]), flush=True)
        started = time.time()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss(proc.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tail = []
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            tail = (tail + [line.rstrip()])[-5:]
        proc.wait()
        wall = time.time() - started
        sampler.join(timeout=5)

        rows = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "session.log").write_text("".join(lines))
            (args.keep / "timings.jsonl").write_text("".join(json.dumps({**r, "start": r["end"] - r["seconds"] - started}) + "\n" for r in rows))
        applies = [r for r in rows if r["verb"] == "apply" and not r.get("refresh_only")]
        floor = union_seconds([(r["end"] - r["seconds"], r["end"]) for r in applies])
        provisioning = union_seconds([(r["end"] - r["seconds"], r["end"]) for r in applies]
                                     + [(r["end"] - r["seconds"], r["end"]) for r in rows if r["verb"] in HOST_STEPS])
        every = union_seconds([(r["end"] - r["seconds"], r["end"]) for r in rows if r["verb"] not in HOST_STEPS])
        by_verb: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            by_verb[r["verb"] + (" -refresh-only" if r.get("refresh_only") else "")].append(r["seconds"])

    print("\n".join(tail))
    print(f"\npytest exit {proc.returncode}; groups: {', '.join(groups)}")
    print(f"{'timed step':<24}{'count':>7}{'sum s':>10}")
    for verb, secs in sorted(by_verb.items(), key=lambda kv: -sum(kv[1])):
        print(f"{verb:<24}{len(secs):>7}{sum(secs):>10.1f}")
    terraform = [r for r in rows if r["verb"] not in HOST_STEPS]
    print(f"{'terraform (summed)':<24}{len(terraform):>7}{sum(r['seconds'] for r in terraform):>10.1f}")
    print()
    print(f"wall_s: {wall:.1f}")
    print(f"terraform_floor_s: {floor:.1f}")
    print(f"overhead_ratio: {wall / floor:.2f}" if floor else "overhead_ratio: n/a (no apply recorded)")
    print(f"provisioning_floor_s: {provisioning:.1f}")
    print(f"overhead_ratio_with_hosts: {wall / provisioning:.2f}" if provisioning else "overhead_ratio_with_hosts: n/a")
    print(f"terraform_all_ratio: {wall / every:.2f}" if every else "terraform_all_ratio: n/a")
    print(f"peak_rss_gib: {peak[0] / 2**30:.2f}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
