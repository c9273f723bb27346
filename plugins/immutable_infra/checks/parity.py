"""Parity: production runs the AMI of the current Packer run, and it holds what the dev box holds.

Plain functions over plain data: describe_instances / describe_images dicts
and the :class:`~immutable_infra.images.ImageCatalog` (read once from the
Packer and package manifests). Nothing here touches AWS or the disk.

- lineage: every instance of a group runs an AMI of the *current* run of its
  template (``last_run_uuid``), and that run also gave the dev box, from the
  same template version.
- content: the dev box (vagrant build) and each AMI (amazon-ebs build) of
  the current run hold the same packages at the same versions and the same
  configuration files, except what ``parity.toml`` allows.
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
) -> list[Finding]:
    """One finding per package difference the allow-list does not allow; ``dev_box`` names the dev-box side."""
    findings = []
    for d in diffs:
        if d.allowed:
            continue
        expected = (f"package {d.name} {d.dev_version} ({d.dev_arch}) as on the dev box {dev_box}"
                    if d.dev_version is not None else
                    f"no package {d.name} (the dev box {dev_box} has none)")
        found = (f"package {d.name} {d.ami_version} ({d.ami_arch}) on the AMI"
                 if d.ami_version is not None else f"package {d.name} missing from the AMI")
        findings.append(Finding(CHECK, group, address, aws_id, expected, found, {
            **base, "package": d.name, "change": d.change,
            "dev_version": d.dev_version, "ami_version": d.ami_version,
        }))
    return findings


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
            for c in diff_configs(box.config, ami.config, allow, template=template,
                                  dev_builder=box.builder_type, ami_builder=ami.builder_type):
                if c.allowed:
                    continue
                findings.append(Finding(
                    CHECK, group, address, aws_id,
                    f"config {c.path} sha256 {c.dev_sha256 or 'absent'} as on the dev box {box.artifact_id}",
                    f"sha256 {c.ami_sha256 or 'absent'} on the AMI",
                    {**base, "config": c.path, "change": c.change,
                     "dev_sha256": c.dev_sha256, "ami_sha256": c.ami_sha256},
                ))
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


def live_content_violations(
    group: str, template: str, catalog: ImageCatalog, compare: Any,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """The content check with a live dev box: its packages against each AMI build of the template's current run.

    ``compare(template, ami_build)`` returns a
    :class:`~immutable_infra.hosts.LivePackageParity` (host side first, the
    build's package manifest second; ``hosts.live_content_check`` passes
    ``live_package_parity`` over one read of the host). Packages only: the
    config hashes are not read live. Returns the findings and one report row
    per AMI build, naming both sources.
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
        base = {"template": template, "run": run.uuid, "dev_box": live.host_source, "ami_build": ami.name,
                "dev_box_source": live.host_source, "ami_source": live.manifest_source}
        findings += _package_findings(group, address, aws_id, base, live.diffs, live.host_source)
        rows.append({
            "template": template, "run": run.uuid, "template_version": ami.template_version,
            "dev_box": live.host_source, "ami": ami.artifact_id,
            "sandbox_ami": ",".join(s for a in ami.amis if (s := catalog.sandbox_ids.get(a.ami_id))) or None,
            "packages_compared": live.compared,
            "differences": sum(not d.allowed for d in live.diffs),
            "allowed": sum(d.allowed for d in live.diffs),
            "configs_compared": 0,
            "container_images": list(ami.container_images),
            "dev_box_source": live.host_source, "ami_source": live.manifest_source,
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
