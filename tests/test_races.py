"""The two races of parallel applies: the run's shared ``modules/`` folder, and boto3 clients made from several threads.

Independent groups apply at the same time in the Deployer's threads. Each
group's preparation used to delete and re-copy the run's ``modules/`` folder
while the other group's Terraform was reading it ("Unreadable module
directory", a half-copied module, or a ``FileExistsError`` from two copies at
once); and clients came from boto3's default session, which is not
thread-safe.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from immutable_infra.catalog import Catalog
from immutable_infra.ephemeral import Deployer, Run
from immutable_infra.sandbox import Sandbox

REGION = "ap-southeast-1"
ROUNDS = 3  # the old preparation failed within two rounds in each of 4 tries
#: Padding files in the shared module: a module of this many files takes long enough to copy that a concurrent
#: Terraform reading the folder meets the copy in progress (the old code failed on the first round with it).
PAD_FILES = 150

MODULE = """\
variable "name" {
  type = string
}

variable "cidr" {
  type = string
}

resource "aws_vpc" "this" {
  cidr_block = var.cidr
  tags       = { Name = var.name }
}

output "vpc_id" {
  value = aws_vpc.this.id
}
"""

GROUP = """\
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "3.39.0" }
  }
}

variable "run_id" {
  type    = string
  default = "local"
}

variable "region" {
  type    = string
  default = "ap-southeast-1"
}

provider "aws" {
  region = var.region
}

module "net" {
  source = "../../modules/net"
  name   = "%(name)s-${var.run_id}"
  cidr   = "%(cidr)s"
}

output "vpc_id" {
  value = module.net.vpc_id
}
"""


def race_groups(root: Path) -> Catalog:
    """Two independent groups (no inputs between them) sharing one module of many files."""
    module = root / "modules" / "net"
    module.mkdir(parents=True)
    (module / "main.tf").write_text(MODULE)
    for i in range(PAD_FILES):
        (module / f"pad_{i:03d}.tf").write_text(f'locals {{\n  pad_{i:03d} = "{"x" * 2000}"\n}}\n')
    for name, cidr in (("race-a", "10.81.0.0/16"), ("race-b", "10.82.0.0/16")):
        folder = root / "groups" / name
        folder.mkdir(parents=True)
        (folder / "main.tf").write_text(GROUP % {"name": name, "cidr": cidr})
        (folder / "group.toml").write_text(
            f'kind = "application"\nregion = "{REGION}"\nvpc_cidr = "{cidr}"\n'
            'description = "a VPC from a shared module, for the race test"\n')
    return Catalog(root / "groups")


def test_independent_groups_apply_and_destroy_together_round_after_round(moto_server, tmp_path):
    catalog = race_groups(tmp_path)
    groups = [catalog.get("race-a"), catalog.get("race-b")]
    sandbox = Sandbox.remote(moto_server.url)
    run = Run.create(tmp_path / "home", None, catalog.groups_dir, sandbox.endpoint)
    lines: list[str] = []
    deployer = Deployer(run, catalog, sandbox, say=lines.append)
    try:
        for n in range(ROUNDS):
            del lines[:]
            deployer.up(groups)
            assert [run.groups[g.name].status for g in groups] == ["applied", "applied"], f"round {n + 1}"
            assert all(run.groups[g.name].outputs["vpc_id"].startswith("vpc-") for g in groups)
            # Both applies were under way at once (else this would not test the race).
            started = [i for i, line in enumerate(lines) if line.endswith(f"applying ({REGION})")]
            finished = [i for i, line in enumerate(lines) if " applied " in line]
            assert len(started) == 2 and max(started) < min(finished), lines
            assert deployer.down([g.name for g in groups]) == [], f"round {n + 1}"
    finally:
        problems = deployer.teardown()
    assert problems == []
    assert deployer.inventory().resources == []
    # The module was laid into the run once, not once per group and round.
    assert len([p for p in (run.path / ".modules").iterdir() if not p.name.startswith(".")]) == 1


def test_many_threads_get_working_cached_clients(moto_server):
    sandbox = Sandbox.remote(moto_server.url)
    barrier = threading.Barrier(16)
    got: list[tuple[str, str, object]] = []
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        service, region = ("ec2", "s3")[i % 2], (REGION, "eu-west-1")[(i // 2) % 2]
        try:
            barrier.wait()
            client = sandbox.client(service, region)
            # A working client: it answers, against the sandbox, in its region.
            if service == "ec2":
                client.describe_vpcs()
            else:
                client.list_buckets()
            got.append((service, region, client))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 16
    by_key: dict[tuple[str, str], set[int]] = {}
    for service, region, client in got:
        by_key.setdefault((service, region), set()).add(id(client))
        assert client.meta.region_name == region
        assert client.meta.endpoint_url == moto_server.url
    # One client per (service, region), shared by every thread that asked.
    assert {k: len(v) for k, v in by_key.items()} == {k: 1 for k in by_key} and len(by_key) == 4
    assert sandbox.client("ec2", REGION) is next(c for s, r, c in got if (s, r) == ("ec2", REGION))


def test_each_sandbox_has_its_own_session_and_a_session_per_profile(moto_server, monkeypatch, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    one, two = Sandbox.remote(moto_server.url), Sandbox.remote(moto_server.url)
    assert one.session() is not two.session()
    assert one.session() is one.session()
    assert one.session("other") is not one.session()
    assert one.session("other").profile_name == "other"
    assert one.client("ec2", REGION, profile="other") is not one.client("ec2", REGION)
    assert one.client("ec2", REGION, profile="other") is one.client("ec2", REGION, profile="other")
    with pytest.raises(Exception):
        one.session("no-such-profile")


def test_modules_are_copied_once_per_content_and_swapped_whole(tmp_path):
    source = tmp_path / "src" / "modules"
    (source / "net").mkdir(parents=True)
    (source / "net" / "main.tf").write_text('variable "name" {}\n')
    run = Run.create(tmp_path / "home", None, tmp_path / "src", None)
    link = run.path / "modules"
    # Many threads at once (independent groups preparing together): one copy, and the link to it.
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            barrier.wait()
            run.prepare_modules(source)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    copies = sorted(p.name for p in (run.path / ".modules").iterdir())
    assert len(copies) == 1 and link.is_symlink()
    first = link.resolve()
    assert (link / "net" / "main.tf").read_text() == 'variable "name" {}\n'
    stamp = (first / "net" / "main.tf").stat().st_mtime_ns
    run.prepare_modules(source)  # unchanged source: nothing copied again
    assert link.resolve() == first and (first / "net" / "main.tf").stat().st_mtime_ns == stamp
    (source / "net" / "main.tf").write_text('variable "name" {}\nvariable "cidr" {}\n')
    run.prepare_modules(source)  # changed: a new whole copy, the link swapped, the old copy left for its readers
    assert link.resolve() != first and "cidr" in (link / "net" / "main.tf").read_text()
    assert (first / "net" / "main.tf").read_text() == 'variable "name" {}\n'
    assert len([p for p in (run.path / ".modules").iterdir() if not p.name.startswith(".")]) == 2


def test_a_run_laid_out_with_a_real_modules_folder_gets_the_link(tmp_path):
    source = tmp_path / "src" / "modules"
    (source / "net").mkdir(parents=True)
    (source / "net" / "main.tf").write_text("# new\n")
    run = Run.create(tmp_path / "home", None, tmp_path / "src", None)
    (run.path / "modules" / "net").mkdir(parents=True)  # as the old preparation left it
    (run.path / "modules" / "net" / "main.tf").write_text("# old\n")
    run.prepare_modules(source)
    assert (run.path / "modules").is_symlink() and (run.path / "modules" / "net" / "main.tf").read_text() == "# new\n"
