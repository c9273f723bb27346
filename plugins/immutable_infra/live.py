"""What runs now: describe_* data of a group's VPCs, addresses from state, instance fingerprints.

Read-only: every call here is a Describe/List call, so audits can use it.
"""

from __future__ import annotations

from typing import Any, Iterable

from immutable_infra.checks.mutation import fingerprint_instance
from immutable_infra.plan import state_resources
from immutable_infra.snapshot import merge_snapshots, take_snapshot


def group_vpc_ids(outputs: dict[str, Any] | None, state: dict[str, Any] | None = None) -> list[str]:
    """The VPCs a group owns.

    Discovered from its Terraform state: every ``aws_vpc`` instance, in the
    root module or any child module, under ``count`` or ``for_each``. An
    output ``vpc_ids`` (a list) or ``vpc_id`` still overrides the state, for
    groups that want to name their VPCs themselves. Sorted, without repeats.
    """
    outputs = outputs or {}
    named = outputs.get("vpc_ids") or ([outputs["vpc_id"]] if outputs.get("vpc_id") else [])
    if isinstance(named, str):
        named = [named]
    ids = [str(i) for i in named if i]
    if not ids:
        ids = [r.aws_id for r in state_resources(state) if r.type == "aws_vpc" and r.aws_id]
    return sorted(set(ids))


def describe_group(ec2: Any, vpc_ids: list[str], group: str, run_id: str | None = None) -> dict[str, Any]:
    """A snapshot of the group's VPCs plus what unmanaged-resource checks need.

    Also picks up live instances tagged ``Group=<group>`` outside those VPCs:
    with ``run_id``, only those of that run (``Run=<run_id>``); with
    ``run_id=""`` (a group audited as deployed), only those no run of this
    tool made (no ``Run`` tag): an ephemeral copy of the group is not
    production's. Terminated instances are gone, not the group's.
    """
    snap = take_snapshot(ec2, vpc_ids) if vpc_ids else {"instances": [], "region": ec2.meta.region_name}
    flt = [{"Name": "vpc-id", "Values": vpc_ids}] if vpc_ids else []
    snap["network_interfaces"] = (
        ec2.describe_network_interfaces(Filters=flt)["NetworkInterfaces"] if vpc_ids else []
    )
    snap.update(describe_vpc_extras(ec2, vpc_ids))
    tagged = ec2.describe_instances(Filters=[{"Name": "tag:Group", "Values": [group]}])["Reservations"]
    known = {i["InstanceId"] for i in snap.get("instances", [])}

    def ours(instance: dict[str, Any]) -> bool:
        if instance["InstanceId"] in known or (instance.get("State") or {}).get("Name") == "terminated":
            return False
        run = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}.get("Run")
        return run_id is None or (run or "") == run_id

    snap["instances"] = list(snap.get("instances", [])) + [i for r in tagged for i in r["Instances"] if ours(i)]
    snap["vpc_peering_connections"] = snap.get("peering_connections", [])
    return snap


def describe_vpc_extras(ec2: Any, vpc_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """VPC endpoints and flow logs of the VPCs (filtered here: moto has no ``vpc-id`` filter for endpoints)."""
    from immutable_infra.snapshot import _all, _plain

    if not vpc_ids:
        return {"vpc_endpoints": [], "flow_logs": []}
    wanted = set(vpc_ids)
    endpoints = [e for e in _all(ec2, "describe_vpc_endpoints", "VpcEndpoints") if e.get("VpcId") in wanted]
    logs = [f for f in _all(ec2, "describe_flow_logs", "FlowLogs") if f.get("ResourceId") in wanted]
    return {"vpc_endpoints": _plain(endpoints), "flow_logs": _plain(logs)}


def live_instances(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in snapshot.get("instances", []) if i.get("State", {}).get("Name") not in ("terminated", "shutting-down")]


def addresses_from_state(state: dict[str, Any]) -> dict[str, str]:
    """AWS id -> Terraform address, for naming components in findings."""
    out: dict[str, str] = {}
    for r in state_resources(state):
        if r.aws_id:
            out[str(r.aws_id)] = r.address
    return out


def instance_addresses(state: dict[str, Any]) -> dict[str, str]:
    """Terraform address -> instance id, for each aws_instance in the state."""
    return {r.address: str(r.aws_id) for r in state_resources(state) if r.type == "aws_instance" and r.aws_id}


def fingerprints(ec2: Any, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The defining attributes of each instance of the state, read live: address -> fingerprint (with ``id``)."""
    by_address = instance_addresses(state)
    if not by_address:
        return {}
    ids = list(by_address.values())
    found: dict[str, dict[str, Any]] = {}
    for r in ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": ids}])["Reservations"]:
        for inst in r["Instances"]:
            if inst.get("State", {}).get("Name") in ("terminated", "shutting-down"):
                continue
            try:
                data = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
                inst = {**inst, "UserData": data.get("UserData", {})}
            except Exception:  # noqa: BLE001 - user data is optional in some endpoints
                pass
            found[inst["InstanceId"]] = inst
    out = {}
    for address, iid in by_address.items():
        if iid in found:
            out[address] = {**fingerprint_instance(found[iid]), "id": iid}
    return out


def run_snapshot(clients: Iterable[tuple[Any, list[str]]]) -> dict[str, Any]:
    """One snapshot over several regions: (ec2 client, vpc ids) pairs."""
    return merge_snapshots([take_snapshot(ec2, vpcs) for ec2, vpcs in clients if vpcs])


def declared_flows(catalog: Any, group: str, applied: set[str], kind: str = "flows") -> tuple[list[Any], list[Any]]:
    """Flows (or isolation pairs) declared in any group config that touch ``group``.

    Returns (flows whose both ends are applied, flows with an end not applied).
    """
    from immutable_infra.flows import parse_flows

    flows, skipped = [], []
    for name in catalog.names():
        config = catalog.get(name)
        for flow in parse_flows(config.raw.get(kind, []), kind, name, str(config.config_file)):
            ends = {flow.source_group, flow.destination_group}
            if group not in ends:
                continue
            (flows if ends <= applied else skipped).append(flow)
    return flows, skipped
