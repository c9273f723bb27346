"""Noise: differences a refresh reports that are not changes of the infrastructure.

After a clean apply, a refresh fills in or normalises some attributes
(DESIGN.md lists what was seen). Each known case is a ``NoiseRule``: the
resource type and attribute path it applies to (globs; ``a|b`` for
alternatives), the *shape* of the difference it accepts, and the reason,
written down. A rule is deliberately narrow: it names the exact shape of
the harmless difference so that a real change of the same attribute
(``"tcp"`` -> ``"17"``, ``{"Role": "a"}`` -> ``{"Role": "b"}``, an extra
ingress rule added out of band) never matches it.

Shapes get a ``Difference`` that carries, besides the two values, the whole
resource before and after and the other managed resources of the refreshed
state, so a rule like "this list is filled by separate rule resources" can
check that every extra entry really is one of ours.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from immutable_infra.plan import StateResource


@dataclass(frozen=True)
class Difference:
    """One attribute-level difference of one drifted resource."""

    resource_type: str
    address: str
    path: str
    before: Any
    after: Any
    resource_before: Mapping[str, Any] = field(default_factory=dict)
    resource_after: Mapping[str, Any] = field(default_factory=dict)
    state: Sequence[StateResource] = ()

    @property
    def resource_id(self) -> str:
        for values in (self.resource_after, self.resource_before):
            if isinstance(values, Mapping) and isinstance(values.get("id"), str):
                return values["id"]
        return ""

    def managed(self, resource_type: str) -> list[Mapping[str, Any]]:
        """Values of the managed resources of one type in the refreshed state."""
        return [r.values for r in self.state if r.type == resource_type]


Shape = Callable[[Difference], bool]


def _match(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))


@dataclass(frozen=True)
class NoiseRule:
    """A known harmless difference: where it occurs, its shape, and why it is harmless."""

    name: str
    resource_type: str
    path: str
    shape: Shape
    reason: str

    def matches(self, diff: Difference) -> bool:
        return (
            _match(self.resource_type, diff.resource_type)
            and _match(self.path, diff.path)
            and bool(self.shape(diff))
        )

    def __repr__(self) -> str:
        return (
            f"NoiseRule(name={self.name!r}, resource_type={self.resource_type!r}, path={self.path!r}, "
            f"shape={self.shape.__name__}, reason={self.reason!r})"
        )


def classify(diff: Difference, rules: Sequence[NoiseRule]) -> NoiseRule | None:
    """The first rule that explains ``diff`` as noise, or None (it is drift)."""
    return next((rule for rule in rules if rule.matches(diff)), None)


# -- shapes -----------------------------------------------------------------

_EMPTY: tuple[Any, ...] = (None, "", [], {})
_DEFAULTS: tuple[Any, ...] = (None, "", [], {}, 0, "0", False)

#: IANA protocol numbers for the names AWS and Terraform use interchangeably.
PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "all": "-1", "-1": "-1"}


def normalise_protocol(value: Any) -> str:
    text = str(value).lower() if value is not None else ""
    return PROTOCOL_NUMBERS.get(text, text)


def unset_to_empty(diff: Difference) -> bool:
    """Both sides empty: null, "", [] or {} (an unset value read back as its empty form)."""
    return diff.before in _EMPTY and diff.after in _EMPTY


def unset_to_default(diff: Difference) -> bool:
    """Unset before (null or ""), the type's zero value after (0, "0", false, "", [], {})."""
    return diff.before in (None, "") and diff.after in _DEFAULTS


def same_protocol(diff: Difference) -> bool:
    """The same protocol by name and by number ("tcp" and "6"); never two different protocols."""
    if diff.before is None or diff.after is None:
        return False
    return normalise_protocol(diff.before) == normalise_protocol(diff.after)


def pending_to_active(diff: Difference) -> bool:
    """A peering accepted after the requester was written: "pending-acceptance" -> "active"."""
    return diff.before == "pending-acceptance" and diff.after == "active"


def associated_with_managed(diff: Difference) -> bool:
    """An EIP's association fields filled in, when what it is associated with is ours.

    Unset before, a value after, and the EIP's network interface or instance
    belongs to a managed NAT gateway, instance or ``aws_eip_association``.
    An EIP moved to anything else out of band stays drift. A *changed*
    association (a value before and another after) is noise only when the
    EIP now sits on the managed NAT gateway that uses its allocation: a NAT
    gateway replaced by an apply (after ``nat_deleted``) gets a new interface,
    and the state keeps the old one's address fields until a refresh.
    """
    if diff.after in _EMPTY:
        return False
    after = diff.resource_after or {}
    if diff.before not in _EMPTY:
        eni = after.get("network_interface")
        return bool(eni) and any(
            v.get("allocation_id") == diff.resource_id and v.get("network_interface_id") == eni
            for v in diff.managed("aws_nat_gateway")
        )
    enis = {v.get("network_interface_id") for v in diff.managed("aws_nat_gateway")}
    enis |= {v.get("primary_network_interface_id") for v in diff.managed("aws_instance")}
    enis |= {v.get("id") for v in diff.managed("aws_network_interface")}
    instances = {v.get("id") for v in diff.managed("aws_instance")}
    allocations = {v.get("allocation_id") for v in diff.managed("aws_eip_association")}
    enis.discard(None)
    instances.discard(None)
    return (
        bool(after.get("network_interface")) and after.get("network_interface") in enis
        or bool(after.get("instance")) and after.get("instance") in instances
        or diff.resource_id in allocations
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(sorted((_freeze(v) for v in value), key=repr))
    return value


def _normal_entry(entry: Mapping[str, Any]) -> Any:
    """An inline rule/route entry compared the way AWS means it: protocol by number, unset = empty."""
    normal: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "protocol":
            value = normalise_protocol(value)
        elif key.startswith("icmp_") and value in (None, ""):
            value = 0
        elif value in _EMPTY or value is False:
            continue
        normal[key] = value
    return _freeze(normal)


def _added_removed(diff: Difference) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]] | None:
    if not isinstance(diff.after, list) or diff.before not in _EMPTY and not isinstance(diff.before, list):
        return None
    before = list(diff.before or [])
    after = list(diff.after)
    if not all(isinstance(e, Mapping) for e in before + after):
        return None
    remaining = [_normal_entry(e) for e in before]
    added = []
    for entry in after:
        key = _normal_entry(entry)
        if key in remaining:
            remaining.remove(key)
        else:
            added.append(entry)
    after_keys = [_normal_entry(e) for e in after]
    removed = [e for e in before if _normal_entry(e) not in after_keys]
    return added, removed


def _sg_sources(entry: Mapping[str, Any]) -> set[tuple[str, str]]:
    sources = {("cidr", c) for c in entry.get("cidr_blocks") or ()}
    sources |= {("ipv6", c) for c in entry.get("ipv6_cidr_blocks") or ()}
    sources |= {("prefix", c) for c in entry.get("prefix_list_ids") or ()}
    sources |= {("sg", c) for c in entry.get("security_groups") or ()}
    if entry.get("source_security_group_id"):
        sources.add(("sg", entry["source_security_group_id"]))
    if entry.get("self"):
        sources.add(("self", "true"))
    return sources


def _sg_entry_managed(diff: Difference, entry: Mapping[str, Any]) -> bool:
    direction = diff.path.split(".")[0]
    rules = [
        r
        for r in diff.managed("aws_security_group_rule")
        if r.get("security_group_id") == diff.resource_id
        and r.get("type") == direction
        and r.get("from_port") == entry.get("from_port")
        and r.get("to_port") == entry.get("to_port")
        and normalise_protocol(r.get("protocol")) == normalise_protocol(entry.get("protocol"))
    ]
    covered: set[tuple[str, str]] = set()
    for rule in rules:
        covered |= _sg_sources(rule)
    wanted = _sg_sources(entry)
    return bool(rules) and wanted <= covered


_ROUTE_TARGETS = (
    "gateway_id", "nat_gateway_id", "instance_id", "network_interface_id", "vpc_peering_connection_id",
    "transit_gateway_id", "egress_only_gateway_id", "local_gateway_id", "vpc_endpoint_id", "carrier_gateway_id",
)


def _route_entry_managed(diff: Difference, entry: Mapping[str, Any]) -> bool:
    for route in diff.managed("aws_route"):
        if route.get("route_table_id") != diff.resource_id:
            continue
        if (route.get("destination_cidr_block") or "") != (entry.get("cidr_block") or ""):
            continue
        if (route.get("destination_ipv6_cidr_block") or "") != (entry.get("ipv6_cidr_block") or ""):
            continue
        if (route.get("destination_prefix_list_id") or "") != (entry.get("destination_prefix_list_id") or ""):
            continue
        targets = [k for k in _ROUTE_TARGETS if entry.get(k)]
        if targets and all(route.get(k) in (entry.get(k), None, "") for k in targets) and any(
            route.get(k) == entry.get(k) for k in targets
        ):
            return True
    return False


def _acl_entry_managed(diff: Difference, entry: Mapping[str, Any]) -> bool:
    egress = diff.path.split(".")[0] == "egress"
    for rule in diff.managed("aws_network_acl_rule"):
        if (
            rule.get("network_acl_id") == diff.resource_id
            and bool(rule.get("egress")) == egress
            and rule.get("rule_number") == entry.get("rule_no")
            and rule.get("rule_action") == entry.get("action")
            and (rule.get("cidr_block") or "") == (entry.get("cidr_block") or "")
            and (rule.get("ipv6_cidr_block") or "") == (entry.get("ipv6_cidr_block") or "")
            and normalise_protocol(rule.get("protocol")) == normalise_protocol(entry.get("protocol"))
            and (rule.get("from_port") or 0) == (entry.get("from_port") or 0)
            and (rule.get("to_port") or 0) == (entry.get("to_port") or 0)
        ):
            return True
    return False


def _filled_by(matcher: Callable[[Difference, Mapping[str, Any]], bool]) -> Shape:
    def shape(diff: Difference) -> bool:
        split = _added_removed(diff)
        if split is None:
            return False
        added, removed = split
        return not removed and all(matcher(diff, entry) for entry in added)

    return shape


def filled_by_security_group_rules(diff: Difference) -> bool:
    """Only entries added, each one a managed ``aws_security_group_rule`` of this group."""
    return _filled_by(_sg_entry_managed)(diff)


def _route_destination_managed(diff: Difference, entry: Mapping[str, Any]) -> bool:
    return any(
        route.get("route_table_id") == diff.resource_id
        and (route.get("destination_cidr_block") or "") == (entry.get("cidr_block") or "")
        and (route.get("destination_ipv6_cidr_block") or "") == (entry.get("ipv6_cidr_block") or "")
        and (route.get("destination_prefix_list_id") or "") == (entry.get("destination_prefix_list_id") or "")
        for route in diff.managed("aws_route")
    )


def filled_by_routes(diff: Difference) -> bool:
    """Entries added are managed ``aws_route`` resources of this table; entries gone are stale copies of them.

    An entry the state had and AWS no longer has is harmless when a managed
    ``aws_route`` owns that destination: the state's inline copy is stale (an
    apply that repaired the route refreshed the table before the route), and
    the route itself is checked on its own ``aws_route`` (missing, or drifted).
    """
    split = _added_removed(diff)
    if split is None:
        return False
    added, removed = split
    return all(_route_entry_managed(diff, e) for e in added) and all(
        _route_destination_managed(diff, e) for e in removed)


def filled_by_network_acl_rules(diff: Difference) -> bool:
    """Only entries added (protocol by number, unset icmp = 0), each a managed ``aws_network_acl_rule``."""
    return _filled_by(_acl_entry_managed)(diff)


# -- the known noise --------------------------------------------------------

DEFAULT_NOISE_RULES: tuple[NoiseRule, ...] = (
    NoiseRule(
        "tags-unset-to-empty", "*", "tags|tags_all", unset_to_empty,
        "a resource declared without tags reads back with an empty map: null -> {}",
    ),
    NoiseRule(
        "sg-rule-optional-fields", "aws_security_group_rule",
        "description|ipv6_cidr_blocks|prefix_list_ids|cidr_blocks|source_security_group_id|self",
        unset_to_default,
        "optional arguments of aws_security_group_rule not given read back as \"\", [] or false",
    ),
    NoiseRule(
        "sg-rules-by-rule-resources", "aws_security_group", "ingress|egress", filled_by_security_group_rules,
        "a group whose rules are separate aws_security_group_rule resources reads them back inline; "
        "only entries that are managed rules of this group are noise",
    ),
    NoiseRule(
        "routes-by-route-resources", "aws_route_table", "route", filled_by_routes,
        "a table whose routes are separate aws_route resources reads them back inline; "
        "only entries that are managed routes of this table are noise",
    ),
    NoiseRule(
        "acl-entries-by-rule-resources", "aws_network_acl", "ingress|egress", filled_by_network_acl_rules,
        "an ACL whose entries are aws_network_acl_rule resources reads them back inline, "
        "protocol as a number and icmp_* as 0; only managed entries are noise",
    ),
    NoiseRule(
        "acl-protocol-number", "aws_network_acl_rule|aws_network_acl", "protocol|*.protocol", same_protocol,
        "AWS returns the protocol by number: \"tcp\" -> \"6\", \"udp\" -> \"17\", \"icmp\" -> \"1\"",
    ),
    NoiseRule(
        "acl-icmp-defaults", "aws_network_acl_rule|aws_network_acl", "icmp_*|*.icmp_*", unset_to_default,
        "icmp_type/icmp_code not given read back as 0 or \"\"",
    ),
    NoiseRule(
        "route53-optional-empty", "aws_route53_record", "health_check_id|set_identifier", unset_to_empty,
        "a record without health check or set identifier reads them back as \"\"",
    ),
    NoiseRule(
        "eip-association", "aws_eip", "association_id|network_interface|private_ip|private_dns|instance|public_dns",
        associated_with_managed,
        "an EIP given to a managed NAT gateway or instance reads back its association fields",
    ),
    NoiseRule(
        "peering-accept-status", "aws_vpc_peering_connection|aws_vpc_peering_connection_accepter",
        "accept_status", pending_to_active,
        "a cross-region peering is written pending and accepted by the accepter resource afterwards",
    ),
)
