"""One ephemeral run: its id, tags and names, its workspace and state, applying and tearing down.

A run lives in ``<home>/runs/<run-id>/``: ``run.json`` (what was applied where,
timings, teardown outcome) and one working copy per group under ``groups/``
with its own Terraform state. The plugin and the ``immutable-infra`` command
share this store, so a run brought up with ``up`` is tested with
``pytest --run-id`` and destroyed with ``down``.

Tearing down proves itself: after Terraform's destroy of each group, the
group's tag inventory (:mod:`immutable_infra.inventory`) is taken and what is
still tagged with the run is deleted by the reaper (:mod:`immutable_infra.reaper`);
a run leaves the store only when the inventory of the whole run is empty.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from immutable_infra.catalog import Catalog, CatalogError, Group, resolve_inputs
from immutable_infra.engine import DEFAULT_PARALLELISM, Driver, EmbeddedDriver, Terraform, TerraformError, signals
from immutable_infra.inventory import Inventory, take
from immutable_infra.reaper import AWS_RETRY_DELAYS, ENDPOINT_RETRY_DELAYS, Reaper, cached_clients
from immutable_infra.sandbox import Sandbox
from immutable_infra.errors import ToolError

RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
OVERRIDE_FILE = "immutable_infra_override.tf"
TFVARS_FILE = "immutable_infra.auto.tfvars.json"
#: ``ExpiresAt`` = creation + TTL: long enough for the longest session (the full suites on real AWS take about an hour).
DEFAULT_TTL_HOURS = 6.0
TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")

Say = Callable[[str], None]


class RunError(ToolError):
    """A run cannot be used as asked; the message says why and what to do."""


def new_run_id() -> str:
    return "r" + dt.datetime.now(dt.timezone.utc).strftime("%m%d") + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise RunError(
            f"run id {run_id!r} is not usable in AWS names; use 1-16 characters of lowercase a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return run_id


def default_home(root: Path | None = None) -> Path:
    env = os.environ.get("IMMUTABLE_INFRA_HOME")
    return Path(env) if env else (root or Path.cwd()) / ".immutable-infra"


def parse_ttl(value: str | float | None, what: str = "--ttl") -> float:
    """Hours from ``90m``, ``2h``, ``1.5h``, ``1d``, ``3600s`` or a plain number of hours."""
    if value in (None, ""):
        return DEFAULT_TTL_HOURS
    m = TTL.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{what} {value!r}: give a duration such as 90m, 2h or 1d")
    return float(m.group(1)) * {"s": 1 / 3600, "m": 1 / 60, "h": 1, "d": 24, "": 1}[m.group(2)]


def run_tags(group: str, run_id: str, expires_at: str, created: str = "") -> dict[str, str]:
    """Tags every taggable resource of a run carries (through the provider's default_tags)."""
    tags = {"Group": group, "Run": run_id, "ExpiresAt": expires_at}
    if created:
        tags["CreatedAt"] = created
    return tags


@dataclass
class GroupRecord:
    """What happened to one group in a run."""

    name: str
    status: str = "pending"  # pending, applying, applied, failed, destroying, destroyed, destroy-failed
    region: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    resource_seconds: dict[str, float] = field(default_factory=dict)
    destroy_resource_seconds: dict[str, float] = field(default_factory=dict)
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str = ""
    teardown: str = ""


@dataclass
class Run:
    """An ephemeral run and its on-disk store."""

    id: str
    home: Path
    groups_dir: str
    endpoint: str | None
    created: str
    expires_at: str
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    keep: bool = False
    #: what the last teardown found still tagged with the run, and what it deleted outside Terraform
    leftovers: list[str] = field(default_factory=list)
    outside_terraform: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: held while the shared modules are laid into the run (:meth:`prepare_modules`)
    _modules_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- store -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.home / "runs" / self.id

    @classmethod
    def create(cls, home: Path, run_id: str | None, groups_dir: Path, endpoint: str | None,
               ttl_hours: float = DEFAULT_TTL_HOURS) -> "Run":
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        run = cls(
            id=check_run_id(run_id) if run_id else new_run_id(),
            home=home,
            groups_dir=str(groups_dir),
            endpoint=endpoint,
            created=now.isoformat(),
            expires_at=(now + dt.timedelta(hours=ttl_hours)).isoformat(),
        )
        run.path.mkdir(parents=True, exist_ok=True)
        run.save()
        return run

    @classmethod
    def load(cls, home: Path, run_id: str) -> "Run":
        path = home / "runs" / check_run_id(run_id) / "run.json"
        if not path.is_file():
            raise RunError(f"no run {run_id!r} in {home / 'runs'}; `immutable-infra runs` lists the kept runs")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{path} is damaged ({exc}); the group workspaces beside it still hold the states") from None
        groups = {name: GroupRecord(**rec) for name, rec in raw.pop("groups", {}).items()}
        return cls(home=home, groups=groups, **raw)

    @classmethod
    def exists(cls, home: Path, run_id: str) -> bool:
        return (home / "runs" / run_id / "run.json").is_file()

    @classmethod
    def all(cls, home: Path) -> list["Run"]:
        runs = []
        for path in sorted((home / "runs").glob("*/run.json")):
            try:
                runs.append(cls.load(home, path.parent.name))
            except RunError:
                continue
        return runs

    def save(self) -> None:
        with self._lock:
            data = {
                "id": self.id, "groups_dir": self.groups_dir, "endpoint": self.endpoint,
                "created": self.created, "expires_at": self.expires_at, "keep": self.keep,
                "order": list(self.order), "groups": {n: asdict(r) for n, r in self.groups.items()},
                "leftovers": list(self.leftovers), "outside_terraform": list(self.outside_terraform),
            }
            tmp = self.path / f"run.json.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps(data, indent=2, default=str))
            os.replace(tmp, self.path / "run.json")

    def record(self, name: str) -> GroupRecord:
        with self._lock:
            if name not in self.groups:
                self.groups[name] = GroupRecord(name)
                self.order.append(name)
            return self.groups[name]

    def applied(self) -> list[str]:
        return [n for n in self.order if self.groups[n].status in ("applied", "failed", "destroy-failed", "applying")]

    def resource_count(self) -> int:
        return sum(len(g.resources) for g in self.groups.values() if g.status == "applied")

    def regions(self, catalog: Catalog | None = None) -> list[str]:
        """Every region the run's groups use (recorded, or from the groups' config)."""
        found = [g.region for g in self.groups.values() if g.region]
        if catalog is not None:
            for name in self.order:
                try:
                    found.append(catalog.get(name).region)
                except CatalogError:
                    pass
        return list(dict.fromkeys(found))

    def live(self) -> list[str]:
        """Groups not proven destroyed."""
        return [n for n in self.order if self.groups[n].status != "destroyed"]

    def forget(self) -> None:
        """Remove the run from the store (its folder, with the states and logs)."""
        shutil.rmtree(self.path, ignore_errors=True)

    # -- workspaces ------------------------------------------------------------

    def workspace(self, name: str) -> Path:
        return self.path / "groups" / name

    def prepare_modules(self, source: Path) -> Path:
        """Lay the shared modules into the run once, never under a Terraform that reads them.

        ``modules`` in the run folder is a symbolic link to ``.modules/<content hash>``,
        a complete copy of ``source``. A copy is made only when the source's
        content is new to the run: into a temporary folder, renamed into place
        (another process of the same run racing for the same content keeps the
        first copy), then the link is swapped in one ``rename``. A Terraform
        that is reading the modules meanwhile sees the old copy or the new one,
        whole, never a folder being deleted or half written (and ``terraform
        init`` records the copy's own path, so a workspace keeps reading the
        copy it was initialised with). Old copies stay (a running Terraform may
        still read them) and go with the run.
        """
        with self._modules_lock:
            digest = tree_digest(source)
            store = self.path / ".modules"
            copy = store / digest
            if not copy.is_dir():
                store.mkdir(parents=True, exist_ok=True)
                tmp = store / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(source, tmp)
                try:
                    os.rename(tmp, copy)
                except OSError:
                    if not copy.is_dir():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)  # another process of the run laid the same content first
            link = self.path / "modules"
            target = os.path.join(".modules", digest)
            if not (link.is_symlink() and os.readlink(link) == target):
                if link.is_dir() and not link.is_symlink():
                    # A run laid out before modules were linked: move its real folder aside, once.
                    os.rename(link, store / f".legacy.{os.getpid()}.{threading.get_ident()}")
                tmp_link = self.path / f".modules.{os.getpid()}.{threading.get_ident()}.link"
                if tmp_link.is_symlink():
                    tmp_link.unlink()
                os.symlink(target, tmp_link)
                os.replace(tmp_link, link)
            return copy

    def prepare(self, group: Group, catalog: Catalog, sandbox: Sandbox, variables: dict[str, Any]) -> Path:
        """Copy the group's Terraform into its workspace (keeping state) and write the run's files."""
        ws = self.workspace(group.name)
        ws.mkdir(parents=True, exist_ok=True)
        for old in ws.glob("*.tf"):
            old.unlink()
        for src in group.path.iterdir():
            if src.is_file() and (src.suffix in (".tf", ".tpl", ".sh", ".json", ".toml", ".tftpl") or src.name.endswith(".tf.json")):
                if src.name in (TFVARS_FILE, OVERRIDE_FILE) or src.name.startswith("terraform.tfstate"):
                    continue
                shutil.copy2(src, ws / src.name)
        if catalog.modules_dir.is_dir():
            self.prepare_modules(catalog.modules_dir)
        (ws / OVERRIDE_FILE).write_text(
            provider_override(group, self.id, self.expires_at, sandbox.provider_settings(), provider_aliases(group.path),
                              created=self.created)
        )
        tfvars = {"run_id": self.id, "region": group.region, **variables}
        (ws / TFVARS_FILE).write_text(json.dumps(tfvars, indent=2, sort_keys=True))
        return ws


def tree_digest(root: Path) -> str:
    """A short hash of a folder's content: every file's path (relative) and bytes, symbolic links by target."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            h.update(b"L\0" + rel.encode() + b"\0" + os.readlink(path).encode() + b"\0")
        elif path.is_file():
            h.update(b"F\0" + rel.encode() + b"\0" + path.read_bytes() + b"\0")
        elif path.is_dir():
            h.update(b"D\0" + rel.encode() + b"\0")
    return h.hexdigest()[:16]


PROVIDER_BLOCK = re.compile(r'provider\s+"aws"\s*\{')
ALIAS = re.compile(r'^\s*alias\s*=\s*"([^"]+)"', re.MULTILINE)


def provider_aliases(group_dir: Path) -> list[str | None]:
    """The ``aws`` provider blocks of a group: None for the default, plus each alias."""
    aliases: list[str | None] = []
    for tf in sorted(group_dir.glob("*.tf")):
        text = tf.read_text(encoding="utf-8")
        for m in PROVIDER_BLOCK.finditer(text):
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            body = text[m.end(): i - 1]
            top = re.sub(r"\{[^{}]*\}", "", body)
            found = ALIAS.search(top)
            aliases.append(found.group(1) if found else None)
    return aliases or [None]


def _hcl(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def provider_override(group: Group, run_id: str, expires_at: str, settings: dict[str, Any],
                      aliases: list[str | None], created: str = "") -> str:
    """An override file for each aws provider block: run tags and, in a sandbox, the endpoints."""
    tags = run_tags(group.name, run_id, expires_at, created)
    blocks = [
        "# Written by immutable-infra for run " + run_id + "; the group's own files stay untouched.",
    ]
    for alias in aliases:
        lines = ['provider "aws" {']
        if alias:
            lines.append(f"  alias = {_hcl(alias)}")
        for key, value in settings.items():
            if key == "endpoints":
                lines.append("  endpoints {")
                lines += [f"    {svc} = {_hcl(url)}" for svc, url in value.items()]
                lines.append("  }")
            else:
                lines.append(f"  {key} = {_hcl(value)}")
        lines.append("  default_tags {")
        lines.append("    tags = {")
        lines += [f"      {k} = {_hcl(v)}" for k, v in tags.items()]
        lines += ["    }", "  }", "}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _state_ids(state: dict[str, Any]) -> list[str]:
    """Every ``id`` and ``arn`` in a ``terraform show -json`` state, modules included."""
    found: list[str] = []

    def walk(module: dict[str, Any]) -> None:
        for res in module.get("resources", []):
            values = res.get("values") or {}
            found.extend(str(values[k]) for k in ("id", "arn") if values.get(k))
        for child in module.get("child_modules", []):
            walk(child)

    walk((state.get("values") or {}).get("root_module") or {})
    return found


#: How progress lines name Terraform's verbs.
VERB_LABELS = {"refresh": "refresh-only apply"}


def record_apply(rec: GroupRecord, phase: str, seconds: float, init: float | None = None,
                 refresh: float | None = None) -> None:
    """Record an apply's seconds in ``rec.timings`` without losing the group's own apply.

    - ``init``, ``apply``, ``refresh``: the group's first apply in the run (its
      own; what the terminal summary's ``apply s`` shows), never overwritten;
    - ``reapply``: the latest apply of the whole group after it was destroyed
      (a rebuild, a drill);
    - ``repair``: every repair apply over the deployed group (chaos), summed,
      with ``repairs`` counting them; ``settle``: the refresh-only applies
      after repairs, summed.
    """
    t = rec.timings
    if "apply" not in t:
        t["apply"] = round(seconds, 2)
        if init is not None:
            t["init"] = round(init, 2)
        if refresh is not None:
            t["refresh"] = round(refresh, 2)
    elif phase == "repair":
        t["repair"] = round(t.get("repair", 0.0) + seconds, 2)
        t["repairs"] = int(t.get("repairs", 0)) + 1
        if refresh is not None:
            t["settle"] = round(t.get("settle", 0.0) + refresh, 2)
    elif phase == "settle":
        t["settle"] = round(t.get("settle", 0.0) + seconds, 2)
    else:
        t["reapply"] = round(seconds, 2)


def managed(addresses: list[str]) -> list[str]:
    """Managed resources only: no data sources."""
    return [a for a in addresses if not (a.startswith("data.") or ".data." in a)]


class Deployer:
    """Applies and destroys the groups of a run, overlapping groups that do not depend on each other."""

    def __init__(self, run: Run, catalog: Catalog, sandbox: Sandbox, driver: Driver | None = None,
                 parallelism: int = DEFAULT_PARALLELISM, say: Say | None = None) -> None:
        self.run = run
        self.catalog = catalog
        self.sandbox = sandbox
        self.driver = driver or EmbeddedDriver()
        self.parallelism = parallelism
        self.say = say or (lambda line: None)
        self._active: dict[str, Terraform] = {}
        self._say_lock = threading.Lock()

    def terraform(self, name: str) -> Terraform:
        return Terraform(self.run.workspace(name), self.sandbox.terraform_env(), self.driver,
                         self.parallelism, log_dir=self.run.workspace(name) / "logs")

    def progress(self, name: str, label: str | None = None):
        """Progress lines of one Terraform command on group ``name`` (``label`` names it, default: the verb)."""
        def progress(verb: str, done: int, total: int, elapsed: float) -> None:
            what = label or VERB_LABELS.get(verb, verb)
            with self._say_lock:
                if verb == "refresh":  # a refresh-only apply changes nothing: no resource count to give
                    self.say(f"[{name}] {what}: {elapsed:.0f} s")
                elif total == 0:
                    self.say(f"[{name}] {what}: planning, {elapsed:.0f} s")
                else:
                    self.say(f"[{name}] {what}: {done}/{total} resources, {elapsed:.0f} s")
        return progress

    # -- apply -----------------------------------------------------------------

    def up(self, groups: list[Group], destroy_on_failure: bool = True, phase: str = "apply") -> None:
        """Apply groups in dependency order; independent groups at the same time.

        A failed first apply destroys what it created; a failed re-apply over a
        deployed group (a repair) leaves the group for the run's teardown.
        ``phase`` says what a later apply of a group is (see :func:`record_apply`).
        """
        self._schedule(groups, lambda g: self._apply_group(g, destroy_on_failure, phase),
                       deps=lambda g: [d for d in g.depends_on if d in {x.name for x in groups}])

    def _apply_group(self, group: Group, destroy_on_failure: bool = True, phase: str = "apply") -> None:
        rec = self.run.record(group.name)
        rec.region = group.region
        if rec.status == "applied":
            return
        outputs = {n: r.outputs for n, r in self.run.groups.items() if r.status == "applied"}
        variables = resolve_inputs(group, outputs)
        self.run.prepare(group, self.catalog, self.sandbox, variables)
        tf = self.terraform(group.name)
        self._active[group.name] = tf
        rec.status = "applying"  # armed: from here on, teardown destroys this group
        self.run.save()
        try:
            t0 = time.monotonic()
            tf.init()
            init_seconds = time.monotonic() - t0
            self.say(f"[{group.name}] applying ({group.region})")
            result = tf.apply(progress=self.progress(group.name))
            # Settle what the provider and the endpoint fill in after create (DESIGN.md: refresh noise).
            self.say(f"[{group.name}] refresh-only apply (reads what the endpoint filled in)")
            refresh = tf.apply(progress=self.progress(group.name), refresh_only=True)
            record_apply(rec, phase, result.seconds, init=init_seconds, refresh=refresh.seconds)
            if phase != "repair":  # a full apply: a first one or a rebuild (what the rebuild's slowest come from)
                rec.resource_seconds = {t.address: t.seconds for t in result.timings}
            rec.outputs = tf.output()
            rec.resources = managed(tf.state_list())
            # What defines each instance, read live right after apply (the live mutation check's baseline).
            from immutable_infra.live import fingerprints

            rec.fingerprints = fingerprints(self.sandbox.client("ec2", group.region), tf.state())
            rec.status = "applied"
            rec.error = ""
        except TerraformError as exc:
            rec.status = "failed"
            rec.error = str(exc)
            self.run.save()
            if destroy_on_failure:
                self.say(f"[{group.name}] apply failed; destroying what it created")
                self._destroy_group(group.name)
            raise
        finally:
            self._active.pop(group.name, None)
            self.run.save()
        self.say(f"[{group.name}] applied {len(rec.resources)} resources in {result.seconds:.0f} s")

    # -- destroy ---------------------------------------------------------------

    def down(self, names: list[str] | None = None) -> list[str]:
        """Destroy groups in reverse dependency order; return the problems (empty when all went)."""
        names = names if names is not None else list(self.run.order)
        problems: list[str] = []
        armed = [n for n in names if n in self.run.groups and self.run.groups[n].status != "destroyed"]
        dependents: dict[str, list[str]] = {n: [] for n in armed}
        for n in armed:
            try:
                for dep in self.catalog.get(n).depends_on:
                    if dep in dependents:
                        dependents[dep].append(n)
            except CatalogError:
                pass
        groups = {n: n for n in armed}
        if not groups:
            return problems

        def destroy(name: str) -> None:
            problem = self._destroy_group(name)
            if problem:
                problems.append(problem)

        self._schedule(list(groups), destroy, deps=lambda n: dependents[n], names=lambda n: n, stop_on_error=False)
        for n in armed:
            rec = self.run.groups[n]
            if rec.status not in ("destroyed", "destroy-failed"):
                rec.teardown = "not destroyed: a group that depends on it failed to destroy"
                problems.append(
                    f"[{n}] not destroyed because a group depending on it failed to; its state is kept in "
                    f"{self.run.workspace(n)}. Finish with: immutable-infra down --run-id {self.run.id}"
                )
        self.run.save()
        return problems

    def _finish_hint(self) -> str:
        return f"immutable-infra down --run-id {self.run.id}" + (
            f" --aws-endpoint {self.run.endpoint}" if self.run.endpoint else " --real-aws")

    def _destroy_group(self, name: str) -> str:
        """Terraform's destroy, then the group's tag inventory: what is still tagged with it is deleted."""
        rec = self.run.record(name)
        ws = self.run.workspace(name)
        applied = (ws / ".terraform").exists() or (ws / "terraform.tfstate").exists()
        rec.status = "destroying"
        self.run.save()
        error: TerraformError | None = None
        result = None
        if applied:
            tf = self.terraform(name)
            self.say(f"[{name}] destroying")
            try:
                if not (ws / ".terraform").exists():
                    tf.init()
                self._sweep_strays(name, tf)
                result = tf.destroy(progress=self.progress(name))
            except TerraformError as exc:
                error = exc
        deleted, problems = self.sweep(name)
        if deleted:
            self.say(f"[{name}] deleted {len(deleted)} resource(s) outside Terraform (still tagged with run "
                     f"{self.run.id}): " + ", ".join(deleted))
        if result is not None:
            rec.timings["destroy"] = round(result.seconds, 2)
            rec.destroy_resource_seconds = {t.address: t.seconds for t in result.timings}
        if problems:
            rec.status = "destroy-failed"
            rec.teardown = "failed: " + "; ".join(problems) + (f"; {error}" if error else "")
            self.run.save()
            return (f"[{name}] not everything tagged with run {self.run.id} could be deleted:\n  "
                    + "\n  ".join(problems) + f"\nThe state is kept in {ws}. Finish with: {self._finish_hint()}"
                    + (f"\n{error}" if error else ""))
        # The tags are the truth: nothing tagged with the group is left, whatever Terraform said.
        rec.status = "destroyed"
        rec.teardown = "destroyed" if applied else "nothing applied"
        if error is not None:
            rec.teardown = f"destroyed by the reaper after Terraform failed: {error}".splitlines()[0]
        self.run.save()
        if applied:
            took = f" in {result.seconds:.0f} s" if result is not None else ""
            self.say(f"[{name}] destroyed{took}; nothing tagged with it remains")
        return ""

    # -- the tag inventory: proof that nothing is left -------------------------------

    def _reaper(self, regions: list[str]) -> Reaper:
        delays = ENDPOINT_RETRY_DELAYS if self.sandbox.endpoint else AWS_RETRY_DELAYS
        return Reaper(self._clients, regions, say=lambda line: None, retry_delays=delays)

    @property
    def _clients(self):
        if getattr(self, "_client_cache", None) is None:
            self._client_cache = cached_clients(self.sandbox.client)
        return self._client_cache

    def _regions(self, name: str | None = None) -> list[str]:
        if name is None:
            return self.run.regions(self.catalog)
        found = [self.run.groups[name].region] if name in self.run.groups else []
        try:
            found.append(self.catalog.get(name).region)
        except CatalogError:
            pass
        return list(dict.fromkeys(r for r in found if r))

    def inventory(self, name: str | None = None) -> Inventory:
        """What is tagged with the run (and with group ``name``) now."""
        return take(self._clients, self._regions(name), self.run.id, name)

    def sweep(self, name: str | None = None, kinds: tuple[str, ...] | None = None,
              keep_ids: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
        """Delete what is still tagged with the run (and group); return (what was deleted, what could not be)."""
        regions = self._regions(name)
        who = f"group {name} of run {self.run.id}" if name else f"run {self.run.id}"
        if not regions:
            return [], []
        inv = self.inventory(name)
        problems = [f"inventory of {who} incomplete, {e}" for e in inv.errors]
        todo = [r for r in inv.resources if (kinds is None or r.kind in kinds) and r.id not in keep_ids]
        if not todo:
            return [], problems
        out = self._reaper(regions).reap(Inventory(todo))
        deleted = [str(r) for r in out.deleted]
        with self.run._lock:
            self.run.outside_terraform += deleted
        problems += out.problems()
        return deleted, problems

    def _sweep_strays(self, name: str, tf: Terraform) -> None:
        """Before the destroy: instances, NAT gateways and load balancers tagged with the group but missing from
        its state (an apply killed before it wrote them) would hold subnets and groups that Terraform deletes."""
        try:
            ids = frozenset(_state_ids(tf.state()))
        except TerraformError:
            return
        deleted, _ = self.sweep(name, kinds=("instance", "nat_gateway", "elb", "lb"), keep_ids=ids)
        if deleted:
            self.say(f"[{name}] deleted {len(deleted)} resource(s) its state did not hold: " + ", ".join(deleted))

    def teardown(self, names: list[str] | None = None) -> list[str]:
        """Destroy these groups (all by default); when none of the run is left, prove it from the run's tags."""
        with signals.teardown(self._finish_hint()):
            problems = self.down(names)
            if not self.run.live():
                _, left = self.sweep()
                self.run.leftovers = left
                if left:
                    problems.append(
                        f"run {self.run.id}: still tagged with it after the teardown:\n  " + "\n  ".join(left)
                        + f"\nFinish with: {self._finish_hint()}")
                self.run.save()
        return problems

    # -- scheduling --------------------------------------------------------------

    def _schedule(self, items: list, work: Callable, deps: Callable, names: Callable = lambda g: g.name,
                  stop_on_error: bool = True) -> None:
        """Run ``work(item)`` as soon as the items it depends on are done; Ctrl-C stops Terraform gracefully."""
        pending = {names(i): i for i in items}
        done: set[str] = set()
        failed: list[BaseException] = []
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            try:
                while pending or running:
                    if not (failed and stop_on_error):
                        for name in list(pending):
                            if all(d in done or d not in {names(i) for i in items} for d in deps(pending[name])):
                                running[pool.submit(work, pending.pop(name))] = name
                    if not running:
                        break
                    finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        name = running.pop(fut)
                        if fut.exception() is None:
                            done.add(name)
                        else:
                            failed.append(fut.exception())
            except KeyboardInterrupt:
                self.say("interrupted: stopping Terraform gracefully, then tearing down")
                for tf in list(self._active.values()):
                    tf.interrupt()
                wait(list(running))
                raise
        if failed:
            raise failed[0]
