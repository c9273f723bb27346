"""Generated configuration: ``terraform plan -generate-config-out`` for import blocks, in a private copy.

The group's working directory is copied into a temporary folder (with its
``.terraform``, state and the local modules it calls, linked where they
are), the import blocks are written there, and Terraform generates the
configuration of the imported resources with ``plan -lock=false
-refresh=false``: a plan writes no state and takes no lock, and the copy is
thrown away afterwards. The group's own folder is never touched.

hashicorp/aws 3.39 generates configuration that does not plan as it is: it
writes every optional argument it read back, including pairs that exclude
each other (``self`` and ``source_security_group_id``, ``availability_zone``
and ``availability_zone_id``, ``ipv6_addresses`` and ``ipv6_address_count``)
and arguments that need others (``map_customer_owned_ip_on_launch``).
:func:`clean` fixes that without knowing any resource type: it drops
``null`` arguments and the computed ``tags_all``, then plans again and, for
each argument a diagnostic points at, drops it when its value is empty
(``[]``, ``{}``, ``""``, ``false``, ``0``), or, for two set arguments that
conflict, drops the one the provider computes (by its schema; between two
computed ones, the later by name), until the configuration plans or nothing
more can be fixed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from immutable_infra.engine import Terraform

GENERATED = "generated.tf"
IMPORTS = "imports.tf"
#: Rounds of "plan, fix what the diagnostics point at" before giving up.
CLEAN_ROUNDS = 8
#: Rounds of "drop the import blocks Terraform could not import, generate again".
GENERATE_ROUNDS = 3

_ATTRIBUTE = re.compile(r"^(\s*)([A-Za-z0-9_-]+)\s*=\s*(.*)$")
_BLOCK_OPEN = re.compile(r"^(\s*)([A-Za-z0-9_-]+)\s*\{\s*$")
_RESOURCE_OPEN = re.compile(r'^resource\s+"([^"]+)"\s+"([^"]+)"\s*\{')
_NAMED = re.compile(r'^"([A-Za-z0-9_]+)":')
_CONFLICT = re.compile(r'^"?([A-Za-z0-9_.]+)"?:\s*conflicts with\s+([A-Za-z0-9_.]+)')
EMPTY_VALUES = {"null", "[]", "{}", '""', "false", "0"}
#: Arguments the provider derives itself: ``tags_all`` is tags plus the provider's default_tags.
DERIVED = {"tags_all"}
NULL_ARGUMENT = "null (unset)"


@dataclass
class Generation:
    """What generating (and cleaning) the configuration gave."""

    generated: bool = False
    valid: bool = False
    #: import address -> why Terraform could not import it (its block stays in imports.tf)
    failed: dict[str, str] = field(default_factory=dict)
    #: (resource address, argument, why) for each argument the cleaning dropped
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    #: what still stops the generated configuration from planning, or why there is none
    errors: list[str] = field(default_factory=list)
    #: address -> the plan's action for it once cleaned ("import", "update", ...)
    actions: dict[str, str] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)
    text: str = ""


# -- the private copy ---------------------------------------------------------------------------------


def private_copy(workdir: Path, root: Path) -> Path:
    """Copy a Terraform working directory under ``root``, keeping the relative paths of its local modules.

    Modules outside the folder (``source = "../../modules/x"``, as
    ``.terraform/modules/modules.json`` records them) are linked at the same
    relative place, read-only in effect: Terraform reads module sources.
    """
    workdir = Path(workdir).resolve()
    dirs = _module_dirs(workdir)
    depth = max([_ups(d) for d in dirs] + [0])
    copy = root.joinpath(*[f"up{i}" for i in range(depth)], workdir.name)
    shutil.copytree(workdir, copy, symlinks=True,
                    ignore=shutil.ignore_patterns("logs", "*.tfplan", IMPORTS, GENERATED))
    for rel in dirs:
        if _ups(rel) == 0:
            continue
        link = Path(os.path.normpath(copy / rel))
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((workdir / rel).resolve(), target_is_directory=True)
    return copy


def _module_dirs(workdir: Path) -> list[str]:
    manifest = workdir / ".terraform" / "modules" / "modules.json"
    if not manifest.is_file():
        return []
    try:
        modules = json.loads(manifest.read_text()).get("Modules") or []
    except json.JSONDecodeError:
        return []
    return sorted({m["Dir"] for m in modules if m.get("Dir") and m["Dir"] != "."})


def _ups(rel: str) -> int:
    parts = Path(os.path.normpath(rel)).parts
    return len([p for p in parts if p == ".."])


# -- editing the generated HCL (pure) ---------------------------------------------------------------------


def attribute_span(lines: list[str], start: int) -> int:
    """Index one past the last line of the attribute that starts at ``lines[start]`` (multi-line values too)."""
    depth, i, heredoc = 0, start, None
    while i < len(lines):
        line = lines[i]
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
                if depth <= 0:
                    return i + 1
            i += 1
            continue
        in_string, escaped = False, False
        for ch in line:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
        marker = re.search(r"<<-?([A-Za-z_][A-Za-z0-9_]*)\s*$", line)
        if marker and not in_string:
            heredoc = marker.group(1)
        elif depth <= 0:
            return i + 1
        i += 1
    return len(lines)


def resource_at(lines: list[str], index: int) -> str:
    """The address of the resource block around ``lines[index]``."""
    for i in range(index, -1, -1):
        m = _RESOURCE_OPEN.match(lines[i])
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return ""


def preclean(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Drop ``null`` arguments, the derived ``tags_all``, and blocks left empty; return the text and what went."""
    lines = text.splitlines()
    out: list[str] = []
    removed: list[tuple[str, str, str]] = []
    i = 0
    while i < len(lines):
        m = _ATTRIBUTE.match(lines[i])
        if m and not _BLOCK_OPEN.match(lines[i]):
            end = attribute_span(lines, i)
            value = " ".join(line.strip() for line in lines[i:end]).split("=", 1)[1].strip()
            if value == "null" or m.group(2) in DERIVED:
                why = NULL_ARGUMENT if value == "null" else "derived by the provider (tags plus default_tags)"
                removed.append((resource_at(lines, i), m.group(2), why))
                i = end
                continue
            out.extend(lines[i:end])
            i = end
            continue
        out.append(lines[i])
        i += 1
    return _drop_empty_blocks("\n".join(out)) + "\n", removed


def _drop_empty_blocks(text: str) -> str:
    pattern = re.compile(r"^[ \t]+[A-Za-z0-9_-]+\s*\{\s*\n[ \t]*\}[ \t]*\n", re.MULTILINE)
    text = text if text.endswith("\n") else text + "\n"
    while True:
        new = pattern.sub("", text)
        if new == text:
            return new
        text = new


def find_argument(lines: list[str], address: str, name: str) -> int | None:
    """Index of the line of argument ``name`` directly in the resource block ``address``."""
    rtype, _, rname = address.partition(".")
    for i, line in enumerate(lines):
        m = _RESOURCE_OPEN.match(line)
        if not (m and m.group(1) == rtype and m.group(2) == rname):
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("}"):
            a = _ATTRIBUTE.match(lines[j])
            if a and len(a.group(1)) == 2:
                if a.group(2) == name:
                    return j
                j = attribute_span(lines, j)
                continue
            j += 1
        return None
    return None


def fix(text: str, diagnostics: list[dict[str, Any]], computed: Callable[[str, str], bool | None]) -> tuple[str, list[tuple[str, str, str]]]:
    """Drop the arguments of ``generated.tf`` that error diagnostics point at, where that is safe.

    An argument with an empty value goes. For ``X conflicts with Y`` where
    both are set, the one the provider computes goes (``computed(type,
    argument)`` tells, None when unknown); between two computed ones, the
    later by name. Returns the new text and what went (nothing when no
    diagnostic could be acted on).
    """
    lines = text.splitlines()
    drop: dict[int, tuple[str, str, str]] = {}
    for diag in diagnostics:
        rng = diag.get("range") or {}
        if rng.get("filename") != GENERATED:
            continue
        named = _NAMED.match(str(diag.get("detail", "")).strip())
        index = find_argument(lines, diag.get("address") or "", named.group(1)) if named else None
        if index is None:
            index = int((rng.get("start") or {}).get("line", 0)) - 1
        if not 0 <= index < len(lines):
            continue
        m = _ATTRIBUTE.match(lines[index])
        if not m or (named and m.group(2) != named.group(1)):
            continue
        name = m.group(2)
        end = attribute_span(lines, index)
        value = " ".join(line.strip() for line in lines[index:end]).split("=", 1)[1].strip()
        address = diag.get("address") or resource_at(lines, index)
        why = f"{diag.get('summary', 'error')}: {diag.get('detail', '').strip()}"
        if value in EMPTY_VALUES:
            drop[index] = (address, name, f"empty value {value}; {why}")
            continue
        conflict = _CONFLICT.match(diag.get("detail", "").strip())
        if diag.get("summary") == "ConflictsWith" and conflict:
            other = conflict.group(2)
            rtype = address.split(".")[0] if address else ""
            mine, theirs = computed(rtype, name), computed(rtype, other)
            if (mine and theirs is False) or (mine and theirs and name > other):
                drop[index] = (address, name, f"computed by the provider and conflicting with {other}")
    if not drop:
        return text, []
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in drop:
            i = attribute_span(lines, i)
            continue
        out.append(lines[i])
        i += 1
    return _drop_empty_blocks("\n".join(out)), [drop[i] for i in sorted(drop)]


# -- running Terraform in the copy ------------------------------------------------------------------------


def _events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def _errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["diagnostic"] for e in events if e.get("type") == "diagnostic" and e.get("@level") == "error"]


def _one_line(diag: dict[str, Any]) -> str:
    where = diag.get("address") or ""
    detail = " ".join(str(diag.get("detail", "")).split())
    return f"{where + ': ' if where else ''}{diag.get('summary', '')}" + (f": {detail}" if detail else "")


class _Schema:
    """Which arguments the provider computes, from ``terraform providers schema -json`` (read once, if needed)."""

    def __init__(self, tf: Terraform) -> None:
        self.tf = tf
        self._types: dict[str, dict[str, Any]] | None = None

    def computed(self, resource_type: str, argument: str) -> bool | None:
        if self._types is None:
            self._types = {}
            result = self.tf.run(["providers", "schema", "-json"], ok_codes=(0, 1))
            try:
                schemas = json.loads(result.stdout or "{}").get("provider_schemas") or {} if result.exit_code == 0 else {}
            except json.JSONDecodeError:
                schemas = {}
            for provider in schemas.values():
                self._types.update(provider.get("resource_schemas") or {})
        attrs = ((self._types.get(resource_type) or {}).get("block") or {}).get("attributes") or {}
        return bool(attrs[argument].get("computed")) if argument in attrs else None


PLAN = ["plan", "-input=false", "-no-color", "-json", "-lock=false", "-refresh=false"]


def generate(source: Terraform, imports_tf: str, addresses: list[str]) -> Generation:
    """Generate and clean the configuration of the import blocks ``imports_tf`` in a private copy of ``source``."""
    out = Generation()
    root = Path(tempfile.mkdtemp(prefix="immutable-infra-imports-"))
    try:
        copy = private_copy(source.workdir, root)
        env = {k: v for k, v in source.env.items() if k != "TF_DATA_DIR"}
        tf = Terraform(copy, env, source.driver, source.parallelism)
        blocks = imports_tf
        for _ in range(GENERATE_ROUNDS):
            (copy / IMPORTS).write_text(blocks)
            (copy / GENERATED).unlink(missing_ok=True)
            result = tf.run(PLAN + [f"-generate-config-out={GENERATED}"], ok_codes=(0, 1))
            errors = _errors(_events(result.stdout))
            failing = failed_imports(errors, addresses, out.failed)
            if not failing:
                break
            out.failed.update(failing)
            blocks = _without_blocks(blocks, set(out.failed))
        generated = copy / GENERATED
        if not generated.is_file():
            out.errors = [_one_line(d) for d in errors] or [f"terraform wrote no {GENERATED} (exit {result.exit_code})"]
            return out
        out.generated = True
        text, out.removed = preclean(generated.read_text())
        schema = _Schema(tf)
        for _ in range(CLEAN_ROUNDS):
            generated.write_text(text)
            result = tf.run(PLAN, ok_codes=(0, 1))
            events = _events(result.stdout)
            errors = _errors(events)
            if result.exit_code == 0 and not errors:
                out.valid = True
                out.summary = next((e.get("changes") or {} for e in events if e.get("type") == "change_summary"), {})
                out.actions = _actions(events)
                break
            failing = failed_imports(errors, addresses, out.failed)
            if failing:  # an import Terraform could not make: its block leaves the copy, it stays in imports.tf
                out.failed.update(failing)
                blocks = _without_blocks(blocks, set(out.failed))
                (copy / IMPORTS).write_text(blocks)
            text, removed = fix(text, errors, schema.computed)
            out.removed += removed
            if not removed and not failing:
                break
        if not out.valid:
            out.errors = [_one_line(d) for d in errors]
        generated.write_text(text)
        if tf.run(["fmt", "-no-color", GENERATED], ok_codes=(0, 1, 2, 3)).exit_code == 0:  # realign what was dropped
            text = generated.read_text()
        out.text = text
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def failed_imports(errors: list[dict[str, Any]], addresses: list[str], known: dict[str, str]) -> dict[str, str]:
    """Import addresses that error diagnostics outside ``generated.tf`` are about (by their address, or naming it)."""
    found: dict[str, str] = {}
    for diag in errors:
        if (diag.get("range") or {}).get("filename") == GENERATED:
            continue
        text = f"{diag.get('summary', '')} {diag.get('detail', '')}"
        for address in addresses:
            named = diag.get("address") == address or re.search(rf"(?<![\w.-]){re.escape(address)}(?![\w-])", text)
            if named and address not in known and address not in found:
                found[address] = _one_line({**diag, "address": ""})
    return found


def _actions(events: list[dict[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for e in events:
        if e.get("type") != "planned_change":
            continue
        change = e.get("change") or {}
        address = (change.get("resource") or {}).get("addr", "")
        action = change.get("action", "")
        if change.get("importing") and action != "import":
            action = f"import, then {action}"
        found[address] = action
    return found


def _without_blocks(text: str, addresses: set[str]) -> str:
    """The import blocks of ``text`` whose ``to`` is not one of ``addresses``."""
    kept, block = [], []
    for line in text.splitlines(keepends=True):
        block.append(line)
        if line.strip() == "}":
            joined = "".join(block)
            m = re.search(r"^\s*to\s*=\s*(\S+)", joined, re.MULTILINE)
            if not (m and m.group(1) in addresses):
                kept.append(joined)
            block = []
    return "".join(kept) + "".join(block)
