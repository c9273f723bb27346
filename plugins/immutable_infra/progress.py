"""Progress lines for long phases: one line when a phase ends, and a heartbeat while it runs long.

A person watching a session must see a line at least every minute. Terraform
commands report their own progress (:mod:`immutable_infra.engine` calls back
every few seconds); a phase made of many reads (a chaos batch's checks) uses
:func:`phase`, which says how long it took and, while it runs, says every
``every`` seconds that it still runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

Say = Callable[[str], None]

#: Seconds between "still running" lines of a phase (under a minute, so no minute passes silently).
HEARTBEAT_SECONDS = 30.0


@contextlib.contextmanager
def heartbeat(say: Say, what: str, every: float = HEARTBEAT_SECONDS, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """While the block runs, say ``<what>: still running, N s`` every ``every`` seconds (from a daemon thread)."""
    started = clock()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            say(f"{what}: still running, {clock() - started:.0f} s")

    thread = threading.Thread(target=beat, name=f"heartbeat: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Phase:
    """A timed phase: ``seconds`` once it ended (while it runs: so far)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else self._clock()) - self.started


@contextlib.contextmanager
def phase(say: Say, what: str, every: float = HEARTBEAT_SECONDS) -> Iterator[Phase]:
    """Time a phase, with a heartbeat while it runs; the caller says how it ended (``Phase.seconds``)."""
    timer = Phase()
    with heartbeat(say, what, every):
        try:
            yield timer
        finally:
            timer.ended = timer._clock()


def console_line(write: Say, line: str) -> None:
    """Write one line with ``write``; when the console is gone (a closed pipe, a lost agent), try stderr, then drop it.

    A teardown must never stop half-way because nobody is reading: the
    destroys matter more than the lines that tell of them.
    """
    import sys

    try:
        write(line)
        return
    except (OSError, ValueError):  # BrokenPipeError, EIO, a closed file
        pass
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
