"""Transports: ssh through a bastion, an Ansible inventory from Role tags, ansible://, vagrant://.

The text tests run on plain data in milliseconds. The integration tests share
one embedded host (module scope; needs the host runtime, skips with the reason
otherwise): its private IP lives only inside its network namespace, so the
root namespace reaches it only by jumping through the host's link address
(the "bastion", root@<link> with the session key). Over the generated files:
``read_host_facts`` on the ssh:// URL, ``ansible-playbook`` through the
inventory, testinfra's ``ansible://`` backend, a fake ``vagrant`` for
``--dev-box vagrant://default``, and the host suite's remote path of
``group_hosts`` (an audit reads only; otherwise the role playbook is applied).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from immutable_infra import group_hosts, transports
from immutable_infra.embedded_hosts import HostHandle, build_rootfs, leftovers, runtime_available, start_host
from immutable_infra.settings import Settings, path_problems, usage_problems
from immutable_infra.transports import (
    BASTION_ALIAS,
    Bastion,
    Target,
    TransportError,
    find_bastion,
    inventory_data,
    parse_bastion,
    resolve_dev_box,
    ssh_config_text,
    targets_of,
)

TESTS = Path(__file__).parent


def instance(iid: str, role: str | None, private: str | None, public: str | None = None, state: str = "running") -> dict:
    tags = [{"Key": "Role", "Value": role}] if role else []
    out = {"InstanceId": iid, "State": {"Name": state}, "Tags": tags}
    if private:
        out["PrivateIpAddress"] = private
    if public:
        out["PublicIpAddress"] = public
    return out


GROUP = [
    instance("i-0b", "bastion", "10.21.0.5", "203.0.113.10"),
    instance("i-0w", "web", "10.21.1.23"),
    instance("i-0r", "reverse-proxy", "10.21.1.24"),
    instance("i-0n", None, "10.21.2.9"),
    instance("i-0s", "web", "10.21.1.30", state="stopped"),
]


# -- plain data -------------------------------------------------------------------------------


def test_a_bastion_is_user_at_host_and_port_and_anything_else_names_the_setting():
    assert parse_bastion("admin@203.0.113.10:2222") == Bastion("203.0.113.10", "admin", 2222, "--bastion admin@203.0.113.10:2222")
    assert parse_bastion("bastion.example.com").spec == "bastion.example.com"
    assert parse_bastion("[2001:db8::1]:22").host == "2001:db8::1"
    for bad in ("a@b@c", "admin@", "host:0", "host:70000", "two words", "9user@host"):
        with pytest.raises(ValueError, match=rf"^--bastion {re.escape(bad)} is not USER@HOST\[:PORT\]; give "):
            parse_bastion(bad)
    with pytest.raises(ValueError, match=r"^IMMUTABLE_INFRA_BASTION = 'a@' is not USER@HOST"):
        parse_bastion("a@", "IMMUTABLE_INFRA_BASTION = 'a@'")


def test_the_bastion_is_the_groups_running_bastion_role_instance_with_a_public_address():
    found = find_bastion(GROUP)
    assert found is not None and (found.host, found.instance_id) == ("203.0.113.10", "i-0b")
    assert "instance i-0b (Role bastion" in found.source
    assert find_bastion(GROUP, role="jump") is None
    no_public = [instance("i-0b", "bastion", "10.21.0.5")]
    assert find_bastion(no_public) is None
    reason = transports.no_bastion_reason("prd-sg-slave", no_public, "bastion", "--bastion-role")
    assert "i-0b" in reason and "no public address" in reason and "--bastion USER@HOST[:PORT]" in reason
    reason = transports.no_bastion_reason("prd-sg-slave", GROUP, "jump", "--bastion-role")
    assert "no running instance of prd-sg-slave has the Role tag jump" in reason and "--bastion-role ROLE" in reason


def test_the_ssh_config_jumps_to_every_private_address_through_the_bastion(tmp_path):
    bastion = find_bastion(GROUP)
    targets = targets_of(GROUP, bastion)
    assert [t.instance_id for t in targets] == ["i-0b", "i-0n", "i-0r", "i-0w"]  # running only, id order
    text = ssh_config_text(targets, bastion, "admin", tmp_path / "key", tmp_path / "known hosts")
    blocks = {b.split()[1]: b for b in re.split(r"\n(?=Host )", text) if b.startswith("Host ")}
    assert blocks[BASTION_ALIAS].splitlines()[1:3] == ["  HostName 203.0.113.10", "  User admin"]
    web = blocks["i-0w"]
    assert web.startswith("Host i-0w 10.21.1.23\n  HostName 10.21.1.23\n  User admin\n")
    for line in (f"ProxyJump {BASTION_ALIAS}", f"IdentityFile {tmp_path / 'key'}",
                 f'UserKnownHostsFile "{tmp_path / "known hosts"}"', "StrictHostKeyChecking accept-new",
                 "BatchMode yes"):
        assert f"  {line}\n" in web, line
    # the bastion instance itself is reached on its public address, not through itself
    assert blocks["i-0b"].startswith("Host i-0b 203.0.113.10\n  HostName 203.0.113.10\n")
    assert "ProxyJump" not in blocks["i-0b"]
    explicit = ssh_config_text(targets_of(GROUP), parse_bastion("ops@198.51.100.7:2222"), "admin", "k", "kh")
    assert "  User ops\n  Port 2222\n" in explicit and explicit.count("ProxyJump") == 4


def test_the_inventory_has_one_group_per_role_tag_and_hosts_by_instance_id(tmp_path):
    bastion = find_bastion(GROUP)
    data = inventory_data(targets_of(GROUP, bastion), "admin", "/keys/k", tmp_path / "ssh_config")
    assert sorted(data["all"]["children"]) == ["bastion", "reverse_proxy", "web"]
    assert list(data["all"]["hosts"]) == ["i-0n"]  # no Role tag: in no group
    web = data["all"]["children"]["web"]["hosts"]["i-0w"]
    assert web == {"ansible_host": "10.21.1.23", "ansible_user": "admin", "ansible_ssh_private_key_file": "/keys/k",
                   "ansible_ssh_common_args": f"-F {tmp_path / 'ssh_config'} -o ProxyJump={BASTION_ALIAS}",
                   "instance_id": "i-0w", "private_ip": "10.21.1.23", "role": "web"}
    proxy = data["all"]["children"]["reverse_proxy"]["hosts"]["i-0r"]
    assert proxy["role"] == "reverse-proxy"
    own = data["all"]["children"]["bastion"]["hosts"]["i-0b"]
    assert own["ansible_host"] == "203.0.113.10" and "ProxyJump" not in own["ansible_ssh_common_args"]
    assert transports.ssh_url("i-0w", "/run/x/ssh_config") == "ssh://i-0w?ssh_config=/run/x/ssh_config"
    assert transports.ansible_url("i-0w", "/run/x/inventory.yml") == "ansible://i-0w?ansible_inventory=/run/x/inventory.yml"


def test_the_written_inventory_is_what_ansible_reads(tmp_path):
    inventory_cmd = Path(sys.executable).parent / "ansible-inventory"
    if not inventory_cmd.exists():
        pytest.skip("ansible-inventory is not installed beside this Python: pip install ansible-core")
    written = transports.write_transport(tmp_path, GROUP, find_bastion(GROUP), "admin", tmp_path / "key")
    import json

    listed = json.loads(subprocess.run([str(inventory_cmd), "-i", str(written.inventory), "--list"], check=True,
                                       capture_output=True, text=True).stdout)
    assert listed["web"]["hosts"] == ["i-0w"] and listed["reverse_proxy"]["hosts"] == ["i-0r"]
    assert listed["_meta"]["hostvars"]["i-0w"]["ansible_host"] == "10.21.1.23"
    assert written.known_hosts.exists() and written.url("i-0w").endswith(f"ssh_config={written.ssh_config}")


def test_settings_for_hosts_on_aws_are_checked_with_one_line_each(tmp_path):
    assert usage_problems(Settings(real_aws=True, host_user="admin", bastion="admin@203.0.113.10")) == []
    problems = usage_problems(Settings(real_aws=True, host_user="ad min", bastion="x@", bastion_role="my role",
                                       sources={"bastion": "IMMUTABLE_INFRA_BASTION"}))
    assert len(problems) == 3
    assert problems[0].startswith("--host-user ad min is not a login name; give the user")
    assert problems[1].startswith("IMMUTABLE_INFRA_BASTION = 'x@' is not USER@HOST[:PORT]")
    assert problems[2].startswith("--bastion-role my role is not a Role tag value")
    missing = path_problems(Settings(host_key=tmp_path / "nope", reports_dir=tmp_path, home=tmp_path), reports=False)
    assert missing == [f"--host-key {tmp_path / 'nope'} does not exist; give the ssh private key file that opens "
                       "the instances (ssh -i)"]
    assert path_problems(Settings(host_key=tmp_path, reports_dir=tmp_path, home=tmp_path))[0].endswith(
        "is not a file; give the ssh private key file that opens the instances (ssh -i)")


def test_without_user_and_key_the_host_suite_skips_naming_the_options():
    reason = group_hosts.why_not_at_all(Settings(real_aws=True), runtime=lambda: "not asked")
    assert reason is not None and reason.startswith("hosts: on real AWS the instances' hosts are reached over ssh")
    for option in ("--host-user", "--host-key", "--bastion USER@HOST[:PORT]", "--bastion-role"):
        assert option in reason
    reason = group_hosts.why_not_at_all(Settings(aws_endpoint="http://127.0.0.1:5000", host_user="admin"))
    assert reason is not None and "http://127.0.0.1:5000" in reason and "--host-key is not set" in reason
    given = Settings(real_aws=True, host_user="admin", host_key=Path("/k"))
    assert group_hosts.why_not_at_all(given, runtime=lambda: "never asked off the sandbox") is None
    # with them, a group without a bastion (none given, none tagged) skips naming --bastion and --bastion-role
    reason = group_hosts.why_not_reached(given, "prd-sg-slave", [instance("i-0w", "web", "10.21.1.23")])
    assert reason is not None and "--bastion USER@HOST[:PORT]" in reason and "--bastion-role ROLE" in reason
    assert group_hosts.why_not_reached(given, "prd-sg-slave", GROUP) is None
    assert group_hosts.why_not_reached(Settings(real_aws=True, bastion="ops@198.51.100.7"), "g", []) is None


def _fake_vagrant(bin_dir: Path, config: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "vagrant"
    script.write_text("#!/bin/sh\n"
                      "# a stand-in for vagrant: `vagrant ssh-config default` prints the box's ssh config\n"
                      "if [ \"$1\" = ssh-config ] && [ \"${2:-default}\" = default ]; then\n"
                      f"  cat <<'EOF'\n{config}EOF\n  exit 0\nfi\n"
                      "echo \"The machine with the name '$2' was not found configured for this Vagrant environment.\" >&2\n"
                      "exit 1\n")
    script.chmod(0o755)


def test_dev_box_vagrant_urls_resolve_or_fail_naming_the_setting(tmp_path, monkeypatch):
    path = os.environ.get("PATH", "")
    assert resolve_dev_box("ssh://vagrant@127.0.0.1:2222", tmp_path) == "ssh://vagrant@127.0.0.1:2222"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TransportError, match=r"^--dev-box vagrant://default: vagrant is not on PATH; install Vagrant, "
                                             r"or give the box as an ssh URL"):
        resolve_dev_box("vagrant://default", tmp_path)
    assert any("vagrant is not on PATH" in p for p in path_problems(
        Settings(dev_box="vagrant://default", reports_dir=tmp_path, home=tmp_path)))
    _fake_vagrant(tmp_path / "bin", "Host default\n  HostName 127.0.0.1\n  Port 2222\n  User vagrant\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{path}")
    url = resolve_dev_box("vagrant://default", tmp_path / "run")
    assert url == f"ssh://default?ssh_config={tmp_path / 'run' / 'dev-box-default.ssh-config'}"
    assert "Port 2222" in (tmp_path / "run" / "dev-box-default.ssh-config").read_text()
    assert resolve_dev_box("vagrant://", tmp_path / "run") == url  # no NAME: the first machine
    with pytest.raises(TransportError, match=r"^IMMUTABLE_INFRA_DEV_BOX vagrant://web: `vagrant ssh-config web` exited 1: "
                                             r"The machine with the name 'web' was not found.*; bring the box up"):
        resolve_dev_box("vagrant://web", tmp_path, setting="IMMUTABLE_INFRA_DEV_BOX")
    with pytest.raises(TransportError, match=r"cwd .*nowhere is not a folder; give the folder of the Vagrantfile"):
        resolve_dev_box(f"vagrant://default?cwd={tmp_path / 'nowhere'}", tmp_path)
    with pytest.raises(TransportError, match=r"write vagrant://NAME or vagrant://NAME\?cwd=DIR .*unknown parameter 'dir'"):
        resolve_dev_box("vagrant://default?dir=x", tmp_path)


# -- one real host behind its own link address ------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> HostHandle:
    """One embedded host, Role web; its private IP lives only inside its network namespace."""
    reason = runtime_available()
    if reason:
        pytest.skip(reason)
    rootfs = build_rootfs("debian12-base")
    handle = start_host("i-0transport00001", "10.21.7.23", rootfs, tmp_path_factory.mktemp("transport-host"))
    handle.instance_id = "i-0transport00001"
    try:
        yield handle
    finally:
        handle.stop()
        assert leftovers(only=[handle.netns]) == []


@pytest.fixture(scope="module")
def ansible_on_path():
    """testinfra's ansible backend runs ansible-inventory and ansible from PATH: the ones beside this Python."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        yield


def described(handle: HostHandle) -> list[dict]:
    return [instance(str(handle.instance_id), "web", handle.private_ip)]


def test_the_private_ip_is_not_reachable_from_the_root_namespace_directly(host):
    """The root namespace has no address and no route into the host's namespace for the private IP: ssh to it can
    only go through the bastion (the host's link address)."""
    addresses = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    assert f" {host.private_ip}/" not in addresses
    route = subprocess.run(["ip", "route", "get", host.private_ip], capture_output=True, text=True)
    assert host.netns not in route.stdout + route.stderr and " dev lo " not in route.stdout
    link_route = subprocess.run(["ip", "route", "get", host.link_ip], capture_output=True, text=True, check=True)
    assert f"dev {host.netns}" in link_route.stdout  # the link address, by contrast, is the host's own veth


def test_host_facts_are_read_over_the_ssh_url_through_the_bastion(host, tmp_path):
    from immutable_infra.config import HostContract
    from immutable_infra.hosts import HostUnreachable, read_host_facts

    bastion = Bastion(host.link_ip, "root", None, "test")
    transport = transports.write_transport(tmp_path, described(host), bastion, "root", host.key.private_key)
    url = transport.url(str(host.instance_id))
    contract = HostContract(packages={"openssh-server": "*"}, services=["ssh"], ports=[22])
    facts = read_host_facts(url, contract)
    assert facts.packages["openssh-server"] and facts.services["ssh"] == {"enabled": True, "running": True}
    assert 22 in (facts.listening or {})
    proof = subprocess.run(["ssh", "-F", str(transport.ssh_config), str(host.instance_id), "ip -o addr show; hostname"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proof.returncode == 0, proof.stderr
    assert f" {host.private_ip}/32" in proof.stdout and str(host.instance_id) in proof.stdout
    assert host.private_ip in transport.known_hosts.read_text()  # accept-new wrote it into the run's own file
    # the same files with a bastion that does not answer (the link address, a port nothing listens on) cannot reach
    # the host: the jump is what makes it work
    dead = transports.write_transport(tmp_path / "dead", described(host), Bastion(host.link_ip, "root", 1, "dead"),
                                      "root", host.key.private_key)
    with pytest.raises(HostUnreachable, match=r"cannot reach the host"):
        read_host_facts(dead.url(str(host.instance_id)), contract, timeout=3)


def test_the_role_playbook_goes_through_the_inventory_and_ansible_urls_read_it_back(host, tmp_path, ansible_on_path):
    testinfra = pytest.importorskip("testinfra")
    from immutable_infra.roles import load_roles

    roles = load_roles(TESTS / "roles.toml")
    bastion = Bastion(host.link_ip, "root", None, "test")
    reached = transports.reach_hosts(tmp_path, described(host), roles, bastion, "root", host.key.private_key,
                                     TESTS / "playbooks", group="transports")
    iid = str(host.instance_id)
    assert reached.roles == {iid: "web"} and reached.unconfigured == {}
    run = reached.playbooks["web"]
    assert run.recap.get("failed") == 0 and run.recap.get("ok", 0) >= 1, run.log.read_text()[-2000:]
    log = run.log.read_text()
    assert f"-i {reached.transport.inventory}" in log and "--limit web" in log
    over_ansible = testinfra.get_host(reached.hosts[iid].ansible_url)
    assert over_ansible.file("/etc/immutable-infra-role").content_string == "web\n"
    assert over_ansible.check_output("hostname") == iid
    assert host.private_ip in [str(a) for a in over_ansible.interface("eth0").addresses]
    # a failing playbook through the same inventory: one line, the hosts, the task's message, the log
    failing = tmp_path / "failing.yml"
    failing.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                       "    - ansible.builtin.fail:\n        msg: the role cannot run here\n")
    from immutable_infra.embedded_hosts import run_playbook

    with pytest.raises(TransportError, match=rf"^hosts {iid} of transports: ansible-playbook failing\.yml: fatal: "
                                             r".*the role cannot run here.* \(log: .*failing\.log\)$"):
        run_playbook(reached.transport.inventory, failing, tmp_path / "fail", f"hosts {iid} of transports",
                     limit="web", host_key_checking=True, error=TransportError)


def test_dev_box_vagrant_default_reads_the_hosts_packages(host, tmp_path, monkeypatch):
    from immutable_infra.hosts import TestinfraPackages

    _fake_vagrant(tmp_path / "bin", f"Host default\n  HostName {host.link_ip}\n  User root\n  Port 22\n"
                                    f"  IdentityFile {host.key.private_key}\n  IdentitiesOnly yes\n"
                                    "  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n  LogLevel FATAL\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    url = resolve_dev_box("vagrant://default", tmp_path / "run")
    packages = TestinfraPackages(url).packages()
    assert packages["openssh-server"][0] and "nginx-light" in packages and len(packages) > 100


def test_the_host_suites_remote_path_reads_in_an_audit_and_configures_otherwise(host, tmp_path):
    """group_hosts off the sandbox: --audit reads the host as it is (the role file missing: a finding); an ephemeral
    run applies the role's playbook through the inventory first (no finding)."""
    from immutable_infra.checks.hosts import find_host_findings
    from immutable_infra.hosts import read_host_facts
    from immutable_infra.roles import load_roles

    roles_file = tmp_path / "roles.toml"
    roles_file.write_text((TESTS / "roles.toml").read_text().replace(
        '[roles.app]', '[roles.web.host]\nusers = ["root"]\n\n[[roles.web.host.files]]\npath = "/etc/immutable-infra-role"\n'
        'contains = ["web"]\n\n[roles.app]', 1))
    roles = load_roles(roles_file)
    iid = str(host.instance_id)
    with subprocess.Popen(host.ssh_command("rm -f /etc/immutable-infra-role")) as proc:
        assert proc.wait(timeout=60) == 0

    def harness(**given) -> SimpleNamespace:
        settings = Settings(real_aws=True, host_user="root", host_key=host.key.private_key,
                            bastion=f"root@{host.link_ip}", **given)
        return SimpleNamespace(settings=settings, catalog=SimpleNamespace(groups_dir=TESTS / "groups"),
                               images_dir=tmp_path / "no-images",
                               run=SimpleNamespace(path=tmp_path / given.get("run_id", "run")))

    def findings_of(hosts) -> list:
        contract = hosts.contracts[iid]
        facts = read_host_facts(hosts.handle(iid).url, contract)
        return find_host_findings(hosts.group, iid, hosts.roles[iid], contract, facts, address=hosts.addresses[iid])

    audit = harness(audit=True, run_id="audit")
    assert group_hosts.why_not_at_all(audit.settings) is None
    assert group_hosts.why_not_reached(audit.settings, "transports", described(host)) is None
    audited = group_hosts.reach_group_hosts(audit, "transports", described(host), {iid: "aws_instance.web"}, roles)
    assert not audited.embedded and audited.hosts.playbooks == {} and audited.roles == {iid: "web"}
    assert audited.addresses == {iid: "aws_instance.web"}
    found = findings_of(audited)
    assert len(found) == 1 and "file-missing" in found[0].id and "/etc/immutable-infra-role" in found[0].id, found
    assert found[0].aws_id == iid
    applied = group_hosts.reach_group_hosts(harness(), "transports", described(host), {iid: "aws_instance.web"}, roles)
    assert set(applied.hosts.playbooks) == {"web"} and applied.handle(iid).boot_seconds == 0.0
    assert findings_of(applied) == []
    applied.stop()  # nothing to stop on AWS: the instances are Terraform's


def test_host_settings_come_from_flag_env_and_ini(pytester, monkeypatch):
    from immutable_infra.settings import env_name, from_pytest_config

    for name in ("host_user", "host_key", "bastion", "bastion_role"):
        monkeypatch.delenv(env_name(name), raising=False)
    defaults = from_pytest_config(pytester.parseconfig())
    assert (defaults.host_user, defaults.host_key, defaults.bastion, defaults.bastion_role) == (None, None, None, "bastion")
    pytester.makeini("[pytest]\nimmutable_infra_host_user = admin\nimmutable_infra_bastion_role = jump\n")
    monkeypatch.setenv("IMMUTABLE_INFRA_BASTION", "ops@198.51.100.7:2222")
    s = from_pytest_config(pytester.parseconfig("--host-key", "keys/id_ed25519"))
    assert s.host_user == "admin" and s.source("host_user") == "ini key immutable_infra_host_user"
    assert s.bastion_role == "jump" and s.bastion == "ops@198.51.100.7:2222"
    assert s.given("bastion", s.bastion) == "IMMUTABLE_INFRA_BASTION = 'ops@198.51.100.7:2222'"
    assert s.host_key == pytester.path / "keys" / "id_ed25519"  # relative to the rootdir, like the other paths


def test_a_bad_host_setting_stops_the_session_with_one_line(pytester, monkeypatch):
    monkeypatch.delenv("IMMUTABLE_INFRA_BASTION", raising=False)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--real-aws", "--bastion", "ops@", "--host-key", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR: ") or line.startswith("--")]
    assert any("--bastion ops@ is not USER@HOST[:PORT]; give the bastion's login" in line for line in errors), result.errlines
    assert any(f"--host-key {pytester.path / 'nope'} does not exist" in line for line in errors), result.errlines
    assert "Traceback" not in "\n".join(result.errlines)


def test_a_contracted_instance_without_a_private_address_is_an_error_before_anything_is_applied(tmp_path):
    from immutable_infra.roles import load_roles

    roles_file = tmp_path / "roles.toml"
    roles_file.write_text((TESTS / "roles.toml").read_text().replace(
        "[roles.app]", '[roles.web.host]\nusers = ["root"]\n\n[roles.app]', 1))
    h = SimpleNamespace(settings=Settings(real_aws=True, host_user="admin", host_key=tmp_path / "k",
                                          bastion="admin@203.0.113.10"),
                        catalog=SimpleNamespace(groups_dir=TESTS / "groups"), run=SimpleNamespace(path=tmp_path))
    with pytest.raises(TransportError, match=r"^hosts of g: instance\(s\) i-0w have no private address"):
        group_hosts.reach_group_hosts(h, "g", [instance("i-0w", "web", None)], {}, load_roles(roles_file))
    assert not (tmp_path / "hosts").exists()


# -- the host suite on an endpoint that is not the embedded sandbox ------------------------------------


#: The inner session's conftest: the one instance of the group gets an embedded host carrying its private IP (a
#: stand-in for the real instance), and its link address is given as --bastion, as a user would name theirs.
STAND_IN_CONFTEST = '''
import immutable_infra.group_hosts as group_hosts
from immutable_infra.embedded_hosts import build_rootfs, start_host

KEY_DIR = {key_dir!r}
STARTED = []
_why_not_reached = group_hosts.why_not_reached


def why_not_reached(settings, group, instances):
    if not STARTED:
        (running,) = [i for i in instances if i.get("State", {{}}).get("Name") == "running"]
        STARTED.append(start_host(running["InstanceId"], running["PrivateIpAddress"], build_rootfs(), KEY_DIR))
        settings.bastion = "root@" + STARTED[0].link_ip
    return _why_not_reached(settings, group, instances)


group_hosts.why_not_reached = why_not_reached


def pytest_unconfigure(config):
    for handle in STARTED:
        handle.stop()
'''


def _endpoint_project(root: Path, conftest: str = "") -> Path:
    """chaos-lab with one instance (Role microservice, the seed's host contract and playbook) and the suites."""
    fixtures = TESTS.parent / "fixtures"
    shutil.copytree(TESTS / "groups" / "chaos-lab", root / "groups" / "chaos-lab")
    main = root / "groups" / "chaos-lab" / "main.tf"
    main.write_text(main.read_text().replace("count                  = 2", "count                  = 1", 1))
    seed = (fixtures / "roles.toml").read_text()
    contract = "[roles.microservice.host]" + seed.split("[roles.microservice.host]", 1)[1].split("\n[roles.", 1)[0]
    # off the embedded sandbox "baked" is read from the Packer manifest of the instance's AMI; chaos-lab runs the
    # endpoint's stock image, which no Packer catalog holds (that case is an error: tests/test_host_checks.py)
    assert 'python3 = "baked"' in contract
    contract = contract.replace('python3 = "baked"', 'python3 = "*"')
    (root / "roles.toml").write_text((TESTS / "roles.toml").read_text().rstrip("\n") + "\n\n" + contract.strip() + "\n")
    (root / "playbooks").mkdir()
    shutil.copy(fixtures / "playbooks" / "microservice.yml", root / "playbooks" / "microservice.yml")
    shutil.copytree(TESTS.parent / "suites", root / "suites")
    (root / "pytest.ini").write_text("[pytest]\n")  # the project is the rootdir: --groups-dir groups is read there
    if conftest:
        (root / "conftest.py").write_text(conftest)
    return root


def _session(project: Path, files: list[str], *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    import xml.etree.ElementTree as ET

    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(project / "home")}
    for name in ("HOST_USER", "HOST_KEY", "BASTION", "BASTION_ROLE"):
        env.pop(f"IMMUTABLE_INFRA_{name}", None)
    junit = project / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--groups-dir", "groups",
                           "--group", "chaos-lab", "--reports-dir", str(project / "reports"), f"--junitxml={junit}",
                           *extra, *files], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kind, message = "passed", ""
            for child in case:
                if child.tag in ("skipped", "failure", "error"):
                    kind, message = child.tag, child.get("message") or (child.text or "").strip()
            outcomes[case.get("name")] = (kind, message)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc, outcomes


def test_on_another_endpoint_without_user_and_key_the_host_suite_skips_naming_the_options(moto_server, tmp_path):
    project = _endpoint_project(tmp_path)
    (project / "test_own_hosts.py").write_text("def test_own_hosts(infra_hosts):\n    assert infra_hosts.contracts\n")
    proc, outcomes = _session(project, ["test_own_hosts.py"], "--aws-endpoint", moto_server.url)
    kind, message = outcomes["test_own_hosts[chaos-lab]"]
    assert kind == "skipped", (kind, message, proc.stdout[-2000:])
    assert f"hosts: on {moto_server.url} the instances' hosts are reached over ssh through the group's bastion" in message
    assert "--host-user USER" in message and "--host-key FILE" in message and "--bastion USER@HOST[:PORT]" in message
    assert not list((project / "home").glob("runs/*/hosts"))  # nothing written, nothing reached


def test_on_another_endpoint_the_host_suite_reaches_the_instance_through_the_bastion(moto_server, tmp_path):
    """The whole path: apply on an endpoint that is not the embedded sandbox, the instance reached through --bastion
    on its private IP with --host-user/--host-key, the role's playbook applied through the Role-tag inventory, the
    contract read and passed; nothing left running."""
    if runtime_available():
        pytest.skip(runtime_available())
    build_rootfs("debian12-base")  # cached: not part of the session
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id_ed25519")], check=True)
    project = _endpoint_project(tmp_path / "project", STAND_IN_CONFTEST.format(key_dir=str(keys)))
    proc, outcomes = _session(project, ["suites/test_hosts.py"], "--aws-endpoint", moto_server.url,
                              "--host-user", "root", "--host-key", str(keys / "id_ed25519"))
    assert outcomes.get("test_hosts_match_their_role_contract[chaos-lab]", ("missing",))[0] == "passed", proc.stdout[-3000:]
    # the host faults are not injected on hosts reached over ssh: skipped with the reason, in the summary
    assert "chaos-lab checks: chaos skip, hosts pass" in proc.stdout
    assert ("host faults: injected only on embedded hosts in this version; chaos-lab's hosts are instances reached "
            "over ssh") in proc.stdout
    facts = json.loads((project / "reports" / "summary.json").read_text())["groups"]["chaos-lab"]["checks"]["hosts"]
    assert facts["verdict"] == "pass" and facts["findings"] == []
    assert facts["facts"]["hosts"] == 1 and len(facts["facts"]["checked"]) == 1
    assert set(facts["facts"]["playbook_seconds"]) == {"microservice"}
    (written,) = list((project / "home").glob("runs/*/hosts/chaos-lab"))
    (iid,) = facts["facts"]["checked"]
    inventory = (written / "inventory.yml").read_text()
    assert f"microservice:\n      hosts:\n        {iid}:" in inventory and f"ProxyJump={BASTION_ALIAS}" in inventory
    assert f"Host {iid} 10.92.1." in (written / "ssh_config").read_text()
    assert "--limit microservice" in (written / "ansible-microservice" / "microservice.log").read_text()
    assert leftovers(only=[d.name for d in keys.glob("iih-*")]) == [] and list(keys.glob("iih-*"))


def test_dev_box_url_resolves_the_sessions_setting_into_the_run_folder(tmp_path, monkeypatch):
    def harness(url, **sources) -> SimpleNamespace:
        return SimpleNamespace(settings=Settings(dev_box=url, sources=sources), run=SimpleNamespace(path=tmp_path))

    assert transports.dev_box_url(harness(None)) is None
    assert transports.dev_box_url(harness("ssh://vagrant@127.0.0.1:2222")) == "ssh://vagrant@127.0.0.1:2222"
    _fake_vagrant(tmp_path / "bin", "Host default\n  HostName 127.0.0.1\n  Port 2222\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    config = tmp_path / "dev-box" / "dev-box-default.ssh-config"
    assert transports.dev_box_url(harness("vagrant://default")) == f"ssh://default?ssh_config={config}"
    with pytest.raises(TransportError, match=r"^ini key immutable_infra_dev_box vagrant://box2: `vagrant ssh-config box2`"):
        transports.dev_box_url(harness("vagrant://box2", dev_box="ini key immutable_infra_dev_box"))


def test_an_xdist_worker_of_an_embedded_session_builds_embedded_hosts_and_reaches_none_over_ssh(tmp_path):
    """A worker's endpoint is the controller's embedded moto; with --host-user/--host-key given it must not take
    that for AWS and ssh anywhere: it builds the group's embedded hosts, as the controller does without -n."""
    given = Settings(aws_endpoint="http://127.0.0.1:5000", host_user="root", host_key=Path("/k"))
    assert group_hosts.why_not_at_all(given, runtime=lambda: None, embedded=True) is None
    assert group_hosts.why_not_at_all(Settings(aws_endpoint="http://127.0.0.1:5000"), runtime=lambda: None,
                                      embedded=True) is None  # no user or key needed for embedded hosts
    assert "--host-user" in group_hosts.why_not_at_all(Settings(aws_endpoint="http://127.0.0.1:5000"))
    if runtime_available():
        pytest.skip(runtime_available())
    build_rootfs("debian12-base")  # cached: not part of the session
    key = tmp_path / "id_ed25519"
    key.write_text("not used\n")
    project = _endpoint_project(tmp_path / "project")
    proc, outcomes = _session(project, ["suites/test_hosts.py"], "-n", "1", "--host-user", "root",
                              "--host-key", str(key))
    assert outcomes.get("test_hosts_match_their_role_contract[chaos-lab]", ("missing",))[0] == "passed", proc.stdout[-3000:]
    facts = json.loads((project / "reports" / "summary.json").read_text())["groups"]["chaos-lab"]["checks"]["hosts"]
    assert facts["verdict"] == "pass" and len(facts["facts"]["checked"]) == 1
    (written,) = list((project / "home").glob("runs/*/hosts/chaos-lab"))
    assert not (written / "inventory.yml").exists() and "ProxyJump" not in (written / "ssh_config").read_text()
    assert leftovers(only=[d.name for d in written.glob("iih-*")]) == [] and list(written.glob("iih-*"))


def test_a_discovered_bastion_instance_is_reached_on_its_public_address_and_the_others_through_it(host, tmp_path):
    """No --bastion: the group's Role=bastion instance with a public address (here the host's link address) is the
    jump; it is itself reached directly, the web instance through it."""
    testinfra = pytest.importorskip("testinfra")
    from immutable_infra.roles import load_roles

    iid = str(host.instance_id)
    group = [*described(host), instance("i-0bastion0000001", "bastion", "10.21.0.5", host.link_ip)]
    settings = Settings(real_aws=True, host_user="root", host_key=host.key.private_key)
    assert group_hosts.why_not_reached(settings, "transports", group) is None
    bastion = transports.bastion_for(settings, group)
    assert bastion is not None and bastion.instance_id == "i-0bastion0000001" and bastion.host == host.link_ip
    reached = transports.reach_hosts(tmp_path, group, load_roles(TESTS / "roles.toml"), bastion, "root",
                                     host.key.private_key, None, group="transports")  # None: an audit, nothing applied
    assert reached.playbooks == {}
    assert reached.unconfigured == {"i-0bastion0000001": "role 'bastion' is not in the roles catalog"}
    config = reached.transport.ssh_config.read_text()
    assert f"Host i-0bastion0000001 {host.link_ip}\n" in config and f"Host {iid} {host.private_ip}\n" in config
    seen = {}
    for name, remote in reached.hosts.items():
        on_host = testinfra.get_host(remote.url)
        seen[name] = on_host.check_output("hostname")
    assert seen == {iid: iid, "i-0bastion0000001": iid}  # one host plays both parts here
