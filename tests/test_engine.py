"""Engine: errors carry command, exit code and diagnostics; only transient errors are retried; events become timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from immutable_infra import engine
from immutable_infra.engine import ExternalDriver, Terraform, TerraformError, _ApplyTracker

DATA = Path(__file__).parent / "data" / "engine"

FAKE = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_TF_STATE"])
calls = json.loads(state.read_text()) if state.exists() else []
calls.append(sys.argv[1:])
state.write_text(json.dumps(calls))
script = json.loads(os.environ["FAKE_TF_SCRIPT"])
step = script[min(len(calls), len(script)) - 1]
sys.stdout.write(Path(step["stdout"]).read_text() if step.get("stdout") else "")
sys.stderr.write(step.get("stderr", ""))
sys.exit(step["exit"])
'''


class FakeDriver:
    """A stand-in Terraform that replays recorded output, one scripted step per call."""

    name = "fake"

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "fake_terraform.py"
        self.script.write_text(FAKE)

    def argv(self, args):
        return [sys.executable, str(self.script), *args]


def terraform(tmp_path, steps, monkeypatch) -> Terraform:
    monkeypatch.setattr(engine, "RETRY_DELAY", 0.01)
    env = {"FAKE_TF_SCRIPT": json.dumps(steps), "FAKE_TF_STATE": str(tmp_path / "calls.json")}
    return Terraform(tmp_path, env, FakeDriver(tmp_path))


def calls(tmp_path):
    return json.loads((tmp_path / "calls.json").read_text())


def test_error_carries_command_exit_code_and_diagnostic_with_file_and_line(tmp_path, monkeypatch):
    tf = terraform(tmp_path, [{"stdout": str(DATA / "plan-invalid-hcl.jsonl"), "exit": 1}], monkeypatch)
    with pytest.raises(TerraformError) as err:
        tf.plan()
    e = err.value
    assert e.exit_code == 1
    assert e.command[0] == "plan" and "-json" in e.command
    assert e.diagnostics == [
        "Error: Invalid expression (main.tf:2): Expected the start of an expression, but found an invalid expression token."
    ]
    assert "terraform plan" in str(e) and "(exit 1)" in str(e)
    assert len(calls(tmp_path)) == 1, "a configuration error is not retried"


def test_plain_stderr_is_used_when_there_are_no_json_diagnostics(tmp_path, monkeypatch):
    stderr = "\x1b[31m╷\x1b[0m\n│ Error: Failed to query available provider packages\n│ \n│ Could not retrieve the list\n╵\n"
    tf = terraform(tmp_path, [{"stderr": stderr, "exit": 1}], monkeypatch)
    with pytest.raises(TerraformError) as err:
        tf.init()
    assert "Error: Failed to query available provider packages" in err.value.diagnostics


def test_transient_lock_error_is_retried_then_succeeds(tmp_path, monkeypatch):
    steps = [{"stderr": "Error acquiring the state lock\n", "exit": 1}, {"stdout": str(DATA / "apply-tiny.jsonl"), "exit": 0}]
    tf = terraform(tmp_path, steps, monkeypatch)
    result = tf.apply()
    assert len(calls(tmp_path)) == 2
    assert {t.address for t in result.timings} == {"aws_vpc.this", "aws_subnet.a", "aws_security_group.ssh"}


def test_transient_error_gives_up_after_the_retries(tmp_path, monkeypatch):
    tf = terraform(tmp_path, [{"stderr": "Error acquiring the state lock\n", "exit": 1}], monkeypatch)
    with pytest.raises(TerraformError):
        tf.apply()
    assert len(calls(tmp_path)) == engine.RETRIES + 1


def test_apply_events_give_per_resource_seconds_and_progress():
    seen = []
    tracker = _ApplyTracker("apply", lambda verb, done, total, s: seen.append((verb, done, total)))
    for line in (DATA / "apply-tiny.jsonl").read_text().splitlines():
        tracker.on_event(json.loads(line))
    tracker.finish()
    assert tracker.total == 3 and tracker.done == 3
    assert all(t.seconds >= 0 and t.action == "create" for t in tracker.timings)
    assert tracker.summary["add"] == 3
    assert seen[-1] == ("apply", 3, 3)


def test_a_refresh_only_apply_always_ends_with_a_line_saying_how_long_it_took():
    seen = []
    tracker = _ApplyTracker("refresh", lambda verb, done, total, s: seen.append((verb, done, total)))
    tracker.tick()  # a heartbeat while it waits (done stays 0: nothing to count)
    tracker.finish()
    assert seen == [("refresh", 0, 0), ("refresh", 0, 0)]


def test_external_driver_builds_argv_with_python_terraform_and_names_a_missing_binary(tmp_path):
    binary = tmp_path / "terraform"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    argv = ExternalDriver(str(binary)).argv(["apply", "-destroy", "-auto-approve"])
    assert argv == [str(binary), "apply", "-destroy", "-auto-approve"]
    assert "-force" not in argv
    with pytest.raises(FileNotFoundError, match="no such executable"):
        ExternalDriver(str(tmp_path / "missing"))


def test_each_command_is_timed_into_the_file_the_timings_variable_names(tmp_path, monkeypatch):
    """bench/overhead.py measures the Terraform floor from these lines; without the variable nothing is written."""
    steps = [{"stdout": str(DATA / "apply-tiny.jsonl"), "exit": 0}]
    tf = terraform(tmp_path, steps, monkeypatch)
    tf.apply(refresh_only=True)
    assert not list(tmp_path.glob("*.jsonl"))
    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv(engine.TIMINGS_ENV, str(timings))
    tf.apply(refresh_only=True)
    tf.apply()
    rows = [json.loads(line) for line in timings.read_text().splitlines()]
    assert [(r["verb"], r["refresh_only"], r["exit"]) for r in rows] == [("apply", True, 0), ("apply", False, 0)]
    assert all(0 < r["seconds"] < 60 and r["end"] > 1e9 for r in rows)


def test_the_overhead_benchmark_counts_overlapping_terraform_commands_once():
    import importlib.util

    spec = importlib.util.spec_from_file_location("overhead", Path(__file__).parent.parent / "bench" / "overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    assert overhead.union_seconds([]) == 0
    assert overhead.union_seconds([(0, 10), (5, 12), (20, 21), (11, 11.5)]) == 13


def test_state_and_outputs_of_a_local_workspace_come_from_its_file_and_elsewhere_from_show(tmp_path, monkeypatch):
    recorded = Path(__file__).parent / "data" / "statefile"
    shown = recorded / "show.json"
    work = tmp_path / "ws"
    work.mkdir()
    (work / "terraform.tfstate").write_text((recorded / "terraform.tfstate").read_text())
    tf = terraform(work, [{"exit": 0, "stdout": str(shown)}], monkeypatch)
    state = tf.state()
    assert not (work / "calls.json").exists()  # no Terraform process: read from the file
    assert [r["address"] for r in state["values"]["root_module"]["resources"]] == [
        r["address"] for r in json.loads(shown.read_text())["values"]["root_module"]["resources"]]
    assert tf.output() == {k: v["value"] for k, v in json.loads(shown.read_text())["values"]["outputs"].items()}

    data = work / ".terraform"
    data.mkdir()
    (data / "terraform.tfstate").write_text(json.dumps({"backend": {"type": "s3", "config": {"bucket": "b"}}}))
    assert tf.state() == json.loads(shown.read_text())  # an S3 backend: show -json
    assert calls(work) == [["show", "-json", "-no-color"]]


def test_a_host_step_is_timed_beside_the_terraform_commands(tmp_path, monkeypatch):
    """bench/overhead.py tells host boots and playbooks (verbs of their own) from Terraform commands."""
    from immutable_infra.timings import record_timing

    monkeypatch.delenv(engine.TIMINGS_ENV, raising=False)
    record_timing("host-boot", "web-1", 2.5)
    assert not list(tmp_path.glob("*.jsonl"))
    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv(engine.TIMINGS_ENV, str(timings))
    record_timing("host-boot", "web-1", 2.5)
    record_timing("playbook", "web", 4.0, 2)
    rows = [json.loads(line) for line in timings.read_text().splitlines()]
    assert [(r["verb"], r["workdir"], r["seconds"], r["exit"], r["refresh_only"]) for r in rows] == [
        ("host-boot", "web-1", 2.5, 0, False), ("playbook", "web", 4.0, 2, False)]
