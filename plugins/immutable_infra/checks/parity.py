"""Parity: production runs the AMI of the current Packer run, and it holds what the dev box holds.

Plain functions over plain data: describe_instances / describe_images dicts
and the :class:`~immutable_infra.images.ImageCatalog` (read once from the
Packer and package manifests). Nothing here touches AWS or the disk.

- lineage: every instance of a group runs an AMI of the *current* run of its
  template (``last_run_uuid``), and that run also gave the dev box, from the
  same template version.
- content: the dev box (vagrant build) and each AMI (amazon-ebs build) of
  the current run hold the same packages at the same versions and the same
  configuration files, except what ``parity.toml`` allows. Read from the
  recorded manifests (:func:`find_content_violations`), or with either side
  read live (:func:`compare_content` over what ``hosts.py`` read,
  :func:`live_content_violations`), with the same diff and allow-list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from immutable_infra.findings import Finding, format_findings
from immutable_infra.images import AllowList, Build, ConfigHashes, ImageCatalog, Packages, Run

CHECK = "parity"

#: Instance states that no longer run anything (left out of lineage).
_GONE_STATES = frozenset({"terminated", "shutting-down"})


@dataclass(frozen=True)
class PackageDiff:
    """One package that differs between the dev box and the AMI.

    ``change`` is ``added`` (on the AMI only), ``removed`` (on the dev box
    only) or ``changed`` (both, other version or architecture).
    """

    name: str
    change: str
    dev_version: str | None
    ami_version: str | None
    dev_arch: str | None = None
    ami_arch: str | None = None
    allowed: bool = False
    reason: str = ""

    def __str__(self) -> str:
        dev = f"{self.dev_version} ({self.dev_arch})" if self.dev_version is not None else "absent"
        ami = f"{self.ami_version} ({self.ami_arch})" if self.ami_version is not None else "absent"
        text = f"{self.name}: dev box {dev}, AMI {ami}"
        return f"{text} [allowed: {self.reason}]" if self.allowed else text


@dataclass(frozen=True)
class ConfigDiff:
    """One baked configuration file whose sha256 differs between the dev box and the AMI."""

    path: str
    change: str
    dev_sha256: str | None
    ami_sha256: str | None
    allowed: bool = False
    reason: str = ""

    def __str__(self) -> str:
        dev = (self.dev_sha256 or "absent")[:12]
        ami = (self.ami_sha256 or "absent")[:12]
        text = f"{self.path}: dev box sha256 {dev}, AMI sha256 {ami}"
        return f"{text} [allowed: {self.reason}]" if self.allowed else text


def _allowance(allow: AllowList | None, kind: str, name: str, template: str | None, only_in: str) -> str | None:
    """The reason an item present in one builder only is allowed, or None."""
    if allow is None:
        return None
    entry = allow.lookup(kind, name, template)
    if entry is not None and entry.only_in == only_in:
        return entry.reason
    return None


def diff_packages(
    dev: Packages, ami: Packages, allow: AllowList | None = None, *, template: str | None = None,
    dev_builder: str = "vagrant", ami_builder: str = "amazon-ebs",
) -> list[PackageDiff]:
    """Every package that differs, sorted by name; allowed ones carry ``allowed=True`` and the reason.

    Only presence in one builder can be allowed; a version or architecture
    difference of a package both hold is never allowed.
    """
    diffs = []
    for name in sorted(set(dev) | set(ami)):
        d, a = dev.get(name), ami.get(name)
        if d == a:
            continue
        if d is None:
            reason = _allowance(allow, "package", name, template, ami_builder)
            diffs.append(PackageDiff(name, "added", None, a[0], None, a[1], reason is not None, reason or ""))
        elif a is None:
            reason = _allowance(allow, "package", name, template, dev_builder)
            diffs.append(PackageDiff(name, "removed", d[0], None, d[1], None, reason is not None, reason or ""))
        else:
            diffs.append(PackageDiff(name, "changed", d[0], a[0], d[1], a[1]))
    return diffs


def diff_configs(
    dev: ConfigHashes, ami: ConfigHashes, allow: AllowList | None = None, *, template: str | None = None,
    dev_builder: str = "vagrant", ami_builder: str = "amazon-ebs",
) -> list[ConfigDiff]:
    """Every baked configuration file that differs (sha256), sorted by path."""
    diffs = []
    for path in sorted(set(dev) | set(ami)):
        d, a = dev.get(path), ami.get(path)
        if d == a:
            continue
        if d is None:
            reason = _allowance(allow, "config", path, template, ami_builder)
            diffs.append(ConfigDiff(path, "added", None, a, reason is not None, reason or ""))
        elif a is None:
            reason = _allowance(allow, "config", path, template, dev_builder)
            diffs.append(ConfigDiff(path, "removed", d, None, reason is not None, reason or ""))
        else:
            diffs.append(ConfigDiff(path, "changed", d, a))
    return diffs


# --------------------------------------------------------------------------- lineage


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def _label(instance: Mapping[str, Any]) -> str:
    tags = _tags(instance)
    return tags.get("Name") or (f"role {tags['Role']}" if tags.get("Role") else "")


def _ami_text(image_id: str, source: str) -> str:
    """``ami-sandbox (Packer's ami-...)`` when the sandbox re-registered it, else the id alone."""
    return image_id if image_id == source else f"{image_id} (Packer's {source})"


def _dev_box_findings(group: str, run: Run, ami_build: Build) -> list[Finding]:
    """The current run must also have given a dev box, from the same template version."""
    address = f"image {run.template}"
    if not run.dev_boxes:
        return [Finding(
            CHECK, group, address, ami_build.artifact_id,
            f"a Vagrant box from Packer run {run.uuid} of {run.template} (the AMI's run)",
            "no vagrant build in that run: developers run something else than production",
            {"template": run.template, "run": run.uuid},
        )]
    findings = []
    for box in run.dev_boxes:
        if box.template_version != ami_build.template_version:
            findings.append(Finding(
                CHECK, group, address, box.artifact_id,
                f"dev box of run {run.uuid} from template version {ami_build.template_version} (as the AMI)",
                f"template version {box.template_version}",
                {"template": run.template, "run": run.uuid, "dev_box": box.artifact_id},
            ))
    return findings


def find_lineage_violations(
    group: str,
    instances: Iterable[Mapping[str, Any]],
    images: Iterable[Mapping[str, Any]],
    catalog: ImageCatalog,
) -> list[Finding]:
    """Instances not on an AMI of the current Packer run of their template, and runs without a matching dev box.

    ``instances`` are describe_instances dicts (InstanceId, ImageId, Tags with
    Role); ``images`` describe_images dicts with their tags. An image is
    traced to the manifests by its ``SourceArtifact`` tag (images registered
    in the sandbox) or its own id (real AWS, where the id is Packer's).
    """
    by_id = {i["ImageId"]: i for i in images}
    findings: list[Finding] = []
    checked_runs: set[tuple[str, str]] = set()
    for inst in instances:
        if (inst.get("State") or {}).get("Name") in _GONE_STATES:
            continue
        instance_id, image_id = inst.get("InstanceId", ""), inst.get("ImageId", "")
        role = _tags(inst).get("Role", "")
        label = _label(inst)
        image = by_id.get(image_id)
        image_tags = _tags(image) if image else {}
        source = image_tags.get("SourceArtifact") or image_id
        found = catalog.find_ami(source) or catalog.find_ami(image_id)
        if found is None:
            findings.append(Finding(
                CHECK, group, label, instance_id,
                "an AMI baked by Packer from one of the templates " + ", ".join(sorted(catalog.templates)),
                f"{image_id}, unknown to the Packer manifests"
                + (f" (tags Template={image_tags.get('Template')}, PackerRunUUID={image_tags.get('PackerRunUUID')})"
                   if image_tags else ""),
                {"instance": instance_id, "image": image_id, "role": role},
            ))
            continue
        build, artifact = found
        template = catalog.template(build.template)
        detail = {
            "instance": instance_id, "image": image_id, "source_artifact": artifact.ami_id, "role": role,
            "template": template.name, "image_run": build.run_uuid, "current_run": template.last_run_uuid,
            "image_template_version": build.template_version,
            "current_template_version": template.current.template_versions[-1],
        }
        wanted = catalog.template_for_role(role) if role else None
        if wanted is not None and wanted != template.name:
            findings.append(Finding(
                CHECK, group, label, instance_id,
                f"role {role} on an AMI of template {wanted}",
                f"{_ami_text(image_id, artifact.ami_id)} of template {template.name}",
                detail,
            ))
        if build.run_uuid != template.last_run_uuid:
            findings.append(Finding(
                CHECK, group, label, instance_id,
                f"an AMI of the current Packer run {template.last_run_uuid} of {template.name} "
                f"(template version {detail['current_template_version']})",
                f"{_ami_text(image_id, artifact.ami_id)} from older run {build.run_uuid} "
                f"(template version {build.template_version})",
                detail,
            ))
            continue
        if (template.name, build.run_uuid) not in checked_runs:
            checked_runs.add((template.name, build.run_uuid))
            findings.extend(_dev_box_findings(group, template.current, build))
    return findings


def assert_no_lineage_violations(
    group: str, instances: Iterable[Mapping[str, Any]], images: Iterable[Mapping[str, Any]], catalog: ImageCatalog,
) -> None:
    """Fail the test with one line per instance not on the current run's AMI."""
    __tracebackhide__ = True
    findings = find_lineage_violations(group, instances, images, catalog)
    if findings:
        import pytest

        pytest.fail(f"image lineage of group {group}:\n{format_findings(findings)}", pytrace=False)


# --------------------------------------------------------------------------- content


def _package_findings(
    group: str, address: str, aws_id: str, base: Mapping[str, Any], diffs: Iterable[PackageDiff], dev_box: str,
    ami: str = "the AMI",
) -> list[Finding]:
    """One finding per package difference the allow-list does not allow; ``dev_box`` names the dev-box side,
    ``ami`` the AMI side (``the AMI``, or the instance read live)."""
    findings = []
    for d in diffs:
        if d.allowed:
            continue
        expected = (f"package {d.name} {d.dev_version} ({d.dev_arch}) as on the dev box {dev_box}"
                    if d.dev_version is not None else
                    f"no package {d.name} (the dev box {dev_box} has none)")
        found = (f"package {d.name} {d.ami_version} ({d.ami_arch}) on {ami}"
                 if d.ami_version is not None else f"package {d.name} missing from {ami}")
        findings.append(Finding(CHECK, group, address, aws_id, expected, found, {
            **base, "package": d.name, "change": d.change,
            "dev_version": d.dev_version, "ami_version": d.ami_version,
        }))
    return findings


def _config_findings(
    group: str, address: str, aws_id: str, base: Mapping[str, Any], diffs: Iterable[ConfigDiff], dev_box: str,
    ami: str = "the AMI",
) -> list[Finding]:
    """One finding per configuration file difference the allow-list does not allow (sides named as packages)."""
    return [Finding(
        CHECK, group, address, aws_id,
        f"config {c.path} sha256 {c.dev_sha256 or 'absent'} as on the dev box {dev_box}",
        f"sha256 {c.ami_sha256 or 'absent'} on {ami}",
        {**base, "config": c.path, "change": c.change, "dev_sha256": c.dev_sha256, "ami_sha256": c.ami_sha256},
    ) for c in diffs if not c.allowed]


def _no_build_finding(group: str, template: str, run: Run, missing: str, wanted: str) -> Finding:
    return Finding(
        CHECK, group, f"image {template}", "",
        f"{wanted} in the current run {run.uuid}",
        f"no {missing} build in that run: nothing to compare",
        {"template": template, "run": run.uuid},
    )


def find_content_violations(
    group: str, template: str, catalog: ImageCatalog, allow: AllowList | None = None,
) -> list[Finding]:
    """Package and config differences between the dev box and each AMI of the template's current run."""
    tmpl = catalog.template(template)
    run = tmpl.current
    findings: list[Finding] = []
    if not run.dev_boxes or not run.ami_builds:
        missing = "vagrant" if not run.dev_boxes else "amazon-ebs"
        return [_no_build_finding(group, template, run, missing, "a vagrant and an amazon-ebs build")]
    for box in run.dev_boxes:
        for ami in run.ami_builds:
            address = f"image {template} {ami.name}"
            aws_id = ",".join(a.ami_id for a in ami.amis)
            base = {"template": template, "run": run.uuid, "dev_box": box.artifact_id, "ami_build": ami.name}
            diffs = diff_packages(box.packages, ami.packages, allow, template=template,
                                  dev_builder=box.builder_type, ami_builder=ami.builder_type)
            findings += _package_findings(group, address, aws_id, base, diffs, box.artifact_id)
            configs = diff_configs(box.config, ami.config, allow, template=template,
                                   dev_builder=box.builder_type, ami_builder=ami.builder_type)
            findings += _config_findings(group, address, aws_id, base, configs, box.artifact_id)
    return findings


def assert_no_content_violations(
    group: str, template: str, catalog: ImageCatalog, allow: AllowList | None = None,
) -> None:
    """Fail the test with one line per package or config file that differs without an allow-list entry."""
    __tracebackhide__ = True
    findings = find_content_violations(group, template, catalog, allow)
    if findings:
        import pytest

        pytest.fail(f"dev box / AMI parity of {template} (group {group}):\n{format_findings(findings)}", pytrace=False)


def manifest_sources(catalog: ImageCatalog, templates: Iterable[str]) -> list[str]:
    """Where the content check read the dev box from, without ``--dev-box``: ``manifest <vagrant build's packages.txt>``."""
    return [f"manifest {box.packages_path or box.artifact_id}"
            for name in sorted(templates) for box in catalog.template(name).current.dev_boxes]


@dataclass(frozen=True)
class ContentComparison:
    """One dev box against one AMI build, wherever each side was read: the differences and both sources.

    ``dev_box_source``/``ami_source`` say where each side came from
    (``live host ssh://...``, ``live instance i-... at ssh://...``,
    ``manifest <path>``); ``ami`` is how findings name the AMI side
    (``the AMI``, or ``the AMI's instance i-...`` when read live).
    """

    dev_box_source: str
    ami_source: str
    packages: tuple[PackageDiff, ...]
    configs: tuple[ConfigDiff, ...]
    packages_compared: int
    configs_compared: int
    ami: str = "the AMI"

    @property
    def violations(self) -> tuple[PackageDiff | ConfigDiff, ...]:
        """The differences ``parity.toml`` does not allow."""
        return tuple(d for d in (*self.packages, *self.configs) if not d.allowed)


def compare_content(
    dev_packages: Packages, dev_configs: ConfigHashes, ami_packages: Packages, ami_configs: ConfigHashes,
    allow: AllowList | None = None, *, template: str | None = None, dev_box_source: str, ami_source: str,
    ami: str = "the AMI",
) -> ContentComparison:
    """The content check's diff of packages and config hashes (``vagrant`` side first, ``amazon-ebs`` second)."""
    return ContentComparison(
        dev_box_source, ami_source,
        tuple(diff_packages(dev_packages, ami_packages, allow, template=template)),
        tuple(diff_configs(dev_configs, ami_configs, allow, template=template)),
        len(set(dev_packages) | set(ami_packages)), len(set(dev_configs) | set(ami_configs)), ami,
    )


def config_paths(catalog: ImageCatalog, template: str, allow: AllowList | None = None) -> tuple[str, ...]:
    """The configuration files the parity compares for ``template``, sorted: every path of its current run's
    config hash files (dev box and AMI builds) and every ``[[config]]`` of ``parity.toml`` that applies to it.

    What a live host is asked for: a path absent on the host is a difference
    (or an allowed one), never skipped.
    """
    paths = {path for build in catalog.template(template).current.builds for path in build.config}
    if allow is not None:
        paths |= {e.name for e in allow.entries if e.kind == "config" and e.applies_to(template)}
    return tuple(sorted(paths))


def instances_on_current_run(
    instances: Iterable[Mapping[str, Any]], images: Iterable[Mapping[str, Any]], catalog: ImageCatalog,
) -> dict[tuple[str, str], list[str]]:
    """(template, AMI build name) -> the running instances on that build of the template's *current* run.

    The instance's image is traced as the lineage check does: its
    ``SourceArtifact`` tag (images registered in the sandbox; ``sandbox_ids``
    when the catalog holds them) or its own id (real AWS). Instances on an
    older run or an unknown image are left out (the lineage test reports them).
    """
    by_id = {i["ImageId"]: i for i in images}
    out: dict[tuple[str, str], list[str]] = {}
    for inst in instances:
        if (inst.get("State") or {}).get("Name", "running") != "running":
            continue
        image_id = inst.get("ImageId", "")
        source = _tags(by_id.get(image_id) or {}).get("SourceArtifact") or image_id
        found = catalog.find_ami(source) or catalog.find_ami(image_id)
        if found is None:
            continue
        build = found[0]
        if build.run_uuid == catalog.template(build.template).last_run_uuid:
            out.setdefault((build.template, build.name), []).append(inst["InstanceId"])
    return {key: sorted(ids) for key, ids in sorted(out.items())}


def live_content_violations(
    group: str, template: str, catalog: ImageCatalog, compare: Any,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """The content check with a live dev box: it against each AMI build of the template's current run.

    ``compare(template, ami_build)`` returns a :class:`ContentComparison`
    (``hosts.live_content_check`` passes one over one read of the dev box,
    and of the build's running instance when there is one, else of the
    build's recorded manifests). Returns the findings and one report row per
    AMI build, naming both sources.
    """
    run = catalog.template(template).current
    if not run.ami_builds:
        return [_no_build_finding(group, template, run, "amazon-ebs", "an amazon-ebs build")], []
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for ami in run.ami_builds:
        live = compare(template, ami)
        address = f"image {template} {ami.name}"
        aws_id = ",".join(a.ami_id for a in ami.amis)
        base = {"template": template, "run": run.uuid, "dev_box": live.dev_box_source, "ami_build": ami.name,
                "dev_box_source": live.dev_box_source, "ami_source": live.ami_source}
        findings += _package_findings(group, address, aws_id, base, live.packages, live.dev_box_source, live.ami)
        findings += _config_findings(group, address, aws_id, base, live.configs, live.dev_box_source, live.ami)
        rows.append({
            "template": template, "run": run.uuid, "template_version": ami.template_version,
            "dev_box": live.dev_box_source, "ami": ami.artifact_id,
            "sandbox_ami": ",".join(s for a in ami.amis if (s := catalog.sandbox_ids.get(a.ami_id))) or None,
            "packages_compared": live.packages_compared,
            "configs_compared": live.configs_compared,
            "differences": sum(not d.allowed for d in (*live.packages, *live.configs)),
            "allowed": sum(d.allowed for d in (*live.packages, *live.configs)),
            "container_images": list(ami.container_images),
            "dev_box_source": live.dev_box_source, "ami_source": live.ami_source,
        })
    return findings, rows


# --------------------------------------------------------------------------- report


def parity_table(
    catalog: ImageCatalog, allow: AllowList | None = None, templates: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (template, AMI build) of the current run, for reports."""
    rows = []
    for name in sorted(templates if templates is not None else catalog.templates):
        tmpl = catalog.template(name)
        run = tmpl.current
        for box in run.dev_boxes or (None,):
            for ami in run.ami_builds:
                if box is None:
                    pkgs, cfgs = [], []
                    compared = 0
                else:
                    pkgs = diff_packages(box.packages, ami.packages, allow, template=name,
                                         dev_builder=box.builder_type, ami_builder=ami.builder_type)
                    cfgs = diff_configs(box.config, ami.config, allow, template=name,
                                        dev_builder=box.builder_type, ami_builder=ami.builder_type)
                    compared = len(set(box.packages) | set(ami.packages))
                rows.append({
                    "template": name,
                    "run": run.uuid,
                    "template_version": ami.template_version,
                    "dev_box": box.artifact_id if box else None,
                    "ami": ami.artifact_id,
                    "sandbox_ami": ",".join(
                        s for a in ami.amis if (s := catalog.sandbox_ids.get(a.ami_id))
                    ) or None,
                    "packages_compared": compared,
                    "configs_compared": len(set(box.config) | set(ami.config)) if box else 0,
                    "differences": sum(not d.allowed for d in pkgs) + sum(not c.allowed for c in cfgs),
                    "allowed": sum(d.allowed for d in pkgs) + sum(c.allowed for c in cfgs),
                    "container_images": list(ami.container_images),
                    "dev_box_source": f"manifest {box.packages_path or box.artifact_id}" if box else None,
                    "ami_source": f"manifest {ami.packages_path or ami.artifact_id}",
                })
    return rows
