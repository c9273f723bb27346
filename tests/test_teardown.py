"""Teardown is guaranteed: Ctrl-C during an apply leaves nothing behind; `up`, `down` and `runs` share the run store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"


def leftovers(server, run_id: str) -> list[str]:
    """Everything still tagged with the run: tagged resources, and instances not terminated."""
    import boto3

    kw = dict(endpoint_url=server.url, region_name="ap-southeast-1", aws_access_key_id="t", aws_secret_access_key="t")
    tagged = boto3.client("resourcegroupstaggingapi", **kw).get_resources(TagFilters=[{"Key": "Run", "Values": [run_id]}])
    # moto's tagging API still lists terminated instances: instances are judged by their state below.
    found = [m["ResourceARN"] for m in tagged["ResourceTagMappingList"] if ":instance/" not in m["ResourceARN"]]
    ec2 = boto3.client("ec2", **kw)
    flt = [{"Name": "tag:Run", "Values": [run_id]}]
    found += [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]
              if i["State"]["Name"] != "terminated"]
    found += [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]]
    found += [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]]
    return sorted(set(found))


def terraform_processes(home: Path) -> list[int]:
    """Terraform workers whose working directory is inside the run home."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(home) in os.readlink(entry / "cwd"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_ctrl_c_during_apply_leaves_nothing_behind(moto_server, tmp_path):
    suite = tmp_path / "test_suite.py"
    suite.write_text("def test_applied(applied_group):\n    assert applied_group.resources\n")
    home = tmp_path / "home"
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"),
         "--groups-dir", str(TEST_GROUPS), "--group", "slow", "--run-id", "intr1", "--aws-endpoint", moto_server.url,
         "--reports-dir", str(tmp_path / "reports")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if "[slow] apply:" in line and "resources" in line:
            break
        assert time.monotonic() < deadline, "".join(output)
    time.sleep(1.0)  # instances are being created now
    assert leftovers(moto_server, "intr1"), "the apply should have created something before the interrupt"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    text = "".join(output) + rest
    assert "interrupted" in text.lower() or "KeyboardInterrupt" in text, text
    assert "[slow] destroyed" in text, text
    assert leftovers(moto_server, "intr1") == []
    assert terraform_processes(home) == []


def test_up_then_pytest_reuses_then_down_removes_everything(moto_server, tmp_path):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(tmp_path / "home")}
    cli = [sys.executable, "-m", "immutable_infra.cli"]
    common = ["--groups-dir", str(TEST_GROUPS), "--aws-endpoint", moto_server.url]
    up = subprocess.run(cli + ["up", "tiny-app", "--run-id", "upx"] + common, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "upx"
    assert "immutable-infra down --run-id upx" in up.stderr
    assert len(leftovers(moto_server, "upx")) >= 4

    runs = subprocess.run(cli + ["runs"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert "upx" in runs.stdout and "tiny,tiny-app" in runs.stdout

    suite = tmp_path / "test_suite.py"
    suite.write_text("def test_applied(applied_group):\n    assert applied_group.outputs['subnet_id']\n")
    session = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"),
         "--group", "tiny-app", "--run-id", "upx", "--reports-dir", str(tmp_path / "reports")] + common,
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert session.returncode == 0, session.stdout
    assert "reusing run upx" in session.stdout
    assert "applying" not in session.stdout and "destroying" not in session.stdout
    assert len(leftovers(moto_server, "upx")) >= 4, "a session that reused a run must not destroy it"

    down = subprocess.run(cli + ["down", "--run-id", "upx"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert leftovers(moto_server, "upx") == []
    runs = subprocess.run(cli + ["runs"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert "upx" not in runs.stdout
