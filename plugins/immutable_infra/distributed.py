"""pytest-xdist: one shared run for every worker, group locks across processes, reports merged by the controller.

Under ``-n N`` the controller (the process without ``config.workerinput``)
starts the sandbox, creates or reuses the run and applies every requested
group's closure once, before the workers start. Each worker gets the run id,
the endpoint and the runs folder through ``workerinput`` and reuses the run
like a ``--run-id`` session: it never applies and never destroys, except what
a destructive suite does by design to its own group.

Tests are distributed with ``--dist loadgroup`` and an ``xdist_group`` mark per
group, so each group's tests stay on one worker. A test holds reader/writer
locks (``fcntl.flock``, one file per group in the run's folder, taken in sorted
order) for its whole protocol: a read-only test shares the locks of every
group related to its group (inputs either way and peers: the reachability and
unmanaged checks read them), a destructive test takes the same set
exclusively. So destructive suites never overlap a test that reads what they
change, and read-only suites of different groups run side by side.

``run.json`` is shared: a process writes its own changes to a group record
and keeps the other records as they are on disk (:func:`share_run`), and picks
up other workers' changes when it takes its locks (:func:`refresh`).

Each worker ships what its reporter collected through ``workeroutput``; the
controller merges it (:func:`merge_reporter`) and writes the one set of reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import threading
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

#: Key of this plugin's data in ``workerinput`` and ``workeroutput``.
KEY = "immutable_infra"

#: xdist dist modes that keep each group's tests on one worker.
DIST_MODES_OK = ("loadgroup",)


# -- who am I ------------------------------------------------------------------


def is_worker(config: Any) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: Any) -> bool:
    """The xdist controller: distribution is on and this is not a worker."""
    if is_worker(config) or getattr(config.option, "collectonly", False):
        return False
    return getattr(config.option, "dist", "no") not in (None, "no") and bool(getattr(config.option, "tx", None))


def worker_input(config: Any) -> dict[str, Any] | None:
    """What the controller passed to this worker (None outside a worker, or from a controller without groups)."""
    return getattr(config, "workerinput", {}).get(KEY) if is_worker(config) else None


def _dist_given(config: Any) -> bool:
    """Whether the user chose a dist mode (on the command line, in PYTEST_ADDOPTS or the ini's addopts)."""
    args = [str(a) for a in (config.invocation_params.args or ())]
    args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    with contextlib.suppress(Exception):
        args += [str(a) for a in config.getini("addopts")]
    return any(a == "--dist" or a.startswith("--dist=") or a in ("-d", "--distload") for a in args)


def choose_dist(config: Any) -> str | None:
    """On the controller: use loadgroup when the user left the dist mode to xdist; a usage problem otherwise."""
    dist = config.option.dist
    if dist in DIST_MODES_OK:
        return None
    if dist == "load" and not _dist_given(config):
        config.option.dist = "loadgroup"
        return None
    return (f"--dist {dist}: immutable-infra keeps each group's tests on one worker (they share the group's "
            "applied state and its destructive suites); use --dist loadgroup, or leave --dist out and the plugin "
            "sets it")


# -- keeping each group's tests on one worker -------------------------------------


def group_of_nodeid(nodeid: str, groups: Iterable[str]) -> str | None:
    """The group a suite test's node id names in its parameter id (``test_x[tiny-app]``, ``test_y[tiny-fault]``).

    The id joins the parameters' ids with ``-``; the longest group name that is
    a whole ``-``-separated part of it wins (``tiny-app`` over ``tiny``).
    """
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    pid = nodeid[nodeid.rindex("[", 0, nodeid.rindex("]")) + 1:-1]
    found = [g for g in groups if pid == g or pid.startswith(g + "-") or pid.endswith("-" + g) or f"-{g}-" in pid]
    return max(found, key=len) if found else None


def make_scheduler(config: Any, log: Any, groups: list[str]) -> Any:
    """xdist's loadgroup scheduling, grouping suite tests by their group.

    xdist marks a loadgroup test by appending ``@group`` to ``item._nodeid`` in
    the worker; pytest 9 keeps the node id elsewhere, so the suffix never
    reaches the controller (measured: xdist 3.8 + pytest 9.2). The group is read
    from the node id's parameter id instead.
    """
    from xdist.scheduler import LoadGroupScheduling

    class GroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "@" not in nodeid:
                group = group_of_nodeid(nodeid, groups)
                if group:
                    return f"immutable-infra-group:{group}"
            return super()._split_scope(nodeid)

    return GroupScheduling(config, log)


# -- which groups a test reads ---------------------------------------------------


def related(catalog: Any, name: str) -> list[str]:
    """``name`` and every group linked to it by inputs (either way) or peering, transitively; sorted."""
    links: dict[str, set[str]] = {}
    for n in catalog.names():
        try:
            g = catalog.get(n)
        except Exception:  # a broken group was reported by catalog.validate(); it has no links here
            continue
        for other in list(g.depends_on) + list(g.peers):
            links.setdefault(n, set()).add(other)
            links.setdefault(other, set()).add(n)
    seen, todo = {name}, [name]
    while todo:
        for other in links.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return sorted(seen)


# -- cross-process reader/writer locks ------------------------------------------


def lock_dir(run_path: Path) -> Path:
    return Path(run_path) / "locks"


@contextlib.contextmanager
def group_locks(run_path: Path, groups: Iterable[str], exclusive: bool) -> Iterator[None]:
    """Hold one flock per group (shared, or exclusive), taken in sorted order so two holders cannot deadlock."""
    folder = lock_dir(run_path)
    folder.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    held: list[int] = []
    try:
        for name in sorted(set(groups)):
            fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            held.append(fd)
            fcntl.flock(fd, mode)
        yield
    finally:
        for fd in reversed(held):
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- the shared run.json ---------------------------------------------------------

#: The attribute a shared run keeps its records as last synced with disk under (runs are unhashable dataclasses).
_SYNCED = "_immutable_infra_synced"
_CACHES: list[weakref.ref] = []


def share_run(run: Any) -> Any:
    """Make ``run.save`` merge with run.json on disk: this process's changed records win, the others are kept.

    Records are updated in place (threads of this process may hold them).
    Returns the run.
    """
    if hasattr(run, _SYNCED):
        return run
    setattr(run, _SYNCED, {n: asdict(r) for n, r in run.groups.items()})
    save_alone = run.save

    def save() -> None:
        with _file_lock(run.path / "run.json.lock"):
            _merge_from_disk(run)
            save_alone()
            setattr(run, _SYNCED, {n: asdict(r) for n, r in run.groups.items()})

    run.save = save
    return run


def _merge_from_disk(run: Any) -> list[str]:
    """Take the disk's version of every record this process has not changed; return the groups that changed."""
    from immutable_infra.ephemeral import Run

    synced = getattr(run, _SYNCED, {})
    try:
        disk = Run.load(run.home, run.id)
    except Exception:  # no run.json yet (or damaged): nothing to merge; save() writes ours
        return []
    changed = []
    with run._lock:
        for name, theirs in disk.groups.items():
            mine = run.groups.get(name)
            if mine is None:
                run.groups[name] = theirs
                if name not in run.order:
                    run.order.append(name)
                changed.append(name)
            elif asdict(mine) == synced.get(name) and asdict(theirs) != synced.get(name):
                mine.__dict__.update(theirs.__dict__)
                changed.append(name)
    return changed


def refresh(run: Any) -> list[str]:
    """Read the other processes' changes to the run's records (after taking locks); drop stale state caches."""
    if not hasattr(run, _SYNCED):
        return []
    with _file_lock(run.path / "run.json.lock"):
        changed = _merge_from_disk(run)
        setattr(run, _SYNCED, {n: asdict(r) for n, r in run.groups.items()})
    for ref in list(_CACHES):
        group = ref()
        if group is None:
            _CACHES.remove(ref)
        elif group.name in changed:
            group._state = None
    return changed


def watch(applied_group: Any) -> Any:
    """Remember an AppliedGroup so its cached state is dropped when another worker changes the group."""
    _CACHES.append(weakref.ref(applied_group))
    return applied_group


# -- reports: worker -> controller -----------------------------------------------


def reporter_data(reporter: Any, teardown: list[str]) -> str:
    """What a worker's reporter collected, as JSON (workeroutput carries plain data only)."""
    return json.dumps({
        "tests": reporter.tests,
        "test_outcomes": {g: [asdict(t) for t in rows] for g, rows in reporter.test_outcomes.items()},
        "touched": {nodeid: sorted(pairs) for nodeid, pairs in reporter.touched.items()},
        "checks": {g: {c: asdict(rec) for c, rec in checks.items()} for g, checks in reporter.checks.items()},
        "extra": [str(p) for p in reporter.extra],
        "teardown": list(teardown),
    }, default=str)


_merge_lock = threading.Lock()


def merge_reporter(reporter: Any, data: str) -> list[str]:
    """Add a worker's data to the controller's reporter; return the worker's teardown problems."""
    from immutable_infra.report import CheckRecord, TestOutcome

    raw = json.loads(data)
    with _merge_lock:
        for group, counts in raw["tests"].items():
            mine = reporter.tests.setdefault(group, {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
            for outcome, n in counts.items():
                mine[outcome] = mine.get(outcome, 0) + n
        for group, rows in raw["test_outcomes"].items():
            reporter.test_outcomes.setdefault(group, []).extend(TestOutcome(**row) for row in rows)
        for nodeid, pairs in raw["touched"].items():
            reporter.touched.setdefault(nodeid, set()).update(tuple(p) for p in pairs)
        for group, checks in raw["checks"].items():
            for check, rec in checks.items():
                mine = reporter.checks.setdefault(group, {}).setdefault(check, CheckRecord())
                mine.findings.extend(rec["findings"])
                mine.tables.update(rec["tables"])
                mine.facts.update(rec["facts"])
        reporter.extra += [Path(p) for p in raw["extra"] if Path(p) not in reporter.extra]
    return list(raw.get("teardown", []))


def worker_settings(settings: Any, given: dict[str, Any]) -> Any:
    """A worker's settings: the controller's run on the controller's endpoint; never reap, keep or apply."""
    from dataclasses import replace

    return replace(settings, run_id=given["run_id"], aws_endpoint=given.get("endpoint") or settings.aws_endpoint,
                   home=Path(given["home"]), keep=False, reap_expired=False)


__all__ = ["KEY", "choose_dist", "group_locks", "is_controller", "is_worker", "merge_reporter", "refresh",
           "related", "reporter_data", "share_run", "watch", "worker_input", "worker_settings"]
