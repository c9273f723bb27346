"""Group hosts: the hosts of an applied group's running instances, for the host suite.

The plugin's ``infra_hosts`` fixture asks :func:`why_not_at_all` first (cheap:
no host is built or reached when hosts are off, the runtime is missing, or,
outside the embedded sandbox, no user and key are set; or no running instance
has a role with a ``[roles.NAME.host]`` contract). In the embedded sandbox
:func:`start_group_hosts` builds one host per running instance with
``embedded_hosts.embedded_hosts_for_group``; elsewhere (``--aws-endpoint``,
``--real-aws``) :func:`reach_group_hosts` reaches them over ssh through the
group's bastion (``transports.reach_hosts``; :func:`why_not_reached` says why
not when there is no bastion). :class:`HostsOfGroup` is what the suite reads:
per instance, its host, role, contract and Terraform address.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from immutable_infra.config import HostContract
from immutable_infra.inventory import tags_of

if TYPE_CHECKING:
    from immutable_infra.embedded_hosts import PlaybookRun
    from immutable_infra.harness import Harness
    from immutable_infra.settings import Settings


class Host(Protocol):
    """One host as the suite reads it: a testinfra URL, and how long it took to boot (0: not booted by us)."""

    @property
    def url(self) -> str: ...

    boot_seconds: float


class Hosts(Protocol):
    """A group's hosts as the suite reads them: ``embedded_hosts.GroupHosts`` or ``transports.RemoteHosts``."""

    hosts: Mapping[str, Any]
    playbooks: Mapping[str, PlaybookRun]
    unconfigured: Mapping[str, str]

    def stop(self) -> None: ...


def why_not_at_all(settings: Settings, runtime: Callable[[], str | None] | None = None, *,
                   embedded: bool | None = None) -> str | None:
    """Why no host of any group is checked in this session (``--no-hosts``; outside the embedded sandbox: no user
    or key to reach them with; in it: no runtime), or None.

    ``embedded`` (default ``settings.embedded``): the session's endpoint is the embedded sandbox. An xdist worker
    of an embedded session passes True: its settings name the controller's moto as the endpoint, yet its hosts
    are embedded hosts on this machine like the controller's, never instances reached over ssh.
    """
    if settings.no_hosts:
        return f"hosts: not checked ({settings.source('no_hosts')})"
    if not (settings.embedded if embedded is None else embedded):
        from immutable_infra.transports import remote_settings_reason

        return remote_settings_reason(settings)
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
    """The hosts of one group: ``hosts`` (embedded: the GroupHosts; on AWS: the RemoteHosts), and per checked
    instance its role and address. ``embedded`` says which."""

    group: str
    hosts: Hosts
    roles: dict[str, str]
    contracts: dict[str, HostContract]
    addresses: dict[str, str] = field(default_factory=dict)
    embedded: bool = True
    #: Instance id -> package -> version in its image (what it was baked with), for the "baked" package pins;
    #: an instance missing here has no record of its image's packages.
    baked: dict[str, dict[str, str]] = field(default_factory=dict)

    def handle(self, instance_id: str) -> Host:
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
    from immutable_infra.embedded_hosts import build_rootfs, embedded_hosts_for_group, image_packages

    playbooks = h.catalog.groups_dir.parent / "playbooks"
    run_dir = h.run.path / "hosts" / group
    hosts = embedded_hosts_for_group(instances, roles, playbooks, run_dir, cache_dir=cache_dir)
    checked = contracted(instances, roles)
    try:
        baked = image_packages(build_rootfs(cache_dir=cache_dir))  # the image every embedded host boots from
    except BaseException:
        hosts.stop()
        raise
    return HostsOfGroup(group, hosts, checked, {i: roles[r].host for i, r in checked.items()},
                        {i: addresses.get(i, "") for i in checked}, baked={i: baked for i in checked})


def baked_from_catalog(instances: list[Mapping[str, Any]], images_dir: Path) -> dict[str, dict[str, str]]:
    """Instance id -> package -> version of the Packer package manifest of the build its AMI came from (the image
    catalog in ``images_dir``, traced by the AMI id as the lineage check does on AWS); instances whose AMI the
    catalog does not hold, or no catalog at all, are left out (a "baked" pin then cannot be checked: an error)."""
    from immutable_infra.images import ImageManifestError, load_catalog

    if not images_dir.is_dir():
        return {}
    try:
        catalog = load_catalog(images_dir)
    except ImageManifestError:
        return {}
    out = {}
    for instance in instances:
        found = catalog.find_ami(str(instance.get("ImageId", "")))
        if found is not None and found[0].packages:
            out[str(instance["InstanceId"])] = {name: version for name, (version, _) in found[0].packages.items()}
    return out


def why_not_reached(settings: Settings, group: str, instances: list[Mapping[str, Any]]) -> str | None:
    """Outside the embedded sandbox: why ``group``'s hosts cannot be reached (no --bastion and no bastion instance
    with a public address), or None."""
    from immutable_infra.transports import bastion_for, no_bastion_reason

    if bastion_for(settings, instances) is not None:
        return None
    return no_bastion_reason(group, instances, settings.bastion_role, settings.source("bastion_role"))


def reach_group_hosts(h: Harness, group: str, instances: list[dict[str, Any]], addresses: dict[str, str],
                      roles: Mapping[str, Any]) -> HostsOfGroup:
    """Reach the group's running instances over ssh through its bastion (files under ``<run>/hosts/<group>``); unless
    this is an audit, apply each role's playbook once to its hosts through the inventory built from the Role tags."""
    from immutable_infra.transports import (
        TransportError,
        bastion_for,
        no_bastion_reason,
        reach_hosts,
        remote_settings_reason,
        targets_of,
    )

    s = h.settings
    bastion = bastion_for(s, instances)
    if bastion is None:
        raise TransportError(no_bastion_reason(group, instances, s.bastion_role, s.source("bastion_role")))
    if not s.host_user or s.host_key is None:
        raise TransportError(remote_settings_reason(s) or f"hosts of {group}: no --host-user or --host-key")
    checked = contracted(instances, roles)
    missing = sorted(set(checked) - {t.instance_id for t in targets_of(instances, bastion)})
    if missing:
        raise TransportError(f"hosts of {group}: instance(s) {', '.join(missing)} have no private address in "
                             "describe_instances, so ssh cannot reach them")
    playbooks = None if s.audit else h.catalog.groups_dir.parent / "playbooks"
    hosts = reach_hosts(h.run.path / "hosts" / group, instances, roles, bastion, s.host_user, s.host_key, playbooks,
                        group=group)
    baked = baked_from_catalog(instances, h.images_dir)
    return HostsOfGroup(group, hosts, checked, {i: roles[r].host for i, r in checked.items()},
                        {i: addresses.get(i, "") for i in checked}, embedded=False,
                        baked={i: baked[i] for i in checked if i in baked})

