"""A refresh-only plan with nothing in it comes from its own stream, without ``show -json`` of the planfile.

Recorded streams (tests/data/plan_stream/, refresh-only plans of tests/groups/tiny plus a data source, embedded
Terraform 1.15.5, provider 3.39.0) in milliseconds; then a real applied copy of tiny, where out-of-band changes
(a tag, an attribute, a deleted resource) must give exactly the verdict the planfile's ``show -json`` gives.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from immutable_infra import engine, verify
from immutable_infra.checks.drift import find_drift
from immutable_infra.engine import EmbeddedDriver, PlanStream, Terraform
from immutable_infra.plan import Plan

DATA = Path(__file__).parent / "data" / "plan_stream"
TEST_GROUPS = Path(__file__).parent / "groups"


def events(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def stream_of(evs: list[dict]) -> PlanStream:
    stream = PlanStream()
    for e in evs:
        stream.on_event(e)
    return stream


# -- recorded streams ----------------------------------------------------------------------------------------------

def test_a_clean_refresh_only_stream_is_an_empty_plan_without_prior_state():
    empty = stream_of(events("refresh_only_clean")).empty_plan()
    assert empty is not None and empty["terraform_version"] == "1.15.5"
    plan = Plan.from_json(empty)
    assert plan.from_stream and plan.drift == () and plan.changes == () and plan.is_noop()
    assert find_drift(plan, "tiny", state=[]) == ([], [])
    with pytest.raises(ValueError, match="no prior_state"):
        plan.prior_resources()  # never an empty state passed off as the group's


@pytest.mark.parametrize("name", ["refresh_only_tag_changed", "refresh_only_deleted_attr_tag"])
def test_a_stream_with_drift_asks_for_the_planfile(name):
    assert stream_of(events(name)).empty_plan() is None


@pytest.mark.parametrize("cut", [
    lambda evs: [e for e in evs if e.get("type") != "change_summary"],  # cut short before the summary
    lambda evs: evs + [{"type": "planned_change", "change": {"resource": {"addr": "aws_vpc.this"}, "action": "update"}}],
    lambda evs: [dict(e, changes=dict(e["changes"], add=1)) if e.get("type") == "change_summary" else e for e in evs],
    lambda evs: [dict(e, outputs={"vpc_id": {"sensitive": False, "action": "update"}}) if e.get("type") == "outputs"
                 else e for e in evs],
])
def test_anything_but_a_complete_empty_stream_asks_for_the_planfile(cut):
    assert stream_of(cut(events("refresh_only_clean"))).empty_plan() is None


# -- the engine: show only when the stream does not prove the plan empty -------------------------------------------

FAKE = r'''
import json, os, sys
from pathlib import Path
log = Path(os.environ["FAKE_TF_CALLS"])
calls = json.loads(log.read_text()) if log.exists() else []
calls.append(sys.argv[1:])
log.write_text(json.dumps(calls))
if sys.argv[1] == "plan":
    sys.stdout.write(Path(os.environ["FAKE_TF_STREAM"]).read_text())
else:
    sys.stdout.write(json.dumps({"format_version": "1.2", "resource_drift": [], "prior_state": {}}))
'''


class ReplayDriver:
    """Replays a recorded plan stream; ``show`` answers a planfile JSON."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "fake_terraform.py"
        self.script.write_text(FAKE)

    def argv(self, args):
        return [sys.executable, str(self.script), *args]


class ReplayEmbedded(ReplayDriver, EmbeddedDriver):
    """The same, standing for the embedded Terraform (whose stream is trusted)."""


def _verbs(tmp_path, driver_cls, recording: str) -> list[str]:
    tmp_path.mkdir(exist_ok=True)
    env = {"FAKE_TF_CALLS": str(tmp_path / "calls.json"), "FAKE_TF_STREAM": str(DATA / f"{recording}.jsonl")}
    Terraform(tmp_path, env, driver_cls(tmp_path)).refresh_plan()
    return [c[0] for c in json.loads((tmp_path / "calls.json").read_text())]


def test_the_embedded_terraform_shows_the_planfile_only_when_the_stream_has_something(tmp_path):
    assert _verbs(tmp_path / "a", ReplayEmbedded, "refresh_only_clean") == ["plan"]
    assert _verbs(tmp_path / "b", ReplayEmbedded, "refresh_only_tag_changed") == ["plan", "show"]


def test_an_external_binary_is_always_shown(tmp_path):
    assert _verbs(tmp_path, ReplayDriver, "refresh_only_clean") == ["plan", "show"]


# -- a real applied group: out-of-band changes give the verdict the planfile gives ---------------------------------

@pytest.fixture(scope="module")
def applied_tiny(moto_server, tmp_path_factory):
    """tests/groups/tiny plus a data source (a refresh-only plan of a configuration with one always has a data
    read), applied once for this module, destroyed after it."""
    from immutable_infra.harness import Harness
    from immutable_infra.settings import Settings

    tmp = tmp_path_factory.mktemp("plan-stream")
    shutil.copytree(TEST_GROUPS, tmp / "groups")
    (tmp / "groups" / "tiny" / "zones.tf").write_text(
        'data "aws_availability_zones" "here" {\n  state = "available"\n}\n\n'
        'output "zones" {\n  value = data.aws_availability_zones.here.names\n}\n')
    h = Harness(Settings(groups=["tiny"], groups_dir=tmp / "groups", aws_endpoint=moto_server.url,
                         run_id="stream-" + uuid.uuid4().hex[:8], home=tmp / "home"))
    try:
        h.up(["tiny"])
        yield h
    finally:
        assert not h.teardown()


def _both(h) -> tuple[Plan, Plan]:
    """The refresh-only plan as the drift check gets it, and the same plan shown from its planfile."""
    tf = h.deployer.terraform("tiny")
    return Plan.from_json(tf.refresh_plan()), Plan.from_json(tf.plan(out="shown.tfplan", refresh_only=True))


def _verdict(plan: Plan) -> list[tuple[str, str, str]]:
    findings, _ = find_drift(plan, "tiny", state=[] if plan.from_stream else plan.prior_resources())
    return sorted((f.address, f.detail["attribute"], f.detail["classification"]) for f in findings)


def test_out_of_band_changes_are_caught_exactly_as_the_planfile_shows_them(applied_tiny):
    h = applied_tiny
    streamed, shown = _both(h)
    assert streamed.from_stream and not shown.from_stream and shown.drift == ()
    assert _verdict(streamed) == _verdict(shown) == []
    assert verify.drift(h, "tiny").quiet and verify.drift(h, "tiny").findings == []

    ids = {r.address: r.aws_id for r in shown.prior_resources()}
    ec2 = h.sandbox.client("ec2", h.run.groups["tiny"].region)
    steps = [
        ("a tag", lambda: ec2.create_tags(Resources=[ids["aws_subnet.a"]], Tags=[{"Key": "Tier", "Value": "public"}]),
         ("aws_subnet.a", "tags.Tier", "drift")),
        ("an attribute", lambda: ec2.modify_vpc_attribute(VpcId=ids["aws_vpc.this"],
                                                          EnableDnsHostnames={"Value": True}),
         ("aws_vpc.this", "enable_dns_hostnames", "drift")),
        ("a deleted resource", lambda: ec2.delete_security_group(GroupId=ids["aws_security_group.ssh"]),
         ("aws_security_group.ssh", "", "missing")),
    ]
    for what, change, expected in steps:
        change()
        streamed, shown = _both(h)
        assert not streamed.from_stream, f"{what}: the stream must send the drift check to the planfile"
        assert _verdict(streamed) == _verdict(shown), what
        assert expected in _verdict(streamed), what
        result = verify.drift(h, "tiny")
        assert not result.quiet and expected in [
            (f.address, f.detail["attribute"], f.detail["classification"]) for f in result.findings], what


def _vpc(h) -> dict:
    """aws_vpc.this as the state has it now."""
    resources = h.deployer.terraform("tiny").state()["values"]["root_module"]["resources"]
    return next(r["values"] for r in resources if r["address"] == "aws_vpc.this")


def test_a_proven_settle_takes_in_what_the_proof_read_and_nothing_after_it(applied_tiny):
    """A chaos settle applies the proof's saved refresh-only plan: the state takes exactly what the proof read
    (a change made after the proof stays drift, where a refresh-only apply would hide it); once the state has
    changed since the plan, Terraform refuses the stale plan and the settle reads AWS anew."""
    h = applied_tiny
    said: list[str] = []
    h.say = said.append
    vpc_id = _vpc(h)["id"]
    ec2 = h.sandbox.client("ec2", h.run.groups["tiny"].region)

    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Proven", "Value": "yes"}])
    proof = verify.drift(h, "tiny")
    assert not proof.quiet
    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Later", "Value": "after-the-proof"}])
    h.settle("tiny", proven_plan=True)
    assert "[tiny] settling: applying the proof's refresh-only plan" in said
    tags = _vpc(h)["tags"]
    assert tags.get("Proven") == "yes" and "Later" not in tags
    assert ("aws_vpc.this", "tags.Later", "drift") in _verdict(Plan.from_json(
        h.deployer.terraform("tiny").plan(out="shown.tfplan", refresh_only=True)))

    assert not verify.drift(h, "tiny").quiet  # saves a plan with Later in it ...
    h.repair("tiny", settle=False)  # ... which this apply makes stale (and it removes both tags)
    h.settle("tiny", proven_plan=True)
    assert any("plan is stale" in line for line in said), said
    assert verify.drift(h, "tiny").quiet and "Later" not in (_vpc(h)["tags"] or {})
