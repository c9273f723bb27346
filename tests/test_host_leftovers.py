"""Embedded hosts a SIGKILLed session left: stop_leftover_hosts and `immutable-infra down` stop them.

A child Python process starts one host under a run folder (``<home>/runs/<id>/hosts/g/``) and is killed with
SIGKILL: its nspawn runs on in its own session, with its namespace, overlay mount and link-address slot. The
host tests need root, systemd-nspawn, debootstrap and ip and skip with the reason otherwise (the image is
built once and cached; after that each host boots in a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from immutable_infra import embedded_hosts
from immutable_infra.embedded_hosts import HostsLeftError, leftovers, runtime_available, stop_leftover_hosts
from immutable_infra.ephemeral import Run

TEST_GROUPS = Path(__file__).parent / "groups"
CLI = [sys.executable, "-m", "immutable_infra.cli"]

needs_runtime = pytest.mark.skipif(runtime_available() is not None, reason=runtime_available() or "")

CHILD = textwrap.dedent("""
    import json, sys, time
    from immutable_infra.embedded_hosts import build_rootfs, start_host
    handle = start_host(sys.argv[1], "10.77.1.10", build_rootfs(), sys.argv[2])
    print(json.dumps({"netns": handle.netns, "directory": str(handle.directory)}), flush=True)
    time.sleep(600)
""")


def start_and_kill(name: str, run_dir: Path) -> dict:
    """Start one host from a child Python, then SIGKILL the child: the host is left running, as by a killed session."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, name, str(run_dir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line:
            pytest.fail(f"the child could not start a host: {child.stderr.read()[-2000:]}")
        host = json.loads(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    there = leftovers(only=[host["netns"]])
    kinds = {item.split()[0] for item in there}
    assert {"netns", "link", "mount", "process", "link-address"} <= kinds, there
    assert any(item.startswith("process ") and "systemd-nspawn" in item for item in there), there
    return host


def test_nothing_there_is_nothing_to_stop(tmp_path):
    (tmp_path / "hosts" / "g" / "iih-0badf00d" / "merged").mkdir(parents=True)
    assert stop_leftover_hosts(tmp_path) == []
    assert stop_leftover_hosts(tmp_path / "missing") == []


def test_not_root_with_something_left_names_it(tmp_path, monkeypatch):
    (tmp_path / "hosts" / "g" / "iih-0badf00d").mkdir(parents=True)
    monkeypatch.setattr(embedded_hosts.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(embedded_hosts, "leftovers", lambda only=(): [f"netns {n}" for n in only])
    with pytest.raises(HostsLeftError, match=r"\(stopping embedded hosts needs root\): netns iih-0badf00d$") as exc:
        stop_leftover_hosts(tmp_path)
    assert exc.value.remaining == ["netns iih-0badf00d"] and exc.value.stopped == []


@needs_runtime
def test_a_killed_sessions_host_is_stopped_from_its_folder(tmp_path):
    run = tmp_path / "runs" / "r1"
    host = start_and_kill("i-0123456789abcdef0", run / "hosts" / "g")
    try:
        assert stop_leftover_hosts(run) == [f"{host['netns']} (i-0123456789abcdef0)"]
        assert leftovers(only=[host["netns"]]) == []
        assert stop_leftover_hosts(run) == []  # twice is fine
    finally:
        stop_leftover_hosts(run)  # whatever failed above, nothing is left running


def kept_run(home: Path, run_id: str, endpoint: str) -> Run:
    """A run in the store under ``home``, as a session left it (kept), for down and reap to find."""
    run = Run.create(home, run_id, TEST_GROUPS, endpoint)
    run.keep = True
    run.save()
    return run


@needs_runtime
def test_down_stops_the_runs_hosts_and_says_so(tmp_path, moto_server):
    home = tmp_path / "home"
    run = kept_run(home, "hostrun1", moto_server.url)
    host = start_and_kill("i-0fedcba987654321f", run.path / "hosts" / "g")
    try:
        env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
        down = subprocess.run(CLI + ["down", "--run-id", "hostrun1"], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert f"embedded hosts stopped: {host['netns']} (i-0fedcba987654321f)" in down.stderr, down.stderr
        assert down.returncode == 0, down.stderr
        assert leftovers(only=[host["netns"]]) == []
        assert not Run.exists(home, "hostrun1")
    finally:
        if run.path.exists():
            stop_leftover_hosts(run.path)


@pytest.mark.parametrize("forget", [False, True])
def test_down_keeps_a_run_whose_hosts_are_left_and_names_them(tmp_path, moto_server, monkeypatch, capsys, forget):
    from immutable_infra import cli

    home = tmp_path / "home"
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(home))
    run = kept_run(home, "hostleft1", moto_server.url)

    def left(root):
        assert Path(root) == run.path
        raise HostsLeftError("x", ["iih-00c0ffee (i-1)"], ["netns iih-0badf00d"], "stopping embedded hosts needs root")

    monkeypatch.setattr(embedded_hosts, "stop_leftover_hosts", left)
    args = cli.parser().parse_args(["down", "--run-id", "hostleft1"] + (["--forget"] if forget else []))
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "embedded hosts stopped: iih-00c0ffee (i-1)" in err
    assert "embedded hosts of run hostleft1 left (stopping embedded hosts needs root):\n  netns iih-0badf00d" in err
    assert "NOT" in err
    assert Run.exists(home, "hostleft1"), "a run with hosts left must stay in the run store"


@needs_runtime
def test_reap_stops_the_hosts_of_a_run_it_deletes(tmp_path, moto_server):
    import boto3

    home = tmp_path / "home"
    run = kept_run(home, "hostreap1", moto_server.url)
    ec2 = boto3.client("ec2", endpoint_url=moto_server.url, region_name="ap-southeast-1",
                       aws_access_key_id="t", aws_secret_access_key="t")
    tags = [{"Key": "Run", "Value": "hostreap1"}, {"Key": "ExpiresAt", "Value": "2020-01-01T00:00:00+00:00"},
            {"Key": "Group", "Value": "g"}]
    ec2.create_vpc(CidrBlock="10.71.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])
    host = start_and_kill("i-0aaaabbbbccccdddd", run.path / "hosts" / "g")
    try:
        env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
        reap = subprocess.run(CLI + ["reap", "--run-id", "hostreap1", "--aws-endpoint", moto_server.url,
                                     "--region", "ap-southeast-1"],
                              env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert reap.returncode == 0, reap.stderr
        assert f"embedded hosts stopped: {host['netns']} (i-0aaaabbbbccccdddd)" in reap.stderr, reap.stderr
        assert leftovers(only=[host["netns"]]) == []
        assert not Run.exists(home, "hostreap1")
    finally:
        if run.path.exists():
            stop_leftover_hosts(run.path)
