"""Live parity (issue 14 item 2): the dev box, and an instance of the image, read live through testinfra.

- Recorded data (milliseconds): ``--dev-box`` is a setting (flag, env, ini) in README's Options table; the seed's
  recorded dev box as a live side agrees with the manifest parity, config files included; a config changed or
  missing on the dev box is named; the allow-list allows presence in its builder only, never a version; an AMI
  build with an instance host is read live and the others from their manifests, each row naming its source;
  instances are traced to the current run's builds as lineage does; a config read that does not answer for
  every file, a dev box or an image host that refuses, are tool errors, never a fallback or a pass.
- The suite's code with stand-in fixtures: the sources on each side as facts; ``infra_hosts`` skipping is "no
  image host", not a skip of the parity test.
- Two embedded hosts (systemd-nspawn, Debian 12) shared by the module, as the dev box and a running instance of
  the image (the debian11-base current run's AMI manifests of a copy re-baked from the image host's own
  ``dpkg-query`` and ``sha256sum``): a config file edited on the image side is named; the allowed differences
  (a sudoers file and nfs-common on the dev box, a cloud-init config and package on the image) stay allowed;
  curl changed in place on the dev box is named against both the live instance and the recorded manifest, and
  by a session of ``suites/test_image_parity.py --dev-box <the host's URL>`` on chaos-lab (embedded moto, no
  hosts: the AMI side from the manifests, and the report says why); the dev box stopped is an error.
- A session with ``--dev-box`` at a box that refuses: the content test is an error naming the URL.

The host part needs root, systemd-nspawn, debootstrap (``tools/install-host-runtime``); it skips with the reason
otherwise.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from immutable_infra.checks.parity import (
    config_paths,
    diff_packages,
    find_content_violations,
    instances_on_current_run,
    manifest_sources,
    parity_table,
)
from immutable_infra.embedded_hosts import build_rootfs, leftovers, runtime_available, start_host
from immutable_infra.errors import ToolError
from immutable_infra.findings import finding_id
from immutable_infra.hosts import (
    HostConfigsError,
    HostPackagesError,
    ImageHost,
    LiveHost,
    config_hash_command,
    live_content_check,
    live_package_parity,
    parse_config_read,
)
from immutable_infra.images import DPKG_COMMAND, load_allow_list, load_catalog
from immutable_infra.settings import OPTIONS, env_name, flag_name, ini_name

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"
TEMPLATE = "debian11-base"
#: A port nothing listens on: ssh is refused at once (no timeout to wait for).
REFUSED = "ssh://nobody@127.0.0.1:1"


def test_every_option_is_in_the_readme_options_table():
    table = (ROOT / "README.md").read_text().split("## Options", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    for name in OPTIONS:
        assert any(f"`{flag_name(name)}" in r and env_name(name) in r and ini_name(name) in r for r in rows), name


def test_dev_box_setting_from_flag_env_and_ini(pytester, monkeypatch):
    from immutable_infra.settings import from_pytest_config

    monkeypatch.delenv(env_name("dev_box"), raising=False)
    pytester.makeini("[pytest]\nimmutable_infra_dev_box = ssh://vagrant@ini:2222\n")
    config = pytester.parseconfig()
    s = from_pytest_config(config)
    assert s.dev_box == "ssh://vagrant@ini:2222" and s.source("dev_box") == "ini key immutable_infra_dev_box"
    monkeypatch.setenv(env_name("dev_box"), "ssh://vagrant@env:2222")
    s = from_pytest_config(pytester.parseconfig())
    assert s.dev_box == "ssh://vagrant@env:2222" and s.source("dev_box") == "IMMUTABLE_INFRA_DEV_BOX"
    s = from_pytest_config(pytester.parseconfig("--dev-box", "ssh://vagrant@127.0.0.1:2222"))
    assert s.dev_box == "ssh://vagrant@127.0.0.1:2222" and s.given("dev_box", s.dev_box).startswith("--dev-box ")


def test_without_a_dev_box_the_source_is_the_recorded_manifest():
    catalog = load_catalog(IMAGES)
    run = catalog.template(TEMPLATE).current.uuid
    assert manifest_sources(catalog, [TEMPLATE]) == [f"manifest {IMAGES / TEMPLATE / run / 'dev-box.packages.txt'}"]


def test_an_unreachable_dev_box_is_a_tool_error_naming_the_url():
    catalog = load_catalog(IMAGES)
    started = time.monotonic()
    with pytest.raises(HostPackagesError) as refused:
        live_content_check("prd-sg-slave", [TEMPLATE], catalog, None, REFUSED)
    assert isinstance(refused.value, ToolError) and str(refused.value).startswith(f"{REFUSED}: cannot list packages")
    assert time.monotonic() - started < 30


# -- recorded data: the comparison in milliseconds ----------------------------------------------------------------

GROUP = "prd-sg-slave"
CATALOG = load_catalog(IMAGES)
ALLOW = load_allow_list(IMAGES / "parity.toml")


class RecordedHost:
    """A stand-in for hosts.LiveHost over recorded data: its source, packages() and configs(paths)."""

    def __init__(self, source, packages, configs):
        self.source, self._packages, self._configs = source, dict(packages), dict(configs)

    def packages(self):
        return dict(self._packages)

    def configs(self, paths):
        return {path: digest for path, digest in self._configs.items() if path in set(paths)}


def recorded_dev_box(**changes):
    """The seed's recorded dev box as a live side; ``packages=``/``configs=`` functions change its data."""
    box = CATALOG.template(TEMPLATE).current.dev_boxes[0]
    packages, configs = dict(box.packages), dict(box.config)
    changes.get("packages", lambda p: None)(packages)
    changes.get("configs", lambda c: None)(configs)
    return RecordedHost("live host ssh://vagrant@dev-box", packages, configs)


def test_the_configuration_files_compared_are_the_recorded_ones_and_the_allow_list_s():
    paths = config_paths(CATALOG, TEMPLATE, ALLOW)
    run = CATALOG.template(TEMPLATE).current
    assert set(paths) == {p for b in run.builds for p in b.config} | {
        "/etc/sudoers.d/vagrant", "/etc/cloud/cloud.cfg.d/90-immutable.cfg"}
    assert len(paths) == 10 and list(paths) == sorted(paths)
    assert config_paths(CATALOG, TEMPLATE, None) == paths  # the seed's manifests name both allowed files already


def test_a_recorded_dev_box_read_as_live_agrees_with_the_manifest_parity():
    check = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box())
    assert check.findings == []
    table = parity_table(CATALOG, ALLOW, [TEMPLATE])
    keys = ("ami", "packages_compared", "configs_compared", "differences", "allowed")
    assert [{k: r[k] for k in keys} for r in check.rows] == [{k: r[k] for k in keys} for r in table]
    assert all(r["configs_compared"] == 10 and r["allowed"] >= 4 for r in check.rows)  # configs too, not 0
    run = CATALOG.template(TEMPLATE).current
    assert [r["ami_source"] for r in check.rows] == [f"manifest {a.packages_path}" for a in run.ami_builds]
    assert check.source == "live host ssh://vagrant@dev-box" == check.rows[0]["dev_box_source"]
    assert check.image_hosts == "the AMI side from the recorded manifests: no image host given"


def test_a_config_file_changed_or_missing_on_the_dev_box_is_named():
    def edit(configs):
        configs["/etc/ssh/sshd_config"] = "0" * 64
        del configs["/etc/docker/daemon.json"]

    check = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box(configs=edit))
    ami = CATALOG.template(TEMPLATE).current.ami_builds[0]
    named = sorted({(f.detail["config"], f.detail["change"]) for f in check.findings})
    assert named == [("/etc/docker/daemon.json", "added"), ("/etc/ssh/sshd_config", "changed")]
    assert len(check.findings) == 4  # each, once per AMI build
    sshd = next(f for f in check.findings if f.detail["config"] == "/etc/ssh/sshd_config")
    assert sshd.expected == (f"config /etc/ssh/sshd_config sha256 {'0' * 64} as on the dev box "
                             "live host ssh://vagrant@dev-box")
    assert sshd.found == f"sha256 {ami.config['/etc/ssh/sshd_config']} on the AMI"
    daemon = next(f for f in check.findings if f.detail["config"] == "/etc/docker/daemon.json")
    assert daemon.expected.startswith("config /etc/docker/daemon.json sha256 absent as on the dev box")
    assert [r["differences"] for r in check.rows] == [2, 2]


def test_the_allow_list_allows_presence_in_its_builder_only_and_never_a_version():
    def edit(packages):
        packages["amazon-ssm-agent"] = ("3.2.582.0-1", "amd64")  # allow-listed (AMI only), here at another version
        packages["telnet"] = ("0.17+2.4-2", "amd64")  # on the dev box only, not allowed

    check = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box(packages=edit))
    assert sorted({(f.detail["package"], f.detail["change"]) for f in check.findings}) == [
        ("amazon-ssm-agent", "changed"), ("telnet", "removed")]
    telnet = {f.found for f in check.findings if f.detail["package"] == "telnet"}
    assert telnet == {"package telnet missing from the AMI"}
    baseline = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box())
    allowed = {d.name for d in diff_packages(recorded_dev_box().packages(), CATALOG.template(TEMPLATE).current
                                             .ami_builds[0].packages, ALLOW, template=TEMPLATE) if d.allowed}
    assert allowed == {"nfs-common", "virtualbox-guest-utils", "cloud-guest-utils", "cloud-init", "amazon-ssm-agent"}
    assert [r["allowed"] for r in check.rows] == [r["allowed"] - 1 for r in baseline.rows]  # ssm's version: not allowed


def test_the_image_side_is_read_live_where_an_instance_is_a_host_else_from_the_manifest():
    run = CATALOG.template(TEMPLATE).current
    ap, cn = run.ami_builds
    curl = ap.packages["curl"]
    image = RecordedHost("(replaced by the reader)", {**ap.packages, "curl": (curl[0] + "+patched", curl[1])},
                         ap.config)
    opened = []

    def reader(url, source, **kwargs):
        opened.append((url, source))
        return RecordedHost(source, image.packages(), image.configs(ap.config))

    check = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box(), reader=reader,
                               image_hosts={(TEMPLATE, ap.name): ImageHost("i-0image0000000001", "ssh://image")})
    assert opened == [("ssh://image", "live instance i-0image0000000001 at ssh://image")]
    assert [(f.address, f.detail["package"]) for f in check.findings] == [(f"image {TEMPLATE} {ap.name}", "curl")]
    assert check.findings[0].found == (f"package curl {curl[0]}+patched ({curl[1]}) "
                                       "on the AMI's instance i-0image0000000001")
    assert [r["ami_source"] for r in check.rows] == ["live instance i-0image0000000001 at ssh://image",
                                                     f"manifest {cn.packages_path}"]
    assert check.ami_source == f"live instance i-0image0000000001 at ssh://image, manifest {cn.packages_path}"
    assert check.image_hosts.startswith("1 of 2 AMI builds read live from a running instance")


def test_instances_are_traced_to_the_current_run_s_builds_as_lineage_does():
    tmpl = CATALOG.template(TEMPLATE)
    ap, cn = tmpl.current.ami_builds
    old = tmpl.previous[-1].ami_builds[0]
    images = [{"ImageId": "ami-sandbox1", "Tags": [{"Key": "SourceArtifact", "Value": ap.amis[0].ami_id}]},
              {"ImageId": "ami-sandbox2", "Tags": [{"Key": "SourceArtifact", "Value": old.amis[0].ami_id}]}]
    instances = [
        {"InstanceId": "i-2", "ImageId": "ami-sandbox1", "State": {"Name": "running"}},
        {"InstanceId": "i-1", "ImageId": "ami-sandbox1", "State": {"Name": "running"}},
        {"InstanceId": "i-3", "ImageId": "ami-sandbox1", "State": {"Name": "stopped"}},
        {"InstanceId": "i-4", "ImageId": "ami-sandbox2", "State": {"Name": "running"}},  # an older run
        {"InstanceId": "i-5", "ImageId": "ami-0123456789abcdef0", "State": {"Name": "running"}},  # unknown
        {"InstanceId": "i-6", "ImageId": cn.amis[0].ami_id, "State": {"Name": "running"}},  # real AWS: Packer's id
    ]
    assert instances_on_current_run(instances, images, CATALOG) == {
        (TEMPLATE, ap.name): ["i-1", "i-2"], (TEMPLATE, cn.name): ["i-6"]}


def test_a_config_read_that_does_not_answer_for_every_file_is_an_error():
    digest = "a" * 64
    text = f"{digest}  /etc/a\nabsent\t/etc/b\n"
    assert parse_config_read(text, ["/etc/a", "/etc/b"], "ssh://h") == {"/etc/a": digest}
    with pytest.raises(HostConfigsError, match=r"^ssh://h: the configuration file read did not answer for /etc/c$"):
        parse_config_read(text, ["/etc/a", "/etc/b", "/etc/c"], "ssh://h")
    with pytest.raises(HostConfigsError, match=r"^ssh://h: cannot hash configuration files: line 1 is not sha256sum"):
        parse_config_read("sha256sum: /etc/a: Permission denied\n", ["/etc/a"], "ssh://h")
    assert issubclass(HostConfigsError, ToolError)


def test_the_config_read_is_one_command_that_tells_absent_from_unreadable(tmp_path):
    (tmp_path / "a b").write_text("x\n")
    (tmp_path / "dir").mkdir()
    paths = [str(tmp_path / "a b"), str(tmp_path / "gone")]
    proc = subprocess.run(config_hash_command(paths), shell=True, capture_output=True, text=True)
    assert proc.returncode == 0 and parse_config_read(proc.stdout, paths, "local://") == {
        str(tmp_path / "a b"): hashlib.sha256(b"x\n").hexdigest()}
    proc = subprocess.run(config_hash_command([str(tmp_path / "dir")]), shell=True, capture_output=True, text=True)
    assert proc.returncode == 3  # exists, cannot be hashed: an error, never "absent"
    local = LiveHost("local://")  # the same command through testinfra
    assert local.configs(paths) == {str(tmp_path / "a b"): hashlib.sha256(b"x\n").hexdigest()}
    with pytest.raises(HostConfigsError, match=r"^local://: cannot hash configuration files \(exit 3\): .*Is a "
                                               r"directory; read the host as root \(testinfra URL \?sudo=true\)$"):
        local.configs([str(tmp_path / "dir")])


def test_an_unreachable_image_host_is_an_error_too():
    with pytest.raises(HostPackagesError, match=rf"^{REFUSED}: cannot list packages"):
        live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box(),
                           image_hosts={(TEMPLATE, "ami-ap-southeast-1"): ImageHost("i-0image0000000001", REFUSED)})


# -- the suite's code, called with stand-in fixtures (no session: applying a group takes minutes) ---------------


class _Report:
    def __init__(self):
        self.facts, self.tables, self.findings_ = {}, {}, []

    def findings(self, group, check, findings):
        self.findings_ += findings

    def fact(self, group, check, **facts):
        self.facts.update(facts)

    def table(self, group, check, name, rows):
        self.tables[name] = rows


class _Request:
    """What the suite asks of pytest's request: getfixturevalue("infra_hosts") -> hosts, or its skip."""

    def __init__(self, hosts=None, skip=None):
        self.hosts, self.skip = hosts, skip

    def getfixturevalue(self, name):
        assert name == "infra_hosts"
        if self.skip:
            pytest.skip(self.skip)
        return self.hosts


def _run_suite_test(dev_box, request=None, images=IMAGES):
    from types import SimpleNamespace

    import suites.test_image_parity as suite
    from immutable_infra.settings import Settings

    settings = Settings(dev_box=dev_box, sources={"dev_box": "--dev-box"} if dev_box else {})
    group = SimpleNamespace(name=GROUP, config=SimpleNamespace(roles={"reverse-proxy": None}))
    report = _Report()
    catalog = load_catalog(images)
    image_catalog = (catalog, load_allow_list(images / "parity.toml"))
    # what the live_dev_box fixture runs (there, the pytest.fail of cannot_check is a test error)
    live = suite.read_dev_box(group, image_catalog, SimpleNamespace(settings=settings, _sandbox=None), request)
    try:
        suite.test_dev_box_matches_the_ami(group, None, image_catalog, live, report)
    except AssertionError as failed:
        report.failure = str(failed)
    return report, catalog


def test_the_suite_reports_the_manifest_sources_without_a_dev_box():
    report, catalog = _run_suite_test(None, _Request(skip="must not be asked"))
    run = catalog.template(TEMPLATE).current
    assert report.facts == {
        "dev_box_source": f"manifest {IMAGES / TEMPLATE / run.uuid / 'dev-box.packages.txt'}",
        "ami_source": ", ".join(f"manifest {a.packages_path}" for a in run.ami_builds),
        "image_hosts": "the recorded manifests on both sides (no --dev-box)",
    }
    assert report.findings_ == [] and report.tables["parity"]


def test_the_suite_errors_on_an_unreachable_dev_box_and_does_not_fall_back():
    with pytest.raises(pytest.fail.Exception) as failed:
        _run_suite_test(REFUSED, _Request(skip="hosts: not checked (--no-hosts)"))
    message = str(failed.value)
    assert message.startswith(f"parity: the dev box --dev-box {REFUSED} cannot run: {REFUSED}: cannot list packages")


def test_the_suite_takes_a_skipped_infra_hosts_as_no_image_host_not_as_a_skip():
    import suites.test_image_parity as suite

    found, why = suite.find_image_hosts(_Request(skip="hosts: not checked (--no-hosts)"), None, CATALOG, None)
    assert (found, why) == ({}, "no image host (hosts: not checked (--no-hosts))")


# -- two embedded hosts: the dev box and a running instance of the image, shared by the module --------------------


def ssh(handle, script: str) -> str:
    proc = subprocess.run(handle.ssh_command("sh", "-c", f"'{script}'"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{script}: {proc.stderr}"
    return proc.stdout


def _fake_package(handle, name: str, version: str) -> None:
    """Install a package ``name`` at ``version`` (metadata only, built on the host with dpkg-deb)."""
    ssh(handle, f"set -e; d=/tmp/pkg-{name}; rm -rf $d; mkdir -p $d/DEBIAN; "
                f"printf \"Package: {name}\\nVersion: {version}\\nArchitecture: amd64\\n"
                f"Maintainer: test <t@example.com>\\nDescription: {name} for the parity test\\n\" > $d/DEBIAN/control; "
                f"dpkg-deb --build $d /tmp/pkg-{name}.deb >/dev/null; dpkg -i /tmp/pkg-{name}.deb >/dev/null")


def _curl_changed(dev) -> str:
    """Change curl in place on the dev box (version +fault1), once; return its version before."""
    version = ssh(dev, "dpkg-query -W -f=\\${Version} curl").removesuffix("+fault1")
    _fake_package(dev, "curl", f"{version}+fault1")
    return version


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(dev box, image host): two hosts of the same rootfs, as a dev box and an instance baked by one Packer run."""
    reason = runtime_available()
    if reason:
        pytest.skip(reason)
    rootfs = build_rootfs("debian12-base")
    run_dir = tmp_path_factory.mktemp("live-parity-hosts")
    started = []
    try:
        started.append(start_host("i-0devbox00000000a1", "10.21.0.10", rootfs, run_dir))
        started.append(start_host("i-0image000000000b2", "10.21.1.10", rootfs, run_dir))
        yield tuple(started)
    finally:
        for handle in started:
            handle.stop()
        assert leftovers(only=[h.netns for h in started]) == []


@pytest.fixture(scope="module")
def baked(pair, tmp_path_factory):
    """A copy of the seed's manifests whose debian11-base AMI builds of the current run hold what the image host
    holds (what Packer records at bake time: its dpkg-query and sha256sum output)."""
    _, image = pair
    images = tmp_path_factory.mktemp("baked") / "images"
    shutil.copytree(IMAGES, images)
    catalog = load_catalog(images)
    packages = ssh(image, DPKG_COMMAND.replace("'", '"').replace("$", "\\$"))
    paths = config_paths(catalog, TEMPLATE, load_allow_list(images / "parity.toml"))
    present = ssh(image, "for p in " + " ".join(paths) + "; do [ -e $p ] && sha256sum $p; done; true")
    for ami in catalog.template(TEMPLATE).current.ami_builds:
        ami.packages_path.write_text(packages)
        ami.packages_path.with_name(ami.name + ".config.sha256").write_text(present)
    return images


def _both_live(dev, image, images, **kwargs):
    """live_content_check with the dev box and, for the ap-southeast-1 build, the image host read live."""
    catalog = load_catalog(images)
    on = {(TEMPLATE, "ami-ap-southeast-1"): ImageHost(image.name, image.url)}
    return catalog, live_content_check(GROUP, [TEMPLATE], catalog, load_allow_list(images / "parity.toml"), dev.url,
                                       image_hosts=on, **kwargs)


def test_a_config_file_edited_on_one_side_is_named(pair, baked):
    dev, image = pair
    try:
        ssh(image, "echo PermitRootLogin prohibit-password >> /etc/ssh/sshd_config")  # edited on the image only
        ssh(image, "mkdir -p /etc/sysctl.d; echo vm.swappiness=1 > /etc/sysctl.d/90-immutable.conf")  # image only
        _, check = _both_live(dev, image, baked)
    finally:
        ssh(image, "sed -i \"\\$d\" /etc/ssh/sshd_config; rm -f /etc/sysctl.d/90-immutable.conf")
    live = [f for f in check.findings if f.detail["ami_source"].startswith("live instance")]
    assert sorted((f.detail["config"], f.detail["change"]) for f in live if "config" in f.detail) == [
        ("/etc/ssh/sshd_config", "changed"), ("/etc/sysctl.d/90-immutable.conf", "added")]
    sysctl = next(f for f in live if f.detail.get("config") == "/etc/sysctl.d/90-immutable.conf")
    assert sysctl.expected.startswith(
        "config /etc/sysctl.d/90-immutable.conf sha256 absent as on the dev box live host ")
    assert sysctl.found.endswith(f"on the AMI's instance {image.name}")
    assert check.rows[0]["configs_compared"] >= 2
    assert check.rows[0]["ami_source"] == f"live instance {image.name} at {image.url}"
    _, restored = _both_live(dev, image, baked)  # edits undone: the two hosts agree again on every file
    assert not [f for f in restored.findings if "config" in f.detail], [f.found for f in restored.findings]


def test_the_allowed_differences_stay_allowed_between_two_live_hosts(pair, baked):
    dev, image = pair
    try:
        ssh(dev, "mkdir -p /etc/sudoers.d; echo \"vagrant ALL=(ALL) NOPASSWD: ALL\" > /etc/sudoers.d/vagrant")
        _fake_package(dev, "nfs-common", "1:2.6.2-4")
        ssh(image, "mkdir -p /etc/cloud/cloud.cfg.d; "
                   "echo \"datasource_list: [Ec2]\" > /etc/cloud/cloud.cfg.d/90-immutable.cfg")
        _fake_package(image, "cloud-init", "22.4.2-1")
        _, check = _both_live(dev, image, baked)
    finally:
        ssh(dev, "rm -f /etc/sudoers.d/vagrant; dpkg --purge nfs-common >/dev/null")
        ssh(image, "rm -f /etc/cloud/cloud.cfg.d/90-immutable.cfg; dpkg --purge cloud-init >/dev/null")
    allowed = {"nfs-common", "cloud-init", "/etc/sudoers.d/vagrant", "/etc/cloud/cloud.cfg.d/90-immutable.cfg"}
    named = {f.detail.get("package") or f.detail.get("config") for f in check.findings}
    assert not named & allowed, named
    live_row = check.rows[0]
    assert live_row["ami_source"].startswith("live instance") and live_row["allowed"] == 4, live_row


def test_live_parity_names_the_package_changed_on_the_dev_box(pair, baked, tmp_path, record_property):
    dev, image = pair
    allow = load_allow_list(baked / "parity.toml")
    catalog, clean = _both_live(dev, image, baked)
    run = catalog.template(TEMPLATE).current
    assert clean.findings == [], [f.found for f in clean.findings]
    assert clean.source == f"live host {dev.url}" and clean.image_hosts.startswith("1 of 2 AMI builds read live")
    assert [r["ami_source"] for r in clean.rows] == [f"live instance {image.name} at {image.url}",
                                                     f"manifest {run.ami_builds[1].packages_path}"]
    assert all(r["packages_compared"] > 100 and r["configs_compared"] >= 1 for r in clean.rows), clean.rows
    recorded = live_content_check(GROUP, [TEMPLATE], catalog, allow, dev.url, no_image_host="no image host (test)")
    assert recorded.findings == [] and recorded.image_hosts == (
        "the AMI side from the recorded manifests: no image host (test)")

    curl = _curl_changed(dev)  # changed in place on the dev box (this host is not restored)

    one = live_package_parity(dev.url, run.ami_builds[0].packages_path, allow, template=TEMPLATE)
    _, changed = _both_live(dev, image, baked)
    # the same through the suite: pytest suites/test_image_parity.py --dev-box <the dev box's url>, no image host
    session_started = time.monotonic()
    proc, failure, summary = _session(tmp_path, dev.url, baked)
    record_property("session_seconds", round(time.monotonic() - session_started, 1))

    assert [(d.name, d.change, d.dev_version, d.ami_version) for d in one.violations] == [
        ("curl", "changed", f"{curl}+fault1", curl)]
    assert sorted((f.address, f.detail["package"]) for f in changed.findings) == [
        (f"image {TEMPLATE} {a.name}", "curl") for a in run.ami_builds]
    live, recorded_side = changed.findings
    for f in changed.findings:
        assert f.expected == f"package curl {curl}+fault1 (amd64) as on the dev box live host {dev.url}"
        assert f.detail["dev_box_source"] == f"live host {dev.url}"
    assert live.found == f"package curl {curl} (amd64) on the AMI's instance {image.name}"
    assert recorded_side.found == f"package curl {curl} (amd64) on the AMI"
    assert [r["differences"] for r in changed.rows] == [1, 1]

    assert failure is not None and failure.tag == "failure", proc.stdout[-3000:]
    text = (failure.get("message") or "") + (failure.text or "")
    assert f"chaos-lab: the dev box (live host {dev.url}) and the AMI (manifest " in text, text
    assert f"package curl {curl}+fault1 (amd64) as on the dev box live host {dev.url}" in text, text
    assert text.count("[parity] chaos-lab image debian11-base") == 2, text  # curl, once per AMI build, nothing else
    import json

    parity = json.dumps(json.loads(summary.read_text()))
    assert f"live host {dev.url}" in parity and "dev_box_source" in parity and "ami_source" in parity
    assert "no image host (hosts: not checked (--no-hosts" in parity, parity[:3000]


def test_the_suite_reads_the_image_host_live_when_the_session_has_it(pair, baked, monkeypatch):
    import suites.test_image_parity as suite

    dev, image = pair
    catalog = load_catalog(baked)
    ap = catalog.template(TEMPLATE).current.ami_builds[0]
    instances = [{"InstanceId": image.name, "ImageId": "ami-sandbox1", "State": {"Name": "running"}},
                 {"InstanceId": "i-0nohost000000000c3", "ImageId": "ami-sandbox1", "State": {"Name": "running"}}]
    images = [{"ImageId": "ami-sandbox1", "Tags": [{"Key": "SourceArtifact", "Value": ap.amis[0].ami_id}]}]
    monkeypatch.setattr(suite, "group_images", lambda infra, group: (instances, images))

    class Hosts:  # group_hosts.HostsOfGroup's handle(): the instances that have a host
        def handle(self, instance_id):
            return {image.name: image}[instance_id]

    report, _ = _run_suite_test(dev.url, _Request(hosts=Hosts()), baked)
    assert report.facts["dev_box_source"] == f"live host {dev.url}"
    assert report.facts["ami_source"].startswith(f"live instance {image.name} at {image.url}, manifest ")
    assert report.facts["image_hosts"].startswith("1 of 2 AMI builds read live")
    assert [r["ami_source"].split(" ")[0] for r in report.tables["parity"]] == ["live", "manifest"]


def test_a_session_with_hosts_names_the_package_changed_on_the_dev_box_against_the_live_instance(
        pair, baked, tmp_path, record_property):
    """chaos-lab's two microservice instances run the ap-southeast-1 build: one is read live, the cn-north-1 build
    has no instance and stays on its manifest; curl changed on the dev box is named against each."""
    import json

    dev, _ = pair
    curl = _curl_changed(dev)
    started = time.monotonic()
    proc, failure, summary = _session(tmp_path, dev.url, baked, hosts=True)
    record_property("session_seconds", round(time.monotonic() - started, 1))
    assert failure is not None and failure.tag == "failure", proc.stdout[-3000:]
    text = (failure.get("message") or "") + (failure.text or "")
    assert f"chaos-lab: the dev box (live host {dev.url}) and the AMI (live instance i-" in text, text
    assert text.count("[parity] chaos-lab image debian11-base") == 2, text  # curl, once per AMI build, nothing else
    live = re.search(r"ami-ap-southeast-1 \(ami-\w+\): expected package curl (\S+) .*, found package curl (\S+) "
                     r"\(amd64\) on the AMI's instance (i-\w+)$", text, re.M)
    recorded = re.search(r"ami-cn-north-1 \(ami-\w+\): expected package curl (\S+) .*, found package curl (\S+) "
                         r"\(amd64\) on the AMI$", text, re.M)
    assert live and recorded, text
    assert live.groups()[:2] == recorded.groups() == (f"{curl}+fault1", curl)
    assert f"and the AMI (live instance {live.group(3)} at ssh://" in text, text
    parity = json.loads(summary.read_text())["groups"]["chaos-lab"]["checks"]["parity"]
    assert parity["facts"]["image_hosts"].startswith("1 of 2 AMI builds read live"), parity["facts"]
    assert parity["facts"]["ami_source"].startswith("live instance i-"), parity["facts"]
    rows = json.dumps(parity)
    assert '"configs_compared": 0' not in rows and "manifest " in rows


def test_the_dev_box_stopped_is_an_error_never_a_fallback(pair, baked):
    dev, image = pair
    catalog = load_catalog(baked)
    dev.stop()
    with pytest.raises(HostPackagesError) as gone:
        live_content_check(GROUP, [TEMPLATE], catalog, load_allow_list(baked / "parity.toml"), dev.url,
                           image_hosts={(TEMPLATE, "ami-ap-southeast-1"): ImageHost(image.name, image.url)})
    assert dev.link_ip in str(gone.value)
    assert leftovers(only=[dev.netns]) == []


# -- sessions: the suite with --dev-box (each about 35 s: chaos-lab applied in embedded moto) ----------------------


CURRENT_IMAGE_TF = """data "aws_ami" "current" {
  most_recent = true
  owners      = ["self"]
  filter {
    name   = "tag:Template"
    values = ["debian11-base"]
  }
}
"""


def _session(tmp_path, dev_box, images=IMAGES, hosts=False):
    """pytest suites/test_image_parity.py -k dev_box on chaos-lab (two microservice instances) with --dev-box;
    ``hosts``: with embedded hosts for its instances (the seed's microservice playbook and host contract), else
    ``--no-hosts``."""
    import os
    import sys
    import xml.etree.ElementTree as ET

    project = tmp_path / "project"
    shutil.copytree(ROOT / "tests" / "groups" / "chaos-lab", project / "groups" / "chaos-lab")
    with (project / "groups" / "chaos-lab" / "group.toml").open("a") as toml:  # its two instances, declared
        toml.write("\n[roles]\nmicroservice = 2\n")
    shutil.copy(ROOT / "tests" / "roles.toml", project / "roles.toml")
    if hosts:
        seed = (ROOT / "fixtures" / "roles.toml").read_text().split("[roles.microservice.host]", 1)[1]
        contract = "[roles.microservice.host]" + seed.split("\n[roles.", 1)[0]
        with (project / "roles.toml").open("a") as roles:
            roles.write("\n" + contract.strip() + "\n")
        (project / "playbooks").mkdir()
        shutil.copy(ROOT / "fixtures" / "playbooks" / "microservice.yml", project / "playbooks" / "microservice.yml")
        # its instances on the current debian11-base AMI (as the seed groups find it), not on moto's stock image
        (project / "groups" / "chaos-lab" / "current_image.tf").write_text(CURRENT_IMAGE_TF)
        (project / "groups" / "chaos-lab" / "current_image_override.tf").write_text(
            'resource "aws_instance" "app" {\n  ami = data.aws_ami.current.id\n}\n')
    shutil.copytree(images, project / "images")  # the seed's manifests: microservice is built by debian11-base
    shutil.copytree(ROOT / "suites", project / "suites")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMMUTABLE_INFRA_", "PYTEST_"))}
    env["IMMUTABLE_INFRA_HOME"] = str(project / "home")
    if os.environ.get("IMMUTABLE_INFRA_CACHE"):
        env["IMMUTABLE_INFRA_CACHE"] = os.environ["IMMUTABLE_INFRA_CACHE"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--groups-dir", "groups", "--group",
         "chaos-lab", *([] if hosts else ["--no-hosts"]), "--reports-dir", str(project / "reports"),
         f"--junitxml={project / 'junit.xml'}", "--dev-box", dev_box, "suites/test_image_parity.py", "-k", "dev_box"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    cases = list(ET.parse(project / "junit.xml").getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == ["test_dev_box_matches_the_ami[chaos-lab]"], proc.stdout[-3000:]
    outcome = [child for child in cases[0] if child.tag in ("error", "failure", "skipped")]
    return proc, outcome[0] if outcome else None, project / "reports" / "summary.json"


def test_a_session_with_an_unreachable_dev_box_errors_naming_it(tmp_path, record_property):
    import json

    started = time.monotonic()
    proc, error, summary = _session(tmp_path, REFUSED)
    record_property("seconds", round(time.monotonic() - started, 1))
    assert error is not None and error.tag == "error", proc.stdout[-3000:]  # not a pass, a finding or a fallback
    message = error.get("message") or ""
    assert f"parity: the dev box --dev-box {REFUSED} cannot run: {REFUSED}: cannot list packages" in message, message
    assert "Connection refused" in message and "CommandResult" not in message, message
    assert "chaos-lab checks: parity error" in proc.stdout, proc.stdout[-3000:]
    assert REFUSED in summary.read_text()


def test_a_difference_has_one_id_whether_the_dev_box_is_read_live_or_from_its_manifest():
    """Switching --dev-box on or off between two audits must not show one difference as fixed and new."""
    def edit(packages):
        packages["telnet"] = ("0.17+2.4-2", "amd64")

    live = live_content_check(GROUP, [TEMPLATE], CATALOG, ALLOW, recorded_dev_box(packages=edit)).findings
    catalog = load_catalog(IMAGES)
    edit(catalog.template(TEMPLATE).current.dev_boxes[0].packages)  # the same box, recorded with telnet
    recorded = find_content_violations(GROUP, TEMPLATE, catalog, ALLOW)
    assert [f for f in live if f.detail["package"] == "telnet"], "the live side saw no difference"
    assert sorted(finding_id(f) for f in live) == sorted(finding_id(f) for f in recorded)
    assert {f.detail["dev_box_source"] for f in live} == {"live host ssh://vagrant@dev-box"}  # the sources differ
