"""Flows: the traffic a group declares it needs (``[[flows]]``) or forbids (``[[isolation]]``).

A flow names its ends as ``role@group`` (``*`` for any instance of the
group), a protocol and, for TCP and UDP, a destination port::

    [[flows]]
    from = "ci@ops-sg"
    to = "microservice@prd-sg-slave"
    protocol = "tcp"              # tcp | udp | icmp | -1
    port = 22

ICMP flows take no port (ICMP types and codes are not modelled); ``-1``
(all traffic) takes no port either and is satisfied only by rules that
admit every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("tcp", "udp", "icmp", "-1")
KINDS = {"flows": "flow", "isolation": "isolation", "flow": "flow"}
_KEYS = {"from", "to", "protocol", "port"}


class FlowError(ValueError):
    """A malformed ``[[flows]]`` or ``[[isolation]]`` entry; the message names file, group and fix."""


@dataclass(frozen=True)
class Flow:
    """One declared flow between two ``role@group`` endpoints.

    ``kind`` is ``"flow"`` (must be reachable) or ``"isolation"`` (must not
    be); ``declared_by`` is the group whose config declares it. The repr is
    valid Python, so a failing Hypothesis example replays as written.
    """

    source: str
    destination: str
    protocol: str
    port: int | None = None
    kind: str = "flow"
    declared_by: str = ""

    def __post_init__(self) -> None:
        for end in (self.source, self.destination):
            _split_endpoint(end)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        if self.kind not in ("flow", "isolation"):
            raise ValueError(f"kind must be 'flow' or 'isolation', not {self.kind!r}")
        if self.protocol in ("tcp", "udp"):
            if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
                raise ValueError(f"a {self.protocol} flow needs a port 0-65535, not {self.port!r}")
        elif self.port is not None:
            raise ValueError(f"a {self.protocol} flow takes no port, got {self.port!r}")

    @property
    def source_role(self) -> str:
        return _split_endpoint(self.source)[0]

    @property
    def source_group(self) -> str:
        return _split_endpoint(self.source)[1]

    @property
    def destination_role(self) -> str:
        return _split_endpoint(self.destination)[0]

    @property
    def destination_group(self) -> str:
        return _split_endpoint(self.destination)[1]

    @property
    def name(self) -> str:
        """Stable public name, e.g. ``ci@ops-sg->microservice@prd-sg-slave:tcp/22``."""
        if self.protocol in ("tcp", "udp"):
            what = f"{self.protocol}/{self.port}"
        elif self.protocol == "icmp":
            what = "icmp"
        else:
            what = "all"
        return f"{self.source}->{self.destination}:{what}"

    def __str__(self) -> str:
        return self.name


def _split_endpoint(text: Any) -> tuple[str, str]:
    if not isinstance(text, str) or text.count("@") != 1:
        raise ValueError(f"endpoint must be 'role@group', not {text!r}")
    role, group = (part.strip() for part in text.split("@"))
    if not role or not group or role != text.split("@")[0] or group != text.split("@")[1]:
        raise ValueError(f"endpoint must be 'role@group' with no blanks, not {text!r}")
    if group == "*":
        raise ValueError(f"the group of an endpoint cannot be '*' ({text!r}); name the group")
    return role, group


def parse_flows(raw: list[dict[str, Any]], kind: str, group: str, source: str) -> list[Flow]:
    """Flows from the ``[[flows]]`` or ``[[isolation]]`` tables of one group config.

    ``raw`` is what ``tomllib`` gives for the array of tables (or ``None``
    when absent); ``kind`` is ``"flows"`` or ``"isolation"``; ``source`` is
    the config file, named in every error.
    """
    if kind not in ("flows", "isolation"):
        raise ValueError(f"kind must be 'flows' or 'isolation', not {kind!r}")
    if raw is None:
        return []

    def fail(where: str, problem: str, fix: str) -> FlowError:
        return FlowError(f"{source}: group {group!r}: {where}: {problem}. Fix: {fix}")

    if not isinstance(raw, list):
        raise fail(kind, f"expected an array of tables, got {type(raw).__name__}",
                   f"write each entry as a [[{kind}]] table")
    flows: list[Flow] = []
    for number, entry in enumerate(raw, start=1):
        where = f"[[{kind}]] entry {number}"
        if not isinstance(entry, dict):
            raise fail(where, f"expected a table, got {entry!r}", f"write the entry as a [[{kind}]] table")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise fail(where, f"unknown key(s) {', '.join(unknown)}",
                       "use only from, to, protocol and port")
        for key in ("from", "to", "protocol"):
            if key not in entry:
                raise fail(where, f"missing {key!r}", _FIX[key])
        ends = []
        for key in ("from", "to"):
            try:
                _split_endpoint(entry[key])
            except ValueError as exc:
                raise fail(where, f"{key} = {entry[key]!r}: {exc}", _FIX[key]) from None
            ends.append(entry[key])
        protocol = entry["protocol"]
        if protocol == -1:
            protocol = "-1"
        if isinstance(protocol, str):
            protocol = protocol.strip().lower()
        if protocol not in PROTOCOLS:
            raise fail(where, f"protocol = {entry['protocol']!r} is not one of {', '.join(PROTOCOLS)}",
                       _FIX["protocol"])
        port = entry.get("port")
        if protocol in ("tcp", "udp"):
            if port is None:
                raise fail(where, f"a {protocol} flow needs a port", "add port = <0-65535>, e.g. port = 22")
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise fail(where, f"port = {port!r} is not an integer 0-65535",
                           "write the port as a bare integer, e.g. port = 22")
        elif port is not None:
            raise fail(where, f"a {protocol} flow takes no port (got {port!r})",
                       "remove the port line (ICMP types are not modelled; -1 means all traffic)")
        flows.append(Flow(ends[0], ends[1], protocol, port, KINDS[kind], group))
    return flows


_FIX = {
    "from": 'write from = "role@group", e.g. from = "ci@ops-sg" (role may be "*")',
    "to": 'write to = "role@group", e.g. to = "microservice@prd-sg-slave" (role may be "*")',
    "protocol": 'write protocol = "tcp", "udp", "icmp" or "-1"',
}
