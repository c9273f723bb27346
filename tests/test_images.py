"""Tests of images.py: reading Packer and package manifests, registering AMIs in moto."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from immutable_infra.images import (
    AMI_BUILDER_TYPES,
    ImageManifestError,
    ImageRegistrationError,
    describe_template_images,
    load_allow_list,
    load_catalog,
    load_packer_manifest,
    most_recent_image,
    parse_ami_artifact,
    parse_config_hashes,
    parse_packages,
    previous_image,
    register_images,
)
from immutable_infra.sandbox import MotoServer

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
TEMPLATES = ("centos7-base", "debian11-base")
REGIONS = ("ap-southeast-1", "cn-north-1")
_ACCOUNTS = itertools.count(410000000001)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A writable copy of fixtures/images."""
    return Path(shutil.copytree(IMAGES, tmp_path / "images"))


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    """The product's embedded moto server (127.0.0.1, free port) for this module."""
    with MotoServer() as moto:
        yield moto


@pytest.fixture
def account() -> str:
    """A fresh moto account per test: in-process moto servers share their backends, so tests keep apart
    by account instead of resetting (a reset would wipe other tests' sandboxes)."""
    return str(next(_ACCOUNTS))


@pytest.fixture
def ec2_for(server: MotoServer, account: str) -> Callable[[str], Any]:
    """client_for_region for register_images: boto3 ec2 clients on the sandbox, in the test's account."""

    def client_for_region(region: str) -> Any:
        client = boto3.client(
            "ec2", region_name=region, endpoint_url=server.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        client.meta.events.register(
            "before-sign.ec2.*", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account)
        )
        return client

    return client_for_region


# --------------------------------------------------------------------------- the seed fixtures


def test_seed_catalog_has_both_templates_with_current_and_previous_runs() -> None:
    catalog = load_catalog(IMAGES)
    assert sorted(catalog.templates) == list(TEMPLATES)
    for name in TEMPLATES:
        template = catalog.templates[name]
        manifest = json.loads(template.manifest.read_text())
        assert template.current.uuid == manifest["last_run_uuid"]
        assert len(template.runs) == 2
        assert template.previous[0].build_time < template.current.build_time
        for run in template.runs:
            assert len(run.dev_boxes) == 1 and run.dev_boxes[0].artifact_id.endswith(".box")
            assert {a.region for b in run.ami_builds for a in b.amis} == set(REGIONS)
            assert len(run.template_versions) == 1


def test_seed_templates_carry_version_roles_docker_consul_and_container_images() -> None:
    catalog = load_catalog(IMAGES)
    assert catalog.template_for_role("mesos-master") == "centos7-base"
    assert catalog.template_for_role("docker-registry") == "centos7-base"
    assert catalog.template_for_role("marathon-node") == "debian11-base"
    assert catalog.template_for_role("reverse-proxy") == "debian11-base"
    for build in catalog.builds():
        assert build.template_version
        assert any(i.startswith("hashicorp/consul:") for i in build.container_images)
        assert {"docker-ce", "containerd.io", "consul"} <= set(build.packages)
        assert "/etc/docker/daemon.json" in build.config
    centos = catalog.templates["centos7-base"].current
    assert centos.builds[0].custom_data["docker_version"] == centos.dev_boxes[0].packages["docker-ce"][0]


def test_rpm_installonly_packages_and_dpkg_multiarch_are_kept_apart() -> None:
    catalog = load_catalog(IMAGES)
    centos = catalog.templates["centos7-base"].current.dev_boxes[0].packages
    assert centos["kernel"] == ("3.10.0-1160.102.1.el7, 3.10.0-1160.105.1.el7", "x86_64")
    debian = catalog.templates["debian11-base"].current.dev_boxes[0].packages
    assert debian["libc6:amd64"][1] == "amd64" and debian["libc6:i386"][1] == "i386"
    assert "libc6" not in debian


def test_parse_packages_reads_dpkg_and_rpm_formats() -> None:
    dpkg = "docker-ce\t5:24.0.7-1~debian.11~bullseye\tamd64\ncloud-init\t20.4.1-2+deb11u1\tall\n"
    rpm = "docker-ce\t24.0.7-1.el7\tx86_64\ngpg-pubkey\tf4a80eb5-53a7ff4b\t(none)\n"
    assert parse_packages(dpkg)["docker-ce"] == ("5:24.0.7-1~debian.11~bullseye", "amd64")
    assert parse_packages(rpm)["gpg-pubkey"] == ("f4a80eb5-53a7ff4b", "(none)")


def test_parse_config_hashes_reads_sha256sum_text_and_binary_mode() -> None:
    digest = "a" * 64
    hashes = parse_config_hashes(f"{digest}  /etc/a.conf\n{digest.upper()} */etc/b.conf\n")
    assert hashes == {"/etc/a.conf": digest, "/etc/b.conf": digest}


def test_multi_region_artifact_id() -> None:
    artifacts = parse_ami_artifact("ap-southeast-1:ami-0123456789abcdef0,cn-north-1:ami-0fedcba9876543210")
    assert [(a.region, a.ami_id) for a in artifacts] == [
        ("ap-southeast-1", "ami-0123456789abcdef0"), ("cn-north-1", "ami-0fedcba9876543210"),
    ]


def test_multi_region_build_in_a_manifest(images: Path) -> None:
    path = images / "centos7-base" / "packer-manifest.json"
    data = json.loads(path.read_text())
    current = [b for b in data["builds"] if b["packer_run_uuid"] == data["last_run_uuid"]]
    ap = next(b for b in current if b["name"] == "ami-ap-southeast-1")
    cn = next(b for b in current if b["name"] == "ami-cn-north-1")
    ap["artifact_id"] = f"{ap['artifact_id']},{cn['artifact_id']}"
    data["builds"].remove(cn)
    path.write_text(json.dumps(data))
    template = load_packer_manifest(path)
    assert [a.region for a in template.current.ami_builds[0].amis] == ["ap-southeast-1", "cn-north-1"]


def test_seed_allow_list_entries_all_have_reasons() -> None:
    allow = load_allow_list(IMAGES / "parity.toml")
    names = {e.name for e in allow.entries}
    assert {"cloud-init", "amazon-ssm-agent", "virtualbox-guest-additions"} <= names
    assert all(e.reason and e.only_in in ("amazon-ebs", "vagrant") for e in allow.entries)


# --------------------------------------------------------------------------- errors


def _assert_one_clear_message(exc: pytest.ExceptionInfo[ImageManifestError], path: Path, *words: str) -> None:
    message = str(exc.value)
    assert str(path) in message, message
    assert "Fix:" in message, message
    for word in words:
        assert word in message, message
    assert isinstance(exc.value, ValueError)
    # no chained KeyError/JSONDecodeError traceback under the message
    assert exc.value.__cause__ is None
    assert exc.value.__context__ is None or exc.value.__suppress_context__


def test_malformed_json_names_the_file_and_the_fix(images: Path) -> None:
    path = images / "debian11-base" / "packer-manifest.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ImageManifestError) as exc:
        load_catalog(images)
    _assert_one_clear_message(exc, path, "not valid JSON", "line")


def test_missing_builds_names_the_file(images: Path) -> None:
    path = images / "centos7-base" / "packer-manifest.json"
    path.write_text(json.dumps({"last_run_uuid": "a9d54e0b-18c3-4f6e-b2a7-6c0e91d3f845"}))
    with pytest.raises(ImageManifestError) as exc:
        load_catalog(images)
    _assert_one_clear_message(exc, path, "builds")


def test_missing_manifest_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "centos7-base" / "packer-manifest.json"
    with pytest.raises(ImageManifestError) as exc:
        load_packer_manifest(path)
    _assert_one_clear_message(exc, path, "not found", "manifest")


def test_missing_package_manifest_names_the_file(images: Path) -> None:
    run = "e7b1c3d5-2a64-4f09-9c8e-0d4a6b2f1e73"
    path = images / "debian11-base" / run / "ami-cn-north-1.packages.txt"
    path.unlink()
    with pytest.raises(ImageManifestError) as exc:
        load_catalog(images)
    _assert_one_clear_message(exc, path, "not found", "dpkg-query", "ami-cn-north-1")


def test_malformed_package_line_names_file_and_line(images: Path) -> None:
    path = images / "centos7-base" / "a9d54e0b-18c3-4f6e-b2a7-6c0e91d3f845" / "dev-box.packages.txt"
    path.write_text(path.read_text() + "docker-ce 24.0.7-1.el7 x86_64\n")
    with pytest.raises(ImageManifestError) as exc:
        load_catalog(images)
    _assert_one_clear_message(exc, path, "line", "rpm -qa")


def test_build_without_artifact_id_names_the_build(images: Path) -> None:
    path = images / "centos7-base" / "packer-manifest.json"
    data = json.loads(path.read_text())
    del data["builds"][1]["artifact_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(ImageManifestError) as exc:
        load_catalog(images)
    _assert_one_clear_message(exc, path, "builds[1]", "artifact_id")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(last_run_uuid="00000000-0000-0000-0000-000000000000"), ("last_run_uuid",)),
        (lambda d: d["builds"][0]["custom_data"].pop("template_version"), ("template_version",)),
        (lambda d: d["builds"][0].update(artifact_id="ami-0123456789abcdef0"), ("region:ami-id",)),
        (lambda d: d.update(builds=[]), ("builds",)),
        (lambda d: d["builds"][0].update(build_time="yesterday"), ("build_time",)),
    ],
    ids=["unknown-last-run", "no-template-version", "artifact-without-region", "empty-builds", "bad-build-time"],
)
def test_malformed_manifest_fields(images: Path, change, words) -> None:
    path = images / "centos7-base" / "packer-manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ImageManifestError) as exc:
        load_packer_manifest(path)
    _assert_one_clear_message(exc, path, *words)


def test_allow_list_entry_without_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "parity.toml"
    path.write_text('[[package]]\nname = "cloud-init"\nonly_in = "amazon-ebs"\n')
    with pytest.raises(ImageManifestError) as exc:
        load_allow_list(path)
    _assert_one_clear_message(exc, path, "reason")


def test_allow_list_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "parity.toml"
    path.write_text("[[package]\n")
    with pytest.raises(ImageManifestError) as exc:
        load_allow_list(path)
    _assert_one_clear_message(exc, path, "TOML")


# --------------------------------------------------------------------------- the sandbox


def _terraform_lookup(ec2, template: str, owners=("self",)):
    """What data "aws_ami" { most_recent = true, owners = [...], filter tag:Template } returns."""
    return most_recent_image(describe_template_images(ec2, template, owners))


def test_most_recent_image_compares_whole_seconds_and_refuses_ties() -> None:
    older = {"ImageId": "ami-1", "CreationDate": "2024-01-01T00:00:01.000Z"}
    newer = {"ImageId": "ami-2", "CreationDate": "2024-01-01T00:00:02.000Z"}
    assert most_recent_image([newer, older])["ImageId"] == "ami-2"
    assert most_recent_image([]) is None
    with pytest.raises(ImageRegistrationError, match="share CreationDate"):
        most_recent_image([older, {"ImageId": "ami-3", "CreationDate": "2024-01-01T00:00:01.900Z"}])


def test_register_images_in_moto_current_run_is_most_recent(ec2_for, account: str) -> None:
    catalog = load_catalog(IMAGES)
    clients = {r: ec2_for(r) for r in REGIONS}
    mapping = register_images(clients.__getitem__, catalog)

    manifest_amis = [a for b in catalog.builds() if b.builder_type in AMI_BUILDER_TYPES for a in b.amis]
    assert sorted(mapping) == sorted(a.ami_id for a in manifest_amis)
    assert len(set(mapping.values())) == len(mapping) == 8  # 2 templates x 2 runs x 2 regions
    assert catalog.sandbox_ids == mapping

    for name in TEMPLATES:
        template = catalog.templates[name]
        for region in REGIONS:
            ec2 = clients[region]
            found = describe_template_images(ec2, name)
            assert len(found) == 2  # previous and current run
            # owners: "self" and the account id both find them; "amazon" does not.
            assert len(describe_template_images(ec2, name, [account])) == 2
            assert describe_template_images(ec2, name, ["amazon"]) == []
            chosen = _terraform_lookup(ec2, name)
            tags = {t["Key"]: t["Value"] for t in chosen["Tags"]}
            assert tags["PackerRunUUID"] == template.last_run_uuid
            assert tags["Template"] == name
            assert tags["TemplateVersion"] == template.current.template_versions[0]
            assert tags["PackerBuildName"] == f"ami-{region}"
            assert mapping[tags["SourceArtifact"]] == chosen["ImageId"]
            assert chosen["OwnerId"] == account
            # Terraform's most_recent is the max CreationDate; the string max agrees here.
            assert max(found, key=lambda i: i["CreationDate"])["ImageId"] == chosen["ImageId"]

            older = previous_image(catalog, name, region)
            assert older != chosen["ImageId"]
            older_tags = {
                t["Key"]: t["Value"]
                for t in ec2.describe_images(ImageIds=[older])["Images"][0]["Tags"]
            }
            assert older_tags["PackerRunUUID"] == template.previous[-1].uuid


def test_register_images_again_reuses_what_is_registered(ec2_for) -> None:
    clients = {r: ec2_for(r) for r in REGIONS}
    first = register_images(clients.__getitem__, load_catalog(IMAGES))
    second = register_images(clients.__getitem__, load_catalog(IMAGES), sleep=_no_sleep)
    assert first == second
    assert len(describe_template_images(clients["cn-north-1"], "centos7-base")) == 2


def _no_sleep(seconds: float) -> None:
    raise AssertionError("reusing registered images must not wait for the clock")


def test_previous_image_before_registration_says_what_to_do() -> None:
    catalog = load_catalog(IMAGES)
    with pytest.raises(LookupError, match="register_images"):
        previous_image(catalog, "centos7-base", "ap-southeast-1")
    with pytest.raises(ImageManifestError, match="eu-west-1"):
        previous_image(catalog, "centos7-base", "eu-west-1")
    with pytest.raises(ImageManifestError, match="no-such-template"):
        previous_image(catalog, "no-such-template", "eu-west-1")


def test_images_registered_with_default_credentials_belong_to_moto_default_account(server: MotoServer) -> None:
    """What owners value the groups' data "aws_ami" can use: "self" or 123456789012 (moto's default account)."""
    ec2 = boto3.client(
        "ec2", region_name="cn-north-1", endpoint_url=server.url,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    image_id = ec2.register_image(Name="owners-probe-image")["ImageId"]
    try:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": "Template", "Value": "owners-probe"}])
        assert [i["ImageId"] for i in describe_template_images(ec2, "owners-probe", ["self"])] == [image_id]
        assert [i["ImageId"] for i in describe_template_images(ec2, "owners-probe", ["123456789012"])] == [image_id]
        assert describe_template_images(ec2, "owners-probe", ["amazon"]) == []
    finally:
        ec2.deregister_image(ImageId=image_id)
