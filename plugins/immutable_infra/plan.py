"""Plan and state: a typed, read-only view of ``terraform show -json`` output.

``Plan.from_json`` takes the JSON of a saved plan (``show -json planfile``);
``state_resources`` walks the JSON of a state (``show -json``), or the
``prior_state`` of a plan, through the root module and every child module.
Nothing here talks to Terraform or AWS: the engine produces the JSON, the
checks read these objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Actions that leave infrastructure as it is.
NOOP_ACTIONS = frozenset({"no-op", "read"})
#: The two orders Terraform plans a replacement in.
REPLACE_ACTIONS = (("delete", "create"), ("create", "delete"))


@dataclass(frozen=True)
class ResourceChange:
    """One entry of ``resource_changes`` (or of ``resource_drift``)."""

    address: str
    type: str
    name: str
    mode: str
    actions: tuple[str, ...]
    before: Any
    after: Any
    after_unknown: Any
    replace_paths: tuple[tuple[Any, ...], ...] = ()
    action_reason: str | None = None
    module_address: str | None = None
    index: Any = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "ResourceChange":
        change = entry.get("change") or {}
        return cls(
            address=entry["address"],
            type=entry.get("type", ""),
            name=entry.get("name", ""),
            mode=entry.get("mode", "managed"),
            actions=tuple(change.get("actions") or ()),
            before=change.get("before"),
            after=change.get("after"),
            after_unknown=change.get("after_unknown") or {},
            replace_paths=tuple(tuple(p) for p in change.get("replace_paths") or ()),
            action_reason=entry.get("action_reason"),
            module_address=entry.get("module_address"),
            index=entry.get("index"),
        )

    @property
    def is_noop(self) -> bool:
        return all(a in NOOP_ACTIONS for a in self.actions)

    @property
    def is_update(self) -> bool:
        return self.actions == ("update",)

    @property
    def is_replace(self) -> bool:
        return self.actions in REPLACE_ACTIONS

    @property
    def is_delete(self) -> bool:
        return self.actions == ("delete",)

    @property
    def aws_id(self) -> str:
        """The AWS id (``id`` attribute) before the change, else after it, else ''."""
        for values in (self.before, self.after):
            if isinstance(values, Mapping) and isinstance(values.get("id"), str):
                return values["id"]
        return ""


class ResourceDrift(ResourceChange):
    """One entry of ``resource_drift``: the state said ``before``, AWS says ``after``.

    In a refresh-only plan a resource that is gone from AWS comes as
    ``actions == ("delete",)`` with ``after`` null.
    """

    @property
    def is_missing(self) -> bool:
        return self.after is None or "delete" in self.actions


@dataclass(frozen=True)
class StateResource:
    """One resource instance in a state (root or child module)."""

    address: str
    type: str
    values: Mapping[str, Any]
    mode: str = "managed"
    name: str = ""
    module_address: str | None = None

    @property
    def aws_id(self) -> str:
        value = self.values.get("id")
        return value if isinstance(value, str) else ""


def _walk_modules(module: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    if not module:
        return
    yield module
    for child in module.get("child_modules") or ():
        yield from _walk_modules(child)


def state_resources(state_json: Mapping[str, Any] | None, include_data: bool = False) -> list[StateResource]:
    """Every managed resource instance of a state JSON, root and child modules.

    Accepts the JSON of ``show -json`` (a state) or a plan's ``prior_state``;
    data sources are left out unless ``include_data``.
    """
    if not state_json:
        return []
    values = state_json.get("values") or {}
    found: list[StateResource] = []
    for module in _walk_modules(values.get("root_module")):
        for res in module.get("resources") or ():
            mode = res.get("mode", "managed")
            if mode != "managed" and not include_data:
                continue
            found.append(
                StateResource(
                    address=res["address"],
                    type=res.get("type", ""),
                    values=res.get("values") or {},
                    mode=mode,
                    name=res.get("name", ""),
                    module_address=module.get("address"),
                )
            )
    return found


@dataclass(frozen=True)
class Plan:
    """A saved plan as ``show -json`` gives it."""

    changes: tuple[ResourceChange, ...]
    drift: tuple[ResourceDrift, ...]
    prior_state: Mapping[str, Any] | None = None
    terraform_version: str = ""
    format_version: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: Built from the plan's UI stream (``engine.PlanStream``): no drift, no change, and no ``prior_state``.
    from_stream: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Plan":
        if not isinstance(data, Mapping) or "format_version" not in data:
            raise ValueError(
                "not a Terraform plan JSON (no format_version): pass the output of "
                "`terraform show -json PLANFILE`, not of `terraform plan -json`"
            )
        return cls(
            changes=tuple(ResourceChange.from_json(e) for e in data.get("resource_changes") or ()),
            drift=tuple(ResourceDrift.from_json(e) for e in data.get("resource_drift") or ()),
            prior_state=data.get("prior_state"),
            terraform_version=data.get("terraform_version", ""),
            format_version=data.get("format_version", ""),
            raw=data,
            from_stream=bool(data.get("from_stream")),
        )

    def is_noop(self) -> bool:
        """True when every planned change is ``no-op`` or ``read`` (drift is not a change)."""
        return all(c.is_noop for c in self.changes)

    def change(self, address: str) -> ResourceChange | None:
        return next((c for c in self.changes if c.address == address), None)

    def drift_of(self, address: str) -> ResourceDrift | None:
        return next((d for d in self.drift if d.address == address), None)

    def prior_resources(self) -> list[StateResource]:
        """The managed resources of the plan's prior (refreshed) state.

        A plan built from the stream has none to give: it raises rather than
        answer with no resources (read the state instead).
        """
        if self.from_stream:
            raise ValueError("this plan was built from the plan's stream (no drift, no change): it has no prior_state")
        return state_resources(self.prior_state)


def leaf_diff(before: Any, after: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any, Any]]:
    """The differing leaves between two attribute values, as (path, before, after).

    Maps are compared key by key (``tags.Role``); lists of scalars of the
    same length index by index; a list of objects (nested blocks and sets,
    ``ingress``, ``route``) or lists of different lengths compare whole, so
    that a set reordered by AWS is not reported entry by entry.
    """
    if before == after:
        return []
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            found += leaf_diff(before.get(key), after.get(key), path + (key,))
        return found
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and len(before) == len(after)
        and not any(isinstance(v, (Mapping, list)) for v in before + after)
    ):
        found = []
        for i, (b, a) in enumerate(zip(before, after)):
            found += leaf_diff(b, a, path + (i,))
        return found
    return [(path, before, after)]


def unknown_paths(after_unknown: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths marked ``true`` in an ``after_unknown`` tree (known only after apply)."""
    if after_unknown is True:
        return [path]
    found: list[tuple[Any, ...]] = []
    if isinstance(after_unknown, Mapping):
        for key, value in after_unknown.items():
            found += unknown_paths(value, path + (key,))
    elif isinstance(after_unknown, list):
        for i, value in enumerate(after_unknown):
            found += unknown_paths(value, path + (i,))
    return found


def path_str(path: tuple[Any, ...]) -> str:
    """``("tags", "Role")`` -> ``"tags.Role"``; ``("ingress", 0, "protocol")`` -> ``"ingress.0.protocol"``."""
    return ".".join(str(p) for p in path)
