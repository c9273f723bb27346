"""Tests of audit_history.py and the finding ids in findings.py: audit lines in history.jsonl, what is new and what
was fixed since the previous audit, and the reporter writing them (summary.json, summary.md, drift-trend.png).
All on recorded data: milliseconds, no AWS."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from immutable_infra.audit_history import (
    DEPLOYED,
    Changes,
    audit_entry,
    audit_record,
    audit_series,
    changes_since_previous,
    compare,
    previous_audit,
    target_of,
)
from immutable_infra.findings import Finding, finding_id, finding_kind
from immutable_infra.history import HistoryError, append_history, history_entry, read_history
from immutable_infra.report import Reporter, render_markdown

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
G = "prd-sg-slave"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def drift(address="aws_instance.micro[0]", aws_id="i-1", attribute="instance_type", state="t3.micro", live="t3.large"):
    return Finding("drift", G, address, aws_id, f"{attribute} = {state!r} (state)", f"{attribute} = {live!r} (live)",
                   {"address": address, "aws_id": aws_id, "attribute": attribute, "state": state, "live": live,
                    "classification": "drift", "reason": ""})


def missing(address="aws_instance.proxy[0]", aws_id="i-2"):
    return Finding("drift", G, address, aws_id, "present in AWS (it is in the state)",
                   "missing: deleted outside Terraform",
                   {"address": address, "aws_id": aws_id, "attribute": "", "state": aws_id, "live": None,
                    "classification": "missing", "reason": "aws_instance in state, gone from AWS"})


def unmanaged(aws_id="i-rogue"):
    return Finding("unmanaged", G, "", aws_id, "every resource in the group's VPCs managed by its Terraform",
                   f"unmanaged instance {aws_id} in vpc-1", {"type": "instances", "id": aws_id, "where": "vpc-1"})


def sg_rule(rule="tcp 22 from 0.0.0.0/0"):
    return Finding("unmanaged", G, "aws_security_group.proxy", "sg-1",
                   "only the rules its aws_security_group_rule resources declare",
                   f"unmanaged security group rule on sg-1: {rule}", {"type": "security_group_rules", "rule": rule})


def role(iid="i-3", expected="security groups with Purpose web", found="missing Purpose web"):
    return Finding("roles", G, "", iid, expected, found, {"role": "reverse-proxy", "security_groups": ["sg-9"]})


def flow(component="aws_route_table.public", flow="ops-to-marathon", code="NO_ROUTE"):
    return Finding("reachability", G, component, "rtb-1", "reachable", f"{code}: no route at rtb-1",
                   {"flow": flow, "code": code, "component_type": "route table"})


# ---------------------------------------------------------------- finding ids


def test_the_same_fault_seen_twice_has_the_same_id():
    # the live value, the AWS id of a replaced instance and the words of `found` do not enter the id
    assert drift().id == drift(live="t3.xlarge", aws_id="i-new").id == "drift:prd-sg-slave:aws_instance.micro[0]:instance_type"
    assert finding_id(drift().to_dict()) == drift().id  # recorded dicts (summary.json) give the same id
    assert missing().id == "drift:prd-sg-slave:aws_instance.proxy[0]:missing"
    assert flow().id == flow().id and role().id == role(found="missing Purpose web, admin").id


def test_different_faults_have_different_ids():
    ids = [drift().id, drift(attribute="tags.Role").id, drift(address="aws_instance.micro[1]").id, missing().id,
           unmanaged().id, unmanaged("i-other").id, sg_rule().id, sg_rule("tcp 3389 from 0.0.0.0/0").id,
           role().id, role(expected="ingress open on 80, 443").id, role(iid="i-4").id,
           flow().id, flow(code="SG_DENY").id, flow(flow="ops-to-registry").id,
           Finding("drift", "prd-sg-master", "aws_instance.micro[0]", "i-1", "x", "y", {"attribute": "instance_type"}).id]
    assert len(set(ids)) == len(ids)


def test_the_id_names_check_group_place_and_kind():
    assert unmanaged().id == "unmanaged:prd-sg-slave:i-rogue:every resource in the group's VPCs managed by its Terraform"
    assert sg_rule().id == "unmanaged:prd-sg-slave:aws_security_group.proxy:tcp 22 from 0.0.0.0/0"
    assert flow().id == "reachability:prd-sg-slave:aws_route_table.public:ops-to-marathon/NO_ROUTE"
    assert finding_kind(Finding("roles", G, "", "", "2 instance(s)\n of role x", "1", {"role": "x"})) == "2 instance(s) of role x"


def test_the_reporter_records_each_findings_id(tmp_path: Path):
    r = Reporter(tmp_path)
    r.findings(G, "drift", [drift()])
    assert r.checks[G]["drift"].findings[0]["id"] == drift().id


# ---------------------------------------------------------------- entries


def checks(verdicts: dict[str, str], *findings: Finding) -> dict:
    """A group's `checks` as summary.json has them."""
    out = {c: {"verdict": v, "tests": [], "findings": [], "tables": {}} for c, v in verdicts.items()}
    for f in findings:
        out[f.check]["findings"].append({**f.to_dict(), "id": f.id})
    return out


ALL_LOOKED = {"drift": "fail", "unmanaged": "fail", "roles": "pass", "reachability": "pass", "mutation": "pass"}


def test_audit_record_counts_and_ids_from_the_summary():
    rec = audit_record(checks(ALL_LOOKED, drift(), missing(), unmanaged(), sg_rule(), sg_rule()))
    assert rec == {
        "drift_count": 2, "unmanaged_count": 3, "verdicts": ALL_LOOKED,
        "findings": sorted({drift().id, missing().id, unmanaged().id, sg_rule().id}),
    }


@pytest.mark.parametrize("verdict", ["skip", "error", "not-run"])
def test_a_check_that_did_not_look_has_no_count(verdict):
    rec = audit_record(checks({"drift": verdict, "roles": "pass"}))
    assert rec["drift_count"] is None  # never 0: nobody looked
    assert rec["unmanaged_count"] is None  # no such check in the session at all
    assert audit_record(checks({"drift": "pass", "unmanaged": "pass"}))["drift_count"] == 0


def test_audit_entry_shape():
    rec = audit_record(checks(ALL_LOOKED, drift(), unmanaged()))
    e = audit_entry("run:aud1", "aud1", "9f3c", {G: rec}, time=dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    assert e == {"format": 1, "kind": "audit", "time": "2026-05-01T04:00:00+00:00", "target": "run:aud1",
                 "run_id": "aud1", "commit": "9f3c", "groups": {G: rec}}
    json.dumps(e)  # a JSON line


@pytest.mark.parametrize(("record", "message"), [
    ({"verdicts": {"drift": "ok"}}, "verdicts must be one of"),
    ({"drift_count": -1}, "drift_count must be a count"),
    ({"unmanaged_count": True}, "unmanaged_count must be a count"),
    ({"findings": "drift:a"}, "findings must be a list of finding ids"),
    ({"findings": [""]}, "findings must be a list of finding ids"),
])
def test_audit_entry_refuses_bad_values(record, message):
    with pytest.raises(HistoryError, match=f"audit entry for group g: {message}"):
        audit_entry(DEPLOYED, None, None, {"g": record})


def test_targets():
    assert target_of(None) == "deployed" and target_of("") == "deployed" and target_of("aud1") == "run:aud1"


# ---------------------------------------------------------------- new and fixed


def line(i: int, target: str, **groups: dict) -> dict:
    return audit_entry(target, None, f"c{i}", {g.replace("_", "-"): r for g, r in groups.items()},
                       time=T0 + dt.timedelta(hours=i))


def test_first_audit_of_a_group():
    c = compare(G, None, audit_record(checks(ALL_LOOKED, drift())))
    assert c == Changes(G, first=True) and c.sentence() == "first audit of prd-sg-slave"


def test_new_and_fixed_between_two_audits():
    before = audit_record(checks(ALL_LOOKED, drift(), unmanaged(), flow()))
    now = audit_record(checks(ALL_LOOKED, drift(live="t3.2xlarge"), missing(), flow(code="SG_DENY")))
    c = compare(G, before, now, {"time": "2026-05-01T02:00:00+00:00", "commit": "abc"})
    assert c.new == sorted([missing().id, flow(code="SG_DENY").id])
    assert c.fixed == sorted([unmanaged().id, flow().id])
    assert drift().id not in c.new + c.fixed  # still there: neither new nor fixed
    assert c.not_compared == {} and not c.first
    assert c.previous_time == "2026-05-01T02:00:00+00:00" and c.previous_commit == "abc"
    assert c.sentence() == "prd-sg-slave since the audit of 2026-05-01T02:00:00+00:00: 2 new, 2 fixed"


def test_a_check_that_did_not_look_is_not_compared_and_nothing_of_it_reads_as_fixed():
    before = audit_record(checks(ALL_LOOKED, drift(), unmanaged()))
    now = audit_record(checks({**ALL_LOOKED, "drift": "error", "reachability": "skip"}, unmanaged()))
    c = compare(G, before, now)
    assert c.fixed == [] and c.new == []
    assert c.not_compared == {"drift": "error in this audit", "reachability": "skip in this audit"}
    # and the other way round: a finding of a check that did not look last time is not "new"
    c = compare(G, now, before)
    assert c.new == [] and c.not_compared == {"drift": "error in the previous audit",
                                              "reachability": "skip in the previous audit"}
    assert c.sentence().endswith("not compared: drift (error in the previous audit), "
                                 "reachability (skip in the previous audit)")


def test_previous_audit_is_the_latest_of_the_same_target_with_the_group():
    a = audit_record(checks(ALL_LOOKED, drift()))
    b = audit_record(checks(ALL_LOOKED))
    history = [
        history_entry("r1", None, {G: {"rebuild_seconds": 70}}, time=T0 + dt.timedelta(hours=9)),  # a run line
        line(1, DEPLOYED, prd_sg_slave=a),
        line(3, DEPLOYED, prd_sg_slave=b),
        line(2, DEPLOYED, prd_sg_slave=a),  # older, though later in the file
        line(4, "run:aud1", prd_sg_slave=a),  # another target
        line(5, DEPLOYED, ops_sg=a),  # another group
        {"kind": "audit", "time": "garbage", "target": DEPLOYED, "groups": {G: a}},
        {"kind": "audit", "time": (T0 + dt.timedelta(hours=8)).isoformat(), "target": DEPLOYED, "groups": {G: "x"}},
    ]
    entry, record = previous_audit(history, G, DEPLOYED)
    assert entry["commit"] == "c3" and record == b
    assert previous_audit(history, G, "run:aud1")[0]["commit"] == "c4"
    assert previous_audit(history, "prd-sg-master", DEPLOYED) is None
    assert previous_audit([], G, DEPLOYED) is None


def test_same_time_the_later_line_wins():
    history = [line(1, DEPLOYED, g=audit_record(checks(ALL_LOOKED))), line(1, DEPLOYED, g=audit_record(checks(ALL_LOOKED, drift())))]
    assert previous_audit(history, "g", DEPLOYED)[1]["findings"] == [drift().id]


def test_changes_since_previous_for_each_group():
    history = [line(1, DEPLOYED, prd_sg_slave=audit_record(checks(ALL_LOOKED, drift())))]
    got = changes_since_previous(history, DEPLOYED, {G: audit_record(checks(ALL_LOOKED)),
                                                     "prd-sg-master": audit_record(checks(ALL_LOOKED))})
    assert got[G].fixed == [drift().id] and got["prd-sg-master"].first


def test_audit_series_per_group_and_target_keeps_uncounted_points_as_none():
    history = [
        line(2, DEPLOYED, a={"drift_count": 3, "unmanaged_count": 1}),
        line(0, DEPLOYED, a={"drift_count": 1, "unmanaged_count": None}, b={"drift_count": 0, "unmanaged_count": 0}),
        line(1, "run:aud1", a={"drift_count": 7, "unmanaged_count": 7}),
        history_entry("r1", None, {"a": {"rebuild_seconds": 70, "drift_count": 99}}, time=T0),  # a run: not an audit
    ]
    s = audit_series(history)
    assert set(s) == {"a", "b", "a (run aud1)"}
    assert s["a"]["drift_count"] == [(T0, 1), (T0 + dt.timedelta(hours=2), 3)]
    assert s["a"]["unmanaged_count"] == [(T0, None), (T0 + dt.timedelta(hours=2), 1)]  # None: nobody counted
    assert s["a (run aud1)"]["drift_count"] == [(T0 + dt.timedelta(hours=1), 7)]


# ---------------------------------------------------------------- the reporter writes it


class Run:  # the little of ephemeral.Run that summary reads
    keep, groups = False, {}

    def __init__(self, order):
        self.id, self.order = "aud1", order


def audit_session(reports: Path, *found: Finding, drift_verdict: str = "fail", target: str = "run:aud1") -> tuple[Reporter, dict]:
    """One audit session on recorded outcomes: prd-sg-slave tested, ops-sg only a dependency in the run."""
    r = Reporter(reports)
    for check, outcome in (("drift", {"fail": "failed", "pass": "passed", "error": "error"}[drift_verdict]),
                           ("unmanaged", "failed" if any(f.check == "unmanaged" for f in found) else "passed"),
                           ("roles", "passed")):
        r.current_test = f"suites/test_{check}.py::test_{check}[{G}]"
        r.findings(G, check, [f for f in found if f.check == check])
        r.outcome(G, outcome, nodeid=r.current_test, checks=[check])
    r.current_test = None
    summary = r.summary(Run(["ops-sg", G]), 1 if found else 0, [])
    r.write(summary, audit_trail=False, audit=target)
    return r, json.loads((reports / "summary.json").read_text())


def test_two_audits_leave_two_audit_lines_a_drift_trend_and_say_what_changed(tmp_path: Path):
    reports = tmp_path / "reports"
    r1, s1 = audit_session(reports, drift(), unmanaged())
    assert s1["audit"] == {"target": "run:aud1", "groups": {G: Changes(G, first=True).to_dict()}}  # not ops-sg
    assert "- prd-sg-slave: first audit of prd-sg-slave." in (reports / "summary.md").read_text()
    assert r1.audit_changes[G].first

    r2, s2 = audit_session(reports, drift(live="t3.xlarge"), missing())
    history = read_history(reports / "history.jsonl")
    assert [e["kind"] for e in history] == ["audit", "audit"]
    assert history[1]["groups"][G] == {"drift_count": 2, "unmanaged_count": 0,
                                       "verdicts": {"drift": "fail", "unmanaged": "pass", "roles": "pass"},
                                       "findings": sorted([drift().id, missing().id])}
    assert set(history[1]["groups"]) == {G} and history[1]["target"] == "run:aud1" and history[1]["run_id"] == "aud1"
    changes = s2["audit"]["groups"][G]
    assert changes["new"] == [missing().id] and changes["fixed"] == [unmanaged().id] and not changes["first"]
    assert changes["previous_time"] == history[0]["time"]
    md = (reports / "summary.md").read_text()
    assert "## Since the previous audit (run aud1)" in md
    assert f"- prd-sg-slave: 1 new, 1 fixed since the audit of {history[0]['time']}." in md
    assert (f"  - NEW `{missing().id}`: aws_instance.proxy[0] (i-2): expected present in AWS (it is in the state), "
            "found missing: deleted outside Terraform") in md
    assert f"  - FIXED `{unmanaged().id}`" in md
    png = reports / "drift-trend.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png in r2.written and reports / "history.jsonl" in r2.written
    assert not (reports / "rebuild-trend.png").exists()  # an audit draws no rebuild trend


def test_an_audit_whose_drift_check_errored_records_no_count_and_fixes_nothing(tmp_path: Path):
    reports = tmp_path / "reports"
    audit_session(reports, drift(), target=DEPLOYED)
    _, s2 = audit_session(reports, drift_verdict="error", target=DEPLOYED)
    last = read_history(reports / "history.jsonl")[-1]
    assert last["groups"][G]["drift_count"] is None and last["run_id"] is None and last["target"] == "deployed"
    changes = s2["audit"]["groups"][G]
    assert changes["fixed"] == [] and changes["not_compared"] == {"drift": "error in this audit"}
    md = (reports / "summary.md").read_text()
    assert "## Since the previous audit (the deployed groups)" in md and "not compared: drift (error in this audit)" in md


def test_run_sessions_write_no_audit_line_and_audits_no_run_line(tmp_path: Path):
    reports = tmp_path / "reports"
    r = Reporter(reports)
    r.outcome(G, "passed", nodeid="t::a", checks=["drift"])
    r.write(r.summary(Run([G]), 0, []), audit_trail=True)
    audit_session(reports)
    assert [e["kind"] for e in read_history(reports / "history.jsonl")] == ["run", "audit"]
    assert "Since the previous audit" not in render_markdown(r.summary(Run([G]), 0, []))
