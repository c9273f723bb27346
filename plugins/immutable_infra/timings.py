"""Timed steps of a session, one JSON line each, in the file ``$IMMUTABLE_INFRA_TIMINGS`` names (unset: nothing).

The engine records every Terraform command; the embedded hosts record each
boot and each playbook run. ``bench/overhead.py`` sets the variable and reads
the lines back to split a session's wall time into Terraform, hosts and the
tool's own work.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

TIMINGS_ENV = "IMMUTABLE_INFRA_TIMINGS"


def record_timing(verb: str, label: str, seconds: float, exit_code: int = 0, **extra: Any) -> None:
    """Append ``{"verb", "workdir": label, "end", "seconds", "exit", ...}`` as one line, if the variable is set."""
    path = os.environ.get(TIMINGS_ENV)
    if not path:
        return
    line = json.dumps({"verb": verb, "refresh_only": False, **extra, "workdir": label,
                       "end": time.time(), "seconds": round(seconds, 3), "exit": exit_code})
    with open(path, "a", encoding="utf-8") as fh:  # one short line per write: appends from threads and workers interleave whole
        fh.write(line + "\n")
