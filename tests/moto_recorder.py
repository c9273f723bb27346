"""moto's request recorder, as the tests that prove an audit never writes read it."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request

#: AWS query actions that only read
READ_PREFIXES = ("Describe", "List", "Get")


def recorder(server, verb: str) -> str:
    """Call the recorder of a moto server: reset-recording, start-recording, stop-recording, download-recording."""
    req = urllib.request.Request(f"{server.url}/moto-api/recorder/{verb}",
                                 method="GET" if verb == "download-recording" else "POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def writes(recording: str) -> list[str]:
    """Every recorded AWS request that is not a read."""
    found = []
    for line in recording.splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        action = urllib.parse.parse_qs(body).get("Action", [""])[0] if "Action=" in body else ""
        if action and not action.startswith(READ_PREFIXES):
            found.append(action)
        elif not action and entry["method"] not in ("GET", "HEAD"):
            found.append(f"{entry['method']} {entry['url']}")
    return found
