"""Roles catalog: what each server role needs, read from ``fixtures/roles.toml``.

Format, one table per role::

    [roles.reverse-proxy]
    kinds = ["application"]              # group kinds allowed to run it
    playbook = "reverse-proxy.yml"       # under fixtures/playbooks/
    tier = "public"                      # Tier tag of the subnet it must sit in
    security_groups = ["reverse-proxy", "ssh-from-ops"]   # Purpose tags of its SGs
    ports = [80, 443]                    # ingress ports its SGs must open
    image_template = "debian11-base"     # Packer template of its image

``kinds``, ``playbook`` and ``tier`` are required; ``security_groups`` and
``ports`` default to empty, ``image_template`` to none. Other keys are kept
in ``Role.extra`` for other checks (services, descriptions).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Group kinds a role may name.
GROUP_KINDS = frozenset({"application", "ops-center"})


class RolesError(ValueError):
    """The roles catalog cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class Role:
    name: str
    kinds: tuple[str, ...]
    playbook: str
    tier: str
    security_groups: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    image_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _strings(path: Path, role: str, key: str, value: Any, required: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RolesError(f"{path}: [roles.{role}] {key} must be a list of names, e.g. {key} = [\"...\"]; got {value!r}")
    if required and not value:
        raise RolesError(f"{path}: [roles.{role}] {key} is empty; name at least one")
    return tuple(value)


def _string(path: Path, role: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RolesError(f"{path}: [roles.{role}] {key} must be a non-empty string, e.g. {key} = \"...\"; got {value!r}")
    return value


def _role(path: Path, name: str, table: Any) -> Role:
    if not isinstance(table, dict):
        raise RolesError(f"{path}: roles.{name} must be a table: write it as [roles.{name}]")
    missing = [k for k in ("kinds", "playbook", "tier") if k not in table]
    if missing:
        raise RolesError(f"{path}: [roles.{name}] lacks {', '.join(missing)}; add them (see immutable_infra.roles)")
    kinds = _strings(path, name, "kinds", table["kinds"])
    unknown = sorted(set(kinds) - GROUP_KINDS)
    if unknown:
        raise RolesError(
            f"{path}: [roles.{name}] kinds names unknown group kind(s) {unknown}; use {sorted(GROUP_KINDS)}"
        )
    ports = table.get("ports", [])
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        raise RolesError(f"{path}: [roles.{name}] ports must be a list of port numbers 1-65535, e.g. ports = [80, 443]; got {ports!r}")
    image = table.get("image_template")
    known = {"kinds", "playbook", "tier", "security_groups", "ports", "image_template"}
    return Role(
        name=name,
        kinds=kinds,
        playbook=_string(path, name, "playbook", table["playbook"]),
        tier=_string(path, name, "tier", table["tier"]),
        security_groups=_strings(path, name, "security_groups", table.get("security_groups", []), required=False),
        ports=tuple(ports),
        image_template=_string(path, name, "image_template", image) if image is not None else None,
        extra={k: v for k, v in table.items() if k not in known},
    )


def load_roles(path: str | Path) -> dict[str, Role]:
    """Read the roles catalog; ``RolesError`` names the file and the fix."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RolesError(f"{path}: roles catalog not found; create it (one [roles.NAME] table per role)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RolesError(f"{path}: not valid TOML ({exc}); fix the syntax there") from None
    roles = data.get("roles")
    if not isinstance(roles, dict) or not roles:
        raise RolesError(f"{path}: no roles; declare each as a [roles.NAME] table")
    return {name: _role(path, name, table) for name, table in roles.items()}
