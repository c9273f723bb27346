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
``ports`` default to empty, ``image_template`` to none; ``description`` and
``services`` (for people and other checks) are kept in ``Role.extra``; a
``[roles.NAME.host]`` table (packages, services, ports, files, users a host of
the role must have) is ``Role.host``. Any other key is an error: the schema is
``immutable_infra.config.RoleConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutable_infra.config import KINDS, ConfigError, HostContract, RoleConfig, load_roles_config
from immutable_infra.errors import ToolError

#: Group kinds a role may name.
GROUP_KINDS = frozenset(KINDS)


class RolesError(ToolError, ValueError):
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
    spec: RoleConfig | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def host(self) -> HostContract | None:
        """The role's ``[roles.NAME.host]`` contract, or None when it declares none."""
        return self.spec.host if self.spec is not None else None


def _role(name: str, spec: RoleConfig) -> Role:
    return Role(
        name=name,
        kinds=tuple(spec.kinds),
        playbook=spec.playbook,
        tier=spec.tier,
        security_groups=tuple(spec.security_groups),
        ports=tuple(spec.ports),
        image_template=spec.image_template,
        extra=spec.model_dump(include={"description", "services"}, exclude_unset=True),
        spec=spec,
    )


def load_roles(path: str | Path) -> dict[str, Role]:
    """Read and validate the roles catalog (schema: ``immutable_infra.config.RoleConfig``); ``RolesError`` names the
    file, the key and the fix."""
    try:
        catalog = load_roles_config(Path(path))
    except ConfigError as exc:
        raise RolesError(str(exc)) from None
    return {name: _role(name, spec) for name, spec in catalog.roles.items()}
