"""How the audit grows with a group's size, against a raw refresh of the same group.

    python bench/scale.py                 # 100, 250 and 500 resources; about 20 minutes on a 2-core machine
    python bench/scale.py 100             # one size

For each size, a purpose-made group (one VPC; subnets tagged Tier=private, route tables and their
associations; security groups whose rules are separate `aws_security_group_rule`
resources, the way large groups are written; two instances with a `Role`) is
applied in the embedded sandbox. Then, in the same run and workspace:

- ``audit``: the drift, unmanaged and roles checks, as `--audit` runs them
  (``verify.verify_group``: the refresh-only plan, the states, the describe
  snapshot);
- ``raw``: a plain ``terraform plan -refresh-only`` of the same workspace, which
  is the least any drift audit must do.

It prints apply, audit and raw seconds per size, the ratio audit/raw (issue 13's
goal: <= 1.2 at 500), and the AWS requests (the sandbox's request recorder) of
the audit, of the raw refresh, and their difference: the checks' own calls
beside the refresh-only plan, which must not grow with the group (one paginated
describe per type, never one call per resource). The last lines are
``name: value``: ``audit_ratio_<size>``, ``audit_own_requests_<size>``,
``apply_s_<size>``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# moto's request recorder writes where this names, read when moto is first imported (default: ./moto_recording)
os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.mkdtemp(prefix="bench-scale-rec-"), "recording"))

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))

from immutable_infra.harness import Harness  # noqa: E402
from immutable_infra.settings import Settings  # noqa: E402
from immutable_infra import verify  # noqa: E402

HEADER = """terraform {
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
"""


def layout(size: int) -> dict[str, int]:
    """How many of each resource make about ``size`` resources (the VPC, 2 instances, the rest in proportion)."""
    nets = max(2, size // 25)             # subnets, route tables, associations: 3 resources each
    groups = max(2, size // 12)           # security groups
    rules = max(2, size - 1 - 3 - 3 * nets - groups)
    return {"subnets": nets, "security_groups": groups, "rules": rules}


def group_tf(size: int) -> str:
    n = layout(size)
    return HEADER + f"""
resource "aws_vpc" "this" {{
  cidr_block = "10.80.0.0/16"
  tags       = {{ Name = "scale-{size}" }}
}}

resource "aws_subnet" "net" {{
  count      = {n["subnets"]}
  vpc_id     = aws_vpc.this.id
  cidr_block = cidrsubnet(aws_vpc.this.cidr_block, 8, count.index)
  tags       = {{ Name = "scale-net-${{count.index}}", Tier = "private" }}
}}

resource "aws_route_table" "net" {{
  count  = {n["subnets"]}
  vpc_id = aws_vpc.this.id
}}

resource "aws_route_table_association" "net" {{
  count          = {n["subnets"]}
  subnet_id      = aws_subnet.net[count.index].id
  route_table_id = aws_route_table.net[count.index].id
}}

resource "aws_security_group" "app" {{
  name   = "app"
  vpc_id = aws_vpc.this.id
  tags   = {{ Purpose = "app" }}
}}

resource "aws_security_group_rule" "app" {{
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 8080
  to_port           = 8080
  cidr_blocks       = ["10.80.0.0/16"]
  security_group_id = aws_security_group.app.id
}}

resource "aws_security_group" "svc" {{
  count  = {n["security_groups"] - 1}
  name   = "svc-${{count.index}}"
  vpc_id = aws_vpc.this.id
}}

resource "aws_security_group_rule" "svc" {{
  count             = {n["rules"]}
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 1000 + count.index
  to_port           = 1000 + count.index
  cidr_blocks       = ["10.0.0.0/8"]
  security_group_id = aws_security_group.svc[count.index % {n["security_groups"] - 1}].id
}}

resource "aws_instance" "worker" {{
  count                  = 2
  ami                    = "ami-1e749f67"
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.net[count.index].id
  vpc_security_group_ids = [aws_security_group.app.id]
  tags                   = {{ Role = "microservice", Name = "scale-worker-${{count.index}}" }}
}}
"""


def make_groups(tmp: Path, sizes: list[int]) -> Path:
    groups = tmp / "groups"
    for size in sizes:
        g = groups / f"scale-{size}"
        g.mkdir(parents=True)
        (g / "main.tf").write_text(group_tf(size))
        (g / "group.toml").write_text(
            f'kind = "application"\nregion = "ap-southeast-1"\nvpc_cidr = "10.80.0.0/16"\n'
            f'description = "about {size} resources, for bench/scale.py"\n\n[roles]\nmicroservice = 2\n'
        )
    shutil.copy(ROOT / "tests" / "roles.toml", tmp / "roles.toml")
    shutil.copytree(ROOT / "tests" / "playbooks", tmp / "playbooks")
    return groups


def recorder(url: str, verb: str) -> str:
    method = "GET" if verb == "download-recording" else "POST"
    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/recorder/{verb}", method=method), timeout=60) as r:
        return r.read().decode()


def main(sizes: list[int]) -> None:
    from immutable_infra.sandbox import MotoServer

    server = MotoServer().start()
    figures: list[tuple[str, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            groups = make_groups(Path(tmp), sizes)
            print(f"{'size':>6}{'resources':>11}{'apply s':>9}{'audit s':>9}{'raw s':>8}{'ratio':>7}"
                  f"{'audit req':>11}{'raw req':>9}{'own req':>9}")
            for size in sizes:
                name = f"scale-{size}"
                h = Harness(Settings(groups_dir=groups, aws_endpoint=server.url, home=Path(tmp) / "home"))
                try:
                    t0 = time.monotonic()
                    h.up([name])
                    apply_s = time.monotonic() - t0
                    resources = len(h.run.groups[name].resources)
                    tf = h.deployer.terraform(name)

                    recorder(server.url, "reset-recording")
                    recorder(server.url, "start-recording")
                    t0 = time.monotonic()
                    results = verify.verify_group(h, name, ["drift", "unmanaged", "roles"])
                    audit_s = time.monotonic() - t0
                    recorder(server.url, "stop-recording")
                    requests = len(recorder(server.url, "download-recording").splitlines())
                    bad = {c: [str(f) for f in r.findings] for c, r in results.items() if r.findings}
                    if bad:
                        print(f"  note: {name} is not clean: {json.dumps(bad)[:400]}")

                    recorder(server.url, "reset-recording")
                    recorder(server.url, "start-recording")
                    t0 = time.monotonic()
                    tf.run(["plan", "-refresh-only", "-input=false", "-lock=false", "-no-color",
                            f"-parallelism={tf.parallelism}", "-out=raw.tfplan"])
                    raw_s = time.monotonic() - t0
                    recorder(server.url, "stop-recording")
                    raw_requests = len(recorder(server.url, "download-recording").splitlines())
                finally:
                    h.teardown()
                ratio = audit_s / raw_s
                own = requests - raw_requests  # the checks' own AWS calls (the audit's refresh-only plan makes the raw's)
                print(f"{size:>6}{resources:>11}{apply_s:>9.1f}{audit_s:>9.1f}{raw_s:>8.1f}{ratio:>7.2f}"
                      f"{requests:>11}{raw_requests:>9}{own:>9}", flush=True)
                figures += [(f"audit_ratio_{size}", f"{ratio:.2f}"), (f"audit_own_requests_{size}", str(own)),
                            (f"apply_s_{size}", f"{apply_s:.1f}")]
    finally:
        server.stop()
    print()
    for key, value in figures:
        print(f"{key}: {value}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 250, 500])
