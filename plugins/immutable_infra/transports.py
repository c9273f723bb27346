"""Transports: how the session reaches hosts outside the embedded sandbox, as testinfra addresses them.

On AWS (``--real-aws``, ``--aws-endpoint``) a group's instances are reached over
ssh on their private addresses through the group's bastion (OpenSSH
``ProxyJump``). From the group's described instances (``InstanceId``,
``PrivateIpAddress``, ``PublicIpAddress``, ``Tags``, ``State``) and a few
settings this module writes, under the run's folder:

- an OpenSSH config file: one ``Host <instance-id> <address>`` block per
  instance (HostName, User, IdentityFile, ProxyJump through the bastion's
  block, the run's own known_hosts file, ``StrictHostKeyChecking accept-new``,
  ``BatchMode``), read by ``ssh -F`` and testinfra's
  ``ssh://<instance-id>?ssh_config=<file>``;
- an Ansible inventory (YAML): one group per ``Role`` tag value, hosts by
  instance id with ``ansible_host``, user, key and the ssh arguments that jump
  through the bastion; ``ansible-playbook -i <inventory> <role playbook>
  --limit <role>`` applies a role and testinfra's
  ``ansible://<instance-id>?ansible_inventory=<file>`` reads through it.

The bastion is ``--bastion USER@HOST[:PORT]``, else the group's running
instance whose ``Role`` is the bastion role (``--bastion-role``, default
``bastion``) and that has a public address.

``--dev-box vagrant://[NAME][?cwd=DIR]`` becomes ``ssh://NAME?ssh_config=<file>``
through ``vagrant ssh-config NAME`` (:func:`resolve_dev_box`).

Plain functions over plain data: the text generators are tested in
milliseconds, and the same files reach a real host through a real jump
(``tests/test_transports.py``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable_infra.errors import ToolError
from immutable_infra.inventory import tags_of

if TYPE_CHECKING:
    from immutable_infra.embedded_hosts import PlaybookRun
    from immutable_infra.harness import Harness
    from immutable_infra.settings import Settings

#: The Role tag value of the instance that is the group's bastion, unless --bastion-role names another.
BASTION_ROLE = "bastion"
#: The bastion's Host block in the ssh config file; every other host jumps through it.
BASTION_ALIAS = "immutable-infra-bastion"
#: What the remote options are, for skip reasons and errors.
REMOTE_OPTIONS = ("--host-user USER (IMMUTABLE_INFRA_HOST_USER), --host-key FILE (IMMUTABLE_INFRA_HOST_KEY), "
                  "and --bastion USER@HOST[:PORT] (IMMUTABLE_INFRA_BASTION) unless the group runs an instance "
                  "whose Role tag is the bastion role (--bastion-role, default bastion) with a public address")

_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_BASTION = re.compile(r"^(?:(?P<user>[^@\s/]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?$")


class TransportError(ToolError):
    """A host cannot be addressed (no vagrant, a failing ``vagrant ssh-config``, an instance without an address)."""


# -- settings ---------------------------------------------------------------------------------


def user_problem(user: str, given: str | None = None) -> str | None:
    """Why ``user`` is no login name, naming the setting as ``given`` (``--host-user X``) and the fix; or None."""
    if _USER.match(user):
        return None
    return (f"{given or f'--host-user {user}'} is not a login name; give the user the instances' image logs in as "
            "(admin, ec2-user, ubuntu)")


@dataclass(frozen=True)
class Bastion:
    """The host every other host is reached through: ``user@host:port``; ``source`` says where it came from."""

    host: str
    user: str | None = None
    port: int | None = None
    source: str = ""
    #: The group's instance that is the bastion, when it was found among them.
    instance_id: str | None = None

    @property
    def spec(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def parse_bastion(value: str, given: str | None = None) -> Bastion:
    """``[USER@]HOST[:PORT]`` (an IPv6 HOST in brackets) -> Bastion; anything else is a ValueError naming the setting
    as ``given`` (``--bastion X``, ``IMMUTABLE_INFRA_BASTION = 'X'``)."""
    given = given or f"--bastion {value}"
    found = _BASTION.match(value.strip())
    port = int(found["port"]) if found and found["port"] else None
    user = found["user"] if found else None
    if not found or (port is not None and not 0 < port < 65536) or (user is not None and not _USER.match(user)):
        raise ValueError(f"{given} is not USER@HOST[:PORT]; give the bastion's login and address, "
                         "like admin@203.0.113.10 or admin@bastion.example.com:2222")
    return Bastion(found["host"].strip("[]"), user, port, given)


# -- instances --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One running instance as ssh reaches it: by its id, on ``address`` (private; the bastion's own: public)."""

    instance_id: str
    address: str
    role: str | None = None
    private_ip: str = ""
    #: True when it is reached through the bastion, False for the bastion itself.
    jump: bool = True


def _running(instances: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [i for i in instances if i.get("State", {}).get("Name", "running") == "running"]


def find_bastion(instances: Iterable[Mapping[str, Any]], role: str = BASTION_ROLE) -> Bastion | None:
    """The running instance tagged ``Role=<role>`` with a public address (the lowest id when several), or None."""
    for instance in sorted(_running(instances), key=lambda i: str(i.get("InstanceId"))):
        public = instance.get("PublicIpAddress")
        if tags_of(instance.get("Tags")).get("Role") == role and public:
            iid = str(instance["InstanceId"])
            return Bastion(str(public), None, None, f"instance {iid} (Role {role}, public address {public})", iid)
    return None


def no_bastion_reason(group: str, instances: Iterable[Mapping[str, Any]], role: str, role_setting: str) -> str:
    """Why no bastion was found among ``group``'s instances, naming the options that give one."""
    tagged = [i for i in _running(instances) if tags_of(i.get("Tags")).get("Role") == role]
    why = (f"its running instance(s) with Role {role} ({', '.join(str(i['InstanceId']) for i in tagged)}) have no "
           "public address" if tagged else f"no running instance of {group} has the Role tag {role}")
    return (f"hosts: {group}'s hosts are reached through a bastion, and {why}; give one with --bastion USER@HOST[:PORT] "
            f"(IMMUTABLE_INFRA_BASTION), or name the bastion's role with {role_setting} ROLE")


def targets_of(instances: Iterable[Mapping[str, Any]], bastion: Bastion | None = None) -> list[Target]:
    """The running instances with a private address, in id order; the bastion instance on its public address."""
    out = []
    for instance in sorted(_running(instances), key=lambda i: str(i.get("InstanceId"))):
        iid, private = str(instance.get("InstanceId")), instance.get("PrivateIpAddress")
        role = tags_of(instance.get("Tags")).get("Role")
        if bastion is not None and iid == bastion.instance_id:
            out.append(Target(iid, bastion.host, role, str(private or ""), jump=False))
        elif private:
            out.append(Target(iid, str(private), role, str(private)))
    return out


# -- files ------------------------------------------------------------------------------------


def _q(value: Path | str) -> str:
    """A value for ssh_config: double-quoted when it holds a space."""
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_config_text(targets: Iterable[Target], bastion: Bastion, user: str, key: Path | str, known_hosts: Path | str,
                    *, title: str = "") -> str:
    """An OpenSSH config file: the bastion's block, then one ``Host <instance-id> <address>`` block per target.

    The address is in the pattern too, so ``ssh -F <file> <address>`` (Ansible's ``ansible_host``) gets the same
    options as ``ssh -F <file> <instance-id>`` (testinfra's ``ssh://<instance-id>``). ``ssh -F`` hands the file on to
    the jump's own ssh, which finds the bastion's key and known_hosts file in its block.
    """
    common = [
        f"  IdentityFile {_q(key)}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {_q(known_hosts)}",
        "  StrictHostKeyChecking accept-new",
        "  BatchMode yes",
        "  ConnectTimeout 10",
        "  LogLevel ERROR",
    ]
    lines = [f"# {title}" if title else "# written by immutable-infra", "",
             f"Host {BASTION_ALIAS}", f"  HostName {bastion.host}", f"  User {bastion.user or user}"]
    if bastion.port:
        lines.append(f"  Port {bastion.port}")
    lines += common
    for t in targets:
        lines += ["", f"# {t.instance_id}: Role {t.role or '(none)'}", f"Host {t.instance_id} {t.address}",
                  f"  HostName {t.address}", f"  User {user}"]
        if t.jump:
            lines.append(f"  ProxyJump {BASTION_ALIAS}")
        elif bastion.port:
            lines.append(f"  Port {bastion.port}")
        lines += common
    return "\n".join(lines) + "\n"


def inventory_group(role: str) -> str:
    """The Ansible group of a Role tag value (Ansible group names take letters, digits and ``_``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", role)


def inventory_data(targets: Iterable[Target], user: str, key: Path | str, ssh_config: Path | str) -> dict[str, Any]:
    """An Ansible inventory (YAML inventory plugin's shape): one group per Role tag value, hosts by instance id.

    Each host has ``ansible_host`` (its address), ``ansible_user``, ``ansible_ssh_private_key_file``,
    ``ansible_ssh_common_args`` (``-F <ssh_config>``, plus ``-o ProxyJump=...`` through the bastion), and the
    variables ``instance_id``, ``private_ip`` and ``role``. Instances without a Role tag are in no group.
    """
    ungrouped: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for t in targets:
        args = f"-F {shlex.quote(str(ssh_config))}" + (f" -o ProxyJump={BASTION_ALIAS}" if t.jump else "")
        host = {"ansible_host": t.address, "ansible_user": user, "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": args, "instance_id": t.instance_id, "private_ip": t.private_ip,
                "role": t.role or ""}
        if t.role:
            groups.setdefault(inventory_group(t.role), {"hosts": {}})["hosts"][t.instance_id] = host
        else:
            ungrouped[t.instance_id] = host
    top: dict[str, Any] = {}
    if ungrouped:
        top["hosts"] = ungrouped
    if groups:
        top["children"] = dict(sorted(groups.items()))
    return {"all": top}


def inventory_text(targets: Iterable[Target], user: str, key: Path | str, ssh_config: Path | str, *,
                   title: str = "") -> str:
    import yaml

    head = f"# {title}\n" if title else "# written by immutable-infra\n"
    return head + yaml.safe_dump(inventory_data(targets, user, key, ssh_config), sort_keys=False)


def ssh_url(instance_id: str, ssh_config: Path | str) -> str:
    """testinfra's URL of a host in the ssh config file: ``ssh://<instance-id>?ssh_config=<file>``."""
    return f"ssh://{instance_id}?ssh_config={urllib.parse.quote(str(ssh_config))}"


def ansible_url(instance_id: str, inventory: Path | str) -> str:
    """testinfra's URL of a host through the inventory: ``ansible://<instance-id>?ansible_inventory=<file>``."""
    return f"ansible://{instance_id}?ansible_inventory={urllib.parse.quote(str(inventory))}"


@dataclass(frozen=True)
class Transport:
    """The files written for one group: its ssh config, known_hosts and inventory, and the targets they name."""

    directory: Path
    bastion: Bastion
    targets: tuple[Target, ...]
    ssh_config: Path
    known_hosts: Path
    inventory: Path

    def url(self, instance_id: str) -> str:
        return ssh_url(instance_id, self.ssh_config)

    def ansible_url(self, instance_id: str) -> str:
        return ansible_url(instance_id, self.inventory)


def write_transport(directory: Path | str, instances: Iterable[Mapping[str, Any]], bastion: Bastion, user: str,
                    key: Path | str, *, title: str = "") -> Transport:
    """Write ``ssh_config`` and ``inventory.yml`` for the running instances into ``directory`` (known_hosts beside)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    targets = tuple(targets_of(list(instances), bastion))
    config, known, inventory = directory / "ssh_config", directory / "known_hosts", directory / "inventory.yml"
    known.touch()
    config.write_text(ssh_config_text(targets, bastion, user, key, known, title=title))
    inventory.write_text(inventory_text(targets, user, key, config, title=title))
    return Transport(directory, bastion, targets, config, known, inventory)


# -- a group's hosts on AWS -------------------------------------------------------------------


@dataclass
class RemoteHost:
    """One instance reached over ssh: what the host suite reads (``url``); ``boot_seconds`` is 0 (not booted by us)."""

    instance_id: str
    address: str
    url: str
    ansible_url: str
    boot_seconds: float = 0.0


@dataclass
class RemoteHosts:
    """A group's hosts on AWS, shaped like ``embedded_hosts.GroupHosts`` for the host suite: ``hosts`` (instance id ->
    RemoteHost), ``roles``, ``playbooks`` (role -> the run that configured its hosts; empty in an audit),
    ``unconfigured`` (instance id -> why no playbook was applied). ``stop()`` has nothing to stop."""

    transport: Transport
    hosts: dict[str, RemoteHost] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    playbooks: dict[str, PlaybookRun] = field(default_factory=dict)
    unconfigured: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        return None


def remote_settings_reason(settings: Settings) -> str | None:
    """Why hosts outside the embedded sandbox cannot be reached with these settings (no user, no key), or None."""
    missing = [s for s, v in (("--host-user", settings.host_user), ("--host-key", settings.host_key)) if not v]
    if not missing:
        return None
    endpoint = settings.aws_endpoint or "real AWS"
    return (f"hosts: on {endpoint} the instances' hosts are reached over ssh through the group's bastion, and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; set {REMOTE_OPTIONS}")


def bastion_for(settings: Settings, instances: Iterable[Mapping[str, Any]]) -> Bastion | None:
    """--bastion as given, else the group's bastion-role instance with a public address, else None."""
    if settings.bastion:
        return parse_bastion(settings.bastion, settings.given("bastion", settings.bastion))
    return find_bastion(instances, settings.bastion_role)


def reach_hosts(
    directory: Path | str, instances: list[Mapping[str, Any]], roles: Mapping[str, Any], bastion: Bastion, user: str,
    key: Path | str, playbooks_dir: Path | str | None, *, group: str = "-", extra_vars: dict | None = None,
) -> RemoteHosts:
    """Write the group's transport, and (``playbooks_dir`` given: not an audit) apply each role's playbook once to
    its hosts through the inventory (``--limit <role>``). ``roles``: the roles catalog."""
    from immutable_infra.embedded_hosts import run_playbook

    transport = write_transport(directory, instances, bastion, user, key,
                                title=f"immutable-infra: the hosts of {group}, through the bastion {bastion.spec}")
    out = RemoteHosts(transport)
    for t in transport.targets:
        out.hosts[t.instance_id] = RemoteHost(t.instance_id, t.address, transport.url(t.instance_id),
                                              transport.ansible_url(t.instance_id))
        if t.role is None:
            out.unconfigured[t.instance_id] = "no Role tag"
        elif t.role not in roles:
            out.unconfigured[t.instance_id] = f"role {t.role!r} is not in the roles catalog"
        else:
            out.roles[t.instance_id] = t.role
    if playbooks_dir is None:
        return out
    for role in sorted(set(out.roles.values())):
        ids = sorted(i for i, r in out.roles.items() if r == role)
        playbook = Path(playbooks_dir) / roles[role].playbook
        who = f"hosts {', '.join(ids)} of {group} (role {role}, inventory {transport.inventory})"
        out.playbooks[role] = run_playbook(transport.inventory, playbook, transport.directory / f"ansible-{inventory_group(role)}", who,
                                           extra_vars, limit=inventory_group(role), host_key_checking=True,
                                           error=TransportError)
    return out


# -- the dev box ------------------------------------------------------------------------------


def resolve_dev_box(url: str, directory: Path | str, *, setting: str = "--dev-box") -> str:
    """``vagrant://[NAME][?cwd=DIR]`` -> ``ssh://NAME?ssh_config=<file>`` (``vagrant ssh-config NAME`` run in DIR,
    written into ``directory``); any other URL as it is. Vagrant missing or failing raises TransportError (one line
    naming ``setting`` and the fix)."""
    if not url.startswith("vagrant://"):
        return url
    parsed = urllib.parse.urlparse(url)
    name = parsed.netloc
    query = urllib.parse.parse_qs(parsed.query)
    unknown = sorted(set(query) - {"cwd"})
    if unknown or parsed.path not in ("", "/"):
        raise TransportError(f"{setting} {url}: write vagrant://NAME or vagrant://NAME?cwd=DIR (the folder of the "
                             f"Vagrantfile){f'; unknown parameter {unknown[0]!r}' if unknown else ''}")
    cwd = Path(query["cwd"][0]).expanduser() if "cwd" in query else None
    if cwd is not None and not cwd.is_dir():
        raise TransportError(f"{setting} {url}: cwd {cwd} is not a folder; give the folder of the Vagrantfile")
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        raise TransportError(f"{setting} {url}: vagrant is not on PATH; install Vagrant, or give the box as an ssh "
                             "URL (vagrant ssh-config > box.ssh-config; --dev-box ssh://default?ssh_config=box.ssh-config)")
    cmd = [vagrant, "ssh-config", *([name] if name else [])]
    where = f" in {cwd}" if cwd else ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TransportError(f"{setting} {url}: `{' '.join(cmd[1:])}`{where} took over 120 s; is the box up?") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:]) or "no output"
        raise TransportError(f"{setting} {url}: `vagrant {' '.join(cmd[1:])}`{where} exited {proc.returncode}: {tail}; "
                             f"bring the box up (vagrant up{f' {name}' if name else ''}{where}) or fix NAME/cwd")
    hosts = re.findall(r"^Host\s+(\S+)", proc.stdout, re.M)
    host = name or (hosts[0] if hosts else "")
    if host not in hosts:
        raise TransportError(f"{setting} {url}: `vagrant {' '.join(cmd[1:])}`{where} printed no Host {host or ''} "
                             "block; check the machine's name (vagrant status)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"dev-box-{re.sub(r'[^A-Za-z0-9_.-]', '-', host)}.ssh-config"
    config.write_text(proc.stdout)
    return ssh_url(host, config)


def dev_box_url(h: Harness) -> str | None:
    """The session's --dev-box as testinfra reads it (a vagrant:// box resolved into the run's folder), or None."""
    url = h.settings.dev_box
    if not url or not url.startswith("vagrant://"):
        return url or None
    return resolve_dev_box(url, h.run.path / "dev-box", setting=h.settings.source("dev_box"))
