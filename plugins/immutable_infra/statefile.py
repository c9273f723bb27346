"""A workspace's Terraform state read from its local state file, in ``terraform show -json``'s shape.

``terraform show -json`` of a state starts the provider to load its schema
(about a second with hashicorp/aws 3.x), and the checks read every applied
group's state in every verification pass. A workspace on the default local
backend keeps that state in ``terraform.tfstate``, whose version-4 format
holds each resource instance's attributes exactly as ``show -json`` prints
them under ``values`` (same provider version, same schema version): only the
layout differs. This module converts the layout and nothing else.

It declines (returns ``None``) whenever the file is not certainly the state
Terraform would show, so the caller falls back to ``show -json``: a backend
other than the default local one (recorded by ``init`` in the data folder), a
non-default workspace, a state format other than 4, an instance without
``attributes`` (a pre-0.12 flat-map state).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

STATE_FILE = "terraform.tfstate"
_PROVIDER = re.compile(r'provider\["([^"]+)"\]')
#: One step of a module path: ``module.NAME`` and an optional ``[key]`` (a number or a JSON string).
_MODULE_STEP = re.compile(r'module\.([A-Za-z0-9_-]+)(\[(?:\d+|"(?:[^"\\]|\\.)*")\])?')


def local_state_path(workdir: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """The state file of a workspace on the default local backend, or None when Terraform keeps it elsewhere.

    ``env`` is the environment Terraform runs with (``TF_DATA_DIR``, ``TF_WORKSPACE``).
    """
    env = os.environ if env is None else env
    data = Path(env["TF_DATA_DIR"]) if env.get("TF_DATA_DIR") else Path(workdir) / ".terraform"
    if env.get("TF_WORKSPACE") not in (None, "", "default"):
        return None
    environment = data / "environment"
    if environment.is_file() and environment.read_text().strip() not in ("", "default"):
        return None
    backend = data / STATE_FILE  # init records a configured backend here
    if backend.is_file():
        try:
            recorded = json.loads(backend.read_text()).get("backend") or {}
        except (OSError, ValueError):
            return None
        if recorded.get("type") not in (None, "local"):
            return None
        config = recorded.get("config") or {}
        if config.get("path") or config.get("workspace_dir"):
            return None  # a local backend with its own path: let Terraform say where
    return Path(workdir) / STATE_FILE


def read_local_state(workdir: Path, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``show -json`` of the workspace's state, from its file; None when that cannot be done with certainty."""
    path = local_state_path(workdir, env)
    if path is None:
        return None
    if not path.exists():
        return {"format_version": "1.0"}  # what show -json prints before the first apply
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return to_show_json(raw)


def local_outputs(workdir: Path, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``terraform output -json``'s values (name -> value), from the state file; None as read_local_state."""
    state = read_local_state(workdir, env)
    if state is None:
        return None
    outputs = (state.get("values") or {}).get("outputs") or {}
    return {name: item.get("value") for name, item in outputs.items()}


def to_show_json(raw: dict[str, Any]) -> dict[str, Any] | None:
    """A version-4 state file's content in ``show -json``'s layout; None for anything else."""
    if raw.get("version") != 4:
        return None
    out: dict[str, Any] = {"format_version": "1.0"}
    resources = raw.get("resources") or []
    outputs = raw.get("outputs") or {}
    if not any(r.get("instances") for r in resources) and not outputs:
        return out  # an empty state: show -json gives no values
    if raw.get("terraform_version"):
        out["terraform_version"] = raw["terraform_version"]
    modules: dict[str, list[dict[str, Any]]] = {"": []}
    for res in resources:
        module = res.get("module", "")
        if module and (_parents(module) or [""])[-1] != module:
            return None  # a module path this reader does not parse: let Terraform show it
        for inst in res.get("instances") or []:
            if "attributes" not in inst:
                return None
            modules.setdefault(module, []).append(_resource(res, inst))
    values: dict[str, Any] = {}
    if outputs:
        values["outputs"] = {
            name: {"sensitive": bool(o.get("sensitive")), "value": o.get("value"),
                   **({"type": o["type"]} if "type" in o else {})}
            for name, o in outputs.items()
        }
    values["root_module"] = _module_tree(modules)
    out["values"] = values
    return out


def _resource(res: dict[str, Any], inst: dict[str, Any]) -> dict[str, Any]:
    mode = res.get("mode", "managed")
    local = f"{res['type']}.{res['name']}" if mode == "managed" else f"data.{res['type']}.{res['name']}"
    key = inst.get("index_key")
    address = local if key is None else f"{local}[{json.dumps(key) if isinstance(key, str) else key}]"
    if res.get("module"):
        address = f"{res['module']}.{address}"
    provider = _PROVIDER.search(res.get("provider", ""))
    item: dict[str, Any] = {
        "address": address, "mode": mode, "type": res["type"], "name": res["name"],
        **({"index": key} if key is not None else {}),
        "provider_name": provider.group(1) if provider else res.get("provider", ""),
        "schema_version": inst.get("schema_version", 0),
        "values": inst.get("attributes") or {},
    }
    if inst.get("dependencies"):
        item["depends_on"] = list(inst["dependencies"])
    if inst.get("status") == "tainted":
        item["tainted"] = True
    if inst.get("deposed"):
        item["deposed_key"] = inst["deposed"]
    return item


def _order(item: dict[str, Any]) -> tuple[Any, ...]:
    """show -json's order within a module: data before managed, then type, name, index (numbers by value)."""
    index = item.get("index")
    return (item["mode"], item["type"], item["name"],
            (0, index, "") if isinstance(index, int) else (1, 0, str(index or "")), item.get("deposed_key", ""))


def _parents(module: str) -> list[str]:
    """``module.a[0].module.b`` -> ["module.a[0]", "module.a[0].module.b"]."""
    steps, path = [], ""
    for match in _MODULE_STEP.finditer(module):
        path = f"{path}.{match.group(0)}" if path else match.group(0)
        steps.append(path)
    return steps


def _module_tree(modules: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {"": {}}
    for module in sorted(modules):
        for address in _parents(module):
            nodes.setdefault(address, {"address": address})
    for module, resources in modules.items():
        if resources:
            nodes[module]["resources"] = sorted(resources, key=_order)
    for address in sorted(a for a in nodes if a):
        parents = _parents(address)
        parent = parents[-2] if len(parents) > 1 else ""
        nodes[parent].setdefault("child_modules", []).append(nodes[address])
    return nodes[""]
