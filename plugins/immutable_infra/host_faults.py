"""Host faults: out-of-band changes made *on* a running host, each caught by the host check and by nothing else.

The chaos catalog of :mod:`immutable_infra.chaos` changes what AWS shows; these
four change what runs on an instance, the way a person with a shell does it:

- :class:`HostPackageChanged`: a package the contract pins at a version is
  rebuilt from its installed files at a higher version and installed with
  ``dpkg -i`` (an upgrade in place);
- :class:`HostServiceStopped`: a service the contract names is stopped;
- :class:`HostConfigEdited`: a file the contract says must contain a text is
  edited so it no longer does;
- :class:`HostPortOpened`: a TCP port the contract does not name starts
  listening on 0.0.0.0 (only where the contract has ``ports_exclusive``).

Each fault is a frozen dataclass whose ``repr`` is valid Python
(``HostServiceStopped(instance_id='i-0a1', service='nginx')``), as in
``chaos.py``. Life of a fault:

- ``select(instance_id, role, contract, facts)`` picks a target from what the
  role's :class:`~immutable_infra.config.HostContract` names and the host's
  :class:`~immutable_infra.hosts.HostFacts` (read before) show, or returns
  None; ``why_not(role, contract, facts)`` then says why, in one line;
- ``commands()`` are the shell lines ``inject`` runs; ``plan()`` prints them
  (``--chaos-dry-run``), so the dry run shows exactly what would be run;
- ``inject(run)`` runs them through ``run(script) -> stdout``, a shell on the
  host (:func:`host_runner` builds one on testinfra's host from the host URL,
  so any transport testinfra speaks works);
- ``expected`` are the kinds of the ``hosts`` findings the fault must cause
  (a finding's id ends in its kind: ``hosts:<group>:<where>:service-not-running:nginx``);
  ``explains(finding)`` also accepts what the fault may cause besides (a stopped
  service's ports going silent), so nothing it causes is a false alarm.

Repair is the immutable one: the host is replaced (:func:`replace_hosts`:
stopped, booted again from the image, configured by its role's playbook).
:func:`aim` spreads the catalog over a group's hosts (one fault per host while
there are hosts enough, never two that touch the same thing or explain each
other's findings on one host); :func:`attribute` decides, from the findings
before and after, which fault was caught and what is a false alarm.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from immutable_infra.config import VERSION_ANY, HostContract
from immutable_infra.errors import ToolError
from immutable_infra.findings import Finding, finding_kind
from immutable_infra.hosts import HostFacts

if TYPE_CHECKING:
    from immutable_infra.embedded_hosts import GroupHosts, PlaybookRun

#: ``run(script) -> stdout``: runs a shell script on one host, raises :class:`HostFaultError` when it fails.
Run = Callable[[str], str]

#: The check that must see every host fault.
CHECK = "hosts"

#: How every host fault is repaired.
REPAIR = "host replaced: stopped, booted again from the image, configured by its role's playbook"

#: Ports a HostPortOpened opens, the first one the contract does not name and nothing listens on.
OPEN_PORTS = (9999, 9998, 9997, 19999)

#: What a HostPackageChanged appends to the installed version.
VERSION_SUFFIX = "+chaos1"


class HostFaultError(ToolError):
    """A host fault could not be injected, or a host could not be replaced (a tool problem, not a finding)."""


def _facts(facts: HostFacts | Mapping[str, Any]) -> HostFacts:
    return facts if isinstance(facts, HostFacts) else HostFacts.from_dict(facts)


def _pick(candidates: Sequence[Any], index: int) -> Any:
    return candidates[int(index) % len(candidates)] if candidates else None


@dataclass(frozen=True, repr=False)
class HostFault:
    """One change made on the host of ``instance_id``. Subclasses set ``name``, ``summary``, ``needs``."""

    instance_id: str

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: what the role contract must name for the fault to have a target (said when it has none)
    needs: ClassVar[str] = ""
    repair: ClassVar[str] = REPAIR

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({args})"

    @classmethod
    def select(cls, instance_id: str, role: str, contract: HostContract, facts: HostFacts | Mapping[str, Any],
               index: int = 0) -> HostFault | None:
        """The fault aimed at what ``contract`` names and the host has, or None (:meth:`why_not` says why)."""
        raise NotImplementedError

    @classmethod
    def why_not(cls, role: str, contract: HostContract, facts: HostFacts | Mapping[str, Any]) -> str | None:
        """Why :meth:`select` finds no target on this host (one line), or None when it finds one."""
        raise NotImplementedError

    @property
    def touches(self) -> frozenset[str]:
        """What on the host it changes (``service:nginx``), so two faults on one host never touch the same thing."""
        raise NotImplementedError

    @property
    def expected(self) -> tuple[str, ...]:
        """Kinds of the ``hosts`` findings it must cause on its instance (the ends of their ids)."""
        raise NotImplementedError

    @property
    def side_effects(self) -> tuple[str, ...]:
        """Kinds of ``hosts`` findings it may cause besides (never required)."""
        return ()

    def expected_ids(self, group: str, where: str = "") -> list[str]:
        """The ids of the expected findings: ``hosts:<group>:<address, else instance id>:<kind>``."""
        return [f"{CHECK}:{group}:{where or self.instance_id}:{kind}" for kind in self.expected]

    def explains(self, finding: Finding) -> bool:
        """True for a ``hosts`` finding about its instance of a kind it expects or may cause."""
        return (finding.check == CHECK and finding.aws_id == self.instance_id
                and finding_kind(finding) in (*self.expected, *self.side_effects))

    def commands(self) -> list[str]:
        """The shell lines :meth:`inject` runs on the host, in order (run under ``set -e``: a failing line stops them)."""
        raise NotImplementedError

    def script(self) -> str:
        return "set -e\n" + "\n".join(self.commands()) + "\n"

    def plan(self) -> list[str]:
        """What :meth:`inject` would run, as text; touches nothing."""
        return [f"on {self.instance_id}: {line}" for line in self.commands()]

    def inject(self, run: Run) -> str:
        """Run the fault's commands on the host; returns their output."""
        return run(self.script())


@dataclass(frozen=True, repr=False)
class HostPackageChanged(HostFault):
    """A package the contract pins is rebuilt from its installed files at a higher version and installed in place."""

    package: str = ""
    version: str = ""  # the version it is changed to

    name: ClassVar[str] = "host_package_changed"
    summary: ClassVar[str] = "upgrade a pinned package in place (its files repacked at a higher version, dpkg -i)"
    needs: ClassVar[str] = ("a package the role's host contract pins (an exact version, or \"baked\": the image's), "
                            "installed on the host")

    @classmethod
    def _targets(cls, contract, facts):
        f = _facts(facts)
        return [name for name, pin in sorted(contract.packages.items())
                if pin != VERSION_ANY and f.packages.get(name) is not None]

    @classmethod
    def select(cls, instance_id, role, contract, facts, index=0):
        name = _pick(cls._targets(contract, facts), index)
        if name is None:
            return None
        return cls(instance_id, name, f"{_facts(facts).packages[name]}{VERSION_SUFFIX}")

    @classmethod
    def why_not(cls, role, contract, facts):
        if cls._targets(contract, facts):
            return None
        if not contract.packages:
            return f"role {role}'s host contract lists no package"
        unpinned = [n for n, pin in sorted(contract.packages.items()) if pin == VERSION_ANY]
        if len(unpinned) == len(contract.packages):
            listed = ", ".join(f'{n} = "{VERSION_ANY}"' for n in unpinned)
            return (f"role {role}'s host contract pins no package version ({listed}): an upgrade in place breaks "
                    f"nothing it says; pin a version (or \"baked\") in [roles.{role}.host] packages to aim {cls.name}")
        return f"role {role}'s host has none of the packages its host contract pins"

    @property
    def touches(self):
        return frozenset({f"package:{self.package}"})

    @property
    def expected(self):
        return (f"package-version/{self.package}",)

    def commands(self):
        p = shlex.quote(self.package)
        control = ('{ echo "Package: $p"; echo "Version: $v"; echo "Architecture: $(dpkg-query -W -f=\'${Architecture}\' "$p")"; '
                   'echo "Maintainer: immutable-infra chaos <chaos@localhost>"; '
                   'for k in Depends Pre-Depends Provides Replaces; do '
                   'val=$(dpkg-query -W -f="\\${$k}" "$p"); if [ -n "$val" ]; then echo "$k: $val"; fi; done; '
                   'echo "Description: $p changed in place (host_package_changed)"; } > "$d/DEBIAN/control"')
        return [
            f"p={p}; v={shlex.quote(self.version)}; d=/tmp/iih-chaos-$p",
            'rm -rf "$d" && mkdir -p "$d/DEBIAN"',
            'dpkg-query -L "$p" | while IFS= read -r f; do if [ -L "$f" ] || [ -f "$f" ]; then echo "$f"; fi; done'
            ' | tar -C / --no-recursion -cf - -T - | tar -C "$d" -xf -',
            control,
            'dpkg-deb --root-owner-group --build "$d" "$d.deb" >/dev/null',
            'DEBIAN_FRONTEND=noninteractive dpkg -i "$d.deb" >/dev/null',
            'rm -rf "$d" "$d.deb"',
            'test "$(dpkg-query -W -f=\'${Version}\' "$p")" = "$v"',
        ]


@dataclass(frozen=True, repr=False)
class HostServiceStopped(HostFault):
    """A service the contract names is stopped (``systemctl stop``); still enabled."""

    service: str = ""
    #: the contract's ports: a stopped service may leave any of them silent (allowed, not required)
    ports: tuple[int, ...] = ()

    name: ClassVar[str] = "host_service_stopped"
    summary: ClassVar[str] = "stop a service the role's host contract names (systemctl stop)"
    needs: ClassVar[str] = "a service the role's host contract names, running on the host"

    @classmethod
    def _targets(cls, contract, facts):
        f = _facts(facts)
        return [s for s in contract.services if (f.services.get(s) or {}).get("running")]

    @classmethod
    def select(cls, instance_id, role, contract, facts, index=0):
        service = _pick(cls._targets(contract, facts), index)
        return None if service is None else cls(instance_id, service, tuple(sorted(contract.ports)))

    @classmethod
    def why_not(cls, role, contract, facts):
        if cls._targets(contract, facts):
            return None
        if not contract.services:
            return f"role {role}'s host contract names no service"
        return f"none of the services role {role}'s host contract names runs on the host ({', '.join(contract.services)})"

    @property
    def touches(self):
        return frozenset({f"service:{self.service}"})

    @property
    def expected(self):
        return (f"service-not-running:{self.service}",)

    @property
    def side_effects(self):
        return tuple(f"port-not-listening:{port}" for port in self.ports)

    def commands(self):
        s = shlex.quote(self.service)
        return [f"systemctl stop {s}", f"if systemctl is-active --quiet {s}; then echo {s} still active >&2; exit 1; fi"]


def _sed_literal(text: str) -> str:
    """``text`` as a sed basic regular expression matching it literally (``|`` delimited)."""
    return "".join("\\" + c if c in "\\.*[]^$|" else c for c in text)


@dataclass(frozen=True, repr=False)
class HostConfigEdited(HostFault):
    """A file the contract says must contain ``text`` is edited in place so it no longer does."""

    path: str = ""
    text: str = ""

    name: ClassVar[str] = "host_config_edited"
    summary: ClassVar[str] = "edit a file of the role's host contract so it lacks a text it must contain (sed -i)"
    needs: ClassVar[str] = "a file the role's host contract says must contain a text, holding it on the host"

    @classmethod
    def _targets(cls, contract, facts):
        f = _facts(facts)
        out = []
        for wanted in contract.files:
            state = f.files.get(wanted.path) or {}
            out += [(wanted.path, t) for t in wanted.contains if state.get("exists") and t in (state.get("content") or "")]
        return out

    @classmethod
    def select(cls, instance_id, role, contract, facts, index=0):
        # one target per file (its first text), the files in the contract's order
        per_file = {}
        for path, text in cls._targets(contract, facts):
            per_file.setdefault(path, text)
        target = _pick(list(per_file.items()), index)
        return None if target is None else cls(instance_id, *target)

    @classmethod
    def why_not(cls, role, contract, facts):
        if cls._targets(contract, facts):
            return None
        if not any(w.contains for w in contract.files):
            return f"role {role}'s host contract names no file with contains = [...]"
        return f"no file role {role}'s host contract names holds its texts on the host"

    @property
    def touches(self):
        return frozenset({f"file:{self.path}"})

    @property
    def expected(self):
        return (f"file-content/{self.path}",)

    def commands(self):
        path = shlex.quote(self.path)
        expr = shlex.quote(f"s|{_sed_literal(self.text)}|edited-in-place|g")
        return [f"sed -i {expr} {path}",
                f"if grep -qF {shlex.quote(self.text)} {path}; then echo {path} still holds the text >&2; exit 1; fi"]


@dataclass(frozen=True, repr=False)
class HostPortOpened(HostFault):
    """A TCP port the contract does not name listens on 0.0.0.0 (a transient systemd unit serving HTTP)."""

    port: int = OPEN_PORTS[0]

    name: ClassVar[str] = "host_port_opened"
    summary: ClassVar[str] = "listen on a TCP port the role's host contract does not name, on 0.0.0.0"
    needs: ClassVar[str] = "a role host contract with ports_exclusive = true"

    @classmethod
    def _port(cls, contract, facts):
        listening = _facts(facts).listening or {}
        return next((p for p in OPEN_PORTS if p not in contract.ports and p not in listening), None)

    @classmethod
    def select(cls, instance_id, role, contract, facts, index=0):
        if not contract.ports_exclusive:
            return None
        port = cls._port(contract, facts)
        return None if port is None else cls(instance_id, port)

    @classmethod
    def why_not(cls, role, contract, facts):
        if not contract.ports_exclusive:
            return (f"role {role}'s host contract has no ports_exclusive: a port opened beyond its ports breaks "
                    f"nothing it says; set ports_exclusive = true in [roles.{role}.host] to aim {cls.name}")
        if cls._port(contract, facts) is None:
            return f"every port host_port_opened would open ({', '.join(map(str, OPEN_PORTS))}) is named or in use"
        return None

    @property
    def touches(self):
        return frozenset({f"port:{self.port}"})

    @property
    def expected(self):
        return (f"port-unexpected:{self.port}",)

    def commands(self):
        return [
            "mkdir -p /run/iih-chaos-port",
            f"systemd-run --unit=iih-chaos-port-{self.port} python3 -m http.server {self.port} --bind 0.0.0.0 "
            "--directory /run/iih-chaos-port >/dev/null 2>&1",
            f"i=0; until ss -Hltn 'sport = :{self.port}' | grep -q .; do i=$((i+1)); "
            f"[ $i -lt 100 ] || exit 1; sleep 0.1; done",
        ]


CATALOG: dict[str, type[HostFault]] = {
    cls.name: cls for cls in (HostPackageChanged, HostServiceStopped, HostConfigEdited, HostPortOpened)
}


def catalog_table() -> list[dict[str, Any]]:
    """The host faults as rows (name, summary, what they need, repair), for reports and docs."""
    return [{"fault": name, "summary": cls.summary, "needs": cls.needs, "expected_checks": [CHECK],
             "repair": cls.repair} for name, cls in CATALOG.items()]


# -- aiming a catalog at a group's hosts ---------------------------------------------------------


def collide(a: HostFault, b: HostFault) -> bool:
    """Two faults on one host that touch the same thing, or one of which would explain the other's finding."""
    if a.instance_id != b.instance_id:
        return False
    if a.touches & b.touches:
        return True
    return bool(set(a.expected) & set(b.side_effects) or set(b.expected) & set(a.side_effects))


@dataclass(frozen=True)
class HostTarget:
    """What :func:`aim` knows of one host: its role, the role's contract, its facts read before any fault."""

    role: str
    contract: HostContract
    facts: HostFacts
    #: Package -> version in the host's image, for the contract's packages pinned "baked".
    baked: Mapping[str, str] | None = None


@dataclass
class Aimed:
    """Faults aimed at a group's hosts (``faults``), and per fault name not aimed, why (``not_aimed``)."""

    faults: list[HostFault] = field(default_factory=list)
    not_aimed: dict[str, str] = field(default_factory=dict)

    def on(self, instance_id: str) -> list[HostFault]:
        return [f for f in self.faults if f.instance_id == instance_id]

    def plans(self) -> list[str]:
        return [line for f in self.faults for line in [f"{f!r}", *(f"  {p}" for p in f.plan())]]


def aim(targets: Mapping[str, HostTarget], names: Iterable[str] = tuple(CATALOG)) -> Aimed:
    """One fault per name, each on the least loaded host that gives it a target and where it collides with
    nothing aimed there before (ties: by instance id): disjoint hosts while there are enough, else batched."""
    out = Aimed()
    for name in names:
        if name not in CATALOG:
            raise ValueError(f"unknown host fault {name!r}; host faults are {', '.join(CATALOG)}")
        cls = CATALOG[name]
        reasons = {}
        order = sorted(targets, key=lambda i: (len(out.on(i)), i))
        for instance_id in order:
            t = targets[instance_id]
            fault = cls.select(instance_id, t.role, t.contract, t.facts)
            if fault is None:
                reasons[instance_id] = cls.why_not(t.role, t.contract, t.facts) or "no target"
                continue
            if any(collide(fault, other) for other in out.on(instance_id)):
                reasons[instance_id] = f"its target collides with {', '.join(repr(o) for o in out.on(instance_id))}"
                continue
            out.faults.append(fault)
            break
        else:
            out.not_aimed[name] = ("no host to aim at" if not targets else
                                   "; ".join(f"{i} ({targets[i].role}): {r}" for i, r in sorted(reasons.items())))
    return out


# -- attribution (pure) ----------------------------------------------------------------------------


@dataclass
class Attribution:
    """Per fault (its repr): the new findings that name it (``caught``) and the expected kinds none named
    (``missed``); new findings no fault explains (``false_alarms``)."""

    caught: dict[str, list[Finding]] = field(default_factory=dict)
    missed: dict[str, list[str]] = field(default_factory=dict)
    false_alarms: list[Finding] = field(default_factory=list)


def new_findings(baseline: Iterable[Finding], after: Iterable[Finding]) -> list[Finding]:
    """Findings of ``after`` the baseline does not have, by id (a finding the host had before is no detection)."""
    before = {f.id for f in baseline}
    return [f for f in after if f.id not in before]


def attribute(faults: Sequence[HostFault], baseline: Iterable[Finding], after: Iterable[Finding]) -> Attribution:
    """Which fault the new ``after`` findings name, which expected kinds went unseen, and the false alarms."""
    out = Attribution()
    new = new_findings(baseline, after)
    for fault in faults:
        mine = [f for f in new if f.check == CHECK and f.aws_id == fault.instance_id
                and finding_kind(f) in fault.expected]
        out.caught[repr(fault)] = mine
        seen = {finding_kind(f) for f in mine}
        out.missed[repr(fault)] = [k for k in fault.expected if k not in seen]
    out.false_alarms = [f for f in new if not any(fault.explains(f) for fault in faults)]
    return out


# -- running on hosts ------------------------------------------------------------------------------


def _cause(exc: BaseException) -> str:
    result = exc.args[0] if exc.args else None
    stderr = getattr(result, "stderr", None)
    text = stderr if isinstance(stderr, str) and stderr.strip() else str(exc)
    return " ".join(text.split())[-500:] or type(exc).__name__


def host_runner(host_url: str, **testinfra_kwargs: Any) -> Run:
    """``run(script)`` on the host at ``host_url`` (any testinfra URL), through testinfra's host: ``sh -c`` the
    script, return its stdout; a failure (or a host that cannot be reached) raises :class:`HostFaultError`."""
    import testinfra

    def run(script: str) -> str:
        try:
            host = testinfra.get_host(host_url, **testinfra_kwargs)
            result = host.run("sh -c %s", script)
        except Exception as exc:  # testinfra's transport errors (ssh exits 255: RuntimeError)
            raise HostFaultError(f"{host_url}: cannot run on the host: {_cause(exc)}") from exc
        if result.rc != 0:
            tail = " ".join((result.stderr or result.stdout or "").split())[-500:] or "no output"
            raise HostFaultError(f"{host_url}: the fault's script exited {result.rc}: {tail}")
        return result.stdout

    return run


def replace_hosts(hosts: GroupHosts, instance_ids: Iterable[str], playbooks_dir: Path | str,
                  roles: Mapping[str, Any], *, template: str = "debian12-base",
                  cache_dir: Path | str | None = None) -> dict[str, PlaybookRun]:
    """Replace the hosts of ``instance_ids`` the immutable way: each is stopped, a new one booted from the cached
    image (same instance id, same private IP, same run folder) and configured by its role's playbook, one
    ansible-playbook run per role. ``hosts`` is updated in place; returns role -> the playbook run.

    The hosts are stopped and booted at the same time, and the roles' playbooks run at the same time. A host
    that fails to boot or configure raises :class:`HostFaultError`; the new hosts started stay in ``hosts`` (so
    ``hosts.stop()`` stops them) and a replaced host that could not be started is left out of it.
    """
    from immutable_infra.embedded_hosts import apply_role_playbooks, build_rootfs, start_host

    ids = sorted(set(instance_ids))
    unknown = [i for i in ids if i not in hosts.hosts]
    if unknown:
        raise HostFaultError(f"cannot replace {', '.join(unknown)}: not a host of this group")
    rootfs = build_rootfs(template, cache_dir)

    def replace(instance_id: str):
        old = hosts.hosts[instance_id]
        old.stop()  # a host that does not stop stays in ``hosts``: the group's teardown tries again
        del hosts.hosts[instance_id]
        handle = start_host(instance_id, old.private_ip, rootfs, old.directory.parent)
        handle.instance_id = instance_id
        return handle

    errors = []
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(ids)))) as pool:  # stops and boots mostly wait
        futures = {i: pool.submit(replace, i) for i in ids}
    for instance_id, future in futures.items():
        try:
            hosts.hosts[instance_id] = future.result()
        except ToolError as exc:
            errors.append(f"{instance_id}: {exc}")
    if errors:
        raise HostFaultError("host replacement: " + "; ".join(errors))
    by_role = {role: [hosts.hosts[i] for i in ids if hosts.roles.get(i) == role]
               for role in sorted({hosts.roles[i] for i in ids if i in hosts.roles})}
    try:
        return apply_role_playbooks(by_role, playbooks_dir, roles)
    except ToolError as exc:
        raise HostFaultError(f"host replacement: {exc}") from None


# -- the experiment on a group's hosts ----------------------------------------------------------------


#: ``() -> (checks run, findings)``: one pass of the AWS-side checks (``verify``) over the group.
AwsPass = Callable[[], tuple[list[str], list[Finding]]]


@dataclass
class HostExperiment:
    """What :func:`run_experiment` did on one group's hosts, and what it found."""

    group: str
    aimed: Aimed
    dry_run: bool = False
    #: fault repr -> why it could not be injected (a tool error)
    errors: dict[str, str] = field(default_factory=dict)
    attribution: Attribution = field(default_factory=Attribution)
    #: the AWS-side checks that ran before and after the injection, and their new findings (each a false alarm)
    aws_checks: list[str] = field(default_factory=list)
    aws_new: list[Finding] = field(default_factory=list)
    #: hosts findings new against the baseline after the repair (a replaced host that is not green)
    residue: list[Finding] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    repair_error: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def injected(self) -> list[HostFault]:
        """The faults injected (none in a dry run; not those that failed)."""
        return [] if self.dry_run else [f for f in self.aimed.faults if repr(f) not in self.errors]

    @property
    def false_alarms(self) -> list[Finding]:
        return [*self.attribution.false_alarms, *self.aws_new]

    def fault(self, name: str) -> HostFault | None:
        return next((f for f in self.aimed.faults if f.name == name), None)

    def matrix_rows(self) -> list[tuple[str, list[str], list[str]]]:
        """(fault, expected checks, checks that saw it) per injected fault: ``hosts`` when a finding named it, an
        AWS-side check when one of its new findings names the fault's instance."""
        rows = []
        for f in self.injected:
            seen = [CHECK] if self.attribution.caught.get(repr(f)) else []
            seen += sorted({x.check for x in self.aws_new if x.aws_id == f.instance_id})
            rows.append((f.name, [CHECK], seen))
        return rows

    def findings(self) -> list[Finding]:
        """Misses, false alarms and residue, as findings of the ``chaos`` check (as the chaos suite reports them)."""
        out = []
        for f in self.injected:
            for kind in self.attribution.missed.get(repr(f), []):
                out.append(Finding("chaos", self.group, "", f.instance_id, f"hosts sees {f.name}",
                                   f"missed: no new hosts finding {kind} on {f.instance_id} after {f!r}",
                                   {"kind": "miss", "fault": f.name, "check": CHECK, "repr": repr(f)}))
        for x in self.false_alarms:
            out.append(Finding("chaos", self.group, x.address, x.aws_id, "every new finding explained by an injected "
                               "host fault", f"false alarm: {x}", {"kind": "false-alarm", "finding": x.to_dict()}))
        for x in self.residue:
            out.append(Finding("chaos", self.group, x.address, x.aws_id, "green after the host was replaced",
                               f"not repaired: {x}", {"kind": "residue", "finding": x.to_dict()}))
        return out


def run_experiment(group: str, hosts: GroupHosts, targets: Mapping[str, HostTarget], playbooks_dir: Path | str,
                   roles: Mapping[str, Any], *, names: Iterable[str] = tuple(CATALOG), dry_run: bool = False,
                   aws_pass: AwsPass | None = None, addresses: Mapping[str, str] | None = None,
                   cache_dir: Path | str | None = None) -> HostExperiment:
    """Aim the host faults at ``targets`` (facts read before: the baseline), inject them, read every host once,
    attribute, then replace the hosts that got a fault and read them again (green = no finding new against the
    baseline). ``aws_pass`` runs before and after the injection: any new AWS-side finding is a false alarm.
    ``dry_run`` aims and plans only. A host that cannot be read raises (a tool error), after the repair."""
    import time

    from immutable_infra.checks.hosts import find_host_findings
    from immutable_infra.hosts import read_host_facts

    addresses = addresses or {}

    def judge(instance_id: str, facts: HostFacts) -> list[Finding]:
        t = targets[instance_id]
        return find_host_findings(group, instance_id, t.role, t.contract, facts, address=addresses.get(instance_id, ""),
                                  baked=t.baked)

    def read_all(ids: list[str]) -> dict[str, HostFacts]:
        """One read of each host, the hosts at the same time (each read is many short ssh round trips)."""
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(ids)))) as pool:
            futures = {i: pool.submit(read_host_facts, hosts.hosts[i].url, targets[i].contract) for i in ids}
        return {i: future.result() for i, future in futures.items()}

    exp = HostExperiment(group, aim(targets, names), dry_run=dry_run)
    if dry_run or not exp.aimed.faults:
        return exp
    baseline = [f for i in sorted(targets) for f in judge(i, targets[i].facts)]
    clock = time.monotonic()
    if aws_pass is not None:
        exp.aws_checks, aws_before = aws_pass()
    exp.seconds["aws_baseline"] = round(time.monotonic() - clock, 1)
    touched = sorted({f.instance_id for f in exp.aimed.faults})
    try:
        clock = time.monotonic()
        for fault in exp.aimed.faults:
            try:
                fault.inject(host_runner(hosts.hosts[fault.instance_id].url))
            except ToolError as exc:
                exp.errors[repr(fault)] = str(exc)
        exp.seconds["inject"] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()
        after = [f for i, facts in read_all(sorted(targets)).items() for f in judge(i, facts)]
        exp.attribution = attribute(exp.injected, baseline, after)
        exp.seconds["read"] = round(time.monotonic() - clock, 1)
        if aws_pass is not None:
            clock = time.monotonic()
            _, aws_after = aws_pass()
            exp.aws_new = new_findings(aws_before, aws_after)
            exp.seconds["aws_after"] = round(time.monotonic() - clock, 1)
    finally:
        clock = time.monotonic()
        try:
            replace_hosts(hosts, touched, playbooks_dir, roles, cache_dir=cache_dir)
            exp.replaced = touched
        except ToolError as exc:
            exp.repair_error = str(exc)
        exp.seconds["replace"] = round(time.monotonic() - clock, 1)
    if not exp.repair_error:
        clock = time.monotonic()
        repaired = [f for i, facts in read_all(touched).items() for f in judge(i, facts)]
        exp.residue = new_findings(baseline, repaired)
        exp.seconds["prove"] = round(time.monotonic() - clock, 1)
    return exp


__all__ = [
    "CATALOG", "CHECK", "REPAIR", "Aimed", "Attribution", "HostConfigEdited", "HostExperiment", "HostFault",
    "HostFaultError", "HostPackageChanged", "HostPortOpened", "HostServiceStopped", "HostTarget", "aim", "attribute",
    "catalog_table", "collide", "host_runner", "new_findings", "replace_hosts", "run_experiment",
]
