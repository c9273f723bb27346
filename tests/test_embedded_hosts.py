"""Embedded hosts: real Debian hosts under systemd-nspawn, configured by Ansible, checked with testinfra.

The integration test needs root, systemd-nspawn, debootstrap and ip
(``tools/install-host-runtime``) and skips with the reason otherwise. The
first run on a machine builds the host image with debootstrap (one to two
minutes here, cached in ``<cache>/hosts/``); after that the module takes
30-40 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from immutable_infra import embedded_hosts
from immutable_infra.embedded_hosts import (
    EmbeddedHostError,
    HostHandle,
    SessionKey,
    apply_playbook,
    assert_no_leftovers,
    build_rootfs,
    leftovers,
    runtime_available,
    start_host,
)

PLAYBOOK = Path(__file__).parent / "data" / "embedded_hosts" / "web.yml"


def test_runtime_available_names_a_missing_binary(monkeypatch):
    def which(name, *args, **kwargs):
        return None if name == "debootstrap" else f"/usr/bin/{name}"

    monkeypatch.setattr(embedded_hosts.os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", which)
    reason = runtime_available()
    assert reason is not None
    assert "debootstrap" in reason and "tools/install-host-runtime" in reason
    assert "systemd-nspawn" not in reason


def test_runtime_available_needs_root(monkeypatch):
    monkeypatch.setattr(embedded_hosts.os, "geteuid", lambda: 1000)
    reason = runtime_available()
    assert reason is not None and "root" in reason


def test_stop_of_a_host_that_never_started_is_a_no_op_twice(tmp_path):
    key = SessionKey(tmp_path / "k", tmp_path / "k.pub", tmp_path / "ssh_config")
    handle = HostHandle("web-0", "10.21.1.23", "169.254.64.2", "iih-00000000", tmp_path / "iih-00000000",
                        tmp_path / "console.log", key)
    handle.stop()
    handle.stop()
    assert "10.21.1.23" not in handle.url and "169.254.64.2" in handle.url


def test_unknown_template_is_one_line_naming_the_known_ones(tmp_path):
    with pytest.raises(EmbeddedHostError, match=r"unknown host template 'nope'; known: debian12-base"):
        build_rootfs("nope", tmp_path)


def test_assert_no_leftovers_names_what_is_left(monkeypatch):
    monkeypatch.setattr(embedded_hosts, "leftovers", lambda: ["netns iih-0badf00d", "mount /tmp/x/iih-0badf00d/merged"])
    assert_no_leftovers(before=["netns iih-0badf00d", "mount /tmp/x/iih-0badf00d/merged"])
    with pytest.raises(pytest.fail.Exception, match=r"^embedded hosts left behind: mount /tmp/x/iih-0badf00d/merged$"):
        assert_no_leftovers(before=["netns iih-0badf00d"])


def test_start_host_refuses_a_directory_that_is_no_rootfs(tmp_path):
    if runtime_available():
        pytest.skip(runtime_available())
    with pytest.raises(EmbeddedHostError, match=r"host web-0: .* is not a root filesystem"):
        start_host("web-0", "10.21.1.23", tmp_path / "empty", tmp_path / "run")
    assert not [item for item in leftovers() if str(tmp_path) in item]


@pytest.fixture(scope="module")
def rootfs() -> Path:
    """The cached host image (built once per machine: this is the slow part of the first run)."""
    reason = runtime_available()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    path = build_rootfs("debian12-base")
    print(f"host image {path} ready in {time.monotonic() - started:.1f} s")
    return path


def test_two_embedded_hosts_boot_take_a_playbook_and_leave_nothing(rootfs, tmp_path, record_property):
    """Two hosts in different /24s: up, own private IP, playbook visible through testinfra; then nothing left."""
    testinfra = pytest.importorskip("testinfra")
    hosts: list[HostHandle] = []
    try:
        started = time.monotonic()
        web = start_host("web-0", "10.21.1.23", rootfs, tmp_path)
        hosts.append(web)
        app = start_host("app-0", "10.21.2.40", rootfs, tmp_path)
        hosts.append(app)
        record_property("boot_seconds", round(max(web.boot_seconds, app.boot_seconds), 2))
        print(f"two hosts up in {time.monotonic() - started:.1f} s "
              f"(web {web.boot_seconds:.1f} s, app {app.boot_seconds:.1f} s)")

        # while a host runs, leftovers() sees every piece of it (so its emptiness later proves something)
        seen = {line.split()[0] for line in leftovers(only=[web.netns])}
        assert seen == {"netns", "link", "mount", "process", "nspawn", "link-address"}, leftovers(only=[web.netns])
        assert not set(leftovers(only=[web.netns])) & set(leftovers(only=[app.netns]))

        # a start failure is one line naming the host and the console log, and undoes itself
        with pytest.raises(EmbeddedHostError, match=r"host slow-0: .* \(console log: .*console\.log\)") as failed:
            start_host("slow-0", "10.21.3.5", rootfs, tmp_path, boot_timeout=0.05)
        slow_netns = re.search(r"/(iih-[0-9a-f]+)/console\.log", str(failed.value)).group(1)

        for handle in hosts:
            host = testinfra.get_host(handle.url)
            assert host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")
            assert host.file("/etc/immutable-infra-host").contains(f"private_ip={handle.private_ip}")
            assert handle.private_ip in [str(a) for a in host.interface("eth0").addresses]
            assert host.check_output("hostname") == handle.name
            assert host.service("ssh").is_running
            assert not host.service("nginx").is_running  # baked, disabled: the role turns it on

        run = apply_playbook(web, PLAYBOOK, {"greeting": "hello from web-0", "port": 8080}, role="web")
        record_property("playbook_seconds", round(run.elapsed, 2))
        print(f"playbook {PLAYBOOK.name} on web-0 in {run.elapsed:.1f} s: {run.recap}")
        assert run.recap.get("failed") == 0 and run.recap.get("changed", 0) >= 3, run.log.read_text()[-2000:]

        host = testinfra.get_host(web.url)
        role_file = host.file("/etc/immutable-infra-role")
        assert role_file.mode == 0o640 and role_file.user == "root"
        assert role_file.content_string == "web 10.21.1.23\n"
        nginx = host.service("nginx")
        assert nginx.is_running and nginx.is_enabled
        assert host.socket("tcp://0.0.0.0:8080").is_listening
        assert host.run("curl -fsS http://10.21.1.23:8080/").stdout == "hello from web-0\n"

        # the same playbook again changes nothing: the host converged, offline
        # a failing playbook is one line naming the host, the failed task's message and the log
        failing = tmp_path / "failing.yml"
        failing.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                           "    - ansible.builtin.fail:\n        msg: the role cannot run here\n")
        with pytest.raises(EmbeddedHostError, match=r"^host app-0: ansible-playbook failing\.yml: fatal: .*"
                                                    r"the role cannot run here.* \(log: .*failing\.log\)$"):
            apply_playbook(app, failing)

        again = apply_playbook(web, PLAYBOOK, {"greeting": "hello from web-0", "port": 8080}, role="web")
        assert again.recap.get("changed") == 0, again.log.read_text()[-2000:]
        print(f"again in {again.elapsed:.1f} s: {again.recap}")

        # each host has its own overlay: the other one saw none of it
        other = testinfra.get_host(app.url)
        assert not other.file("/etc/immutable-infra-role").exists
        assert not other.service("nginx").is_running
        assert not (rootfs / "etc" / "immutable-infra-role").exists()
    finally:
        for handle in hosts:
            handle.stop()
    for handle in hosts:
        handle.stop()  # idempotent
        assert handle.nspawn_lock is not None and not handle.nspawn_lock.exists()
    # Ours only, the failed start's included: under xdist another worker's hosts may be up meanwhile.
    ours = [h.netns for h in hosts] + [slow_netns]
    assert leftovers(only=ours) == []
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [name for name in ours if name in netns_list]


def _group_in_the_sandbox(server) -> dict:
    """A small group's instances in the project's moto (127.0.0.1): web and app in two /24s, one stopped, one odd."""
    import boto3

    from immutable_infra.sandbox import SANDBOX_CREDENTIALS

    ec2 = boto3.client("ec2", region_name="ap-southeast-1", endpoint_url=server.url,
                       aws_access_key_id=SANDBOX_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=SANDBOX_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    vpc = ec2.create_vpc(CidrBlock="10.21.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.21.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2, 3)]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch(subnet: str, role: str) -> str:
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": role}]}]
        return ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet,
                                 TagSpecifications=tags)["Instances"][0]["InstanceId"]

    ids = {"web": launch(subnets[0], "web"), "app": launch(subnets[1], "app"),
           "old": launch(subnets[1], "app"), "odd": launch(subnets[2], "ghost")}
    ec2.stop_instances(InstanceIds=[ids["old"]])
    return {"ids": ids, "described": ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [vpc]}])}


def test_a_groups_running_instances_become_hosts_configured_by_their_roles(rootfs, tmp_path):
    """describe_instances from the sandbox in, one host per running instance out, each role's playbook applied."""
    testinfra = pytest.importorskip("testinfra")
    from immutable_infra.embedded_hosts import embedded_hosts_for_group, running_instances
    from immutable_infra.roles import load_roles
    from immutable_infra.sandbox import MotoServer

    tests = Path(__file__).parent
    with MotoServer() as server:
        group_in_moto = _group_in_the_sandbox(server)
    ids, described = group_in_moto["ids"], group_in_moto["described"]
    ips = {i["InstanceId"]: i["PrivateIpAddress"] for i in running_instances(described)}
    assert sorted(ips) == sorted([ids["web"], ids["app"], ids["odd"]])  # the stopped one is not running
    with embedded_hosts_for_group(described, load_roles(tests / "roles.toml"), tests / "playbooks", tmp_path) as group:
        assert sorted(group.hosts) == sorted(ips)
        assert group.roles == {ids["web"]: "web", ids["app"]: "app"}
        assert group.unconfigured == {ids["odd"]: "role 'ghost' is not in the roles catalog"}
        assert {role: run.recap.get("changed") for role, run in group.playbooks.items()} == {"web": 1, "app": 1}
        for key, expected in (("web", "web\n"), ("app", "app\n")):
            host = testinfra.get_host(group.hosts[ids[key]].url)
            assert host.file("/etc/immutable-infra-role").content_string == expected
            assert host.check_output("hostname") == ids[key]
            assert ips[ids[key]] in [str(a) for a in host.interface("eth0").addresses]
        odd = testinfra.get_host(group.hosts[ids["odd"]].url)
        assert not odd.file("/etc/immutable-infra-role").exists
        assert ips[ids["odd"]].startswith("10.21.3.")
        assert ips[ids["odd"]] in [str(a) for a in odd.interface("eth0").addresses]
    assert leftovers(only=[h.netns for h in group.hosts.values()]) == []
    assert not [line for line in leftovers() if str(tmp_path) in line]  # no mount under this test's folder either


def test_a_failing_playbook_stops_every_host_the_group_booted(rootfs, tmp_path):
    """The hosts boot side by side and the roles' playbooks run side by side: one role's playbook failing raises,
    naming it, and every host booted for the group (the other role's too) is stopped, nothing left."""
    from immutable_infra.embedded_hosts import EmbeddedHostError, embedded_hosts_for_group
    from immutable_infra.roles import load_roles

    tests = Path(__file__).parent
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    shutil.copy(tests / "playbooks" / "web.yml", playbooks / "web.yml")
    (playbooks / "app.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                       "    - ansible.builtin.fail:\n        msg: app role cannot be configured\n")
    described = [{"InstanceId": f"i-{role}", "PrivateIpAddress": f"10.98.0.{k + 10}", "State": {"Name": "running"},
                  "Tags": [{"Key": "Role", "Value": role}]} for k, role in enumerate(("web", "app"))]
    with pytest.raises(EmbeddedHostError, match=r"app\.yml: .*app role cannot be configured"):
        embedded_hosts_for_group(described, load_roles(tests / "roles.toml"), playbooks, tmp_path / "run")
    booted = [folder.name for folder in (tmp_path / "run").glob("iih*")]
    # only this test's hosts are judged: an xdist neighbour may be running hosts of its own meanwhile
    assert len(booted) == 2 and leftovers(only=booted) == []  # both booted, then both stopped


def test_a_boot_that_ran_out_of_inotify_instances_names_the_sysctl(tmp_path):
    from immutable_infra.embedded_hosts import _console_hint

    log = tmp_path / "console.log"
    log.write_text("Failed to create control group inotify object: Too many open files\n"
                   "Failed to allocate manager object: Too many open files\n")
    assert "fs.inotify.max_user_instances" in _console_hint(log)
    log.write_text("Welcome to Debian GNU/Linux 12 (bookworm)!\n")
    assert _console_hint(log) == ""
    assert _console_hint(tmp_path / "missing.log") == ""
