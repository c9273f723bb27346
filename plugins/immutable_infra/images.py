"""Images: Packer manifests, package manifests and config hashes, and AMIs in the sandbox.

One Packer template gives both the Vagrant box developers run and the AMIs
production runs. This module reads what the tools really write, into plain
data the parity checks work on:

- ``<template>/packer-manifest.json``: the manifest post-processor's output.
  Packer appends the builds of every run to it; ``last_run_uuid`` names the
  current run.
- ``<template>/<packer_run_uuid>/<build name>.packages.txt``: the installed
  packages of that build's artifact, as ``dpkg-query -W -f='${Package}\\t${Version}\\t${Architecture}\\n'``
  or ``rpm -qa --queryformat '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'``
  prints them.
- ``<template>/<packer_run_uuid>/<build name>.config.sha256``: ``sha256sum``
  lines for the configuration files the image bakes.
- ``parity.toml``: the allow-list of packages and config files that belong
  to one builder only, each with a reason.

A file that is missing or malformed raises :class:`ImageManifestError` with
one message naming the file and the fix. Everything is read at load time, so
the checks in ``checks/parity.py`` never touch the disk.

:func:`register_images` registers every AMI of every run in the sandbox
(moto assigns its own ids; the Packer AMI id stays in the ``SourceArtifact``
tag) so that Terraform's ``data "aws_ami"`` lookup with ``most_recent = true``
finds the current run's image. See its docstring for how the order of
``CreationDate`` is guaranteed.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from immutable_infra.errors import ToolError

#: Builder types whose artifacts are AMIs (``artifact_id`` is ``region:ami-id[,region:ami-id...]``).
AMI_BUILDER_TYPES = frozenset({"amazon-ebs"})
#: Builder types whose artifacts are Vagrant boxes (``artifact_id`` is the box file path).
DEV_BUILDER_TYPES = frozenset({"vagrant"})

MANIFEST_NAME = "packer-manifest.json"
ALLOW_LIST_NAME = "parity.toml"
PACKAGES_SUFFIX = ".packages.txt"
CONFIG_SUFFIX = ".config.sha256"

DPKG_COMMAND = "dpkg-query -W -f='${Package}\\t${Version}\\t${Architecture}\\n'"
RPM_COMMAND = "rpm -qa --queryformat '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'"

#: The tags every AMI registered in the sandbox carries.
IMAGE_TAGS = ("Name", "Template", "TemplateVersion", "PackerRunUUID", "PackerBuildName", "SourceArtifact")

#: Package name -> (version, architecture). Several installed versions of one
#: package (rpm installonly packages such as ``kernel`` or ``gpg-pubkey``) are
#: joined, sorted, with ", ".
Packages = dict[str, tuple[str, str]]
#: Config file path -> sha256 hex digest.
ConfigHashes = dict[str, str]

_BUILD_FIELDS = ("name", "builder_type", "build_time", "artifact_id", "packer_run_uuid")
_AMI_ARTIFACT = re.compile(r"^(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<ami>ami-[0-9a-f]{8,17})$")
_SHA256_LINE = re.compile(r"^(?P<hash>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")


class ImageManifestError(ToolError, ValueError):
    """A Packer manifest, package manifest, config hash list or allow-list is missing or malformed.

    The message names the file and says how to fix it.
    """

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")


class ImageRegistrationError(ToolError, RuntimeError):
    """Registering the manifests' AMIs in the sandbox did not give the order Terraform needs (a tool problem)."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class AmiArtifact:
    """One AMI a Packer build produced, in one region."""

    region: str
    ami_id: str


@dataclass(frozen=True)
class Build:
    """One entry of ``builds`` in a Packer manifest, with its artifact's contents."""

    template: str
    name: str
    builder_type: str
    build_time: int
    artifact_id: str
    run_uuid: str
    custom_data: Mapping[str, str]
    files: tuple[str, ...] = ()
    amis: tuple[AmiArtifact, ...] = ()
    packages: Packages = field(default_factory=dict, compare=False, repr=False)
    config: ConfigHashes = field(default_factory=dict, compare=False, repr=False)
    #: The package manifest ``packages`` was read from (``<run>/<build name>.packages.txt``), when read from disk.
    packages_path: Path | None = field(default=None, compare=False, repr=False)

    @property
    def template_version(self) -> str:
        return self.custom_data.get("template_version", "")

    @property
    def is_ami(self) -> bool:
        return self.builder_type in AMI_BUILDER_TYPES

    @property
    def is_dev_box(self) -> bool:
        return self.builder_type in DEV_BUILDER_TYPES

    @property
    def container_images(self) -> tuple[str, ...]:
        """The container images the build preloads (``custom_data.container_images``, comma-separated)."""
        raw = self.custom_data.get("container_images", "")
        return tuple(i.strip() for i in raw.split(",") if i.strip())

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles the template serves (``custom_data.roles``, comma-separated)."""
        raw = self.custom_data.get("roles", "")
        return tuple(r.strip() for r in raw.split(",") if r.strip())

    def ami_name(self) -> str:
        """The AMI name Packer would give it: ``<template>-<version>-<build time, UTC>``."""
        stamp = datetime.fromtimestamp(self.build_time, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.template}-{self.template_version or 'unversioned'}-{stamp}"


@dataclass(frozen=True)
class Run:
    """The builds one ``packer build`` wrote to the manifest (one ``packer_run_uuid``)."""

    template: str
    uuid: str
    builds: tuple[Build, ...]

    @property
    def build_time(self) -> int:
        return min(b.build_time for b in self.builds)

    @property
    def dev_boxes(self) -> tuple[Build, ...]:
        return tuple(b for b in self.builds if b.is_dev_box)

    @property
    def ami_builds(self) -> tuple[Build, ...]:
        return tuple(b for b in self.builds if b.is_ami)

    @property
    def template_versions(self) -> tuple[str, ...]:
        return tuple(sorted({b.template_version for b in self.builds}))


@dataclass(frozen=True)
class Template:
    """One Packer template's manifest: all its runs, oldest first, the current one last."""

    name: str
    manifest: Path
    runs: tuple[Run, ...]
    last_run_uuid: str

    @property
    def current(self) -> Run:
        return self.runs[-1]

    @property
    def previous(self) -> tuple[Run, ...]:
        return self.runs[:-1]

    def run(self, uuid: str) -> Run:
        for run in self.runs:
            if run.uuid == uuid:
                return run
        raise ImageManifestError(
            self.manifest, f"no run {uuid!r} in the manifest (runs: {', '.join(r.uuid for r in self.runs)})",
            "name a packer_run_uuid that the manifest holds",
        )

    @property
    def roles(self) -> tuple[str, ...]:
        return self.current.builds[0].roles if self.current.builds else ()


@dataclass
class ImageCatalog:
    """Every template under a fixtures/images folder.

    ``sandbox_ids`` maps manifest AMI id -> sandbox AMI id once
    :func:`register_images` has run (the only mutable part).
    """

    root: Path
    templates: dict[str, Template]
    sandbox_ids: dict[str, str] = field(default_factory=dict)

    def template(self, name: str) -> Template:
        try:
            return self.templates[name]
        except KeyError:
            raise ImageManifestError(
                self.root / name / MANIFEST_NAME,
                f"no Packer manifest for template {name!r} (known: {', '.join(sorted(self.templates)) or 'none'})",
                f"add {name}/{MANIFEST_NAME} under {self.root} or use a known template name",
            ) from None

    def builds(self) -> Iterable[Build]:
        for template in self.templates.values():
            for run in template.runs:
                yield from run.builds

    def find_ami(self, ami_id: str) -> tuple[Build, AmiArtifact] | None:
        """The build and artifact of a manifest AMI id, or of a sandbox id registered for one."""
        source = {v: k for k, v in self.sandbox_ids.items()}.get(ami_id, ami_id)
        for build in self.builds():
            for artifact in build.amis:
                if artifact.ami_id == source:
                    return build, artifact
        return None

    def template_for_role(self, role: str) -> str | None:
        """The template whose ``custom_data.roles`` lists the role (current run), if any."""
        for template in self.templates.values():
            if role in template.roles:
                return template.name
        return None


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: an item that may exist in one builder's artifact only."""

    kind: str  # "package" or "config"
    name: str
    only_in: str  # a builder type: "amazon-ebs" or "vagrant"
    reason: str
    templates: tuple[str, ...] = ()

    def applies_to(self, template: str | None) -> bool:
        return not self.templates or template is None or template in self.templates


@dataclass(frozen=True)
class AllowList:
    """The parity allow-list (``parity.toml``)."""

    entries: tuple[AllowEntry, ...] = ()
    path: str = ""

    def lookup(self, kind: str, name: str, template: str | None = None) -> AllowEntry | None:
        for entry in self.entries:
            if entry.kind == kind and entry.name == name and entry.applies_to(template):
                return entry
        return None


# --------------------------------------------------------------------------- parsing


def parse_packages(text: str, path: Path | str = "<packages>") -> Packages:
    """Parse ``dpkg-query``/``rpm -qa`` output (name, version, architecture, tab-separated)."""
    fix = f"regenerate it on the image with: {DPKG_COMMAND} (Debian) or {RPM_COMMAND} (RPM)"
    rows: dict[str, list[tuple[str, str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ImageManifestError(
                path, f"line {number} is not 'name<TAB>version<TAB>architecture': {line!r}", fix
            )
        name, version, arch = (p.strip() for p in parts)
        rows.setdefault(name, []).append((version, arch))
    if not rows:
        raise ImageManifestError(path, "no packages listed (empty package manifest)", fix)
    packages: Packages = {}
    for name, entries in rows.items():
        arches = {a for _, a in entries}
        if len(arches) > 1:
            # dpkg multiarch (libc6:amd64 and libc6:i386): one key per architecture.
            for arch in sorted(arches):
                versions = sorted({v for v, a in entries if a == arch})
                packages[f"{name}:{arch}"] = (", ".join(versions), arch)
        else:
            versions = sorted({v for v, _ in entries})
            packages[name] = (", ".join(versions), entries[0][1])
    return packages


def parse_config_hashes(text: str, path: Path | str = "<config hashes>") -> ConfigHashes:
    """Parse ``sha256sum`` output (``<hex digest>  <path>``)."""
    fix = "regenerate it on the image with: sha256sum <the baked config files>"
    hashes: ConfigHashes = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _SHA256_LINE.match(line)
        if not match:
            raise ImageManifestError(path, f"line {number} is not sha256sum output: {line!r}", fix)
        hashes[match["path"]] = match["hash"].lower()
    return hashes


def read_manifest_file(path: Path, what: str, fix: str) -> str:
    """A manifest's text; :class:`ImageManifestError` naming ``what``, the file and ``fix`` if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageManifestError(path, f"{what} not found", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageManifestError(path, f"{what} cannot be read ({exc})", fix) from None


def parse_ami_artifact(artifact_id: str) -> tuple[AmiArtifact, ...]:
    """``"ap-southeast-1:ami-0123...,cn-north-1:ami-0456..."`` -> artifacts; ValueError if malformed."""
    artifacts = []
    for part in artifact_id.split(","):
        match = _AMI_ARTIFACT.match(part.strip())
        if not match:
            raise ValueError(part)
        artifacts.append(AmiArtifact(match["region"], match["ami"]))
    return tuple(artifacts)


def load_packer_manifest(path: Path | str, template: str | None = None) -> Template:
    """Read one Packer manifest (and each build's package and config files next to it)."""
    path = Path(path)
    template = template or path.parent.name
    fix_manifest = (
        "point the Packer manifest post-processor at this file "
        f'(post-processor "manifest" {{ output = "{path.name}" }}) and run packer build again, '
        "or restore the file from version control"
    )
    text = read_manifest_file(path, "Packer manifest", fix_manifest)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImageManifestError(
            path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", fix_manifest
        ) from None
    if not isinstance(data, dict):
        raise ImageManifestError(
            path, "the top level is not a JSON object with 'builds' and 'last_run_uuid'", fix_manifest
        )
    builds_raw = data.get("builds")
    if not isinstance(builds_raw, list) or not builds_raw:
        raise ImageManifestError(
            path, "no 'builds' (the list of builds is missing or empty)", fix_manifest
        )
    last_run = data.get("last_run_uuid")
    if not isinstance(last_run, str) or not last_run:
        raise ImageManifestError(path, "no 'last_run_uuid' naming the current run", fix_manifest)

    builds: list[Build] = []
    for index, raw in enumerate(builds_raw):
        where = f"builds[{index}]"
        if not isinstance(raw, dict):
            raise ImageManifestError(path, f"{where} is not an object", fix_manifest)
        missing = [k for k in _BUILD_FIELDS if k not in raw or raw[k] in (None, "")]
        if missing:
            raise ImageManifestError(path, f"{where} has no {', '.join(repr(m) for m in missing)}", fix_manifest)
        name, builder_type, run_uuid = str(raw["name"]), str(raw["builder_type"]), str(raw["packer_run_uuid"])
        where = f"{where} ({name!r}, run {run_uuid})"
        try:
            build_time = int(raw["build_time"])
        except (TypeError, ValueError):
            raise ImageManifestError(
                path, f"{where}: build_time {raw['build_time']!r} is not a Unix time", fix_manifest
            ) from None
        custom = raw.get("custom_data") or {}
        if not isinstance(custom, dict):
            raise ImageManifestError(path, f"{where}: custom_data is not an object", fix_manifest)
        custom = {str(k): str(v) for k, v in custom.items()}
        if not custom.get("template_version"):
            raise ImageManifestError(
                path, f"{where}: custom_data has no 'template_version'",
                "set custom_data = { template_version = \"...\" } in the template's manifest post-processor",
            )
        if custom.get("template") and custom["template"] != template:
            raise ImageManifestError(
                path,
                f"{where}: custom_data.template is {custom['template']!r} but the manifest is in folder {template!r}",
                "keep each template's manifest in a folder named after the template",
            )
        artifact_id = str(raw["artifact_id"])
        amis: tuple[AmiArtifact, ...] = ()
        if builder_type in AMI_BUILDER_TYPES:
            try:
                amis = parse_ami_artifact(artifact_id)
            except ValueError as exc:
                raise ImageManifestError(
                    path, f"{where}: artifact_id part {exc.args[0]!r} is not 'region:ami-id'",
                    "keep the artifact_id Packer wrote, e.g. 'ap-southeast-1:ami-0123456789abcdef0,cn-north-1:ami-...'",
                ) from None
        files = tuple(
            str(f.get("name")) for f in (raw.get("files") or []) if isinstance(f, dict) and f.get("name")
        )
        run_dir = path.parent / run_uuid
        packages_path = run_dir / f"{name}{PACKAGES_SUFFIX}"
        config_path = run_dir / f"{name}{CONFIG_SUFFIX}"
        packages = parse_packages(
            read_manifest_file(
                packages_path, f"package manifest of build {name!r} (run {run_uuid})",
                f"write it on the built image with {DPKG_COMMAND} (Debian) or {RPM_COMMAND} (RPM), "
                "e.g. from a Packer shell provisioner followed by a file provisioner with direction = \"download\"",
            ),
            packages_path,
        )
        config = parse_config_hashes(
            read_manifest_file(
                config_path, f"config hashes of build {name!r} (run {run_uuid})",
                "write them on the built image with sha256sum <the baked config files> and download the file",
            ),
            config_path,
        )
        builds.append(Build(
            template=template, name=name, builder_type=builder_type, build_time=build_time,
            artifact_id=artifact_id, run_uuid=run_uuid, custom_data=custom, files=files, amis=amis,
            packages=packages, config=config, packages_path=packages_path,
        ))

    by_run: dict[str, list[Build]] = {}
    for build in builds:
        by_run.setdefault(build.run_uuid, []).append(build)
    if last_run not in by_run:
        raise ImageManifestError(
            path, f"last_run_uuid {last_run!r} names no run in 'builds' (runs: {', '.join(by_run)})", fix_manifest
        )
    runs = [Run(template, uuid, tuple(sorted(bs, key=lambda b: (b.build_time, b.name)))) for uuid, bs in by_run.items()]
    # Previous runs by build time, the current run (last_run_uuid) last whatever its clock said.
    runs.sort(key=lambda r: (r.uuid == last_run, r.build_time))
    return Template(name=template, manifest=path, runs=tuple(runs), last_run_uuid=last_run)


def load_catalog(root: Path | str) -> ImageCatalog:
    """Every ``<template>/packer-manifest.json`` under ``root`` (fixtures/images)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageManifestError(
            root, "images folder not found", f"pass the folder that holds <template>/{MANIFEST_NAME}"
        )
    templates = {}
    for manifest in sorted(root.glob(f"*/{MANIFEST_NAME}")):
        template = load_packer_manifest(manifest)
        templates[template.name] = template
    if not templates:
        raise ImageManifestError(
            root, f"no <template>/{MANIFEST_NAME} found",
            "add one folder per Packer template holding the manifest post-processor's output",
        )
    return ImageCatalog(root=root, templates=templates)


def load_allow_list(path: Path | str) -> AllowList:
    """Read ``parity.toml``: ``[[package]]`` and ``[[config]]`` entries with only_in and reason.

    The schema is ``immutable_infra.config.ParityConfig`` (unknown keys are errors).
    """
    from immutable_infra.config import ConfigError, ParityConfig, validate

    path = Path(path)
    fix = (
        "each [[package]] needs name, only_in (\"amazon-ebs\" or \"vagrant\") and reason; "
        "each [[config]] needs path, only_in and reason; optional templates = [...]"
    )
    text = read_manifest_file(path, "parity allow-list", fix)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImageManifestError(path, f"not valid TOML ({exc})", fix) from None
    try:
        spec = validate(ParityConfig, data, path)
    except ConfigError as exc:
        raise ImageManifestError(path, str(exc).removeprefix(f"{path}: "), fix) from None
    entries = [AllowEntry("package", p.name, p.only_in, p.reason.strip(), tuple(p.templates)) for p in spec.package]
    entries += [AllowEntry("config", c.path, c.only_in, c.reason.strip(), tuple(c.templates)) for c in spec.config]
    return AllowList(tuple(entries), str(path))


# --------------------------------------------------------------------------- sandbox


def _tags(image: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in image.get("Tags") or []}


def _creation_seconds(image: Mapping[str, Any]) -> int:
    """CreationDate in whole seconds, as the AWS provider compares it (``time.Parse(RFC3339).Unix()``)."""
    raw = str(image.get("CreationDate", "")).replace("Z", "+00:00")
    return int(datetime.fromisoformat(raw).timestamp())


def most_recent_image(images: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The image Terraform's ``data "aws_ami" { most_recent = true }`` picks.

    The AWS provider sorts by ``CreationDate`` parsed as RFC 3339 and compared
    in whole seconds (``itime.Unix() < jtime.Unix()``) with an unstable sort:
    two images created in the same second are a coin toss. This returns
    ``None`` for no images and raises ``ImageRegistrationError`` on such a tie.
    """
    images = list(images)
    if not images:
        return None
    ranked = sorted(images, key=_creation_seconds)
    top = ranked[-1]
    ties = [i["ImageId"] for i in ranked if _creation_seconds(i) == _creation_seconds(top)]
    if len(ties) > 1:
        raise ImageRegistrationError(
            f"images {', '.join(ties)} share CreationDate {top.get('CreationDate')}: "
            "Terraform's most_recent would pick one at random"
        )
    return top


def describe_template_images(client: Any, template: str, owners: Iterable[str] = ("self",)) -> list[dict[str, Any]]:
    """describe_images with the filter the groups' ``data "aws_ami"`` uses (``tag:Template``)."""
    response = client.describe_images(
        Owners=list(owners), Filters=[{"Name": "tag:Template", "Values": [template]}]
    )
    return list(response.get("Images", []))


def register_images(
    client_for_region: Callable[[str], Any],
    catalog: ImageCatalog,
    *,
    tick: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Register every amazon-ebs artifact of every run in the sandbox; return manifest id -> sandbox id.

    Runs are registered oldest first, the current run last, each image tagged
    Name, Template, TemplateVersion, PackerRunUUID, PackerBuildName and
    SourceArtifact (the manifest's AMI id).

    Ordering: moto (5.2.5) stamps ``CreationDate`` with its own clock at
    ``RegisterImage`` and lets no caller set it; it reports whole seconds,
    and the AWS provider compares whole seconds too. So before the first
    image of a newer run goes in a region, this waits until the clock has
    passed the second of that region's newest earlier image, then checks the
    CreationDate moto reported (retrying once the second has turned if a
    remote clock disagrees). Runs are lined up from the newest, so all
    templates share each wait: at most about one second per older run. Images already
    registered for the same SourceArtifact (a reused sandbox) are reused, not
    registered again. Finally the lookup Terraform does (``owners = ["self"]``,
    ``tag:Template`` filter, most recent) must give the current run's image
    in every region, else :class:`ImageRegistrationError`.

    The mapping is also kept in ``catalog.sandbox_ids``.
    """
    clients: dict[str, Any] = {}

    def client(region: str) -> Any:
        if region not in clients:
            clients[region] = client_for_region(region)
        return clients[region]

    templates = list(catalog.templates.values())
    regions = {
        t.name: sorted({a.region for run in t.runs for b in run.ami_builds for a in b.amis}) for t in templates
    }
    existing: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for t in templates:
        for region in regions[t.name]:
            existing[t.name, region] = {
                _tags(i).get("SourceArtifact", ""): i for i in describe_template_images(client(region), t.name)
            }

    # Phases line the runs up from the end, so every template's current run is
    # in the last phase and the wait for the clock to turn is shared by all.
    depth = max((len(t.runs) for t in templates), default=0)
    newest: dict[tuple[str, str], int] = {}  # (template, region) -> newest CreationDate second of earlier runs
    mapping: dict[str, str] = {}
    for phase in range(depth):
        this_phase: dict[tuple[str, str], int] = {}
        for t in templates:
            index = phase - (depth - len(t.runs))
            if index < 0:
                continue
            for build in t.runs[index].ami_builds:
                for artifact in build.amis:
                    key = (t.name, artifact.region)
                    image = existing[key].get(artifact.ami_id) or _register_after(
                        client(artifact.region), build, artifact, newest.get(key), tick, sleep
                    )
                    mapping[artifact.ami_id] = image["ImageId"]
                    second = _creation_seconds(image)
                    this_phase[key] = max(this_phase.get(key, second), second)
        for key, second in this_phase.items():
            newest[key] = max(newest.get(key, second), second)
    catalog.sandbox_ids.update(mapping)

    for t in templates:
        for region in regions[t.name]:
            chosen = most_recent_image(describe_template_images(client(region), t.name))
            current = {mapping[a.ami_id] for b in t.current.ami_builds for a in b.amis if a.region == region}
            if current and (chosen is None or chosen["ImageId"] not in current):
                raise ImageRegistrationError(
                    f"{t.name} in {region}: the most recent image is "
                    f"{chosen and chosen['ImageId']} (run {chosen and _tags(chosen).get('PackerRunUUID')}), "
                    f"not the current run {t.last_run_uuid}'s {', '.join(sorted(current))}; "
                    "reset the sandbox and register again"
                )
    return mapping


def _register_after(
    ec2: Any, build: Build, artifact: AmiArtifact, after: int | None, tick: float, sleep: Callable[[float], None]
) -> dict[str, Any]:
    """Register one AMI whose CreationDate is strictly after ``after`` (whole seconds), and tag it."""
    if after is not None:
        while time.time() < after + 1:
            sleep(tick)
    for _attempt in range(50):
        image_id = ec2.register_image(
            Name=build.ami_name(),
            Description=f"{build.template} {build.template_version} ({build.name}, Packer run {build.run_uuid})",
            Architecture="x86_64",
            RootDeviceName="/dev/sda1",
            VirtualizationType="hvm",
        )["ImageId"]
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        if after is None or _creation_seconds(image) > after:
            break
        ec2.deregister_image(ImageId=image_id)  # the server's clock lags ours: try again
        sleep(max(tick, 0.2))
    else:
        raise ImageRegistrationError(
            f"{artifact.ami_id} ({build.template}, run {build.run_uuid}): the sandbox kept stamping "
            f"CreationDate at or before {after}; its clock does not advance"
        )
    tags = {
        "Name": build.ami_name(),
        "Template": build.template,
        "TemplateVersion": build.template_version,
        "PackerRunUUID": build.run_uuid,
        "PackerBuildName": build.name,
        "SourceArtifact": artifact.ami_id,
    }
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    image = dict(image)
    image["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return image


def previous_image(catalog: ImageCatalog, template: str, region: str) -> str:
    """The sandbox id of the newest AMI of an older run of ``template`` in ``region`` (for chaos and tests).

    Raises :class:`ImageManifestError` when the manifest holds no older run
    with an AMI in that region, ``LookupError`` when :func:`register_images`
    has not registered it yet.
    """
    tmpl = catalog.template(template)
    for run in reversed(tmpl.previous):
        for build in reversed(run.ami_builds):
            for artifact in build.amis:
                if artifact.region == region:
                    try:
                        return catalog.sandbox_ids[artifact.ami_id]
                    except KeyError:
                        raise LookupError(
                            f"{artifact.ami_id} ({template}, run {run.uuid}) is not registered in the sandbox; "
                            "call register_images(client_for_region, catalog) first"
                        ) from None
    raise ImageManifestError(
        tmpl.manifest, f"no run before the current one ({tmpl.last_run_uuid}) has an AMI in {region}",
        "keep the previous run's builds in the manifest (Packer appends each run to it)",
    )
