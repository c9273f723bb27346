"""Record tests/groups/realworld before and after a rule is added by hand, and after a refresh-only apply.

tests/test_unmanaged.py and tests/test_drift.py load the files this script
writes next to it; the tests never run it. It shows, on the real provider's
shapes, how a rule added by hand to a security group whose rules are separate
``aws_security_group_rule`` resources is seen by drift until a refresh-only
apply reads it into the state (then drift is blind), and by the unmanaged
check in both cases. Re-record after a Terraform, provider or moto upgrade
(about two minutes, no network):

    .venv/bin/python tests/data/realworld/make_recording.py

Writes:

    state.json                         ``show -json`` after apply (and its refresh-only settle)
    describe_clean.json                describe_* of the group's VPC after apply
    describe_rule_added.json           ... after ``tcp 22 from 0.0.0.0/0`` was added to the web group by hand
    plan_refresh_only_rule_added.json  refresh-only plan then (drift sees the rule)
    state_refreshed.json               state after ``apply -refresh-only`` (the rule is now inline in the state)
    plan_refresh_only_refreshed.json   refresh-only plan after that (drift sees nothing)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent.parent
GROUP = "realworld"


def main() -> int:
    from immutable_infra.harness import Harness
    from immutable_infra.live import describe_group, group_vpc_ids
    from immutable_infra.sandbox import MotoServer
    from immutable_infra.settings import Settings

    def dump(name: str, data: object) -> None:
        (HERE / name).write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    with MotoServer() as server, tempfile.TemporaryDirectory() as home:
        harness = Harness(Settings(groups=[GROUP], groups_dir=TESTS / "groups", aws_endpoint=server.url,
                                   run_id="rec-realworld", home=Path(home)), say=print)
        try:
            harness.up([GROUP])
            tf = harness.deployer.terraform(GROUP)
            rec = harness.run.groups[GROUP]
            ec2 = harness.sandbox.client("ec2", rec.region)
            state = tf.state()
            vpcs = group_vpc_ids(rec.outputs, state)
            dump("state.json", state)
            dump("describe_clean.json", describe_group(ec2, vpcs, GROUP))
            web = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": vpcs},
                                                        {"Name": "tag:Purpose", "Values": ["web"]}])
            ec2.authorize_security_group_ingress(GroupId=web["SecurityGroups"][0]["GroupId"], IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
            dump("describe_rule_added.json", describe_group(ec2, vpcs, GROUP))
            dump("plan_refresh_only_rule_added.json", tf.plan(out="refresh.tfplan", refresh_only=True))  # the planfile, shown
            tf.apply(refresh_only=True)
            dump("state_refreshed.json", tf.state())
            dump("plan_refresh_only_refreshed.json", tf.plan(out="refresh.tfplan", refresh_only=True))
        finally:
            harness.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
