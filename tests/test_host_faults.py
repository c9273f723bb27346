"""Host faults (``immutable_infra.host_faults``): aimed from the role contract, planned, named, repaired.

- On recorded contracts and facts (no host, milliseconds): each fault picks its
  target from what the contract names and the host has, or says why not; its
  ``repr`` replays it; ``plan()`` shows the very commands ``inject`` runs;
  ``aim`` spreads the catalog over hosts without collisions; ``attribute``
  names the caught faults, the misses and the false alarms.
- On one embedded host of the seed's ``reverse-proxy`` role (Debian 12 under
  systemd-nspawn, configured by the seed playbook): the four faults injected
  through testinfra, one read, each named by ``find_host_findings`` with the
  instance id and nothing else is; the host replaced from the image is green.

The host part needs root, systemd-nspawn, debootstrap (``tools/install-host-runtime``);
it skips with the reason otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from immutable_infra import host_faults
from immutable_infra.checks.hosts import find_host_findings
from immutable_infra.config import HostContract
from immutable_infra.embedded_hosts import (
    GroupHosts,
    apply_playbook,
    build_rootfs,
    image_packages,
    leftovers,
    runtime_available,
    start_host,
)
from immutable_infra.findings import Finding
from immutable_infra.host_faults import (
    CATALOG,
    HostConfigEdited,
    HostPackageChanged,
    HostPortOpened,
    HostServiceStopped,
    HostTarget,
    aim,
    attribute,
)
from immutable_infra.errors import ToolError
from immutable_infra.hosts import HostFacts, HostUnreachable, read_host_facts
from immutable_infra.roles import load_roles

ROOT = Path(__file__).parent.parent
SEED_ROLES = load_roles(ROOT / "fixtures" / "roles.toml")
PROXY = SEED_ROLES["reverse-proxy"].host
MICRO = SEED_ROLES["microservice"].host
ADMIN = SEED_ROLES["admin"].host


def proxy_facts(**changes) -> HostFacts:
    """Recorded facts of a healthy reverse-proxy host (what the seed playbook leaves)."""
    data = {
        "url": "ssh://root@169.254.0.2",
        "packages": {"nginx-light": "1.22.1-9+deb12u9"},
        "services": {"nginx": {"enabled": True, "running": True}},
        "listening": {"22": ["0.0.0.0", "::"], "80": ["0.0.0.0"], "443": ["0.0.0.0"]},
        "files": {
            "/etc/immutable-infra/role": {"exists": True, "mode": "0644", "owner": "root", "content": "reverse-proxy\n"},
            "/etc/nginx/conf.d/reverse-proxy.conf": {"exists": True, "mode": "0644", "owner": "root",
                                                     "content": "server {\n  server_tokens off;\n}\n"},
        },
        "users": {"www-data": True},
    }
    data.update(changes)
    return HostFacts.from_dict(data)


def pinned(contract: HostContract, **versions: str) -> HostContract:
    return contract.model_copy(update={"packages": {**contract.packages, **versions}})


PINNED_PROXY = pinned(PROXY, **{"nginx-light": "1.22.1-9+deb12u9"})
#: The seed's reverse-proxy contract pins nginx-light "baked"; this one lets any version be.
UNPINNED_PROXY = pinned(PROXY, **{"nginx-light": "*"})


def finding(instance_id: str, kind: str, **detail) -> Finding:
    return Finding("hosts", "g", "", instance_id, "x", "y", {"kind": kind, **detail})


# -- select, why_not, repr, plan --------------------------------------------------------------------


def test_each_fault_aims_at_what_the_contract_names():
    facts = proxy_facts()
    faults = {name: cls.select("i-1", "reverse-proxy", PINNED_PROXY, facts) for name, cls in CATALOG.items()}
    assert faults == {
        "host_package_changed": HostPackageChanged("i-1", "nginx-light", "1.22.1-9+deb12u9+chaos1"),
        "host_service_stopped": HostServiceStopped("i-1", "nginx", (22, 80, 443)),
        "host_config_edited": HostConfigEdited("i-1", "/etc/immutable-infra/role", "reverse-proxy"),
        "host_port_opened": HostPortOpened("i-1", 9999),
    }
    assert [f.expected for f in faults.values()] == [
        ("package-version/nginx-light",), ("service-not-running:nginx",),
        ("file-content//etc/immutable-infra/role",), ("port-unexpected:9999",)]
    assert faults["host_service_stopped"].expected_ids("g") == ["hosts:g:i-1:service-not-running:nginx"]
    assert faults["host_service_stopped"].expected_ids("g", "aws_instance.proxy[0]") == [
        "hosts:g:aws_instance.proxy[0]:service-not-running:nginx"]
    # the second file with a text, by index
    assert HostConfigEdited.select("i-1", "reverse-proxy", PROXY, facts, 1) == HostConfigEdited(
        "i-1", "/etc/nginx/conf.d/reverse-proxy.conf", "server_tokens off;")
    assert all(cls.why_not("reverse-proxy", PINNED_PROXY, facts) is None for cls in CATALOG.values())


def test_a_fault_with_nothing_to_aim_at_says_why():
    facts = proxy_facts()
    # the seed pins nginx-light "baked" (the image's version): an upgrade in place is aimed at it
    assert HostPackageChanged.select("i-1", "reverse-proxy", PROXY, facts) == HostPackageChanged(
        "i-1", "nginx-light", "1.22.1-9+deb12u9+chaos1")
    # a contract that pins no version: an upgrade in place breaks nothing it says
    assert HostPackageChanged.select("i-1", "reverse-proxy", UNPINNED_PROXY, facts) is None
    reason = HostPackageChanged.why_not("reverse-proxy", UNPINNED_PROXY, facts)
    assert reason == ('role reverse-proxy\'s host contract pins no package version (nginx-light = "*"): an upgrade '
                      "in place breaks nothing it says; pin a version (or \"baked\") in [roles.reverse-proxy.host] packages to aim "
                      "host_package_changed")
    # admin has no ports_exclusive: an opened port is no contract break
    admin_facts = proxy_facts(files={"/etc/immutable-infra/role": {"exists": True, "mode": "0644", "owner": "root",
                                                                   "content": "admin\n"},
                                     "/etc/nginx/conf.d/admin.conf": {"exists": True, "mode": "0644", "owner": "root",
                                                                      "content": "server_tokens off;"}})
    assert HostPortOpened.select("i-2", "admin", ADMIN, admin_facts) is None
    assert "has no ports_exclusive" in HostPortOpened.why_not("admin", ADMIN, admin_facts)
    assert "set ports_exclusive = true in [roles.admin.host]" in HostPortOpened.why_not("admin", ADMIN, admin_facts)
    # a service already down, a file already edited: nothing left to break
    down = proxy_facts(services={"nginx": {"enabled": True, "running": False}})
    assert HostServiceStopped.select("i-1", "reverse-proxy", PROXY, down) is None
    assert HostServiceStopped.why_not("reverse-proxy", PROXY, down) == (
        "none of the services role reverse-proxy's host contract names runs on the host (nginx)")
    empty = HostContract()
    assert HostServiceStopped.why_not("bare", empty, facts) == "role bare's host contract names no service"
    assert HostConfigEdited.why_not("bare", empty, facts) == "role bare's host contract names no file with contains = [...]"
    assert HostPackageChanged.why_not("bare", empty, facts) == "role bare's host contract lists no package"
    # ports in use or named are never opened
    busy = proxy_facts(listening={"22": ["0.0.0.0"], "80": ["0.0.0.0"], "443": ["0.0.0.0"], "9999": ["127.0.0.1"]})
    assert HostPortOpened.select("i-1", "reverse-proxy", PROXY, busy) == HostPortOpened("i-1", 9998)


def test_repr_replays_and_plan_is_what_inject_runs():
    faults = [HostPackageChanged("i-0a1", "python3", "3.11.2-1+b1+chaos1"),
              HostServiceStopped("i-0a1", "nginx", (22, 80)), HostConfigEdited("i-0a1", "/etc/x.conf", "a.b|c"),
              HostPortOpened("i-0a1", 9999)]
    for fault in faults:
        assert eval(repr(fault), vars(host_faults)) == fault  # noqa: S307 - our own repr
        ran = []
        fault.inject(lambda script: ran.append(script) or "")
        assert ran == [fault.script()]
        assert [line.split(": ", 1)[1] for line in fault.plan()] == fault.commands()
        assert all(line.startswith("on i-0a1: ") for line in fault.plan())
        assert fault.script().startswith("set -e\n")
    # a text with sed's special characters is matched literally
    assert "s|a\\.b\\|c|edited-in-place|g" in faults[2].commands()[0]
    assert "dpkg -i" in faults[0].script() and "3.11.2-1+b1+chaos1" in faults[0].script()


def test_the_catalog_names_the_four_faults():
    assert list(CATALOG) == ["host_package_changed", "host_service_stopped", "host_config_edited", "host_port_opened"]
    assert all(cls.name == name and cls.summary and cls.needs for name, cls in CATALOG.items())
    rows = host_faults.catalog_table()
    assert [r["fault"] for r in rows] == list(CATALOG)
    assert all(r["expected_checks"] == ["hosts"] and "replaced" in r["repair"] for r in rows)


# -- aim and attribute --------------------------------------------------------------------------------


def test_aim_spreads_faults_over_disjoint_hosts_then_batches():
    facts = proxy_facts()
    three = {f"i-{k}": HostTarget("reverse-proxy", PINNED_PROXY, facts) for k in (1, 2, 3)}
    aimed = aim(three)
    assert [f.instance_id for f in aimed.faults] == ["i-1", "i-2", "i-3", "i-1"] and not aimed.not_aimed
    assert [type(f) for f in aimed.faults] == list(CATALOG.values())
    one = aim({"i-1": HostTarget("reverse-proxy", PINNED_PROXY, facts)})
    assert len(one.on("i-1")) == 4
    assert not any(host_faults.collide(a, b) for a in one.faults for b in one.faults if a is not b)
    # a contract that pins nothing: the package fault is not aimed, and the reason names each host
    seed = aim({"i-1": HostTarget("reverse-proxy", UNPINNED_PROXY, facts)})
    assert len(seed.faults) == 3
    assert seed.not_aimed["host_package_changed"].startswith("i-1 (reverse-proxy): role reverse-proxy's host contract pins")
    assert aim({}).not_aimed == {name: "no host to aim at" for name in CATALOG}
    assert aimed.plans()[0] == repr(aimed.faults[0])
    with pytest.raises(ValueError, match="unknown host fault 'nope'; host faults are host_package_changed"):
        aim(three, ["nope"])


def test_two_faults_on_one_host_collide_when_they_touch_or_explain_the_same_thing():
    stop = HostServiceStopped("i-1", "nginx", (80,))
    assert host_faults.collide(stop, HostServiceStopped("i-1", "nginx", (80,)))
    assert not host_faults.collide(stop, HostServiceStopped("i-2", "nginx", (80,)))
    assert not host_faults.collide(stop, HostPortOpened("i-1", 9999))

    class PortClosed(HostPortOpened):  # a fault that would expect what a stopped service explains
        @property
        def expected(self):
            return ("port-not-listening:80",)

    assert host_faults.collide(stop, PortClosed("i-1", 1234))


def test_attribute_names_caught_missed_and_false_alarms():
    stop = HostServiceStopped("i-1", "nginx", (80, 443))
    port = HostPortOpened("i-2", 9999)
    baseline = [finding("i-3", "user-missing:x")]
    after = baseline + [
        finding("i-1", "service-not-running:nginx", service="nginx"),
        finding("i-1", "port-not-listening:80", port=80),          # a side effect of the stop: explained
        finding("i-2", "port-not-listening:22", port=22),          # nothing on i-2 explains it
        finding("i-1", "port-unexpected:9999", port=9999),         # the right kind on the wrong host
    ]
    result = attribute([stop, port], baseline, after)
    assert [f.aws_id for f in result.caught[repr(stop)]] == ["i-1"]
    assert result.missed == {repr(stop): [], repr(port): ["port-unexpected:9999"]}
    assert [(f.aws_id, f.detail["kind"]) for f in result.false_alarms] == [
        ("i-2", "port-not-listening:22"), ("i-1", "port-unexpected:9999")]
    # a finding the host had before is never a detection
    assert attribute([stop], after, after).missed == {repr(stop): ["service-not-running:nginx"]}


def test_a_dry_run_aims_and_plans_and_touches_nothing(tmp_path):
    facts = proxy_facts()
    targets = {"i-1": HostTarget("reverse-proxy", PINNED_PROXY, facts),
               "i-2": HostTarget("reverse-proxy", UNPINNED_PROXY, facts)}
    calls = []

    def aws_pass():
        calls.append("aws")
        return [], []

    # no host exists: anything but aiming and planning would fail on the empty GroupHosts
    exp = host_faults.run_experiment("g", GroupHosts(), targets, tmp_path, SEED_ROLES, dry_run=True, aws_pass=aws_pass)
    assert exp.dry_run and len(exp.aimed.faults) == 4 and not exp.aimed.not_aimed
    assert calls == [] and exp.replaced == [] and exp.seconds == {}
    plans = exp.aimed.plans()
    assert plans[0] == "HostPackageChanged(instance_id='i-1', package='nginx-light', version='1.22.1-9+deb12u9+chaos1')"
    assert any(line.startswith("  on i-2: systemctl stop nginx") for line in plans)
    assert exp.findings() == [] and exp.matrix_rows() == []


# -- on an embedded host ---------------------------------------------------------------------------


def needs_runtime() -> None:
    reason = runtime_available()
    if reason:
        pytest.skip(reason)


def test_four_host_faults_are_each_named_with_the_instance_id_and_repaired_by_replacement(tmp_path, record_property):
    needs_runtime()
    rootfs = build_rootfs("debian12-base")
    role = SEED_ROLES["reverse-proxy"]
    # the seed's contract as it is: nginx-light pinned "baked", read against the image's own package list
    contract, baked = role.host, image_packages(rootfs)
    assert contract.packages == {"nginx-light": "baked"} and baked["nginx-light"]
    instance = "i-0fa0175e0000000a1"
    playbooks = ROOT / "fixtures" / "playbooks"
    started = time.monotonic()
    hosts = GroupHosts()
    try:
        handle = start_host(instance, "10.21.0.10", rootfs, tmp_path)
        handle.instance_id = instance
        hosts.hosts[instance], hosts.roles[instance] = handle, role.name
        apply_playbook(handle, playbooks / role.playbook, role=role.name)
        before = read_host_facts(handle.url, contract)
        baseline = find_host_findings("prd-sg-slave", instance, role.name, contract, before, baked=baked)
        assert baseline == [], [f.found for f in baseline]

        aimed = aim({instance: HostTarget(role.name, contract, before, baked)})
        assert not aimed.not_aimed and len(aimed.faults) == 4
        run = host_faults.host_runner(handle.url)
        for fault in aimed.faults:
            fault.inject(run)
        after = read_host_facts(handle.url, contract)
        findings = find_host_findings("prd-sg-slave", instance, role.name, contract, after, baked=baked)
        result = attribute(aimed.faults, baseline, findings)

        host_faults.replace_hosts(hosts, [instance], playbooks, SEED_ROLES)
        replaced = hosts.hosts[instance]
        repaired = find_host_findings("prd-sg-slave", instance, role.name, contract,
                                      read_host_facts(replaced.url, contract), baked=baked)
    finally:
        hosts.stop()
    record_property("seconds", round(time.monotonic() - started, 1))
    names = [handle.netns, replaced.netns]
    with pytest.raises(HostUnreachable) as unreachable:  # a tool error (the suite's fixture makes it a test error)
        read_host_facts(replaced.url, contract)
    assert isinstance(unreachable.value, ToolError) and replaced.link_ip in str(unreachable.value)
    kinds = sorted(f.detail["kind"] for f in findings)
    assert kinds == sorted(["package-version", "file-content", "service-not-running:nginx",
                            "port-not-listening:80", "port-not-listening:443", "port-unexpected:9999"]), kinds
    assert all(f.aws_id == instance for f in findings)
    assert all(result.caught[repr(f)] and not result.missed[repr(f)] for f in aimed.faults), result
    assert result.false_alarms == []  # ports 80 and 443 went silent with nginx: the stop explains them
    by_kind = {f.detail["kind"]: f for f in findings}
    assert by_kind["package-version"].found == f"nginx-light {baked['nginx-light']}+chaos1"
    assert by_kind["package-version"].expected == f"package nginx-light {baked['nginx-light']}, as baked in the image"
    assert by_kind["port-unexpected:9999"].detail["addresses"] == ["0.0.0.0"]
    assert replaced.netns != handle.netns and replaced.private_ip == "10.21.0.10"
    assert repaired == [], [f.found for f in repaired]
    assert leftovers(only=names) == []


def test_a_fault_that_fails_on_the_host_is_one_line_naming_the_host(tmp_path):
    needs_runtime()
    rootfs = build_rootfs("debian12-base")
    handle = start_host("i-0fa0175e0000000b2", "10.21.0.11", rootfs, tmp_path)
    try:
        run = host_faults.host_runner(handle.url)
        with pytest.raises(host_faults.HostFaultError) as failed:
            HostServiceStopped("i-0fa0175e0000000b2", "no-such-service").inject(run)
    finally:
        handle.stop()
    message = str(failed.value)
    assert handle.link_ip in message and "exited" in message and "\n" not in message, message
    assert leftovers(only=[handle.netns]) == []
