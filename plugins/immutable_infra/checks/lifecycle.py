"""Lifecycle checks: idempotent apply, instance tags, outputs that dependents consume."""

from __future__ import annotations

from typing import Any, Iterable

from immutable_infra.catalog import Group
from immutable_infra.findings import Finding

QUIET_ACTIONS = ({"no-op"}, {"read"})


def find_pending_changes(group: str, plan: dict[str, Any]) -> list[Finding]:
    """Every change a plan proposes right after apply (Terraform's ApplyAndIdempotent)."""
    findings = []
    for rc in plan.get("resource_changes") or []:
        actions = rc.get("change", {}).get("actions", [])
        if set(actions) in QUIET_ACTIONS or rc.get("mode") == "data":
            continue
        before = rc["change"].get("before") or {}
        after = rc["change"].get("after") or {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        findings.append(Finding(
            check="idempotent", group=group, address=rc["address"], aws_id=str(before.get("id") or ""),
            expected="no change", found=f"{'+'.join(actions)} ({', '.join(changed[:6]) or 'new'})",
            detail={"actions": actions, "attributes": changed},
        ))
    return findings


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags") or []}


def find_untagged_instances(group: str, instances: Iterable[dict[str, Any]],
                            require_group_tag: bool = True) -> list[Finding]:
    """Instances without a Role tag, or (``require_group_tag``: a run's instances) whose Group tag is not their group."""
    findings = []
    for inst in instances:
        tags = _tags(inst)
        if not tags.get("Role"):
            findings.append(Finding("tags", group, "", inst["InstanceId"], "a Role tag", "none"))
        if require_group_tag and tags.get("Group") != group:
            findings.append(Finding("tags", group, "", inst["InstanceId"], f"Group={group}", f"Group={tags.get('Group')}"))
    return findings


def find_missing_consumed_outputs(group: str, outputs: dict[str, Any], consumers: Iterable[Group]) -> list[Finding]:
    """Outputs of ``group`` that another group's config takes as inputs but that do not exist."""
    findings = []
    for consumer in consumers:
        for item in consumer.inputs:
            if item.group == group and item.output not in outputs:
                findings.append(Finding(
                    "outputs", group, f"output.{item.output}", "",
                    f"output {item.output} (input {item.variable} of {consumer.name})", "missing",
                ))
    return findings
