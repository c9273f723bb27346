"""Findings: what a check reports about the infrastructure (never about the tool)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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


def format_findings(findings: list[Finding]) -> str:
    """Findings as lines, for an assertion message."""
    return "\n".join(f"  - {f}" for f in findings)
