"""Live parity (issue 14 item 2): the dev box read live through testinfra, against the current run's AMI manifests.

- Plain data: ``--dev-box`` is a setting (flag, env, ini) documented in README's Options table; without it the
  content check reports the recorded vagrant manifest as its source; a dev box that refuses the connection is a
  HostPackagesError (a ToolError: the suite's test errors) naming the URL, never a fallback to the manifests.
- One embedded host (systemd-nspawn, Debian 12) as the "dev box": the AMI builds' package manifests of a copy of
  the seed's debian11-base current run are written from the host's own ``dpkg-query`` output (what Packer
  records at bake time): live parity finds nothing. Then curl is changed in place (a package rebuilt with
  dpkg-deb at another version): live parity names exactly curl, with the source ``live host <url>``, and so does
  a session of ``suites/test_image_parity.py --dev-box <the host's URL>`` on chaos-lab (applied in embedded moto).
- A session with ``--dev-box`` at a box that refuses: the content test is an error naming the URL.

The host part needs root, systemd-nspawn, debootstrap (``tools/install-host-runtime``); it skips with the reason
otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from immutable_infra.checks.parity import manifest_sources
from immutable_infra.embedded_hosts import build_rootfs, leftovers, runtime_available, start_host
from immutable_infra.errors import ToolError
from immutable_infra.hosts import HostPackagesError, live_content_check, live_package_parity
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


# -- one embedded host as the dev box ------------------------------------------------------------


def ssh(handle, script: str) -> str:
    proc = subprocess.run(handle.ssh_command("sh", "-c", f"'{script}'"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{script}: {proc.stderr}"
    return proc.stdout


def test_live_parity_names_the_package_changed_on_the_dev_box(tmp_path, record_property):
    reason = runtime_available()
    if reason:
        pytest.skip(reason)
    rootfs = build_rootfs("debian12-base")
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    allow = load_allow_list(images / "parity.toml")
    started = time.monotonic()
    handle = start_host("i-0devbox00000000a1", "10.21.0.10", rootfs, tmp_path / "run")
    try:
        # What Packer records at bake time: the image's dpkg-query output, here the host's own.
        baked = ssh(handle, DPKG_COMMAND.replace("'", '"').replace("$", "\\$"))
        catalog = load_catalog(images)
        run = catalog.template(TEMPLATE).current
        assert len(run.ami_builds) == 2
        for ami in run.ami_builds:
            ami.packages_path.write_text(baked)
        catalog = load_catalog(images)

        clean = live_content_check("prd-sg-slave", [TEMPLATE], catalog, allow, handle.url)
        assert clean.findings == [] and clean.source == f"live host {handle.url}", [f.found for f in clean.findings]
        assert [r["ami_source"] for r in clean.rows] == [f"manifest {a.packages_path}" for a in run.ami_builds]
        assert all(r["packages_compared"] > 100 and r["dev_box_source"] == clean.source for r in clean.rows)

        curl = ssh(handle, "dpkg-query -W -f=\\${Version} curl")
        ssh(handle, "set -e; d=/tmp/curl-fault; mkdir -p $d/DEBIAN; "
                    f"printf \"Package: curl\\nVersion: {curl}+fault1\\nArchitecture: amd64\\n"
                    "Maintainer: test <t@example.com>\\nDescription: curl changed in place\\n\" > $d/DEBIAN/control; "
                    "dpkg-deb --build $d /tmp/curl-fault.deb >/dev/null; dpkg -i /tmp/curl-fault.deb >/dev/null")

        one = live_package_parity(handle.url, run.ami_builds[0].packages_path, allow, template=TEMPLATE)
        changed = live_content_check("prd-sg-slave", [TEMPLATE], catalog, allow, handle.url)
        # the same through the suite: pytest suites/test_image_parity.py --dev-box <the host's url>
        session_started = time.monotonic()
        proc, failure, summary = _session(tmp_path, handle.url, images)
        record_property("session_seconds", round(time.monotonic() - session_started, 1))
    finally:
        handle.stop()
    record_property("seconds", round(time.monotonic() - started, 1))

    assert one.host_source == f"live host {handle.url}"
    assert one.manifest_source == f"manifest {run.ami_builds[0].packages_path}"
    assert [(d.name, d.change, d.dev_version, d.ami_version) for d in one.violations] == [
        ("curl", "changed", f"{curl}+fault1", curl)]
    assert sorted((f.address, f.detail["package"]) for f in changed.findings) == [
        (f"image {TEMPLATE} {a.name}", "curl") for a in run.ami_builds]
    for f in changed.findings:
        assert f.expected == f"package curl {curl}+fault1 (amd64) as on the dev box live host {handle.url}"
        assert f.found == f"package curl {curl} (amd64) on the AMI"
        assert f.detail["dev_box_source"] == f"live host {handle.url}"
    assert [r["differences"] for r in changed.rows] == [1, 1]

    assert failure is not None and failure.tag == "failure", proc.stdout[-3000:]
    text = (failure.get("message") or "") + (failure.text or "")
    assert f"chaos-lab: the dev box (live host {handle.url}) and the AMI differ" in text, text
    assert f"package curl {curl}+fault1 (amd64) as on the dev box live host {handle.url}" in text, text
    assert text.count("[parity] chaos-lab image debian11-base") == 2, text  # curl, once per AMI build, nothing else
    import json

    parity = json.loads(summary.read_text())
    assert f"live host {handle.url}" in json.dumps(parity) and "dev_box_source" in json.dumps(parity)

    with pytest.raises(HostPackagesError) as gone:  # the box stopped: an error naming it, never a fallback
        live_content_check("prd-sg-slave", [TEMPLATE], catalog, allow, handle.url)
    assert handle.link_ip in str(gone.value)
    assert leftovers(only=[handle.netns]) == []


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


def _run_suite_test(dev_box):
    from types import SimpleNamespace

    import suites.test_image_parity as suite
    from immutable_infra.settings import Settings

    settings = Settings(dev_box=dev_box, sources={"dev_box": "--dev-box"} if dev_box else {})
    group = SimpleNamespace(name="prd-sg-slave", config=SimpleNamespace(roles={"reverse-proxy": None}))
    report = _Report()
    catalog = load_catalog(IMAGES)
    image_catalog = (catalog, load_allow_list(IMAGES / "parity.toml"))
    # what the live_dev_box fixture runs (there, the pytest.fail of cannot_check is a test error)
    live = suite.read_dev_box(group, image_catalog, SimpleNamespace(settings=settings, _sandbox=None))
    suite.test_dev_box_matches_the_ami(group, None, image_catalog, live, report)
    return report, catalog


def test_the_suite_reports_the_manifest_source_without_a_dev_box():
    report, catalog = _run_suite_test(None)
    run = catalog.template(TEMPLATE).current.uuid
    assert report.facts == {"dev_box_source": f"manifest {IMAGES / TEMPLATE / run / 'dev-box.packages.txt'}"}
    assert report.findings_ == [] and report.tables["parity"]


def test_the_suite_errors_on_an_unreachable_dev_box_and_does_not_fall_back():
    with pytest.raises(pytest.fail.Exception) as failed:
        _run_suite_test(REFUSED)
    message = str(failed.value)
    assert message.startswith(f"parity: the dev box --dev-box {REFUSED} cannot run: {REFUSED}: cannot list packages")


# -- sessions: the suite with --dev-box (each about 35 s: chaos-lab applied in embedded moto) ----------------------


def _session(tmp_path, dev_box, images=IMAGES):
    """pytest suites/test_image_parity.py -k dev_box on chaos-lab (two microservice instances) with --dev-box."""
    import os
    import sys
    import xml.etree.ElementTree as ET

    project = tmp_path / "project"
    shutil.copytree(ROOT / "tests" / "groups" / "chaos-lab", project / "groups" / "chaos-lab")
    with (project / "groups" / "chaos-lab" / "group.toml").open("a") as toml:  # its two instances, declared
        toml.write("\n[roles]\nmicroservice = 2\n")
    shutil.copy(ROOT / "tests" / "roles.toml", project / "roles.toml")
    shutil.copytree(images, project / "images")  # the seed's manifests: microservice is built by debian11-base
    shutil.copytree(ROOT / "suites", project / "suites")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMMUTABLE_INFRA_", "PYTEST_"))}
    env["IMMUTABLE_INFRA_HOME"] = str(project / "home")
    if os.environ.get("IMMUTABLE_INFRA_CACHE"):
        env["IMMUTABLE_INFRA_CACHE"] = os.environ["IMMUTABLE_INFRA_CACHE"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--groups-dir", "groups", "--group",
         "chaos-lab", "--no-hosts", "--reports-dir", str(project / "reports"), f"--junitxml={project / 'junit.xml'}",
         "--dev-box", dev_box, "suites/test_image_parity.py", "-k", "dev_box"],
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
