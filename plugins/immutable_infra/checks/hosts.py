"""Hosts: every running host of a role has what its ``[roles.NAME.host]`` contract names.

Over plain data: the role's :class:`~immutable_infra.config.HostContract` and
the :class:`~immutable_infra.hosts.HostFacts` read on the host (by
``immutable_infra.hosts.read_host_facts``, or recorded JSON). Nothing here
talks to a host. One finding per difference:

- a package missing, or at another version than the contract pins
  (``"*"`` accepts any version);
- a service not enabled, or not running;
- a TCP port not listening (on any address);
- with ``ports_exclusive``, a TCP port listening beyond loopback (on a
  wildcard or any address outside 127.0.0.0/8 and ::1) that ``ports`` does
  not name;
- a file missing, or with another mode or owner, or lacking a substring;
- a user missing.

Facts that did not read something the contract names are no pass:
:func:`find_host_findings` raises :class:`HostNotChecked` naming what was
not read (:func:`facts_missing` lists it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from immutable_infra.config import VERSION_ANY, VERSION_BAKED, HostContract
from immutable_infra.errors import ToolError
from immutable_infra.findings import Finding, format_findings
from immutable_infra.hosts import HostFacts

CHECK = "hosts"


class HostNotChecked(ToolError):
    """The host facts lack something the contract names: the host was not looked at, so it cannot pass."""


def _facts(facts: HostFacts | Mapping[str, Any]) -> HostFacts:
    return facts if isinstance(facts, HostFacts) else HostFacts.from_dict(facts)


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped ::ffff:127.x (an interface scope ``%lo`` ignored).

    Wildcards (``0.0.0.0``, ``::``, ``*``), other addresses and anything that
    does not parse are not loopback: reachable, as far as the check knows.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def facts_missing(contract: HostContract, facts: HostFacts | Mapping[str, Any],
                  baked: Mapping[str, str] | None = None) -> list[str]:
    """What ``contract`` names and ``facts`` did not read, as words (``package nginx``, ``listening ports``); [] when
    covered. A ``"baked"`` package also needs the image's version in ``baked`` (what the image was baked with)."""
    f = _facts(facts)
    missing = [f"package {name}" for name in contract.packages if name not in f.packages]
    missing += [f"the version of {name} the image was baked with" + (
        " (no record of the image's packages)" if baked is None else " (the image's package list has no such package)")
        for name, version in contract.packages.items() if version == VERSION_BAKED and name not in (baked or {})]
    missing += [f"service {name}" for name in contract.services
                if not {"enabled", "running"} <= set(f.services.get(name) or ())]
    if (contract.ports or contract.ports_exclusive) and f.listening is None:
        missing.append("listening ports")
    for wanted in contract.files:
        state = f.files.get(wanted.path)
        if state is None or "exists" not in state:
            missing.append(f"file {wanted.path}")
        elif state["exists"]:
            missing += [f"file {wanted.path} {key}" for key, asked in
                        (("mode", wanted.mode), ("owner", wanted.owner), ("content", wanted.contains))
                        if asked and state.get(key) is None]
    missing += [f"user {name}" for name in contract.users if name not in f.users]
    return missing


def find_host_findings(
    group: str, instance_id: str, role: str, contract: HostContract, facts: HostFacts | Mapping[str, Any],
    *, address: str = "", baked: Mapping[str, str] | None = None,
) -> list[Finding]:
    """One finding per difference between the host and the role's contract; [] when the host has all of it.

    ``aws_id`` is ``instance_id``; ``address`` the instance's Terraform
    address when the caller knows it. Each finding's detail carries ``role``,
    ``host`` (the URL read) and a ``kind`` that, with ``package`` or
    ``path``, makes its id stable while the fault stays:
    ``package-missing`` / ``package-version`` (+ ``package``),
    ``file-missing`` / ``file-mode`` / ``file-owner`` / ``file-content``
    (+ ``path``), ``service-not-enabled:NAME``, ``service-not-running:NAME``,
    ``port-not-listening:PORT``, ``port-unexpected:PORT`` (``ports_exclusive``
    only), ``user-missing:NAME``.

    ``baked``: package -> version in the instance's image (its Packer package
    manifest; an embedded host's image), for the packages pinned ``"baked"``.

    Raises :class:`HostNotChecked` when ``facts`` lack something the
    contract names, or a ``"baked"`` package has no version in ``baked``.
    """
    f = _facts(facts)
    missing = facts_missing(contract, f, baked)
    if missing:
        raise HostNotChecked(f"{group} {instance_id} (role {role}, {f.url}): host facts lack {', '.join(missing)}; "
                             "read them with read_host_facts(url, contract) for this role's contract"
                             + ("; a package pinned \"baked\" must be in the image (else pin a version or \"*\")"
                                if any(m.startswith("the version of") for m in missing) else ""))
    out: list[Finding] = []

    def finding(expected: str, found: str, **detail: Any) -> None:
        out.append(Finding(check=CHECK, group=group, address=address, aws_id=instance_id, expected=expected,
                           found=found, detail={"role": role, "host": f.url, **detail}))

    for name, version in sorted(contract.packages.items()):
        installed = f.packages[name]
        pinned = (baked or {}).get(name, "") if version == VERSION_BAKED else version
        wanted = ("any version" if version == VERSION_ANY else
                  f"{pinned}, as baked in the image" if version == VERSION_BAKED else version)
        if installed is None:
            finding(f"package {name} installed ({wanted})", f"{name} not installed", kind="package-missing", package=name)
        elif version != VERSION_ANY and installed != pinned:
            finding(f"package {name} {wanted}", f"{name} {installed}", kind="package-version", package=name,
                    version=installed)
    for name in contract.services:
        state = f.services[name]
        if not state["enabled"]:
            finding(f"service {name} enabled", f"{name} not enabled", kind=f"service-not-enabled:{name}", service=name)
        if not state["running"]:
            finding(f"service {name} running", f"{name} not running", kind=f"service-not-running:{name}", service=name)
    listening = f.listening or {}
    for port in contract.ports:
        if port not in listening:
            shown = ", ".join(map(str, sorted(listening))) or "none"
            finding(f"TCP port {port} listening", f"nothing listening on {port} (listening: {shown})",
                    kind=f"port-not-listening:{port}", port=port)
    if contract.ports_exclusive:
        allowed = sorted(set(contract.ports))
        for port, addresses in sorted(listening.items()):
            reachable = [a for a in addresses if not is_loopback(a)]
            if port not in allowed and reachable:
                finding(f"only TCP ports {allowed} listening beyond loopback",
                        f"{port} listening on {', '.join(reachable)}", kind=f"port-unexpected:{port}", port=port,
                        addresses=reachable)
    for wanted in contract.files:
        state = f.files[wanted.path]
        if not state["exists"]:
            finding(f"{wanted.path} present", f"{wanted.path} missing", kind="file-missing", path=wanted.path)
            continue
        if wanted.mode is not None and state["mode"] != wanted.mode:
            finding(f"{wanted.path} mode {wanted.mode}", f"mode {state['mode']}", kind="file-mode", path=wanted.path)
        if wanted.owner is not None and state["owner"] != wanted.owner:
            finding(f"{wanted.path} owned by {wanted.owner}", f"owned by {state['owner']}", kind="file-owner",
                    path=wanted.path)
        lacking = [text for text in wanted.contains if text not in state["content"]]
        if lacking:
            finding(f"{wanted.path} containing {', '.join(map(repr, wanted.contains))}",
                    f"{wanted.path} lacks {', '.join(map(repr, lacking))}", kind="file-content", path=wanted.path,
                    lacking=lacking)
    for name in contract.users:
        if not f.users[name]:
            finding(f"user {name} present", f"no user {name}", kind=f"user-missing:{name}", user=name)
    return out


def assert_no_host_findings(
    group: str, instance_id: str, role: str, contract: HostContract, facts: HostFacts | Mapping[str, Any],
    *, address: str = "", baked: Mapping[str, str] | None = None,
) -> None:
    """Fail the calling test with the findings of :func:`find_host_findings`, if any."""
    __tracebackhide__ = True
    findings = find_host_findings(group, instance_id, role, contract, facts, address=address, baked=baked)
    if findings:
        import pytest

        pytest.fail(f"host {instance_id} (role {role}) of group {group}:\n{format_findings(findings)}", pytrace=False)
