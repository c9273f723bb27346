"""Long phases say they still run (so no minute passes silently) and how long they took."""

from __future__ import annotations

import threading
import time

from immutable_infra.progress import heartbeat, phase


def test_a_long_phase_beats_and_a_short_one_stays_quiet():
    lines: list[str] = []
    with heartbeat(lines.append, "[g] chaos batch 1: baseline checks", every=0.05):
        time.sleep(0.28)
    assert len(lines) >= 3 and all(line.startswith("[g] chaos batch 1: baseline checks: still running, ")
                                   for line in lines)
    quiet: list[str] = []
    with heartbeat(quiet.append, "short", every=5):
        pass
    assert quiet == []


def test_the_heartbeat_stops_with_the_phase_even_when_it_fails():
    lines: list[str] = []
    before = threading.active_count()
    try:
        with phase(lines.append, "failing", every=0.02) as timer:
            time.sleep(0.05)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert threading.active_count() == before
    count = len(lines)
    time.sleep(0.1)
    assert len(lines) == count  # nothing after the phase ended
    assert 0.05 <= timer.seconds < 1
