"""Mutation: servers are replaced, never changed in place.

Two views of the same invariant:

- in the plan: an ``update`` of a resource of an immutable type is a
  finding naming the attributes that would change in place; replacements
  (``delete``/``create`` in either order) are what we want and are listed by
  ``find_replacements`` with Terraform's reason;
- live: a fingerprint of each instance taken after apply and again later;
  any attribute that differs on the *same* instance id is a mutation. An
  instance that is gone is not a mutation (the drift check reports it), and
  a different id at the same address is a replacement.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from immutable_infra.findings import Finding
from immutable_infra.plan import Plan, leaf_diff, path_str, unknown_paths

CHECK = "mutation"

#: Resource types that must be replaced, never updated in place.
DEFAULT_IMMUTABLE_TYPES: frozenset[str] = frozenset(
    {"aws_instance", "aws_launch_configuration", "aws_launch_template"}
)

#: Paths that are never metadata, whatever a group's allow-list says: the
#: Role tag decides which playbook configured the server.
NEVER_METADATA: tuple[str, ...] = ("tags.Role", "tags_all.Role")

#: Marker for an attribute whose new value is known only after apply.
UNKNOWN = "(known after apply)"


def _is_metadata(path: str, metadata_attributes: Iterable[str]) -> bool:
    if path in NEVER_METADATA:
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in metadata_attributes)


def changed_attributes(before: Any, after: Any, after_unknown: Any = None) -> list[dict[str, Any]]:
    """Attribute-level differences of one change: ``[{path, before, after}]``, sorted by path."""
    rows = {path_str(p): {"path": path_str(p), "before": b, "after": a} for p, b, a in leaf_diff(before, after)}
    for p in unknown_paths(after_unknown):
        name = path_str(p)
        old = _get(before, p)
        rows[name] = {"path": name, "before": old, "after": UNKNOWN}
    return [rows[k] for k in sorted(rows)]


def _get(values: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if isinstance(values, Mapping):
            values = values.get(key)
        elif isinstance(values, list) and isinstance(key, int) and key < len(values):
            values = values[key]
        else:
            return None
    return values


def find_mutations(
    plan: Plan,
    group: str,
    immutable_types: Iterable[str] = DEFAULT_IMMUTABLE_TYPES,
    metadata_attributes: Iterable[str] = (),
) -> list[Finding]:
    """In-place updates of immutable resources in ``plan``, one finding per resource.

    ``metadata_attributes`` are glob patterns of attribute paths a group
    allows to change in place (``tags.Owner``, ``tags_all.Owner``); the Role
    tag is never metadata. An update that changes only metadata passes.
    """
    types = frozenset(immutable_types)
    allowed = tuple(metadata_attributes)
    findings = []
    for change in plan.changes:
        if change.mode != "managed" or change.type not in types or "update" not in change.actions:
            continue
        if change.is_replace:
            continue
        attributes = [
            row
            for row in changed_attributes(change.before, change.after, change.after_unknown)
            if not _is_metadata(row["path"], allowed)
        ]
        if not attributes:
            continue
        names = ", ".join(row["path"] for row in attributes)
        findings.append(
            Finding(
                check=CHECK,
                group=group,
                address=change.address,
                aws_id=change.aws_id,
                expected=f"{change.type} replaced (immutable), never updated in place",
                found=f"in-place update of {names}",
                detail={"actions": list(change.actions), "attributes": attributes},
            )
        )
    return findings


def find_replacements(plan: Plan) -> list[dict[str, Any]]:
    """Planned replacements, with Terraform's reason: what an immutable change should look like."""
    return [
        {
            "address": c.address,
            "type": c.type,
            "aws_id": c.aws_id,
            "actions": list(c.actions),
            "action_reason": c.action_reason,
            "replace_paths": [path_str(tuple(p)) for p in c.replace_paths],
        }
        for c in plan.changes
        if c.is_replace
    ]


def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in items or () if "Key" in t}


def instance_security_group_ids(instance: Mapping[str, Any]) -> list[str]:
    """Sorted security group ids of an instance: its own list and its primary interface's.

    moto (before compat fix 1) reports groups given on the primary network
    interface only there, so both places are read.
    """
    ids = {g["GroupId"] for g in instance.get("SecurityGroups") or () if g.get("GroupId")}
    for eni in instance.get("NetworkInterfaces") or ():
        if (eni.get("Attachment") or {}).get("DeviceIndex", 0) == 0:
            ids |= {g["GroupId"] for g in eni.get("Groups") or () if g.get("GroupId")}
    return sorted(ids)


def fingerprint_instance(instance: Mapping[str, Any], ignore_tags: Iterable[str] = ()) -> dict[str, Any]:
    """What must not change on a running instance, from a ``describe_instances`` entry.

    ``user_data_sha256`` is the sha256 of the base64 user data when the dict
    carries it (``UserData`` as from ``describe_instance_attribute``, either
    ``{"Value": b64}`` or the string), else None. All tags are kept, Role
    included, except ``ignore_tags``.
    """
    user_data = instance.get("UserData")
    if isinstance(user_data, Mapping):
        user_data = user_data.get("Value")
    skip = set(ignore_tags)
    return {
        "image_id": instance.get("ImageId"),
        "instance_type": instance.get("InstanceType"),
        "user_data_sha256": hashlib.sha256(user_data.encode()).hexdigest() if user_data else None,
        "subnet_id": instance.get("SubnetId"),
        "security_group_ids": instance_security_group_ids(instance),
        "iam_instance_profile_arn": (instance.get("IamInstanceProfile") or {}).get("Arn"),
        "key_name": instance.get("KeyName"),
        "tags": {k: v for k, v in sorted(_tags(instance.get("Tags")).items()) if k not in skip},
    }


def find_fingerprint_changes(
    group: str,
    recorded: Mapping[str, Mapping[str, Any]],
    live: Mapping[str, Mapping[str, Any]],
) -> list[Finding]:
    """Attributes of the same instance that changed since they were recorded.

    ``recorded`` maps address -> fingerprint plus ``id`` (the instance id);
    ``live`` maps address -> fingerprint (plus ``id`` when known). One finding
    per changed attribute; tags compare key by key (``tags.Role``). A missing
    live instance is not a mutation (drift reports it); a live instance with
    another id was replaced, which is allowed.
    """
    findings = []
    for address in sorted(recorded):
        before = recorded[address]
        after = live.get(address)
        if after is None:
            continue
        instance_id = str(before.get("id", ""))
        if after.get("id") and instance_id and after["id"] != instance_id:
            continue
        for path, old, new in leaf_diff(
            {k: v for k, v in before.items() if k != "id"}, {k: v for k, v in after.items() if k != "id"}
        ):
            name = path_str(path)
            findings.append(
                Finding(
                    check=CHECK,
                    group=group,
                    address=address,
                    aws_id=instance_id,
                    expected=f"{name} = {old!r} (as applied)",
                    found=f"{name} = {new!r} (changed in place)",
                    detail={"attribute": name, "recorded": old, "live": new},
                )
            )
    return findings
