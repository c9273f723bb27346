"""Rebuild: a destroyed and recreated group equals the original, within its time budget.

Plain functions over plain data (state JSON from ``show -json``, output
values, flow verdicts, timings). Nothing here touches Terraform, AWS or the
disk.

- parity of the rebuild: :func:`normalize_state` replaces what AWS generates
  anew on every create (ids, ARNs, addresses, DNS names, times, account ids)
  and what Terraform generates (names from ``name_prefix`` or
  ``resource.UniqueId``, timestamps inside names) by placeholders, so that :func:`compare_rebuild` can require the rebuilt
  group to equal the original resource by resource, attribute by attribute,
  with outputs of the same shape and the same flow verdicts.
- budget: :func:`check_budget` compares a :class:`RebuildTiming` with the
  group's ``rebuild_budget_seconds`` and names the slowest resources.

Terraform sets (``vpc_security_group_ids``, ``ingress``, Route53 ``records``)
appear in state JSON as lists ordered by a hash of their content, and that
content holds generated ids: the comparison therefore ignores the order of
list elements (a list that differs only by order is equal).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from immutable_infra.findings import Finding
from immutable_infra.plan import path_str, state_resources

CHECK = "rebuild"

ID = "<id>"
ARN = "<arn>"
IP = "<ip>"
TIME = "<time>"
DNS = "<dns>"
ACCOUNT = "<account>"
GENERATED = "<generated>"

#: Attributes whose value AWS generates on every create, and their placeholder.
GENERATED_ATTRIBUTES: dict[str, str] = {
    "id": ID,
    "arn": ARN,
    "owner_id": ACCOUNT,
    "instance_owner_id": ACCOUNT,
    "association_id": ID,
    "allocation_id": ID,
    "network_interface_id": ID,
    "primary_network_interface_id": ID,
    "private_ip": IP,
    "public_ip": IP,
    "public_dns": DNS,
    "private_dns": DNS,
    "dns_name": DNS,
    "zone_id": ID,
    "name_servers": DNS,
    "unique_id": ID,
    "creation_date": TIME,
}

#: Prefixes of generated AWS ids (``ami`` is left out: AMIs are inputs, baked by Packer).
ID_PREFIXES = (
    "vpc", "subnet", "sg", "sgr", "i", "rtb", "rtbassoc", "igw", "eigw", "nat", "eipalloc", "eipassoc",
    "eni", "eni-attach", "pcx", "acl", "aclassoc", "vol", "snap", "dopt", "vpce", "lt", "tgw",
    "tgw-attach", "cgw", "vgw", "vpn", "pl", "fl", "r",
)
_AWS_ID = re.compile(r"^(?:%s)-[0-9a-f]{8,17}$" % "|".join(re.escape(p) for p in sorted(ID_PREFIXES, key=len, reverse=True)))
_ZONE_ID = re.compile(r"^(?:/hostedzone/)?Z[A-Z0-9]{8,32}$")
_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_AWS_DNS = re.compile(r"^[A-Za-z0-9.-]+\.(?:amazonaws\.com(?:\.cn)?|compute\.internal|ec2\.internal)\.?$")
#: Terraform's unique suffix (``name_prefix``, ``resource.PrefixedUniqueId``): a UTC timestamp to the
#: 0.1 ms (yyyymmddhhmmss + 4 digits) and an 8-hex-digit counter, e.g. ``web-20261203140512345600000001``.
_UNIQUE_SUFFIX = re.compile(r"(?<![0-9])20\d{16}[0-9a-f]{8}$")
#: Timestamps written into names: ISO 8601 (``2026-12-03T14:05:12Z``) or compact (``20261203140512``).
_TIME_IN_TEXT = re.compile(
    r"(?<![0-9])(?:\d{4}-\d{2}-\d{2}[T_ ]?\d{2}[:-]?\d{2}(?:[:-]?\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|20\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:[01]\d|2[0-3])[0-5]\d[0-5]\d)(?![0-9])"
)


def normalize_value(value: Any) -> Any:
    """One value with generated identifiers replaced by placeholders, recursively.

    Maps and lists keep their keys and lengths (the *shape* stays); only
    non-empty strings that look generated change. CIDR blocks, names, tags
    and AMI ids are kept.
    """
    if isinstance(value, Mapping):
        return {key: normalize_attribute(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize_value(item) for item in value]
    if not isinstance(value, str) or not value:
        return value
    if _ARN.match(value):
        return ARN
    if _AWS_ID.match(value) or _ZONE_ID.match(value):
        return ID
    if _TIME.match(value):
        return TIME
    if _AWS_DNS.match(value):
        return DNS
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return normalize_generated_name(value)
    return IP


def normalize_generated_name(value: str) -> str:
    """A name with what Terraform generates in it replaced: the ``name_prefix`` unique suffix, timestamps.

    ``web-20261203140512345600000001`` -> ``web-<generated>``;
    ``backup-2026-12-03T14:05:12Z`` -> ``backup-<time>``. Other text stays.
    """
    value = _UNIQUE_SUFFIX.sub(GENERATED, value)
    return _TIME_IN_TEXT.sub(TIME, value)


def normalize_attribute(key: str, value: Any) -> Any:
    """The value of attribute ``key``, normalized by its name first, then by its content."""
    placeholder = GENERATED_ATTRIBUTES.get(key)
    if placeholder is not None:
        return _replace(value, placeholder)
    return normalize_value(value)


def _replace(value: Any, placeholder: str) -> Any:
    # Empty and null stay as they are: "no public IP" differs from "a public IP".
    if isinstance(value, list):
        return [_replace(item, placeholder) for item in value]
    if isinstance(value, Mapping):
        return {key: _replace(item, placeholder) for key, item in value.items()}
    if value is None or value == "" or isinstance(value, bool):
        return value
    return placeholder


def normalize_state(state_json: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The managed resources of a state, by address, with generated values replaced.

    A group destroyed and rebuilt within the same run normalizes to the same
    dict as the original (values that carry the run id stay equal).
    """
    return {res.address: normalize_value(dict(res.values)) for res in state_resources(state_json)}


# ---------------------------------------------------------------- comparison


def _canonical(value: Any) -> Any:
    """Lists sorted by their JSON text, recursively, so that set order does not count."""
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, default=str))
    return value


def _diff(before: Any, after: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any, Any]]:
    """Differing leaves of two canonical values: maps key by key, lists whole."""
    if before == after:
        return []
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            if key not in before:
                found.append((path + (key,), _ABSENT, after[key]))
            elif key not in after:
                found.append((path + (key,), before[key], _ABSENT))
            else:
                found += _diff(before[key], after[key], path + (key,))
        return found
    # Lists (sorted, as sets) differ as a whole: an index into a sorted list would mislead.
    return [(path, before, after)]


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def compare_states(group: str, original: Mapping[str, Mapping[str, Any]],
                   rebuilt: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """Findings between two *normalized* states: addresses, then attributes.

    A difference under ``tags_all`` that repeats one already found under
    ``tags`` is not reported twice.
    """
    findings: list[Finding] = []
    for address in sorted(set(original) - set(rebuilt)):
        findings.append(Finding(CHECK, group, address, "", "resource present (as before the rebuild)",
                                "resource missing after the rebuild"))
    for address in sorted(set(rebuilt) - set(original)):
        findings.append(Finding(CHECK, group, address, "", "no such resource (absent before the rebuild)",
                                "an extra resource after the rebuild"))
    for address in sorted(set(original) & set(rebuilt)):
        diffs = _diff(_canonical(original[address]), _canonical(rebuilt[address]))
        tag_paths = {path[1:] for path, _, _ in diffs if path[:1] == ("tags",)}
        for path, before, after in diffs:
            if path[:1] == ("tags_all",) and path[1:] in tag_paths:
                continue
            where = path_str(path)
            findings.append(Finding(
                CHECK, group, address, "",
                f"{where} = {_show(before)}", f"{where} = {_show(after)}",
                detail={"path": list(path), "original": None if before is _ABSENT else before,
                        "rebuilt": None if after is _ABSENT else after},
            ))
    return findings


def _unwrap_outputs(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Output values by name; accepts ``output -json`` items (``{"value": ..., "type": ...}``) too."""
    values: dict[str, Any] = {}
    for name, item in (outputs or {}).items():
        if isinstance(item, Mapping) and "value" in item and ("type" in item or "sensitive" in item):
            item = item["value"]
        values[name] = item
    return values


def value_shape(value: Any) -> Any:
    """The shape of a value: its type names, map keys and list lengths, without the values."""
    if isinstance(value, Mapping):
        return {key: value_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [value_shape(item) for item in value]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def describe_shape(shape: Any) -> str:
    """``["string", "string"]`` -> ``list of 2 string``; maps list their keys."""
    if isinstance(shape, Mapping):
        return "map {" + ", ".join(f"{k}: {describe_shape(v)}" for k, v in sorted(shape.items())) + "}"
    if isinstance(shape, list):
        if not shape:
            return "empty list"
        first = shape[0]
        if all(item == first for item in shape):
            return f"list of {len(shape)} {describe_shape(first)}"
        return "list [" + ", ".join(describe_shape(item) for item in shape) + "]"
    return str(shape)


def compare_outputs(group: str, original: Mapping[str, Any] | None,
                    rebuilt: Mapping[str, Any] | None) -> list[Finding]:
    """Outputs keep their names and shape (types, keys, lengths); their values may change."""
    before, after = _unwrap_outputs(original), _unwrap_outputs(rebuilt)
    findings: list[Finding] = []
    for name in sorted(set(before) | set(after)):
        address = f"output.{name}"
        if name not in after:
            findings.append(Finding(CHECK, group, address, "", "output present", "output missing after the rebuild"))
        elif name not in before:
            findings.append(Finding(CHECK, group, address, "", "no such output", "an extra output after the rebuild"))
        else:
            a, b = value_shape(before[name]), value_shape(after[name])
            if a != b:
                findings.append(Finding(CHECK, group, address, "", describe_shape(a), describe_shape(b),
                                        detail={"original_shape": a, "rebuilt_shape": b}))
    return findings


def _verdicts(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(v["flow"]): str(v["verdict"]) for v in verdicts}


def compare_verdicts(group: str, original: Iterable[Mapping[str, Any]],
                     rebuilt: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Every flow has the same verdict after the rebuild as before (items: ``{"flow", "verdict"}``)."""
    before, after = _verdicts(original), _verdicts(rebuilt)
    findings: list[Finding] = []
    for flow in sorted(set(before) | set(after)):
        expected = before.get(flow, "not analyzed")
        found = after.get(flow, "not analyzed")
        if expected != found:
            findings.append(Finding(CHECK, group, f"flow {flow}", "", f"verdict {expected}", f"verdict {found}"))
    return findings


def compare_rebuild(
    group: str,
    original_state: Mapping[str, Any] | None,
    rebuilt_state: Mapping[str, Any] | None,
    original_outputs: Mapping[str, Any] | None = None,
    rebuilt_outputs: Mapping[str, Any] | None = None,
    original_verdicts: Iterable[Mapping[str, Any]] | None = None,
    rebuilt_verdicts: Iterable[Mapping[str, Any]] | None = None,
) -> list[Finding]:
    """Findings where the rebuilt group differs from the original (empty: an identical rebuild).

    States are ``show -json`` state JSON, compared after :func:`normalize_state`;
    outputs (compared by shape) and flow verdicts are compared only when both
    sides are given.
    """
    findings = compare_states(group, normalize_state(original_state), normalize_state(rebuilt_state))
    if original_outputs is not None and rebuilt_outputs is not None:
        findings += compare_outputs(group, original_outputs, rebuilt_outputs)
    if original_verdicts is not None and rebuilt_verdicts is not None:
        findings += compare_verdicts(group, original_verdicts, rebuilt_verdicts)
    return findings


# ---------------------------------------------------------------- budget


@dataclass(frozen=True)
class RebuildTiming:
    """How long one destroy + apply of a group took, and each resource's create time."""

    destroy_seconds: float
    apply_seconds: float
    total_seconds: float
    resource_seconds: dict[str, float] = field(default_factory=dict)


def slowest(resource_seconds: Mapping[str, float], n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` slowest resources, slowest first (ties by address)."""
    return sorted(resource_seconds.items(), key=lambda kv: (-kv[1], kv[0]))[: max(n, 0)]


def check_budget(group: str, timing: RebuildTiming, budget_seconds: float | None) -> list[Finding]:
    """A finding when the rebuild took longer than the budget; none without a budget."""
    if budget_seconds is None or timing.total_seconds <= budget_seconds:
        return []
    found = f"rebuild {timing.total_seconds:.0f} s > budget {budget_seconds:.0f} s"
    top = slowest(timing.resource_seconds)
    if top:
        found += "; slowest: " + ", ".join(f"{address} {seconds:.0f} s" for address, seconds in top)
    return [Finding(
        CHECK, group, "", "", f"rebuild within {budget_seconds:.0f} s", found,
        detail={"destroy_seconds": timing.destroy_seconds, "apply_seconds": timing.apply_seconds,
                "total_seconds": timing.total_seconds, "budget_seconds": budget_seconds, "slowest": top},
    )]
