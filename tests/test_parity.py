"""Tests of checks/parity.py (lineage, content, report table) and of the hosts.py seam."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from immutable_infra.checks.parity import (
    assert_no_content_violations,
    assert_no_lineage_violations,
    diff_configs,
    diff_packages,
    find_content_violations,
    find_lineage_violations,
    parity_table,
)
from immutable_infra.hosts import ManifestPackages, PackageSource, TestinfraPackages
from immutable_infra.images import (
    AllowEntry,
    AllowList,
    ImageCatalog,
    load_allow_list,
    load_catalog,
    previous_image,
    register_images,
)
from immutable_infra.sandbox import MotoServer

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
TEMPLATES = ("centos7-base", "debian11-base")
OPS_ROLES = ("mesos-master", "docker-registry", "ci", "vpn", "admin")
APP_ROLES = ("reverse-proxy", "microservice", "marathon-node")
CENTOS_CURRENT = "a9d54e0b-18c3-4f6e-b2a7-6c0e91d3f845"
CENTOS_PREVIOUS = "3f0c6a0e-7a52-4c1e-9d0b-2b51c7f6a3e1"
DEBIAN_CURRENT = "e7b1c3d5-2a64-4f09-9c8e-0d4a6b2f1e73"


@pytest.fixture(scope="module")
def catalog() -> ImageCatalog:
    return load_catalog(IMAGES)


@pytest.fixture(scope="module")
def allow():
    return load_allow_list(IMAGES / "parity.toml")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A writable copy of fixtures/images."""
    return Path(shutil.copytree(IMAGES, tmp_path / "images"))


def _current_ami(catalog: ImageCatalog, template: str, region: str) -> str:
    for build in catalog.templates[template].current.ami_builds:
        for artifact in build.amis:
            if artifact.region == region:
                return artifact.ami_id
    raise AssertionError(f"no current AMI for {template} in {region}")


def _previous_ami(catalog: ImageCatalog, template: str, region: str) -> str:
    for build in catalog.templates[template].previous[-1].ami_builds:
        for artifact in build.amis:
            if artifact.region == region:
                return artifact.ami_id
    raise AssertionError(f"no previous AMI for {template} in {region}")


def _instance(instance_id: str, image_id: str, role: str, name: str = "") -> dict[str, Any]:
    tags = [{"Key": "Role", "Value": role}] + ([{"Key": "Name", "Value": name}] if name else [])
    return {"InstanceId": instance_id, "ImageId": image_id, "State": {"Name": "running"}, "Tags": tags}


def _image(image_id: str) -> dict[str, Any]:
    """describe_images of a real-AWS AMI (the Packer id itself, tagged by Packer's run_tags or not)."""
    return {"ImageId": image_id, "Tags": []}


def _ops_group(catalog: ImageCatalog, ami: str | None = None) -> tuple[list[dict], list[dict]]:
    ami = ami or _current_ami(catalog, "centos7-base", "cn-north-1")
    instances = [_instance(f"i-0{n:016x}", ami, role, f"ops-cn-{role}") for n, role in enumerate(OPS_ROLES)]
    return instances, [_image(ami)]


# --------------------------------------------------------------------------- lineage


def test_healthy_groups_pass_lineage(catalog: ImageCatalog) -> None:
    instances, images = _ops_group(catalog)
    assert find_lineage_violations("ops-cn", instances, images, catalog) == []
    ami = _current_ami(catalog, "debian11-base", "ap-southeast-1")
    app = [_instance(f"i-1{n:016x}", ami, role) for n, role in enumerate(APP_ROLES)]
    assert find_lineage_violations("prd-sg-slave", app, [_image(ami)], catalog) == []
    assert_no_lineage_violations("prd-sg-slave", app, [_image(ami)], catalog)


def test_instance_on_previous_run_ami_fails_lineage_naming_instance_and_both_runs(catalog: ImageCatalog) -> None:
    instances, images = _ops_group(catalog)
    old = _previous_ami(catalog, "centos7-base", "cn-north-1")
    instances[2] = _instance("i-0stale0000000000ci", old, "ci", "ops-cn-ci")
    findings = find_lineage_violations("ops-cn", instances, images + [_image(old)], catalog)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.check == "parity" and finding.group == "ops-cn"
    assert finding.aws_id == "i-0stale0000000000ci"
    text = str(finding)
    for word in ("i-0stale0000000000ci", old, CENTOS_PREVIOUS, CENTOS_CURRENT, "1.8.0", "1.9.0"):
        assert word in text, text
    assert finding.detail["image_run"] == CENTOS_PREVIOUS
    assert finding.detail["current_run"] == CENTOS_CURRENT
    with pytest.raises(pytest.fail.Exception, match="i-0stale0000000000ci"):
        assert_no_lineage_violations("ops-cn", instances, images + [_image(old)], catalog)


def test_ami_unknown_to_the_manifests_is_a_finding(catalog: ImageCatalog) -> None:
    instances, images = _ops_group(catalog)
    instances.append(_instance("i-0handmade00000000", "ami-0badc0ffee0000000", "admin"))
    findings = find_lineage_violations("ops-cn", instances, images, catalog)
    assert [f.aws_id for f in findings] == ["i-0handmade00000000"]
    assert "ami-0badc0ffee0000000" in findings[0].found and "unknown" in findings[0].found


def test_role_on_the_other_template_is_a_finding(catalog: ImageCatalog) -> None:
    debian = _current_ami(catalog, "debian11-base", "cn-north-1")
    instances = [_instance("i-0wrongtemplate000", debian, "mesos-master")]
    findings = find_lineage_violations("ops-cn", instances, [_image(debian)], catalog)
    assert len(findings) == 1
    assert "centos7-base" in findings[0].expected and "debian11-base" in findings[0].found


def test_terminated_instances_are_left_out(catalog: ImageCatalog) -> None:
    old = _previous_ami(catalog, "centos7-base", "cn-north-1")
    gone = _instance("i-0gone000000000000", old, "vpn")
    gone["State"] = {"Name": "terminated"}
    assert find_lineage_violations("ops-cn", [gone], [_image(old)], catalog) == []


def test_dev_box_from_another_template_version_fails_lineage(images: Path) -> None:
    manifest = images / "centos7-base" / "packer-manifest.json"
    # The current run's dev box was baked from a different template version than its AMIs.
    data = json.loads(manifest.read_text())
    for build in data["builds"]:
        if build["packer_run_uuid"] == CENTOS_CURRENT and build["builder_type"] == "vagrant":
            build["custom_data"] = dict(build["custom_data"], template_version="1.9.1-dev")
    manifest.write_text(json.dumps(data))
    catalog = load_catalog(images)
    instances, imgs = _ops_group(catalog)
    findings = find_lineage_violations("ops-cn", instances, imgs, catalog)
    assert len(findings) == 1
    assert "1.9.1-dev" in findings[0].found and "1.9.0" in findings[0].expected
    assert CENTOS_CURRENT in findings[0].expected


def test_current_run_without_dev_box_fails_lineage(images: Path) -> None:
    manifest = images / "centos7-base" / "packer-manifest.json"
    data = json.loads(manifest.read_text())
    data["builds"] = [
        b for b in data["builds"] if not (b["packer_run_uuid"] == CENTOS_CURRENT and b["builder_type"] == "vagrant")
    ]
    manifest.write_text(json.dumps(data))
    catalog = load_catalog(images)
    instances, imgs = _ops_group(catalog)
    findings = find_lineage_violations("ops-cn", instances, imgs, catalog)
    assert len(findings) == 1 and "no vagrant build" in findings[0].found


def test_lineage_in_the_sandbox_traces_moto_ids_through_source_artifact() -> None:
    """Register in moto, launch instances as a group would, check with describe_* results."""
    catalog = load_catalog(IMAGES)
    region = "ap-southeast-1"
    account = "420000000001"  # its own moto account: in-process servers share backends

    def client_for_region(name: str) -> Any:
        client = boto3.client(
            "ec2", region_name=name, endpoint_url=server.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        client.meta.events.register(
            "before-sign.ec2.*", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account)
        )
        return client

    with MotoServer() as server:
        ec2 = client_for_region(region)
        register_images(client_for_region, catalog)
        # What data "aws_ami" { most_recent = true, owners = ["self"], filter tag:Template } resolves to.
        lookup = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:Template", "Values": ["centos7-base"]}])
        current = max(lookup["Images"], key=lambda i: i["CreationDate"])["ImageId"]
        stale = previous_image(catalog, "centos7-base", region)
        ids = []
        for role in OPS_ROLES:
            image = stale if role == "vpn" else current
            tags = [{"Key": "Role", "Value": role}, {"Key": "Name", "Value": f"ops-sg-{role}"}]
            reservation = ec2.run_instances(
                ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small",
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            ids.append((role, reservation["Instances"][0]["InstanceId"]))
        instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        images = ec2.describe_images(Owners=["self"])["Images"]

    findings = find_lineage_violations("ops-sg", instances, images, catalog)
    vpn = dict(ids)["vpn"]
    assert [f.aws_id for f in findings] == [vpn]
    text = str(findings[0])
    for word in ("ops-sg-vpn", vpn, stale, CENTOS_PREVIOUS, CENTOS_CURRENT):
        assert word in text, text


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize("template", TEMPLATES)
def test_healthy_seed_templates_pass_content_parity(catalog: ImageCatalog, allow: AllowList, template: str) -> None:
    assert find_content_violations("prd-sg-master", template, catalog, allow) == []
    assert_no_content_violations("prd-sg-master", template, catalog, allow)


def _edit_packages(
    images: Path, template: str, run: str, build: str, package: str, version: str | None, arch: str = "x86_64",
) -> None:
    """Set a package's version in one build's package manifest (add it if absent, remove it for None)."""
    path = images / template / run / f"{build}.packages.txt"
    lines, seen = [], False
    for line in path.read_text().splitlines():
        name, _old, line_arch = line.split("\t")
        if name == package:
            seen = True
            if version is None:
                continue
            line = f"{name}\t{version}\t{line_arch}"
        lines.append(line)
    if not seen and version is not None:
        lines.append(f"{package}\t{version}\t{arch}")
    path.write_text("\n".join(lines) + "\n")


def test_docker_version_differs_fails_content_naming_package_and_both_versions(images: Path, allow: AllowList) -> None:
    _edit_packages(images, "debian11-base", DEBIAN_CURRENT, "dev-box", "docker-ce", "5:24.0.6-1~debian.11~bullseye")
    catalog = load_catalog(images)
    findings = find_content_violations("prd-cn", "debian11-base", catalog, allow)
    assert len(findings) == 2  # one per AMI build (ap-southeast-1, cn-north-1)
    for finding in findings:
        text = str(finding)
        assert "docker-ce" in text
        assert "5:24.0.6-1~debian.11~bullseye" in text  # the dev box
        assert "5:24.0.7-1~debian.11~bullseye" in text  # the AMI
        assert finding.detail["package"] == "docker-ce" and finding.detail["change"] == "changed"
    with pytest.raises(pytest.fail.Exception, match="docker-ce"):
        assert_no_content_violations("prd-cn", "debian11-base", catalog, allow)


def test_allow_listed_packages_pass_and_fail_without_the_list(catalog: ImageCatalog, allow: AllowList) -> None:
    assert find_content_violations("ops-cn", "centos7-base", catalog, allow) == []
    findings = find_content_violations("ops-cn", "centos7-base", catalog, AllowList())
    packages = {f.detail.get("package") for f in findings}
    assert {"cloud-init", "amazon-ssm-agent", "virtualbox-guest-additions"} <= packages


def test_allow_list_does_not_excuse_a_version_difference(images: Path, allow: AllowList) -> None:
    _edit_packages(images, "centos7-base", CENTOS_CURRENT, "ami-cn-north-1", "amazon-ssm-agent", None)
    _edit_packages(images, "centos7-base", CENTOS_CURRENT, "dev-box", "cloud-init", "19.4-7.el7.centos.5")
    catalog = load_catalog(images)
    findings = find_content_violations("ops-cn", "centos7-base", catalog, allow)
    # cloud-init on both sides now, at different versions: never allowed. ssm-agent missing on one AMI: fine.
    assert {f.detail["package"] for f in findings} == {"cloud-init"}


def test_package_missing_from_the_ami_is_a_finding(images: Path, allow: AllowList) -> None:
    _edit_packages(images, "centos7-base", CENTOS_CURRENT, "ami-ap-southeast-1", "consul", None)
    findings = find_content_violations("ops-sg", "centos7-base", load_catalog(images), allow)
    assert len(findings) == 1
    assert "consul 1.16.3-1" in findings[0].expected and "missing from the AMI" in findings[0].found


def test_config_hash_difference_is_a_finding(images: Path, allow: AllowList) -> None:
    path = images / "centos7-base" / CENTOS_CURRENT / "ami-cn-north-1.config.sha256"
    lines = [
        ("0" * 64 + "  /etc/docker/daemon.json") if line.endswith("/etc/docker/daemon.json") else line
        for line in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")
    findings = find_content_violations("ops-cn", "centos7-base", load_catalog(images), allow)
    assert len(findings) == 1
    assert findings[0].detail["config"] == "/etc/docker/daemon.json"
    assert "0" * 64 in findings[0].found


def test_diff_packages_added_removed_changed() -> None:
    dev = {"docker-ce": ("24.0.6-1.el7", "x86_64"), "nfs-utils": ("1.3.0", "x86_64"), "bash": ("4.2", "x86_64")}
    ami = {"docker-ce": ("24.0.7-1.el7", "x86_64"), "cloud-init": ("19.4", "x86_64"), "bash": ("4.2", "x86_64")}
    allow = AllowList((AllowEntry("package", "cloud-init", "amazon-ebs", "metadata service"),))
    diffs = diff_packages(dev, ami, allow)
    assert [(d.name, d.change, d.allowed) for d in diffs] == [
        ("cloud-init", "added", True), ("docker-ce", "changed", False), ("nfs-utils", "removed", False),
    ]
    assert diffs[1].dev_version == "24.0.6-1.el7" and diffs[1].ami_version == "24.0.7-1.el7"
    assert "24.0.6-1.el7" in str(diffs[1]) and "24.0.7-1.el7" in str(diffs[1])
    # An entry for the other builder, or for another template, does not allow it.
    wrong_side = AllowList((AllowEntry("package", "cloud-init", "vagrant", "x"),))
    assert not diff_packages(dev, ami, wrong_side)[0].allowed
    other_template = AllowList((AllowEntry("package", "cloud-init", "amazon-ebs", "x", ("debian11-base",)),))
    assert not diff_packages(dev, ami, other_template, template="centos7-base")[0].allowed
    assert diff_packages(dev, ami, other_template, template="debian11-base")[0].allowed


def test_diff_configs() -> None:
    a, b = "a" * 64, "b" * 64
    diffs = diff_configs({"/etc/x": a, "/etc/y": a}, {"/etc/x": b, "/etc/z": a})
    assert [(d.path, d.change) for d in diffs] == [("/etc/x", "changed"), ("/etc/y", "removed"), ("/etc/z", "added")]


# --------------------------------------------------------------------------- report


def test_parity_table_rows(catalog: ImageCatalog, allow: AllowList) -> None:
    rows = parity_table(catalog, allow)
    assert [(r["template"], r["ami"].split(":")[0]) for r in rows] == [
        ("centos7-base", "ap-southeast-1"), ("centos7-base", "cn-north-1"),
        ("debian11-base", "ap-southeast-1"), ("debian11-base", "cn-north-1"),
    ]
    for row in rows:
        assert row["run"] in (CENTOS_CURRENT, DEBIAN_CURRENT)
        assert row["dev_box"].endswith("-virtualbox.box")
        assert row["packages_compared"] > 40
        assert row["differences"] == 0
        assert row["allowed"] == 7  # 3 AMI-only + 2 box-only packages, 1 config file each side
        assert row["container_images"]
    assert {"template", "run", "dev_box", "ami", "packages_compared", "differences", "allowed"} <= set(rows[0])


# --------------------------------------------------------------------------- hosts seam


def test_manifest_packages_is_a_package_source_matching_the_catalog(catalog: ImageCatalog) -> None:
    source = ManifestPackages(IMAGES / "debian11-base" / DEBIAN_CURRENT / "dev-box.packages.txt")
    assert isinstance(source, PackageSource)
    assert source.packages() == catalog.templates["debian11-base"].current.dev_boxes[0].packages
    assert isinstance(TestinfraPackages("local://"), PackageSource)


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="no dpkg-query on this machine")
def test_testinfra_packages_smoke_on_local_host() -> None:
    packages = TestinfraPackages("local://").packages()
    assert "dpkg" in packages
    version, arch = packages["dpkg"]
    assert version and arch
