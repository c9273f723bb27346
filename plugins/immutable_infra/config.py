"""Config: one schema for ``group.toml``, ``roles.toml`` and ``parity.toml``, checked before anything is applied.

Each file is declared once here as a pydantic model with unknown keys
forbidden; nothing else in the package parses these files. A file that does
not validate raises ``ConfigError`` with one line naming the file, the key
and the fix (a misspelt key gets a suggestion). The loaders that give the
rest of the package its typed objects are ``catalog.load_group``,
``roles.load_roles`` and ``images.load_allow_list``; ``check_catalog`` checks
what one file cannot know alone (peers, partners and flow ends name known
groups, roles name roles of the roles catalog).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from immutable_infra.errors import ToolError
from immutable_infra.flows import Flow, FlowError, parse_flows

GROUP_FILE = "group.toml"
ROLES_FILE = "roles.toml"
PARITY_FILE = "parity.toml"
KINDS = ("ops-center", "application")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
INPUT_REF = re.compile(r"^(?P<group>[a-z0-9][a-z0-9-]*)\.(?P<output>[A-Za-z_][A-Za-z0-9_]*)$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
RESOURCE_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(ToolError):
    """A config file does not validate; the message names the file, the key and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(choices)}"


def _names(kind: str, value: Any, known: Mapping[str, Any], fix_where: str) -> list[str]:
    """A list of names each of which is a key of ``known`` (faults, checks)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{fix_where} must be a list of {kind} names, e.g. {fix_where} = [{next(iter(known))!r}]")
    for item in value:
        if item not in known:
            raise ValueError(f"{fix_where} names unknown {kind} {item!r}; {_suggest(item, sorted(known))}")
    return list(value)


# --------------------------------------------------------------------------- group.toml


class MutationConfig(_Model):
    """``[mutation]``: what the in-place mutation check treats as immutable."""

    immutable_types: list[str] = Field(
        default_factory=list, description="extra resource types that must never change in place (beyond aws_instance and the defaults)")
    metadata_attributes: list[str] = Field(
        default_factory=list, description="attributes whose in-place change is metadata only (never a mutation), e.g. tags")

    @field_validator("immutable_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for item in value:
            if not RESOURCE_TYPE.match(item):
                raise ValueError(f"[mutation] immutable_types names {item!r}, not a Terraform resource type; "
                                 "write types such as \"aws_launch_template\"")
        return value


class ChaosConfig(_Model):
    """``[chaos]``: which faults the chaos suite injects in this group and which checks it runs."""

    faults: list[str] | None = Field(
        None, description="faults of the chaos catalog to inject (default: the whole catalog)")
    checks: list[str] | None = Field(
        None, description="checks run to catch them (default: every check)")

    @field_validator("faults", mode="before")
    @classmethod
    def _faults(cls, value: Any) -> Any:
        from immutable_infra.chaos import CATALOG

        return None if value is None else list(_names("fault", value, CATALOG, "[chaos] faults"))

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        from immutable_infra.verify import CHECKS

        return None if value is None else list(_names("check", value, CHECKS, "[chaos] checks"))


class DisasterConfig(_Model):
    """``[disaster]``: the disaster-tolerance drill."""

    partner: str = Field(description="the group that must keep serving while this one is destroyed and rebuilt")


class DeployedConfig(_Model):
    """``[deployed]``: how the team's own wrapper reaches the group as deployed (``--audit`` without ``--run-id``)."""

    profile: str | None = Field(
        None, description="AWS credentials profile of the account the group lives in (AWS_PROFILE for its Terraform "
                          "and its AWS clients); not used against an --aws-endpoint sandbox")
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Terraform variables the team's wrapper passes (-var), beside [inputs]")


class GroupConfig(_Model):
    """``group.toml``: one infrastructure group's contract."""

    kind: str = Field(description="ops-center or application; decides which roles may run in the group")
    region: str = Field(description="AWS region of the group, e.g. ap-southeast-1")
    vpc_cidr: str = Field(description="IPv4 CIDR of the group's VPC, e.g. 10.21.0.0/16")
    description: str = Field("", description="what the group is, for people")
    peers: list[str] = Field(
        default_factory=list, description="groups this group's VPC is peered with; must name known groups and be mutual. "
                        "A [[flows]] entry between two groups needs them to be peers")
    rebuild_budget_seconds: float | None = Field(
        None, gt=0, description="the rebuild suite fails when destroy+recreate takes longer (seconds); "
                                "without it the budget test is skipped")
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description='[inputs]: Terraform variable = "<group>.<output>"; these make the dependency order')
    roles: dict[str, int] = Field(
        default_factory=dict, description="[roles]: expected instance count per role (roles of roles.toml)")
    flows: list[Flow] = Field(
        default_factory=list, description="[[flows]]: traffic that must be allowed (from, to as role@group; protocol; port)")
    isolation: list[Flow] = Field(
        default_factory=list, description="[[isolation]]: traffic that must be blocked (same fields as [[flows]])")
    mutation: MutationConfig = Field(default_factory=MutationConfig, description="[mutation] table")
    chaos: ChaosConfig = Field(default_factory=ChaosConfig, description="[chaos] table")
    disaster: DisasterConfig | None = Field(None, description="[disaster] table")
    deployed: DeployedConfig = Field(default_factory=DeployedConfig, description="[deployed] table")

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if value not in KINDS:
            raise ValueError(f"kind = {value!r}; use one of {', '.join(KINDS)}")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not REGION.match(value):
            raise ValueError(f"region = {value!r} is not an AWS region name; write it like \"ap-southeast-1\"")
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"vpc_cidr = {value!r} is not an IPv4 network ({exc}); "
                             "write it like \"10.21.0.0/16\" (AWS allows /16 to /28)") from None
        if not 16 <= net.prefixlen <= 28:
            raise ValueError(f"vpc_cidr = {value!r}: a VPC's prefix must be /16 to /28; write it like \"10.21.0.0/16\"")
        return value

    @field_validator("peers", mode="before")
    @classmethod
    def _peers(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) and NAME.match(v) for v in value):
            raise ValueError(f"peers = {value!r}: write the peered groups as a list of group names, "
                             "e.g. peers = [\"ops-sg\"]")
        if _context(info, "group") in value:
            raise ValueError("peers names the group itself; remove it")
        return list(value)

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            raise ValueError("[inputs] must be a table: variable = \"<group>.<output>\"")
        for variable, ref in value.items():
            m = INPUT_REF.match(ref) if isinstance(ref, str) else None
            if not m:
                raise ValueError(f"input {variable} = {ref!r}; write it as \"<group>.<output>\"")
            if m["group"] == _context(info, "group"):
                raise ValueError(f"input {variable} takes an output of the group itself; remove it")
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
        ):
            raise ValueError(f"[roles] must map role names to instance counts (integers), got {value!r}; "
                             "write e.g. microservice = 2")
        return value

    @field_validator("flows", "isolation", mode="before")
    @classmethod
    def _flows(cls, value: Any, info: ValidationInfo) -> Any:
        return list(parse_flows(value, info.field_name, _context(info, "group"), _context(info, "file")))

    @property
    def depends_on(self) -> list[str]:
        return sorted({INPUT_REF.match(ref)["group"] for ref in self.inputs.values()})


def _port_list(value: Any, example: str) -> list[int]:
    """A ``ports`` list of TCP port numbers, or the one-line error naming an example."""
    if not isinstance(value, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value
    ):
        raise ValueError(f"ports must be a list of port numbers 1-65535, e.g. ports = {example}; got {value!r}")
    return list(value)


def _context(info: ValidationInfo, key: str) -> str:
    return str((info.context or {}).get(key, "?"))


# --------------------------------------------------------------------------- roles.toml


OCTAL_MODE = re.compile(r"^[0-7]{3,4}$")
VERSION_ANY = "*"
#: A package pinned at the version the instance's image was baked with (no in-place upgrade on the host).
VERSION_BAKED = "baked"


class HostFile(_Model):
    """``[[roles.NAME.host.files]]``: one file every host of the role must hold."""

    path: str = Field(description="absolute path of the file, e.g. /etc/consul.d/consul.hcl")
    mode: str | None = Field(None, description="permission bits as an octal string, e.g. \"0644\" (default: not checked)")
    owner: str | None = Field(None, description="user owning the file (default: not checked)")
    contains: list[str] = Field(default_factory=list, description="substrings its content must contain")

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith("/") or "/../" in f"{value}/":
            raise ValueError(f"path = {value!r} is not an absolute path; write it like \"/etc/consul.d/consul.hcl\"")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not OCTAL_MODE.match(value):
            raise ValueError(f"mode = {value!r} is not an octal mode string; write it quoted, like mode = \"0644\"")
        return f"{int(value, 8):04o}"

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"owner = {value!r}; write the owning user's name, like owner = \"root\"")
        return value

    @field_validator("contains", mode="before")
    @classmethod
    def _contains(cls, value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"contains must be a list of non-empty strings the file must hold, "
                             f"e.g. contains = [\"retry_join\"]; got {value!r}")
        return list(value)


class HostContract(_Model):
    """``[roles.NAME.host]``: what every running host of the role must have (read with testinfra)."""

    packages: dict[str, str] = Field(
        default_factory=dict, description=f'package name = exact version, "{VERSION_BAKED}" for the version the '
                                          f'instance\'s image was baked with, or "{VERSION_ANY}" for any version')
    services: list[str] = Field(default_factory=list, description="services that must be enabled and running")
    ports: list[int] = Field(default_factory=list, description="TCP ports that must be listening (on any address)")
    ports_exclusive: bool = Field(
        False, description="true: no TCP port other than ports may listen beyond loopback (default: others may)")
    files: list[HostFile] = Field(default_factory=list, description="[[roles.NAME.host.files]]: files it must hold")
    users: list[str] = Field(default_factory=list, description="users that must exist")

    @field_validator("packages", mode="before")
    @classmethod
    def _packages(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in value.items()
        ):
            raise ValueError(f"packages must map package names to versions, e.g. packages = {{ nginx = \"1.22.1-9\" }} "
                             f"(or \"{VERSION_BAKED}\" for the image's version, \"{VERSION_ANY}\" for any); got {value!r}")
        return dict(value)

    @field_validator("services", "users", mode="before")
    @classmethod
    def _names(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{key} must be a list of names, e.g. {key} = [\"consul\"]; got {value!r}")
        return list(value)

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        return _port_list(value, "[8500]")

    @field_validator("ports_exclusive")
    @classmethod
    def _ports_exclusive(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "ports" in info.data and not info.data["ports"]:  # a bad ports list has its own error
            raise ValueError("ports_exclusive = true needs ports: list every TCP port the role listens on beyond "
                             "loopback, e.g. ports = [22, 8500], or remove ports_exclusive")
        return value

    @property
    def empty(self) -> bool:
        """True when the contract names nothing to check."""
        return not (self.packages or self.services or self.ports or self.ports_exclusive or self.files or self.users)


class RoleConfig(_Model):
    """``[roles.NAME]`` of ``roles.toml``: what one server role needs."""

    kinds: list[str] = Field(description="group kinds allowed to run it (ops-center, application)")
    playbook: str = Field(description="Ansible playbook under playbooks/ beside the groups folder that configures it")
    tier: str = Field(description="Tier tag of the subnet its instances must sit in (e.g. public, private)")
    security_groups: list[str] = Field(
        default_factory=list, description="Purpose tags of exactly the security groups its instances carry")
    ports: list[int] = Field(default_factory=list, description="TCP ingress ports those security groups must open")
    image_template: str | None = Field(None, description="Template tag of the AMI (Packer template) it runs")
    description: str = Field("", description="what the role is, for people")
    services: list[str] = Field(default_factory=list, description="services the role runs, for people and host checks")
    host: HostContract | None = Field(
        None, description="[roles.NAME.host]: packages, services, ports, files and users every host of the role must "
                          "have, read on the host with testinfra (default: no host checks)")

    @field_validator("kinds", "security_groups", "services", mode="before")
    @classmethod
    def _list(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{key} must be a list of names, e.g. {key} = [\"...\"]; got {value!r}")
        if key == "kinds":
            if not value:
                raise ValueError("kinds is empty; name at least one")
            unknown = sorted(set(value) - set(KINDS))
            if unknown:
                raise ValueError(f"kinds names unknown group kind(s) {unknown}; use {sorted(KINDS)}")
        return list(value)

    @field_validator("playbook", "tier", "image_template", "description", mode="before")
    @classmethod
    def _string(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        if not isinstance(value, str) or (key != "description" and not value.strip()):
            raise ValueError(f"{key} must be a non-empty string, e.g. {key} = \"...\"; got {value!r}")
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        return _port_list(value, "[80, 443]")

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"host must be a table: write it as a [roles.<role>.host] section; got {value!r}")
        return value


class RolesConfig(_Model):
    """``roles.toml``: one ``[roles.NAME]`` table per role."""

    roles: dict[str, RoleConfig] = Field(default_factory=dict, validate_default=True,
                                         description="one [roles.NAME] table per role")

    @field_validator("roles", mode="before")
    @classmethod
    def _some(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("no roles; declare each as a [roles.NAME] table")
        for name, table in value.items():
            if not NAME.match(name):
                raise ValueError(f"role name {name!r}: use lowercase a-z, 0-9 and '-' (it is the Role tag value)")
            if not isinstance(table, dict):
                raise ValueError(f"roles.{name} must be a table: write it as [roles.{name}]")
        return value


# --------------------------------------------------------------------------- parity.toml


class PackageAllow(_Model):
    """``[[package]]`` of ``parity.toml``: a package that may exist in one build only."""

    name: str = Field(min_length=1, description="package name")
    only_in: Literal["amazon-ebs", "vagrant"] = Field(description="the builder it may exist in alone")
    reason: str = Field(pattern=r"\S", description="why it differs (required)")
    templates: list[str] = Field(default_factory=list, description="Packer templates the entry applies to (default: all)")


class ConfigAllow(_Model):
    """``[[config]]`` of ``parity.toml``: a config file that may exist in one build only."""

    path: str = Field(min_length=1, description="absolute path of the config file")
    only_in: Literal["amazon-ebs", "vagrant"] = Field(description="the builder it may exist in alone")
    reason: str = Field(pattern=r"\S", description="why it differs (required)")
    templates: list[str] = Field(default_factory=list, description="Packer templates the entry applies to (default: all)")


class ParityConfig(_Model):
    """``parity.toml``: what may differ between the dev box and the AMI of one template."""

    package: list[PackageAllow] = Field(default_factory=list)
    config: list[ConfigAllow] = Field(default_factory=list)


# --------------------------------------------------------------------------- loading and messages


def read_toml(path: Path, what: str, fix: str) -> dict[str, Any]:
    """Parse one TOML file; a missing or unreadable file or a syntax error is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc}); {fix}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix the syntax") from None


def validate(model: type[_Model], data: dict[str, Any], path: Path | str, **context: Any) -> Any:
    """``model`` from ``data``; a ConfigError whose one line names ``path``, the key and the fix."""
    try:
        return model.model_validate(data, context={"file": str(path), **context})
    except ValidationError as exc:
        errors = exc.errors()
        cause = (errors[0].get("ctx") or {}).get("error")
        if isinstance(cause, FlowError):  # already names the file, the group, the entry and the fix
            raise ConfigError(str(cause)) from None
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {explain(model, errors[0])}{more}") from None


def explain(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    """One pydantic error as 'where: problem; fix'."""
    loc = tuple(error["loc"])
    where, key = _where(model, loc), str(loc[-1]) if loc else ""
    section = f"[{loc[0]}]" if len(loc) == 2 and isinstance(loc[0], str) and model is not RolesConfig \
        else _where(model, loc[:-1])
    kind = error["type"]
    if kind == "value_error":
        cause = (error.get("ctx") or {}).get("error")
        text = str(cause) if cause is not None else error["msg"]
        if not where or text.startswith("["):
            return text
        if text.startswith((key, "input ")):
            return f"{section} {text}" if section else text
        return f"{where}: {text}"
    if kind == "extra_forbidden":
        allowed = _keys_at(model, loc[:-1])
        return (f"unknown key {key!r}{' in ' + section if section else ''}; "
                + (_suggest(key, allowed) if allowed else "remove it"))
    meaning = _field_at(model, loc)
    if kind == "missing":
        what = f"{section} lacks {key}" if section else f"has no {key!r}"
        return f"{what}; add it" + (f" ({meaning})" if meaning else "")
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return (f"{where} = {shown}: {error['msg'][0].lower() + error['msg'][1:]}"
            + (f" ({key}: {meaning})" if meaning else ""))


def _where(model: Any, loc: tuple[Any, ...]) -> str:
    """A TOML location for people: ``[[flows]] entry 2 port``, ``[chaos] faults``, ``[roles.ci] tier``."""
    if model is RolesConfig and len(loc) >= 2 and loc[0] == "roles":
        return _role_where(loc)
    parts: list[str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(nxt, int):
            parts.append(f"[[{part}]] entry {nxt + 1}")
            i += 2
            continue
        parts.append(f"[{part}]" if i == 0 and nxt is not None else str(part))
        i += 1
    return " ".join(parts)


def _role_where(loc: tuple[Any, ...]) -> str:
    """``[roles.ci] tier``, ``[roles.ci.host] ports``, ``[[roles.ci.host.files]] entry 2 mode``."""
    table, rest = f"roles.{loc[1]}", list(loc[2:])
    while rest:
        if len(rest) >= 2 and isinstance(rest[1], int):
            return " ".join([f"[[{table}.{rest[0]}]] entry {rest[1] + 1}", *map(str, rest[2:])])
        sub = _model_at(RolesConfig, tuple(loc[:len(loc) - len(rest) + 1]))
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            break
        table, rest = f"{table}.{rest[0]}", rest[1:]
    return " ".join([f"[{table}]", *map(str, rest)])


def _unwrap(tp: Any, part: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _unwrap(inner[0], part) if inner else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return f.annotation
        return None
    if origin in (list, tuple):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    return None


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    tp = model
    for part in loc:
        tp = _unwrap(tp, part)
        if tp is None:
            return None
    while get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        tp = inner[0] if inner else None
    return tp


def _keys_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    tp = _model_at(model, loc)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _field_at(model: Any, loc: tuple[Any, ...]) -> str:
    parent = _model_at(model, loc[:-1]) if loc else None
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        f = parent.model_fields.get(str(loc[-1]))
        if f is not None and f.description:
            return f.description
    return ""


def load_group_config(path: Path, name: str) -> tuple[GroupConfig, dict[str, Any]]:
    """A group's config, validated, and the TOML as read."""
    data = read_toml(path, GROUP_FILE, f"every group folder needs a {GROUP_FILE} (kind, region, vpc_cidr)")
    return validate(GroupConfig, data, path, group=name), data


def load_roles_config(path: Path) -> RolesConfig:
    data = read_toml(path, "roles catalog", "create it (one [roles.NAME] table per role)")
    return validate(RolesConfig, data, path)


def load_parity_config(path: Path) -> ParityConfig:
    data = read_toml(path, "parity allow-list", "create it, or remove it to allow no difference")
    return validate(ParityConfig, data, path)


def check_catalog(groups: Mapping[str, GroupConfig], files: Mapping[str, Path],
                  roles: Mapping[str, RoleConfig], roles_file: Path) -> None:
    """What no single file can know: names across groups and the roles catalog. First problem as a ConfigError.

    Names first (a typo is reported as a typo), then what the names imply: peering is mutual, a role runs
    only in the group kinds its catalog entry allows, and a [[flows]] entry between two groups needs them
    to be peers.
    """
    known = sorted(groups)

    def where(name: str) -> str:
        return f"group {name}: {files[name]}"

    for name, g in sorted(groups.items()):
        for peer in g.peers:
            if peer not in groups:
                raise ConfigError(f"{where(name)}: peers names unknown group {peer!r}; {_suggest(peer, known)}")
        for dep in g.depends_on:
            if dep not in groups:
                raise ConfigError(f"{where(name)}: [inputs] take outputs of unknown group {dep!r}; "
                                  f"{_suggest(dep, known)}")
        if g.disaster is not None:
            partner = g.disaster.partner
            if partner == name or partner not in groups:
                raise ConfigError(f"{where(name)}: [disaster] partner = {partner!r} is not another known group; "
                                  + _suggest(partner, [k for k in known if k != name]))
        for role in g.roles:
            if role not in roles:
                raise ConfigError(f"{where(name)}: [roles] {role} is not a role of {roles_file}; "
                                  f"{_suggest(role, sorted(roles))}; or add [roles.{role}] there")
        for table, flow, entry in _entries(g):
            for end, role, group in (("from", flow.source_role, flow.source_group),
                                     ("to", flow.destination_role, flow.destination_group)):
                if group not in groups:
                    raise ConfigError(f"{where(name)}: {entry}: {end} names unknown group {group!r}; "
                                      f"{_suggest(group, known)}")
                if role != "*" and role not in roles:
                    raise ConfigError(f"{where(name)}: {entry}: {end} names role {role!r}, which {roles_file} does "
                                      f"not declare; {_suggest(role, sorted(roles))} (or \"*\" for any instance)")
    for name, g in sorted(groups.items()):
        for peer in g.peers:
            if name not in groups[peer].peers:
                raise ConfigError(f"{where(name)}: peers names {peer!r}, but {files[peer]} does not name {name!r} "
                                  f"in its peers; a peering is mutual: add \"{name}\" there or remove \"{peer}\" here")
            mine, theirs = ipaddress.IPv4Network(g.vpc_cidr), ipaddress.IPv4Network(groups[peer].vpc_cidr)
            if mine.overlaps(theirs):
                raise ConfigError(f"{where(name)}: vpc_cidr {mine} overlaps {theirs} of its peer {peer} "
                                  f"({files[peer]}); AWS does not peer overlapping VPCs: give one a disjoint CIDR")
        for role in g.roles:
            if g.kind not in roles[role].kinds:
                raise ConfigError(f"{where(name)}: [roles] {role}: {roles_file} allows it only in "
                                  f"{', '.join(roles[role].kinds)} groups, and {name} is {g.kind}; move the role "
                                  "or change its kinds there")
        for table, flow, entry in _entries(g):
            a, b = flow.source_group, flow.destination_group
            if table == "flows" and a != b and b not in groups[a].peers:
                raise ConfigError(f"{where(name)}: {entry}: {a} and {b} are not peers, so no traffic can flow "
                                  f"between them; add \"{b}\" to peers in {files[a]} and \"{a}\" in {files[b]}, "
                                  "or remove the flow")


def _entries(g: GroupConfig) -> list[tuple[str, Flow, str]]:
    return [(table, flow, f"[[{table}]] entry {number} ({flow.name})")
            for table, flows in (("flows", g.flows), ("isolation", g.isolation))
            for number, flow in enumerate(flows, start=1)]
