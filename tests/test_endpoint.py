"""The endpoint: only the immutable-infra sandbox is accepted, and an endpoint that dies mid-session is an error, fast.

A plain moto server answers with moto's known differences from AWS (instance
security groups read back empty, private zones public), which the suites
would report as findings: it is refused up front with one line. An endpoint
that goes away while the session runs turns every later check into a test
error with one line, without minutes of retries.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.endpoint import Endpoint
from moto.server import ThreadedMotoServer

from immutable_infra.sandbox import MARKER_PATH, EndpointGone, MotoServer, Sandbox, SandboxError, check_endpoint, free_port

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def plain_moto():
    """moto as a user who runs `moto_server` would have it: no compatibility fixes, no marker."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def plain_http():
    """An HTTP server that is not AWS at all."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_sandbox_identifies_itself(moto_server):
    check_endpoint(moto_server.url)  # accepted
    import urllib.request

    marker = json.loads(urllib.request.urlopen(moto_server.url + MARKER_PATH, timeout=5).read())
    assert marker["product"] == "immutable-infra" and "route53_zone_with_vpc_is_private" in marker["fixes"]


@pytest.mark.parametrize("endpoint", ["plain_moto", "plain_http"])
def test_an_endpoint_that_is_not_the_sandbox_is_refused(endpoint, request):
    url = request.getfixturevalue(endpoint)
    with pytest.raises(SandboxError, match=rf"the AWS endpoint {url} is not the immutable-infra sandbox .*"
                                           r"`immutable-infra sandbox --port P`"):
        check_endpoint(url)


def project(pytester, tmp_path, monkeypatch, *groups):
    target = pytester.path / "groups"
    for name in groups:
        shutil.copytree(TESTS / "groups" / name, target / name)
    if (TESTS / "roles.toml").exists():
        shutil.copy(TESTS / "roles.toml", pytester.path / "roles.toml")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    return pytester


@pytest.mark.parametrize("endpoint", ["plain_moto", "plain_http"])
def test_the_plugin_refuses_it_in_one_line_before_anything_applies(endpoint, request, pytester, tmp_path, monkeypatch):
    url = request.getfixturevalue(endpoint)
    project(pytester, tmp_path, monkeypatch, "tiny")
    pytester.makepyfile(test_suite="def test_applied(applied_group):\n    assert applied_group.resources\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                           "--aws-endpoint", url, "--reports-dir", str(tmp_path / "reports"))
    result.stderr.fnmatch_lines([f"ERROR: the AWS endpoint {url} is not the immutable-infra sandbox*immutable-infra sandbox*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_the_command_refuses_it_in_one_line(plain_moto, tmp_path):
    exe = Path(sys.executable).with_name("immutable-infra")
    proc = subprocess.run([str(exe), "up", "tiny", "--aws-endpoint", plain_moto], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "IMMUTABLE_INFRA_HOME": str(tmp_path / "home"),
                                             "IMMUTABLE_INFRA_GROUPS_DIR": str(TESTS / "groups")}, timeout=120)
    assert proc.returncode != 0
    assert "is not the immutable-infra sandbox" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_clients_give_up_fast_and_the_latch_holds(tmp_path):
    server = MotoServer().start()
    sandbox = Sandbox(endpoint=server.url, cache_dir=tmp_path, server=server)
    ec2 = sandbox.client("ec2", "ap-southeast-1")
    ec2.describe_vpcs()
    sandbox.ensure_reachable()  # alive: nothing raised
    server.stop()
    started = time.monotonic()
    with pytest.raises(Exception):
        ec2.describe_vpcs()
    print(f"a describe against the dead endpoint gave up after {time.monotonic() - started:.2f} s")
    with pytest.raises(EndpointGone, match=rf"the AWS endpoint {server.url} went away mid-session .*restart the session"):
        sandbox.ensure_reachable()
    assert sandbox.gone
    with pytest.raises(EndpointGone):
        sandbox.ensure_reachable()  # latched: no new probe needed


def test_a_hung_endpoint_is_seen_as_gone(tmp_path, monkeypatch):
    """An endpoint that accepts connections and never answers (a stopped process): bounded, then latched."""
    import socket

    from botocore.exceptions import ReadTimeoutError

    from immutable_infra import sandbox as sandbox_mod

    monkeypatch.setattr(sandbox_mod, "SANDBOX_READ_TIMEOUT", 1)  # 15 s in use; the attempts are what is tested
    calls = []
    send = Endpoint._send

    def counted(self, request):
        calls.append(request.url)
        return send(self, request)

    monkeypatch.setattr(Endpoint, "_send", counted)

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections are accepted by the kernel; nothing ever reads or answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        sandbox = Sandbox(endpoint=url, cache_dir=tmp_path)
        ec2 = sandbox.client("ec2", "ap-southeast-1")
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            ec2.describe_vpcs()
        print(f"a describe against the hung endpoint gave up after {time.monotonic() - started:.1f} s")
        assert len(calls) == sandbox_mod.SANDBOX_MAX_ATTEMPTS == 2
        with pytest.raises(EndpointGone, match=rf"the AWS endpoint {url} went away mid-session \(.*timed out"):
            sandbox.ensure_reachable()


def test_a_check_cut_off_by_the_dead_endpoint_is_one_line(tmp_path):
    """What a check in progress sees when the endpoint dies: a botocore error becomes one line naming the endpoint."""
    from types import SimpleNamespace

    from immutable_infra.plugin import cannot_check

    server = MotoServer().start()
    sandbox = Sandbox(endpoint=server.url, cache_dir=tmp_path, server=server)
    ec2 = sandbox.client("ec2", "ap-southeast-1")
    server.stop()
    with pytest.raises(pytest.fail.Exception, match=rf"^drift on g: the AWS endpoint {server.url} went away mid-session") as info:
        with cannot_check(SimpleNamespace(_sandbox=sandbox), "drift on g"):
            ec2.describe_vpcs()
    assert "\n" not in str(info.value)


KILL_CONFTEST = '''
import time
import pytest
from immutable_infra.plugin import HARNESS

KILLED = []


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    # After the first suite test that applied the group, the embedded endpoint dies.
    if not KILLED and "applied_group" in item.fixturenames:
        item.config.stash[HARNESS].sandbox.server.stop()
        KILLED.append(time.monotonic())
        print("\\nENDPOINT KILLED", flush=True)


def pytest_sessionfinish(session):
    if KILLED:
        print(f"\\nSECONDS FROM KILL TO SESSION END: {time.monotonic() - KILLED[0]:.1f}", flush=True)
'''


def test_endpoint_killed_mid_session_makes_every_later_check_an_error(pytester, tmp_path, monkeypatch):
    """The embedded endpoint is stopped right after the first suite test: every later check errors with one line."""
    project(pytester, tmp_path, monkeypatch, "tiny")
    pytester.makeconftest(KILL_CONFTEST)
    shutil.copytree(TESTS.parent / "suites", pytester.path / "suites")  # the suites users run, as they are
    modules = [f"suites/{f}" for f in ("test_lifecycle.py", "test_drift.py", "test_roles.py", "test_peering.py",
                                       "test_mutation.py")]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                           "--reports-dir", str(tmp_path / "reports"), "-s", *modules,
                                           "-k", "not merge_gate and not playbooks and not consumed")
    out = result.stdout.str()
    print(out[-3000:])
    assert "ENDPOINT KILLED" in out
    outcomes = result.parseoutcomes()
    # test_group_applied passed before the kill; everything after it that needs the endpoint is an error.
    assert outcomes.get("passed") == 1, outcomes
    assert outcomes.get("errors", 0) >= 8, outcomes
    assert not outcomes.get("failed"), outcomes
    gone = [line for line in out.splitlines() if "went away mid-session" in line]
    assert gone, out
    assert "Traceback" not in out and "EndpointConnectionError" not in out and "During handling" not in out
    assert "was not destroyed: its AWS endpoint" in out
    seconds = float(re.search(r"SECONDS FROM KILL TO SESSION END: ([0-9.]+)", out).group(1))
    print(f"from the endpoint's death to the end of the session: {seconds:.1f} s, {outcomes.get('errors')} errors")
