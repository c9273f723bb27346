"""``apply s`` is the group's own apply: repairs, settles and rebuilds are recorded beside it, never over it.

Terraform is replaced by a recorder that answers with given durations, so the
bookkeeping of the Deployer and the Harness runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from immutable_infra import plugin
from immutable_infra.catalog import Catalog
from immutable_infra.engine import ApplyResult, ResourceTiming
from immutable_infra.ephemeral import Deployer, GroupRecord, Run, record_apply
from immutable_infra.harness import Harness
from immutable_infra.report import Reporter, render_markdown
from immutable_infra.sandbox import Sandbox
from immutable_infra.settings import Settings

TEST_GROUPS = Path(__file__).parent / "groups"


class RecordedTerraform:
    """Answers each apply with the next recorded duration, reporting progress as the engine does."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.calls: list[str] = []

    def init(self) -> None:
        self.calls.append("init")

    def apply(self, progress: Any = None, refresh_only: bool = False) -> ApplyResult:
        seconds = self.durations.pop(0)
        verb = "refresh" if refresh_only else "apply"
        self.calls.append(verb)
        if progress is not None:
            progress(verb, 0 if refresh_only else 1, 0 if refresh_only else 1, seconds)
        timings = [] if refresh_only else [ResourceTiming("aws_vpc.this", "create", seconds)]
        return ApplyResult(seconds, timings)

    def output(self) -> dict[str, Any]:
        return {"vpc_id": "vpc-1"}

    def state_list(self) -> list[str]:
        return ["aws_vpc.this"]

    def state(self) -> dict[str, Any]:
        return {"values": {"root_module": {"resources": []}}}


@pytest.fixture
def session(tmp_path):
    """A harness over the tiny group whose Terraform is the recorder (no endpoint is ever called)."""
    catalog = Catalog(TEST_GROUPS)
    sandbox = Sandbox(endpoint="http://127.0.0.1:9", cache_dir=tmp_path / "cache")
    run = Run.create(tmp_path / "home", None, TEST_GROUPS, sandbox.endpoint)
    lines: list[str] = []
    tf = RecordedTerraform()
    deployer = Deployer(run, catalog, sandbox, say=lines.append)
    deployer.terraform = lambda name: tf  # type: ignore[method-assign]
    harness = Harness(Settings(groups=["tiny"], groups_dir=TEST_GROUPS), say=lines.append)
    harness._sandbox, harness._run = sandbox, run
    harness.__dict__.update(deployer=deployer, base_catalog=catalog)
    return harness, tf, lines


def test_repairs_settles_and_a_rebuild_never_overwrite_the_groups_own_apply(session):
    harness, tf, lines = session
    run = harness.run
    tf.durations = [72.4, 6.0]  # the first apply, its refresh-only apply
    harness.up(["tiny"])
    assert run.groups["tiny"].timings["apply"] == 72.4
    tf.durations = [12.0]
    harness.repair("tiny", settle=False)  # a chaos repair
    tf.durations = [5.0]
    harness.settle("tiny")
    tf.durations = [11.0, 4.0]
    harness.repair("tiny")  # a repair through the deployer (apply, then its refresh-only apply)
    run.groups["tiny"].status = "pending"  # as Harness.destroy leaves it
    tf.durations = [70.2, 6.5]
    harness.recreate(["tiny"])  # the rebuild's apply
    t = Run.load(run.home, run.id).groups["tiny"].timings  # as recorded in run.json
    assert (t["apply"], t["refresh"]) == (72.4, 6.0)
    assert (t["repair"], t["repairs"], t["settle"]) == (23.0, 2, 9.0)
    assert t["reapply"] == 70.2
    # A later full apply is what the rebuild's slowest resources come from; a repair's are not.
    assert run.groups["tiny"].resource_seconds == {"aws_vpc.this": 70.2}
    # Each apply says its own time, and the refresh-only applies and the repair say what they are.
    assert "[tiny] applied 1 resources in 72 s" in lines and "[tiny] applied 1 resources in 70 s" in lines
    assert "[tiny] repair apply" in lines and "[tiny] repair apply: 1/1 resources, 12 s" in lines
    assert "[tiny] settling: refresh-only apply" in lines and "[tiny] refresh-only apply: 5 s" in lines
    assert lines.count("[tiny] refresh-only apply (reads what the endpoint filled in)") == 3


def test_terminal_summary_and_markdown_show_the_first_apply(session, tmp_path):
    harness, tf, _ = session
    tf.durations = [72.4, 6.0, 12.0]
    harness.up(["tiny"])
    harness.repair("tiny", settle=False)
    written: list[str] = []

    class Terminal:
        def section(self, title: str) -> None:
            written.append(f"== {title}")

        def write_line(self, line: str, **markup: Any) -> None:
            written.append(line)

    reporter = Reporter(tmp_path / "reports")
    config = type("Config", (), {"stash": {plugin.HARNESS: harness, plugin.REPORTER: reporter, plugin.TEARDOWN: []}})()
    plugin.pytest_terminal_summary(Terminal(), 0, config)
    header = next(line for line in written if line.startswith("group "))
    row = next(line for line in written if line.startswith("tiny "))
    assert row[header.index("apply s"):].split()[0] == "72"  # not the repair's 12
    md = render_markdown(reporter.summary(harness.run, 0, []))
    cells = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("| tiny |")).split("|")]
    assert cells[5] == "72"  # | group | status | resources | init s | apply s |


def test_record_apply_rules():
    rec = GroupRecord("g")
    record_apply(rec, "repair", 3.0, refresh=1.0)  # the first apply of the run is the group's own, whatever asked
    assert rec.timings == {"apply": 3.0, "refresh": 1.0}
    record_apply(rec, "apply", 50.0, init=2.0, refresh=4.0)  # a second plain apply (a rebuild)
    record_apply(rec, "reapply", 40.0)
    record_apply(rec, "settle", 2.5)
    assert rec.timings == {"apply": 3.0, "refresh": 1.0, "reapply": 40.0, "settle": 2.5}
