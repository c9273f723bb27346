"""Groups on disk: each group's config, their dependency order, and inputs taken from outputs.

A group is a folder ``<groups-dir>/<name>/`` holding Terraform files and a
``group.toml``. Its ``[inputs]`` table maps a Terraform variable of the group
to ``"<other group>.<output>"``; those references make the dependency graph.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

CONFIG_FILE = "group.toml"
KINDS = ("ops-center", "application")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
INPUT_REF = re.compile(r"^(?P<group>[a-z0-9][a-z0-9-]*)\.(?P<output>[A-Za-z_][A-Za-z0-9_]*)$")


class CatalogError(Exception):
    """A group cannot be used as written; the message names the group, the file and the fix."""


@dataclass(frozen=True)
class Input:
    variable: str
    group: str
    output: str


@dataclass
class Group:
    """One infrastructure group: its folder and its config."""

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
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def depends_on(self) -> list[str]:
        return sorted({i.group for i in self.inputs})


def load_group(path: Path) -> Group:
    """Read one group folder; raise CatalogError naming the file and the fix."""
    name = path.name
    config = path / CONFIG_FILE
    if not config.is_file():
        raise CatalogError(f"group {name}: {config} is missing; every group folder needs a {CONFIG_FILE} (kind, region, vpc_cidr)")
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"group {name}: {config} is not valid TOML ({exc}); fix the syntax") from None

    def need(key: str, kind: type) -> Any:
        if key not in raw:
            raise CatalogError(f"group {name}: {config} has no '{key}'; add it")
        value = raw[key]
        if not isinstance(value, kind):
            raise CatalogError(f"group {name}: {config}: '{key}' must be a {kind.__name__}, not {value!r}")
        return value

    kind = need("kind", str)
    if kind not in KINDS:
        raise CatalogError(f"group {name}: {config}: kind = {kind!r}; use one of {', '.join(KINDS)}")
    inputs = []
    for variable, ref in (raw.get("inputs") or {}).items():
        m = INPUT_REF.match(ref) if isinstance(ref, str) else None
        if not m:
            raise CatalogError(
                f"group {name}: {config}: input {variable} = {ref!r}; write it as \"<group>.<output>\""
            )
        if m["group"] == name:
            raise CatalogError(f"group {name}: {config}: input {variable} takes an output of the group itself; remove it")
        inputs.append(Input(variable, m["group"], m["output"]))
    roles = raw.get("roles") or {}
    if not isinstance(roles, dict) or not all(isinstance(v, int) and v >= 0 for v in roles.values()):
        raise CatalogError(f"group {name}: {config}: [roles] must map role names to instance counts (integers)")
    budget = raw.get("rebuild_budget_seconds")
    if budget is not None and not isinstance(budget, (int, float)):
        raise CatalogError(f"group {name}: {config}: rebuild_budget_seconds must be a number of seconds")
    if not any(path.glob("*.tf")):
        raise CatalogError(f"group {name}: {path} has no .tf files; a group is a folder of Terraform")
    return Group(
        name=name,
        path=path,
        kind=kind,
        region=need("region", str),
        vpc_cidr=need("vpc_cidr", str),
        peers=list(raw.get("peers") or []),
        inputs=inputs,
        roles=dict(roles),
        rebuild_budget_seconds=float(budget) if budget is not None else None,
        description=str(raw.get("description", "")),
        raw=raw,
    )


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

    def names(self) -> list[str]:
        return sorted(p.name for p in self.groups_dir.iterdir() if p.is_dir() and (p / CONFIG_FILE).exists())

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
