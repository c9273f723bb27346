"""Group hosts: the embedded hosts of an applied group's running instances, for the host suite.

The plugin's ``infra_hosts`` fixture asks :func:`why_not_at_all` first (cheap:
no host is built when hosts are off, the runtime is missing, the endpoint is
not the embedded sandbox, or no running instance has a role with a
``[roles.NAME.host]`` contract), then :func:`start_group_hosts` builds one
host per running instance with ``embedded_hosts.embedded_hosts_for_group``.
:class:`HostsOfGroup` is what the suite reads: per instance, its host, role,
contract and Terraform address.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable_infra.config import HostContract
from immutable_infra.inventory import tags_of

if TYPE_CHECKING:
    from immutable_infra.embedded_hosts import GroupHosts, HostHandle
    from immutable_infra.harness import Harness
    from immutable_infra.settings import Settings

#: Why the host suite skips outside the embedded sandbox.
NOT_EMBEDDED = ("hosts are reached only in the embedded sandbox in this version; on AWS or another endpoint "
                "({endpoint}) the instances' hosts are not built, reached or read")


def why_not_at_all(settings: Settings, runtime: Callable[[], str | None] | None = None) -> str | None:
    """Why no host of any group is checked in this session (``--no-hosts``, not embedded, no runtime), or None."""
    if settings.no_hosts:
        return f"hosts: not checked ({settings.source('no_hosts')})"
    if not settings.embedded:
        endpoint = settings.aws_endpoint or "real AWS"
        return "hosts: " + NOT_EMBEDDED.format(endpoint=endpoint)
    if runtime is None:
        from immutable_infra.embedded_hosts import runtime_available as runtime
    reason = runtime()
    return f"hosts: {reason}" if reason else None


def contracted(instances: list[Mapping[str, Any]], roles: Mapping[str, Any]) -> dict[str, str]:
    """Instance id -> role, for the running instances whose ``Role`` tag names a role with a host contract."""
    out = {}
    for instance in instances:
        if instance.get("State", {}).get("Name", "running") != "running":
            continue
        role = tags_of(instance.get("Tags")).get("Role")
        if role in roles and roles[role].host is not None:
            out[instance["InstanceId"]] = role
    return out


def no_contract_reason(group: str, instances: list[Mapping[str, Any]], roles_file: Path) -> str:
    running = [i for i in instances if i.get("State", {}).get("Name", "running") == "running"]
    used = sorted({tags["Role"] for tags in (tags_of(i.get("Tags")) for i in running) if "Role" in tags})
    if not running:
        return f"hosts: {group} has no running instance"
    return (f"hosts: no role of {group}'s running instances ({', '.join(used) or 'no Role tag'}) has a "
            f"[roles.NAME.host] contract in {roles_file}")


@dataclass
class HostsOfGroup:
    """The embedded hosts of one group: ``hosts`` (the GroupHosts), and per checked instance its role and address."""

    group: str
    hosts: GroupHosts
    roles: dict[str, str]
    contracts: dict[str, HostContract]
    addresses: dict[str, str] = field(default_factory=dict)

    def handle(self, instance_id: str) -> HostHandle:
        return self.hosts.hosts[instance_id]

    def stop(self) -> None:
        self.hosts.stop()


def group_instances(h: Harness, group: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The group's live instances (the roles check's describe: its VPCs and its Run/Group tags) and id -> address."""
    from immutable_infra.live import live_instances
    from immutable_infra.reading import Reading

    reading = Reading(h)
    instances = live_instances(reading.describe(group))
    addresses = {str(r.aws_id): r.address for r in reading.instances(group) if r.aws_id}
    return instances, addresses


def start_group_hosts(h: Harness, group: str, instances: list[dict[str, Any]], addresses: dict[str, str],
                      roles: Mapping[str, Any], *, cache_dir: Path | None = None) -> HostsOfGroup:
    """Build one embedded host per running instance of ``group`` under the run's folder, each configured by its
    role's playbook (the ``playbooks`` folder beside the groups folder)."""
    from immutable_infra.embedded_hosts import embedded_hosts_for_group

    playbooks = h.catalog.groups_dir.parent / "playbooks"
    run_dir = h.run.path / "hosts" / group
    hosts = embedded_hosts_for_group(instances, roles, playbooks, run_dir, cache_dir=cache_dir)
    checked = contracted(instances, roles)
    return HostsOfGroup(group, hosts, checked, {i: roles[r].host for i, r in checked.items()},
                        {i: addresses.get(i, "") for i in checked})
