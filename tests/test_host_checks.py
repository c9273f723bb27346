"""Host checks: the [roles.NAME.host] contract (config.py), HostFacts and read_host_facts (hosts.py), checks/hosts.py.

The check runs on recorded facts (tests/data/hosts/*.json, the shape of
HostFacts.to_dict: a healthy Consul server and one fault per file); the
reader runs for real through testinfra on this machine (local://) and
against a refused ssh port.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from immutable_infra.checks import facts_missing, find_host_findings
from immutable_infra.checks.hosts import CHECK, HostNotChecked, assert_no_host_findings, is_loopback
from immutable_infra.config import HostContract
from immutable_infra.errors import ToolError
from immutable_infra.hosts import HostFacts, HostUnreachable, live_package_parity, parse_tcp_socket, read_host_facts
from immutable_infra.images import AllowEntry, AllowList
from immutable_infra.roles import RolesError, load_roles

DATA = Path(__file__).parent / "data" / "hosts"
README = Path(__file__).parent.parent / "README.md"
GROUP, IID, ROLE = "ops-sg", "i-0a1b2c3d4e5f60718", "consul-server"
CONFIG = "/etc/consul.d/consul.hcl"

CATALOG = """
[roles.consul-server]
kinds = ["ops-center"]
playbook = "consul-server.yml"
tier = "private"

[roles.consul-server.host]
packages = { consul = "1.16.1-1", ca-certificates = "*" }
services = ["consul"]
ports = [8300, 8500]
users = ["consul"]

[[roles.consul-server.host.files]]
path = "/etc/consul.d/consul.hcl"
mode = "640"
owner = "consul"
contains = ["server = true", "retry_join"]
"""


# The same role, allowing no other TCP port beyond loopback than the four it names.
EXCLUSIVE = CATALOG.replace("ports = [8300, 8500]\n", "ports = [22, 8300, 8301, 8500]\nports_exclusive = true\n")


def _contract(tmp_path: Path, catalog: str) -> HostContract:
    path = tmp_path / "roles.toml"
    path.write_text(catalog)
    host = load_roles(path)[ROLE].host
    assert host is not None
    return host


@pytest.fixture
def contract(tmp_path: Path) -> HostContract:
    return _contract(tmp_path, CATALOG)


@pytest.fixture
def exclusive(tmp_path: Path) -> HostContract:
    return _contract(tmp_path, EXCLUSIVE)


def recorded(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def ids(findings) -> list[str]:
    return sorted(f.id for f in findings)


# --------------------------------------------------------------------------- the contract


def test_contract_from_roles_toml(contract):
    assert contract.packages == {"consul": "1.16.1-1", "ca-certificates": "*"}
    assert contract.services == ["consul"] and contract.ports == [8300, 8500] and contract.users == ["consul"]
    (config,) = contract.files
    assert (config.path, config.mode, config.owner) == (CONFIG, "0640", "consul")  # "640" normalised
    assert config.contains == ["server = true", "retry_join"]
    assert contract.ports_exclusive is False  # the default: other ports may listen


def test_exclusive_ports_from_roles_toml(exclusive):
    assert exclusive.ports == [22, 8300, 8301, 8500] and exclusive.ports_exclusive is True


def test_role_without_host_table_has_no_contract(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text('[roles.web]\nkinds = ["application"]\nplaybook = "web.yml"\ntier = "public"\n')
    assert load_roles(path)["web"].host is None


BASE = '[roles.consul]\nkinds = ["ops-center"]\nplaybook = "c.yml"\ntier = "private"\n'


@pytest.mark.parametrize("toml, message", [
    ('[roles.consul.host]\nservice = ["consul"]\n',
     "unknown key 'service' in [roles.consul.host]; did you mean 'services'?"),
    ('[roles.consul.host]\nports = [0]\n',
     "[roles.consul.host] ports must be a list of port numbers 1-65535, e.g. ports = [8500]; got [0]"),
    ('[roles.consul.host]\npackages = { consul = 1 }\n',
     "[roles.consul.host] packages must map package names to versions, e.g. packages = { nginx = \"1.22.1-9\" } "
     "(or \"baked\" for the image's version, \"*\" for any); got {'consul': 1}"),
    ('[roles.consul.host]\nusers = "consul"\n',
     "[roles.consul.host] users must be a list of names, e.g. users = [\"consul\"]; got 'consul'"),
    ('[[roles.consul.host.files]]\npath = "etc/consul.hcl"\n',
     "[[roles.consul.host.files]] entry 1 path = 'etc/consul.hcl' is not an absolute path; "
     "write it like \"/etc/consul.d/consul.hcl\""),
    ('[[roles.consul.host.files]]\npath = "/a"\n[[roles.consul.host.files]]\npath = "/b"\nmode = 644\n',
     "[[roles.consul.host.files]] entry 2 mode = 644 is not an octal mode string; write it quoted, like mode = \"0644\""),
    ('[[roles.consul.host.files]]\npath = "/a"\nmode = "0999"\n',
     "[[roles.consul.host.files]] entry 1 mode = '0999' is not an octal mode string"),
    ('[[roles.consul.host.files]]\npath = "/a"\nmod = "0644"\n',
     "unknown key 'mod' in [[roles.consul.host.files]] entry 1; did you mean 'mode'?"),
    ('[[roles.consul.host.files]]\nmode = "0644"\n',
     "[[roles.consul.host.files]] entry 1 lacks path; add it (absolute path of the file"),
    ('[[roles.consul.host.files]]\npath = "/a"\ncontains = "retry_join"\n',
     "[[roles.consul.host.files]] entry 1 contains must be a list of non-empty strings"),
    ('[roles.consul.host]\nports_exclusive = true\n',
     "[roles.consul.host] ports_exclusive = true needs ports: list every TCP port the role listens on beyond "
     "loopback, e.g. ports = [22, 8500], or remove ports_exclusive"),
    ('[roles.consul.host]\nports_exclusive = true\nports = []\n',
     "[roles.consul.host] ports_exclusive = true needs ports: "),
    ('[roles.consul.host]\nports_exclusive = "yes"\nports = [22]\n',
     "[roles.consul.host] ports_exclusive = 'yes': input should be a valid boolean"),
    ('[roles.consul.host]\nports_exclusive = true\nports = [0]\n',  # the bad list is the problem, not exclusivity
     "[roles.consul.host] ports must be a list of port numbers 1-65535, e.g. ports = [8500]; got [0]"),
])
def test_bad_contract_is_one_line_naming_file_key_and_fix(tmp_path, toml, message):
    path = tmp_path / "roles.toml"
    path.write_text(BASE + toml)
    with pytest.raises(RolesError) as info:
        load_roles(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {message}")


def test_host_that_is_not_a_table(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text(BASE + "host = 5\n")
    with pytest.raises(RolesError, match=re.escape(
            "roles.toml: [roles.consul] host must be a table: write it as a [roles.<role>.host] section; got 5")):
        load_roles(path)


def test_readme_example_contract_loads(tmp_path):
    """The example of README's "Host checks" section is a valid roles.toml."""
    section = README.read_text().split("## Host checks", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.S)[1]
    path = tmp_path / "roles.toml"
    path.write_text(example)
    (role,) = load_roles(path).values()
    assert role.host is not None and role.host.files and role.host.packages and role.host.ports_exclusive


# --------------------------------------------------------------------------- the check, on recorded facts


def test_healthy_host_passes(contract):
    facts = recorded("healthy")
    assert facts_missing(contract, facts) == []
    assert find_host_findings(GROUP, IID, ROLE, contract, facts) == []
    assert_no_host_findings(GROUP, IID, ROLE, contract, facts)


def test_extra_listening_port_is_no_finding_without_ports_exclusive(contract):
    """Without ports_exclusive the contract names ports that must listen and forbids none."""
    assert recorded("port_extra")["listening"]["2375"] == ["0.0.0.0"]
    assert find_host_findings(GROUP, IID, ROLE, contract, recorded("port_extra")) == []


def test_healthy_host_passes_with_ports_exclusive(exclusive):
    """Its loopback-only listener (25 on 127.0.0.1 and ::1) is not unexpected."""
    facts = recorded("healthy")
    assert facts["listening"]["25"] == ["127.0.0.1", "::1"] and 25 not in exclusive.ports
    assert find_host_findings(GROUP, IID, ROLE, exclusive, facts) == []


def test_port_opened_on_a_host_fails_with_ports_exclusive(exclusive):
    """The chaos fault "a port opened on a host": 2375 (a Docker API) on 0.0.0.0, named by no role port."""
    (finding,) = find_host_findings(GROUP, IID, ROLE, exclusive, recorded("port_extra"))
    assert finding.id == f"{CHECK}:{GROUP}:{IID}:port-unexpected:2375"
    assert finding.expected == "only TCP ports [22, 8300, 8301, 8500] listening beyond loopback"
    assert finding.found == "2375 listening on 0.0.0.0"
    assert finding.detail == {"role": ROLE, "host": "ssh://admin@10.21.1.10", "kind": "port-unexpected:2375",
                              "port": 2375, "addresses": ["0.0.0.0"]}
    with pytest.raises(pytest.fail.Exception, match="2375 listening on 0.0.0.0"):
        assert_no_host_findings(GROUP, IID, ROLE, exclusive, recorded("port_extra"))


@pytest.mark.parametrize("addresses, found", [
    (["127.0.0.1"], None),
    (["127.0.0.1", "::1"], None),
    (["127.0.0.53%lo"], None),  # systemd-resolved, as ss shows it
    (["127.1.2.3", "::ffff:127.0.0.1"], None),
    (["::"], "2375 listening on ::"),
    (["127.0.0.1", "10.21.1.10"], "2375 listening on 10.21.1.10"),  # only the reachable address is shown
    (["0.0.0.0", "::"], "2375 listening on 0.0.0.0, ::"),
    (["*"], "2375 listening on *"),
    (["fe80::1%eth0"], "2375 listening on fe80::1%eth0"),
])
def test_only_listeners_beyond_loopback_are_unexpected(exclusive, addresses, found):
    facts = recorded("healthy")
    facts["listening"]["2375"] = addresses
    findings = find_host_findings(GROUP, IID, ROLE, exclusive, facts)
    assert [f.found for f in findings] == ([] if found is None else [found])


@pytest.mark.parametrize("record", sorted(p.stem for p in DATA.glob("*.json") if p.stem != "port_extra"))
def test_ports_exclusive_finds_no_unexpected_port_in_the_other_faults(contract, exclusive, record):
    """Every other recorded fault keeps its findings with ports_exclusive and gains no port-unexpected one.

    (The exclusive contract also requires 22 and 8301, so service_stopped, 8301 down too, adds that port.)
    """
    plain = ids(find_host_findings(GROUP, IID, ROLE, contract, recorded(record)))
    strict = ids(find_host_findings(GROUP, IID, ROLE, exclusive, recorded(record)))
    assert set(plain) <= set(strict) and not any(":port-unexpected:" in i for i in strict)
    assert set(strict) - set(plain) == (
        {f"{CHECK}:{GROUP}:{IID}:port-not-listening:8301"} if record == "service_stopped" else set())


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.255.0.9", True), ("127.0.0.53%lo", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("*", False), ("", False), ("10.21.1.10", False), ("fe80::1%eth0", False),
    ("::ffff:10.0.0.1", False), ("localhost", False),
])
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


@pytest.mark.parametrize("record, expected_ids, expected, found", [
    ("package_upgraded", ["package-version/consul"], "package consul 1.16.1-1", "consul 1.17.0-1"),
    ("package_removed", ["package-missing/consul"], "package consul installed (1.16.1-1)", "consul not installed"),
    ("service_stopped", ["port-not-listening:8300", "port-not-listening:8500", "service-not-running:consul"],
     "service consul running", "consul not running"),
    ("service_disabled", ["service-not-enabled:consul"], "service consul enabled", "consul not enabled"),
    ("config_edited", [f"file-content/{CONFIG}"], f"{CONFIG} containing 'server = true', 'retry_join'",
     f"{CONFIG} lacks 'retry_join'"),
    ("config_permissions", [f"file-mode/{CONFIG}", f"file-owner/{CONFIG}"], f"{CONFIG} mode 0640", "mode 0666"),
    ("config_missing", [f"file-missing/{CONFIG}"], f"{CONFIG} present", f"{CONFIG} missing"),
    ("port_missing", ["port-not-listening:8300"], "TCP port 8300 listening",
     "nothing listening on 8300 (listening: 22, 25, 8301, 8500)"),
    ("user_missing", ["user-missing:consul"], "user consul present", "no user consul"),
])
def test_each_fault_fails_naming_the_instance(contract, record, expected_ids, expected, found):
    findings = find_host_findings(GROUP, IID, ROLE, contract, recorded(record))
    assert ids(findings) == [f"{CHECK}:{GROUP}:{IID}:{kind}" for kind in sorted(expected_ids)]
    assert all(f.check == "hosts" and f.aws_id == IID and f.address == "" for f in findings)
    assert all(f.detail["role"] == ROLE and f.detail["host"] == "ssh://admin@10.21.1.10" for f in findings)
    assert any(f.expected == expected and f.found == found for f in findings), [str(f) for f in findings]
    assert all(f"{GROUP} - ({IID}): expected" in str(f) for f in findings)
    with pytest.raises(pytest.fail.Exception, match=f"host {IID} \\(role {ROLE}\\) of group {GROUP}"):
        assert_no_host_findings(GROUP, IID, ROLE, contract, recorded(record))


def test_finding_id_stays_while_the_package_moves_on(contract):
    """Upgraded in place to another version, and again: the same fault, the same id, the version in the detail."""
    first = find_host_findings(GROUP, IID, ROLE, contract, recorded("package_upgraded"))
    later = recorded("package_upgraded")
    later["packages"]["consul"] = "1.18.2-1"
    again = find_host_findings(GROUP, IID, ROLE, contract, later)
    assert ids(first) == ids(again) and again[0].detail["version"] == "1.18.2-1"


def test_terraform_address_when_given(contract):
    (finding,) = find_host_findings(GROUP, IID, ROLE, contract, recorded("user_missing"),
                                    address="module.consul.aws_instance.server[0]")
    assert finding.address == "module.consul.aws_instance.server[0]"
    assert finding.id == f"hosts:{GROUP}:module.consul.aws_instance.server[0]:user-missing:consul"


def test_any_version_accepts_every_version_but_not_absence(contract):
    facts = recorded("healthy")
    facts["packages"]["ca-certificates"] = "20990101"
    assert find_host_findings(GROUP, IID, ROLE, contract, facts) == []
    facts["packages"]["ca-certificates"] = None
    (finding,) = find_host_findings(GROUP, IID, ROLE, contract, facts)
    assert (finding.expected, finding.found) == ("package ca-certificates installed (any version)",
                                                 "ca-certificates not installed")


@pytest.mark.parametrize("change, lacking", [
    (lambda f: f["packages"].pop("consul"), "package consul"),
    (lambda f: f["services"].pop("consul"), "service consul"),
    (lambda f: f["services"]["consul"].pop("running"), "service consul"),
    (lambda f: f.update(listening=None), "listening ports"),
    (lambda f: f["files"].pop(CONFIG), f"file {CONFIG}"),
    (lambda f: f["files"][CONFIG].update(content=None), f"file {CONFIG} content"),
    (lambda f: f["files"][CONFIG].update(mode=None), f"file {CONFIG} mode"),
    (lambda f: f["users"].pop("consul"), "user consul"),
])
def test_facts_that_did_not_look_never_pass(contract, change, lacking):
    facts = recorded("healthy")
    change(facts)
    assert facts_missing(contract, facts) == [lacking]
    with pytest.raises(HostNotChecked) as info:
        find_host_findings(GROUP, IID, ROLE, contract, facts)
    assert isinstance(info.value, ToolError)
    assert str(info.value) == (f"{GROUP} {IID} (role {ROLE}, ssh://admin@10.21.1.10): host facts lack {lacking}; "
                               "read them with read_host_facts(url, contract) for this role's contract")


def test_exclusive_contract_needs_the_listening_sockets(exclusive):
    facts = recorded("healthy")
    facts["listening"] = None
    assert facts_missing(exclusive, facts) == ["listening ports"]
    # a contract built past validation, exclusive with no ports, still needs them (and allows no listener)
    bare = HostContract.model_construct(ports_exclusive=True)
    assert facts_missing(bare, facts) == ["listening ports"]
    assert ids(find_host_findings(GROUP, IID, ROLE, bare, recorded("healthy"))) == [
        f"{CHECK}:{GROUP}:{IID}:port-unexpected:{port}" for port in (22, 8300, 8301, 8500)]


def test_missing_file_needs_no_mode_or_content(contract):
    assert facts_missing(contract, recorded("config_missing")) == []


def test_host_facts_round_trip():
    facts = HostFacts.from_dict(recorded("healthy"))
    assert facts.listening == {22: ("0.0.0.0", "::"), 25: ("127.0.0.1", "::1"), 8300: ("10.21.1.10",),
                               8301: ("10.21.1.10",), 8500: ("0.0.0.0",)}
    assert facts.to_dict() == recorded("healthy")
    assert HostFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    unread = HostFacts("local://")
    assert HostFacts.from_dict(unread.to_dict()) == unread and unread.listening is None
    with pytest.raises(ValueError, match="host facts need a 'url'"):
        HostFacts.from_dict({"packages": {}})
    with pytest.raises(ValueError, match=r"unknown keys \['port'\]"):
        HostFacts.from_dict({"url": "local://", "port": [22]})


@pytest.mark.parametrize("listening, message", [
    ([22, 8500], r"listening must map each TCP port to the addresses it listens on, .* got \[22, 8500\] "
                 r"\(a record without addresses: read it again with read_host_facts\)"),
    ({"ssh": ["0.0.0.0"]}, r"listening 'ssh': \['0.0.0.0'\] is not a TCP port with a non-empty list of addresses"),
    ({"22": []}, r"listening '22': \[\] is not a TCP port"),
    ({"22": "0.0.0.0"}, r"listening '22': '0.0.0.0' is not a TCP port"),
])
def test_recorded_listening_without_addresses_is_refused(listening, message):
    with pytest.raises(ValueError, match=r"^host facts of local://: " + message):
        HostFacts.from_dict({"url": "local://", "listening": listening})


def test_listening_from_a_python_dict_with_int_ports():
    facts = HostFacts.from_dict({"url": "local://", "listening": {8500: ["::", "0.0.0.0", "::"]}})
    assert facts.listening == {8500: ("0.0.0.0", "::")}
    assert facts.to_dict()["listening"] == {"8500": ["0.0.0.0", "::"]}


@pytest.mark.parametrize("socket_url, parsed", [
    ("tcp://0.0.0.0:22", ("0.0.0.0", 22)),
    ("tcp://127.0.0.1:25", ("127.0.0.1", 25)),
    ("tcp://:::22", ("::", 22)),
    ("tcp://[::]:22", ("::", 22)),
    ("tcp://::1:631", ("::1", 631)),
    ("tcp://[::1]:631", ("::1", 631)),
    ("tcp://::ffff:127.0.0.1:8080", ("::ffff:127.0.0.1", 8080)),
    ("tcp://fe80::1%eth0:22", ("fe80::1%eth0", 22)),
    ("tcp://127.0.0.53%lo:53", ("127.0.0.53%lo", 53)),
    ("tcp://10.21.1.10:8300", ("10.21.1.10", 8300)),
    ("udp://0.0.0.0:53", None),
    ("udp://:::53", None),
    ("unix:///run/systemd/private", None),
    ("unix:///tmp/odd:name.sock", None),
])
def test_parse_tcp_socket(socket_url, parsed):
    assert parse_tcp_socket(socket_url) == parsed


@pytest.mark.parametrize("socket_url", ["tcp://22", "tcp://0.0.0.0:ssh", "tcp://:22", "tcp://0.0.0.0:", "tcp://[::]:0"])
def test_unparseable_tcp_socket_is_an_error(socket_url):
    with pytest.raises(ValueError, match=re.escape(f"cannot parse listening socket {socket_url!r}")):
        parse_tcp_socket(socket_url)


# --------------------------------------------------------------------------- reading a real host


@pytest.fixture
def listening_port():
    """A TCP port this test listens on (127.0.0.1), and one nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1], free


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="reads a Debian package on this machine (no dpkg-query)")
def test_read_host_facts_on_this_machine(listening_port):
    port, free = listening_port
    bash = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "bash"], capture_output=True, text=True,
                          check=True).stdout
    contract = HostContract.model_validate({
        "packages": {"bash": bash, "no-such-package-here": "*"},
        "ports": [port, free],
        "files": [{"path": "/etc/passwd", "mode": "0644", "owner": "root", "contains": ["root:x:0:0:"]},
                  {"path": "/no/such/file"}],
        "users": ["root", "no-such-user-here"],
    })
    facts = read_host_facts("local://", contract)
    assert facts.packages == {"bash": bash, "no-such-package-here": None}
    assert facts.listening[port] == ("127.0.0.1",) and free not in facts.listening
    assert facts.files["/etc/passwd"]["mode"] == "0644" and facts.files["/etc/passwd"]["owner"] == "root"
    assert facts.files["/no/such/file"] == {"exists": False, "mode": None, "owner": None, "content": None}
    assert facts.users == {"root": True, "no-such-user-here": False}
    assert facts.services == {}  # the contract names none: none read
    findings = find_host_findings("local", "localhost", "test", contract, facts)
    assert ids(findings) == ["hosts:local:localhost:file-missing//no/such/file",
                             "hosts:local:localhost:package-missing/no-such-package-here",
                             f"hosts:local:localhost:port-not-listening:{free}",
                             "hosts:local:localhost:user-missing:no-such-user-here"]


@pytest.mark.skipif(not (shutil.which("ss") or shutil.which("netstat")), reason="no ss or netstat on this machine")
def test_read_listening_addresses_on_this_machine(listening_port):
    """A real read with ports_exclusive: the test's 127.0.0.1 listener is not unexpected, its 0.0.0.0 one is."""
    loopback, _ = listening_port
    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        exposed = wildcard.getsockname()[1]
        contract = HostContract.model_validate({"ports": [loopback], "ports_exclusive": True})
        facts = read_host_facts("local://", contract)
    assert facts.listening[loopback] == ("127.0.0.1",) and facts.listening[exposed] == ("0.0.0.0",)
    findings = {f.detail["kind"]: f for f in find_host_findings("local", "localhost", "test", contract, facts)}
    assert f"port-unexpected:{exposed}" in findings and f"port-unexpected:{loopback}" not in findings
    assert findings[f"port-unexpected:{exposed}"].found == f"{exposed} listening on 0.0.0.0"
    assert findings[f"port-unexpected:{exposed}"].expected == f"only TCP ports [{loopback}] listening beyond loopback"
    # whatever else listens on this machine: only its listeners beyond loopback are findings
    assert all(any(not is_loopback(a) for a in facts.listening[f.detail["port"]]) for f in findings.values())


@pytest.mark.skipif(not Path("/run/systemd/system").is_dir(),
                    reason="systemd is not running on this machine (no /run/systemd/system): no service to read")
def test_read_service_facts_with_systemd():
    contract = HostContract.model_validate({"services": ["systemd-journald"]})
    facts = read_host_facts("local://", contract)
    assert facts.services["systemd-journald"]["running"] is True


@pytest.mark.skipif(not shutil.which("ssh"), reason="no ssh client on this machine")
def test_refused_ssh_is_an_error_not_findings():
    contract = HostContract.model_validate({"users": ["root"], "ports": [22]})
    with pytest.raises(HostUnreachable) as info:
        read_host_facts("ssh://nobody@127.0.0.1:1", contract, timeout=2, ssh_extra_args="-o BatchMode=yes")
    assert isinstance(info.value, ToolError)
    assert str(info.value).startswith("ssh://nobody@127.0.0.1:1: cannot reach the host: ")
    assert "refused" in str(info.value)


def test_missing_transport_command_is_an_error(tmp_path, monkeypatch):
    """The ssh backend's own command missing (an empty PATH): the host cannot be reached, whatever the contract."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostUnreachable, match=r"^ssh://admin@10\.0\.0\.1: cannot reach the host: `true` exited 127"):
        read_host_facts("ssh://admin@10.0.0.1", HostContract(), timeout=1)


# --------------------------------------------------------------------------- live parity


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="lists Debian packages on this machine (no dpkg-query)")
def test_live_package_parity_against_a_manifest(tmp_path):
    from immutable_infra.hosts import TestinfraPackages

    live = TestinfraPackages("local://").packages()
    assert "bash" in live and "coreutils" in live
    image = dict(live)
    del image["bash"]  # on the dev box only: allowed below
    image["coreutils"] = ("0.0-fake", image["coreutils"][1])  # another version in the image
    image["only-in-the-image"] = ("1.0", "amd64")
    manifest = tmp_path / "debian11-base.packages.txt"
    manifest.write_text("".join(f"{name.split(':')[0]}\t{version}\t{arch}\n"
                                for name, (version, arch) in sorted(image.items())))
    allow = AllowList((AllowEntry("package", "bash", "vagrant", "the dev box's login shell"),))
    parity = live_package_parity("local://", manifest, allow)
    assert parity.host_source == "live host local://" and parity.manifest_source == f"manifest {manifest}"
    assert [(d.name, d.change, d.allowed) for d in parity.diffs] == [
        ("bash", "removed", True), ("coreutils", "changed", False), ("only-in-the-image", "added", False)]
    assert [d.name for d in parity.violations] == ["coreutils", "only-in-the-image"]


@pytest.mark.skipif(not shutil.which("ssh"), reason="no ssh client on this machine")
def test_live_parity_with_an_unreachable_host_is_an_error(tmp_path):
    from immutable_infra.hosts import HostPackagesError

    manifest = tmp_path / "dev-box.packages.txt"
    manifest.write_text("bash\t5.2.15-2+b8\tamd64\n")
    with pytest.raises(HostPackagesError) as info:
        live_package_parity("ssh://nobody@127.0.0.1:1", manifest, timeout=2)
    assert isinstance(info.value, ToolError)
    assert str(info.value).startswith("ssh://nobody@127.0.0.1:1: cannot list packages: ")
    assert "refused" in str(info.value)


# --------------------------------------------------------------------------- "baked": the image's version


BAKED = CATALOG.replace('ca-certificates = "*"', 'ca-certificates = "baked"')


@pytest.fixture
def baked_contract(tmp_path: Path) -> HostContract:
    return _contract(tmp_path, BAKED)


def test_baked_pin_holds_the_host_to_its_images_version(baked_contract):
    facts = recorded("healthy")
    image = {"ca-certificates": facts["packages"]["ca-certificates"], "bash": "5.2.15-2+b2"}
    assert find_host_findings(GROUP, IID, ROLE, baked_contract, facts, baked=image) == []
    facts["packages"]["ca-certificates"] = image["ca-certificates"] + "+chaos1"  # upgraded in place on the host
    (finding,) = find_host_findings(GROUP, IID, ROLE, baked_contract, facts, baked=image)
    assert finding.id == f"{CHECK}:{GROUP}:{IID}:package-version/ca-certificates"
    assert finding.expected == f"package ca-certificates {image['ca-certificates']}, as baked in the image"
    assert finding.found == f"ca-certificates {image['ca-certificates']}+chaos1"
    facts["packages"]["ca-certificates"] = None
    (finding,) = find_host_findings(GROUP, IID, ROLE, baked_contract, facts, baked=image)
    assert finding.detail["kind"] == "package-missing"


@pytest.mark.parametrize("baked, why", [
    (None, "no record of the image's packages"),
    ({"bash": "5.2.15-2+b2"}, "the image's package list has no such package"),
])
def test_baked_pin_without_the_images_version_is_not_checked(baked_contract, baked, why):
    facts = recorded("healthy")
    assert facts_missing(baked_contract, facts, baked) == [f"the version of ca-certificates the image was baked with ({why})"]
    with pytest.raises(HostNotChecked, match=r'a package pinned "baked" must be in the image \(else pin a version or "\*"\)'):
        find_host_findings(GROUP, IID, ROLE, baked_contract, facts, baked=baked)


def test_image_packages_reads_what_the_image_has_installed(tmp_path):
    from immutable_infra.embedded_hosts import EmbeddedHostError, image_packages

    status = tmp_path / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nDescription: shell\n multi\n\n"
                      "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
                      "Package: python3\nStatus: install ok installed\nPriority: optional\nVersion: 3.11.2-1+b1\n")
    assert image_packages(tmp_path) == {"bash": "5.2.15-2+b2", "python3": "3.11.2-1+b1"}
    with pytest.raises(EmbeddedHostError, match="cannot read its package list"):
        image_packages(tmp_path / "nope")


def test_baked_on_aws_is_the_packer_package_manifest_of_the_instances_ami():
    from immutable_infra.group_hosts import baked_from_catalog
    from immutable_infra.images import load_catalog

    images = Path(__file__).parent.parent / "fixtures" / "images"
    catalog = load_catalog(images)
    build = next(b for b in catalog.builds() if b.amis and b.packages)
    ami = build.amis[0].ami_id
    instances = [{"InstanceId": "i-1", "ImageId": ami}, {"InstanceId": "i-2", "ImageId": "ami-0123456789abcdef0"}]
    baked = baked_from_catalog(instances, images)
    assert set(baked) == {"i-1"}  # an AMI the catalog does not hold: no record (a "baked" pin is then an error)
    assert baked["i-1"] == {name: version for name, (version, _) in build.packages.items()}
    assert baked_from_catalog(instances, images / "missing") == {}
