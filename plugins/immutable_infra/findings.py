"""Findings: what a check reports about the infrastructure (never about the tool)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Detail keys that say *what* is wrong with a resource (not its current value), in the order they enter an id.
KIND_KEYS = ("kind", "attribute", "flow", "code", "rule", "package", "config", "path")


@dataclass(frozen=True)
class Finding:
    """One violated invariant, named so a person can act on it.

    ``check`` is the public name of the check (``mutation``, ``drift``,
    ``unmanaged``, ``roles``, ``reachability``, ``parity``); ``address`` is the
    Terraform address where there is one; ``aws_id`` the AWS identifier.
    """

    check: str
    group: str
    address: str
    aws_id: str
    expected: str
    found: str
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        where = self.address or "-"
        if self.aws_id:
            where += f" ({self.aws_id})"
        return f"[{self.check}] {self.group} {where}: expected {self.expected}, found {self.found}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def id(self) -> str:
        """The finding's stable id (see :func:`finding_id`)."""
        return finding_id(self)


def finding_kind(finding: Finding | Mapping[str, Any]) -> str:
    """What is wrong, in words that stay the same while the fault stays: never the live value.

    A resource missing from AWS is ``missing``; otherwise the values of the
    detail keys in :data:`KIND_KEYS` that the check filled in (the drifted
    attribute, the flow and its blocking code, the unmanaged rule, the
    package, ...), joined by ``/``; a finding with none of them is named by
    what was expected (the invariant it breaks).
    """
    f = finding.to_dict() if isinstance(finding, Finding) else finding
    detail = f.get("detail") or {}
    if detail.get("classification") == "missing":
        return "missing"
    parts = [str(detail[k]) for k in KIND_KEYS if detail.get(k) not in (None, "", [], {})]
    return "/".join(parts) or " ".join(str(f.get("expected") or "").split())


def finding_id(finding: Finding | Mapping[str, Any]) -> str:
    """``check:group:where:kind``: the same fault seen by two audits has the same id.

    ``where`` is the Terraform address, or the AWS id where there is no
    address (an unmanaged resource, an instance the roles check names), so a
    resource Terraform replaced keeps its findings' ids. The id is readable
    on purpose: the summary lists fixed findings by their ids alone.
    """
    f = finding.to_dict() if isinstance(finding, Finding) else finding
    where = f.get("address") or f.get("aws_id") or ""
    return f"{f.get('check', '')}:{f.get('group', '')}:{where}:{finding_kind(f)}"


def format_findings(findings: list[Finding]) -> str:
    """Findings as lines, for an assertion message."""
    return "\n".join(f"  - {f}" for f in findings)
