"""Audit mode against a run brought up with `immutable-infra up`: healthy groups pass without a single write;
out-of-band changes made with boto3 make the named suites fail, naming the resource or the blocking component.

This is the slowest test module (it applies ops-sg, prd-sg-slave and prd-sg-master once, about 4 minutes,
and destroys them at the end); every fault is injected in one batch on disjoint resources, and audited once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest
from moto_recorder import recorder, writes

ROOT = Path(__file__).parent.parent
RUN = "aud1"
REGION = "ap-southeast-1"


def cli(server, *args, home):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "immutable_infra.cli", *args, "--aws-endpoint", server.url],
                          env=env, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("audit-home")
    up = cli(moto_server, "up", "prd-sg-master", "--run-id", RUN, home=home)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield home
    finally:
        down = cli(moto_server, "down", "--run-id", RUN, home=home)
        assert down.returncode == 0, down.stderr[-3000:]


@pytest.fixture(scope="module")
def audit_reports(tmp_path_factory):
    """One reports folder for every audit session of the module: the audit history builds up across them."""
    return tmp_path_factory.mktemp("audit-reports")


@pytest.fixture(scope="module")
def healthy_audit(deployed, moto_server, audit_reports, tmp_path_factory):
    """The first audit, of the healthy run, with moto's request recorder on; before any fault is injected."""
    recorder(moto_server, "reset-recording")
    recorder(moto_server, "start-recording")
    try:
        result, outcomes = audit(moto_server, deployed, tmp_path_factory.mktemp("healthy"), "healthy", audit_reports)
    finally:
        recorder(moto_server, "stop-recording")
    summary = json.loads((audit_reports / "summary.json").read_text())
    return result, outcomes, recorder(moto_server, "download-recording"), summary


def audit(server, home, tmp_path, name, reports):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    junit = tmp_path / f"{name}.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--group", "prd-sg-slave", "--group", "prd-sg-master",
         "--run-id", RUN, "--aws-endpoint", server.url, "--audit", "--reports-dir", str(reports), f"--junitxml={junit}"],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        state = "failed" if failure is not None else "error" if error is not None else "skipped" if skipped is not None else "passed"
        text = (failure if failure is not None else error if error is not None else skipped)
        outcomes[case.get("name")] = (state, (text.get("message", "") + (text.text or "")) if text is not None else "")
    return result, outcomes


def ec2():
    return boto3.client("ec2", region_name=REGION, endpoint_url=os.environ["AUDIT_ENDPOINT"],
                        aws_access_key_id="t", aws_secret_access_key="t")


def tagged(client, kind, **filters):
    flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()] + [{"Name": "tag:Run", "Values": [RUN]}]
    if kind == "instances":
        return [i for r in client.describe_instances(Filters=flt + [{"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
                for i in r["Instances"]]
    return {
        "security_groups": lambda: client.describe_security_groups(Filters=flt)["SecurityGroups"],
        "route_tables": lambda: client.describe_route_tables(Filters=flt)["RouteTables"],
        "network_acls": lambda: client.describe_network_acls(Filters=flt)["NetworkAcls"],
        "vpcs": lambda: client.describe_vpcs(Filters=flt)["Vpcs"],
        "subnets": lambda: client.describe_subnets(Filters=flt)["Subnets"],
    }[kind]()


def test_healthy_audit_passes_and_writes_nothing(healthy_audit):
    result, outcomes, recording, summary = healthy_audit
    failed = {k: v for k, v in outcomes.items() if v[0] in ("failed", "error")}
    assert not failed, result.stdout[-4000:]
    assert any(state == "passed" for state, _ in outcomes.values())
    assert outcomes["test_merge_gate_changes_nothing_in_place[prd-sg-slave]"][0] == "skipped"
    assert recording.strip(), "the recorder saw no request at all: the audit did not read AWS"
    assert writes(recording) == [], "an audit must never write to AWS"
    # the audit history starts: the first audit of each group says so (summary.json and the terminal)
    assert {g: c["first"] for g, c in summary["audit"]["groups"].items()} == {"prd-sg-slave": True, "prd-sg-master": True}
    assert "first audit of prd-sg-slave" in result.stdout and "first audit of prd-sg-master" in result.stdout


def test_disaster_drill_passes_and_reports_the_recovery_time(deployed, moto_server, tmp_path):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(deployed)}
    junit = tmp_path / "drill.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_disaster.py", "-p", "no:cacheprovider", "-s", "--group", "prd-sg-master",
         "--run-id", RUN, "--aws-endpoint", moto_server.url, "--reports-dir", str(tmp_path / "drill"), f"--junitxml={junit}"],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "prd-sg-master: recovered in" in result.stdout and "prd-sg-slave kept serving" in result.stdout
    assert 'name="recovery_seconds"' in junit.read_text()
    summary = json.loads((tmp_path / "drill" / "summary.json").read_text())
    assert summary["groups"]["prd-sg-master"]["checks"]["disaster"]["facts"]["recovery_seconds"] > 0


def test_out_of_band_changes_fail_the_named_suites(deployed, healthy_audit, audit_reports, moto_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_ENDPOINT", moto_server.url)
    c = ec2()
    by_role = lambda group, role: tagged(c, "instances", Group=group, Role=role)[0]  # noqa: E731

    # -- prd-sg-slave: the invariants (mutation, drift, roles, unmanaged) ---------------------------------
    micro = by_role("prd-sg-slave", "microservice")
    c.stop_instances(InstanceIds=[micro["InstanceId"]])
    c.modify_instance_attribute(InstanceId=micro["InstanceId"], InstanceType={"Value": "t3.large"})
    c.start_instances(InstanceIds=[micro["InstanceId"]])

    marathon = by_role("prd-sg-slave", "marathon-node")
    c.create_tags(Resources=[marathon["InstanceId"]], Tags=[{"Key": "Role", "Value": "admin"}])

    proxy = by_role("prd-sg-slave", "reverse-proxy")
    proxy_sg = proxy["SecurityGroups"][0]["GroupId"] if proxy["SecurityGroups"] else proxy["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
    c.authorize_security_group_ingress(GroupId=proxy_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    c.terminate_instances(InstanceIds=[proxy["InstanceId"]])

    private_subnet = tagged(c, "subnets", Group="prd-sg-slave", Tier="private")[0]
    rogue = c.run_instances(ImageId=micro["ImageId"], MinCount=1, MaxCount=1, InstanceType="t3.micro",
                            SubnetId=private_subnet["SubnetId"])["Instances"][0]["InstanceId"]
    try:
        check_faults(c, moto_server, deployed, tmp_path, audit_reports, micro, marathon, proxy, rogue)
    finally:
        c.terminate_instances(InstanceIds=[rogue])  # not managed by Terraform: `down` would not remove it


def check_faults(c, moto_server, deployed, tmp_path, reports, micro, marathon, proxy, rogue):
    by_role = lambda group, role: tagged(c, "instances", Group=group, Role=role)[0]  # noqa: E731

    slave_tables = [t for t in tagged(c, "route_tables", Group="prd-sg-slave")
                    if any(r.get("VpcPeeringConnectionId") for r in t["Routes"])]
    slave_table = slave_tables[0]
    slave_route = next(r for r in slave_table["Routes"] if r.get("VpcPeeringConnectionId"))
    c.delete_route(RouteTableId=slave_table["RouteTableId"], DestinationCidrBlock=slave_route["DestinationCidrBlock"])

    # -- prd-sg-master: reachability, each blocking component on a disjoint flow ---------------------------
    master_tables = tagged(c, "route_tables", Group="prd-sg-master")
    public_table = next(t for t in master_tables if any(r.get("GatewayId", "").startswith("igw-") for r in t["Routes"]))
    ops_cidr = "10.10.0.0/16"
    c.delete_route(RouteTableId=public_table["RouteTableId"], DestinationCidrBlock=ops_cidr)

    master_vpc = tagged(c, "vpcs", Group="prd-sg-master")[0]["VpcId"]
    slave_vpc = tagged(c, "vpcs", Group="prd-sg-slave")[0]["VpcId"]
    pcx = [p for p in c.describe_vpc_peering_connections()["VpcPeeringConnections"]
           if {p["RequesterVpcInfo"]["VpcId"], p["AccepterVpcInfo"]["VpcId"]} == {master_vpc, slave_vpc}
           and p["Status"]["Code"] == "active"][0]["VpcPeeringConnectionId"]
    c.delete_vpc_peering_connection(VpcPeeringConnectionId=pcx)

    marathon_m = by_role("prd-sg-master", "marathon-node")
    sg_ids = [g["GroupId"] for g in marathon_m["SecurityGroups"]] or [g["GroupId"] for g in marathon_m["NetworkInterfaces"][0]["Groups"]]
    revoked_sg = None
    for sg in c.describe_security_groups(GroupIds=sg_ids)["SecurityGroups"]:
        for perm in sg["IpPermissions"]:
            if perm.get("FromPort") == 5051 and any(r["CidrIp"] == ops_cidr for r in perm.get("IpRanges", [])):
                c.revoke_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=[
                    {"IpProtocol": "tcp", "FromPort": 5051, "ToPort": 5051, "IpRanges": [{"CidrIp": ops_cidr}]}])
                revoked_sg = sg["GroupId"]
    assert revoked_sg, "the seed's marathon-node security group should admit 5051 from ops-sg"

    acl = tagged(c, "network_acls", Group="prd-sg-master")[0]["NetworkAclId"]
    c.create_network_acl_entry(NetworkAclId=acl, RuleNumber=1, Protocol="6", RuleAction="deny", Egress=False,
                               CidrBlock="0.0.0.0/0", PortRange={"From": 22, "To": 22})

    result, outcomes = audit(moto_server, deployed, tmp_path, "faulty", reports)
    out = result.stdout

    def failed(test, *needles):
        state, text = outcomes[test]
        assert state == "failed", f"{test} should fail, got {state}\n{out[-3000:]}"
        for needle in needles:
            assert needle in text, f"{test} should name {needle!r}:\n{text[:3000]}"

    # issue acceptance: instance type (mutation, drift); Role tag (roles, drift); SSH to the world (drift);
    # terminated (drift: missing; roles: count); rogue instance (unmanaged; roles); route deleted (drift)
    failed("test_live_instances_match_their_fingerprint[prd-sg-slave]", micro["InstanceId"], "instance_type")
    failed("test_no_drift[prd-sg-slave]", "instance_type", "Role", "0.0.0.0/0", proxy["InstanceId"], slave_table["RouteTableId"])
    failed("test_instances_match_the_roles_catalog[prd-sg-slave]", marathon["InstanceId"], rogue, "reverse-proxy")
    failed("test_no_unmanaged_resources[prd-sg-slave]", rogue, "imports/prd-sg-slave/")
    # ... and the audit wrote the import block (and the configuration) that brings the rogue instance under Terraform
    imports = reports / "imports" / "prd-sg-slave"  # the audits share one reports folder (the history builds up)
    assert f'id = "{rogue}"' in (imports / "imports.tf").read_text()
    assert 'resource "aws_instance"' in (imports / "generated.tf").read_text(), (imports / "README.md").read_text()
    # reachability: each fault names its component
    failed("test_declared_flows_are_reachable[prd-sg-master]", public_table["RouteTableId"], revoked_sg, acl)
    failed("test_peerings_active_and_cidrs_disjoint[prd-sg-master]", pcx)

    check_audit_history(reports, result.stdout, micro, proxy, rogue, slave_table["RouteTableId"], public_table["RouteTableId"])


def check_audit_history(reports, out, micro, proxy, rogue, slave_rtb, master_rtb):
    """Two audits in a row (healthy, then faulty) into one reports folder: two audit lines, the drift trend, and the
    second summary naming what is new since the first, each fault by the id of the finding that names its AWS id."""
    from immutable_infra.history import read_history

    history = read_history(reports / "history.jsonl")
    assert [e.get("kind") for e in history] == ["audit", "audit"], history
    first, second = history
    assert first["target"] == second["target"] == f"run:{RUN}" and second["run_id"] == RUN
    for e in history:
        assert set(e["groups"]) == {"prd-sg-slave", "prd-sg-master"}  # not ops-sg: a dependency, not audited
    healthy, slave = first["groups"]["prd-sg-slave"], second["groups"]["prd-sg-slave"]
    assert (healthy["drift_count"], healthy["unmanaged_count"], healthy["findings"]) == (0, 0, [])
    assert slave["drift_count"] >= 5 and slave["unmanaged_count"] >= 1
    assert slave["verdicts"]["drift"] == slave["verdicts"]["unmanaged"] == slave["verdicts"]["roles"] == "fail"
    assert second["groups"]["prd-sg-master"]["verdicts"]["reachability"] == "fail"

    summary = json.loads((reports / "summary.json").read_text())

    def id_of(group, check, aws_id, **detail):
        found = [f for f in summary["groups"][group]["checks"][check]["findings"] if aws_id in f["aws_id"]  # r-rtb-…
                 and all(f["detail"].get(k) == v for k, v in detail.items())]
        assert found, f"no {check} finding on {aws_id} {detail} in summary.json"
        return found[0]["id"]

    faults = {
        "instance type": id_of("prd-sg-slave", "drift", micro["InstanceId"], attribute="instance_type"),
        "terminated proxy": id_of("prd-sg-slave", "drift", proxy["InstanceId"], classification="missing"),
        "rogue instance": id_of("prd-sg-slave", "unmanaged", rogue),
        "deleted route": id_of("prd-sg-slave", "drift", slave_rtb),
    }
    master_ids = second["groups"]["prd-sg-master"]["findings"]
    assert id_of("prd-sg-master", "reachability", master_rtb) in master_ids
    changes = summary["audit"]["groups"]["prd-sg-slave"]
    assert not changes["first"] and changes["previous_time"] == first["time"] and changes["fixed"] == []
    for fault, fid in faults.items():
        assert fid in slave["findings"], f"{fault}: {fid} not in the audit line"
        assert fid in changes["new"], f"{fault}: {fid} not new since the healthy audit: {changes}"
    assert summary["audit"]["groups"]["prd-sg-master"]["new"]

    png = reports / "drift-trend.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (reports / "summary.md").read_text()
    assert f"## Since the previous audit (run {RUN})" in md
    assert f"- prd-sg-slave: {len(changes['new'])} new, 0 fixed since the audit of {first['time']}" in md
    assert f"NEW `{faults['rogue instance']}`" in md
    assert f"prd-sg-slave since the audit of {first['time']}: {len(changes['new'])} new, 0 fixed" in out
    assert f"  new: {changes['new'][0]}" in out
