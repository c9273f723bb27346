"""Groups on disk: each group's config, their dependency order, and inputs taken from outputs.

A group is a folder ``<groups-dir>/<name>/`` holding Terraform files and a
``group.toml``. Its ``[inputs]`` table maps a Terraform variable of the group
to ``"<other group>.<output>"``; those references make the dependency graph.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from immutable_infra import config as config_mod
from immutable_infra.config import GROUP_FILE, INPUT_REF, KINDS, NAME, ConfigError, GroupConfig
from immutable_infra.errors import ToolError
from immutable_infra.flows import Flow

CONFIG_FILE = GROUP_FILE
__all__ = ["CONFIG_FILE", "INPUT_REF", "KINDS", "NAME", "Catalog", "CatalogError", "Group", "Input", "load_group",
           "resolve_inputs"]


class CatalogError(ToolError):
    """A group cannot be used as written; the message names the group, the file and the fix."""


@dataclass(frozen=True)
class Input:
    variable: str
    group: str
    output: str


@dataclass
class Group:
    """One infrastructure group: its folder and its validated config (``spec``, see ``immutable_infra.config``)."""

    name: str
    path: Path
    kind: str
    region: str
    vpc_cidr: str
    peers: list[str] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    roles: dict[str, int] = field(default_factory=dict)
    rebuild_budget_seconds: float | None = None
    description: str = ""
    #: The TOML as read (already validated against ``spec``); prefer the typed fields and ``spec``.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    spec: GroupConfig | None = field(default=None, repr=False)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def depends_on(self) -> list[str]:
        return sorted({i.group for i in self.inputs})

    @property
    def flows(self) -> tuple[Flow, ...]:
        return tuple(self.spec.flows) if self.spec else ()

    @property
    def isolation(self) -> tuple[Flow, ...]:
        return tuple(self.spec.isolation) if self.spec else ()

    @property
    def chaos(self) -> config_mod.ChaosConfig:
        return self.spec.chaos if self.spec else config_mod.ChaosConfig()

    @property
    def mutation(self) -> config_mod.MutationConfig:
        return self.spec.mutation if self.spec else config_mod.MutationConfig()

    @property
    def disaster_partner(self) -> str | None:
        return self.spec.disaster.partner if self.spec and self.spec.disaster else None


def load_group(path: Path) -> Group:
    """Read and validate one group folder; raise CatalogError naming the group, the file and the fix."""
    name = path.name
    config = path / CONFIG_FILE
    if not config.is_file():
        raise CatalogError(f"group {name}: {config} is missing; every group folder needs a {CONFIG_FILE} (kind, region, vpc_cidr)")
    try:
        spec, raw = config_mod.load_group_config(config, name)
    except ConfigError as exc:
        text = str(exc)
        raise CatalogError(text if text.startswith(f"group {name}") else f"group {name}: {text}") from None
    if not any(path.glob("*.tf")):
        raise CatalogError(f"group {name}: {path} has no .tf files; a group is a folder of Terraform")
    inputs = [Input(variable, *INPUT_REF.match(ref).group("group", "output")) for variable, ref in spec.inputs.items()]
    return Group(
        name=name,
        path=path,
        kind=spec.kind,
        region=spec.region,
        vpc_cidr=spec.vpc_cidr,
        peers=list(spec.peers),
        inputs=inputs,
        roles=dict(spec.roles),
        rebuild_budget_seconds=spec.rebuild_budget_seconds,
        description=spec.description,
        raw=raw,
        spec=spec,
    )


_BLOCK = re.compile(r'^[ \t]*(variable|output)[ \t]+"([^"]+)"', re.MULTILINE)


def declared(path: Path, kind: str) -> set[str]:
    """Names of the root ``variable`` or ``output`` blocks of a folder of Terraform (``*.tf`` and ``*.tf.json``)."""
    names = set()
    for tf in path.glob("*.tf"):
        names |= {m[2] for m in _BLOCK.finditer(tf.read_text(encoding="utf-8", errors="replace")) if m[1] == kind}
    for tf in path.glob("*.tf.json"):
        try:
            names |= set((json.loads(tf.read_text(encoding="utf-8")) or {}).get(kind) or {})
        except (ValueError, AttributeError):
            continue  # Terraform itself reports a broken .tf.json, with its line
    return names


class Catalog:
    """All groups of a groups folder."""

    def __init__(self, groups_dir: Path) -> None:
        self.groups_dir = Path(groups_dir)
        if not self.groups_dir.is_dir():
            raise CatalogError(f"groups folder {self.groups_dir} does not exist; point --groups-dir at a folder of groups")
        self._groups: dict[str, Group] = {}

    @property
    def modules_dir(self) -> Path:
        """Shared modules, next to the groups folder (``../modules``)."""
        return self.groups_dir.parent / "modules"

    @property
    def roles_file(self) -> Path:
        """The roles catalog, next to the groups folder (``../roles.toml``)."""
        return self.groups_dir.parent / config_mod.ROLES_FILE

    @property
    def parity_file(self) -> Path:
        """The image parity allow-list (``../images/parity.toml``), optional."""
        return self.groups_dir.parent / "images" / config_mod.PARITY_FILE

    @cached_property
    def roles(self) -> dict[str, Any]:
        """The roles catalog (``roles.Role`` by name), read once."""
        from immutable_infra.roles import RolesError, load_roles

        if not self.roles_file.is_file():
            raise CatalogError(
                f"no roles catalog beside the groups folder {self.groups_dir}: {self.roles_file} is missing; "
                "create it (one [roles.NAME] table per role) or point --groups-dir at a folder that has one beside it"
            )
        try:
            return load_roles(self.roles_file)
        except RolesError as exc:
            raise CatalogError(str(exc)) from None

    def names(self) -> list[str]:
        return sorted(p.name for p in self.groups_dir.iterdir() if p.is_dir() and (p / CONFIG_FILE).exists())

    def validate(self) -> list[Group]:
        """Load every group of the folder, the roles catalog and the parity allow-list, and check the names
        they share (peers, inputs, partners, roles, flow ends). The first problem raises CatalogError."""
        groups = [self.get(name) for name in self.names()]
        roles = self.roles
        if self.parity_file.is_file():
            from immutable_infra.images import ImageManifestError, load_allow_list

            try:
                load_allow_list(self.parity_file)
            except ImageManifestError as exc:
                raise CatalogError(str(exc)) from None
        try:
            config_mod.check_catalog({g.name: g.spec for g in groups}, {g.name: g.config_file for g in groups},
                                     {name: r.spec for name, r in roles.items()}, self.roles_file)
        except ConfigError as exc:
            raise CatalogError(str(exc)) from None
        images = self.groups_dir.parent / "images"
        if images.is_dir():  # a role's image must be one of the Packer templates beside the groups
            from immutable_infra.images import MANIFEST_NAME

            templates = sorted(p.parent.name for p in images.glob(f"*/{MANIFEST_NAME}"))
            for name, role in sorted(roles.items()):
                if role.image_template is not None and role.image_template not in templates:
                    raise CatalogError(
                        f"{self.roles_file}: [roles.{name}] image_template = {role.image_template!r} names no Packer "
                        f"template of {images} (templates: {', '.join(templates) or 'none'}); fix the name or add "
                        f"{images}/{role.image_template}/{MANIFEST_NAME}"
                    )
        by_name = {g.name: g for g in groups}
        for g in groups:  # [inputs] against the Terraform: a typo here would only show after an apply, or never
            variables = declared(g.path, "variable")
            for item in g.inputs:
                if item.variable not in variables:
                    raise CatalogError(
                        f"group {g.name}: {g.config_file}: input {item.variable} names no variable of {g.path}/*.tf "
                        f"(it declares: {', '.join(sorted(variables)) or 'none'}); add variable \"{item.variable}\" "
                        "there or fix the name"
                    )
                producer = by_name[item.group]
                outputs = declared(producer.path, "output")
                if item.output not in outputs:
                    raise CatalogError(
                        f"group {g.name}: {g.config_file}: input {item.variable} = \"{item.group}.{item.output}\", "
                        f"but {producer.path}/*.tf has no output {item.output!r} "
                        f"(it has: {', '.join(sorted(outputs)) or 'none'})"
                    )
        return groups

    def get(self, name: str) -> Group:
        if name not in self._groups:
            path = self.groups_dir / name
            if not NAME.match(name) or not path.is_dir():
                known = ", ".join(self.names()) or "none"
                raise CatalogError(f"unknown group {name!r} in {self.groups_dir}; known groups: {known}")
            self._groups[name] = load_group(path)
        return self._groups[name]

    def closure(self, names: Iterable[str]) -> list[Group]:
        """The named groups and every group they take inputs from, in dependency order."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, chain: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = " -> ".join(chain[chain.index(name):] + [name])
                raise CatalogError(
                    f"group cycle: {cycle}; inputs in {self.groups_dir}/<group>/{CONFIG_FILE} must not loop "
                    "(let one side of a peering manage both sides)"
                )
            state[name] = "visiting"
            group = self.get(name)
            for dep in group.depends_on:
                if not (self.groups_dir / dep).is_dir():
                    raise CatalogError(
                        f"group {name}: {group.config_file} takes inputs from unknown group {dep!r}; "
                        f"known groups: {', '.join(self.names())}"
                    )
                visit(dep, chain + [name])
            state[name] = "done"
            order.append(name)

        for name in names:
            visit(name, [])
        return [self.get(n) for n in order]


def resolve_inputs(group: Group, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Terraform variables for ``group`` from the outputs of the groups it depends on."""
    values = {}
    for item in group.inputs:
        produced = outputs.get(item.group)
        if produced is None:
            raise CatalogError(f"group {group.name}: input {item.variable} needs group {item.group}, which is not applied")
        if item.output not in produced:
            raise CatalogError(
                f"group {group.name}: {group.config_file}: input {item.variable} = \"{item.group}.{item.output}\", "
                f"but {item.group} has no output {item.output!r} (it has: {', '.join(sorted(produced)) or 'none'})"
            )
        values[item.variable] = produced[item.output]
    return values
