"""Record tests/groups/realworld's state file beside what ``terraform show -json`` prints of it.

tests/test_statefile.py loads the two files this script writes next to it and
checks that reading the state file gives exactly ``show -json``'s resources and
outputs (modules, ``count`` and ``for_each`` included); the tests never run it.
Re-record after a Terraform, provider or moto upgrade (about two minutes, no network):

    .venv/bin/python tests/data/statefile/make_recording.py

Writes ``terraform.tfstate`` (the workspace's state file after apply) and
``show.json`` (``terraform show -json`` of the same state).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent.parent
GROUP = "realworld"


def main() -> int:
    from immutable_infra.harness import Harness
    from immutable_infra.sandbox import MotoServer
    from immutable_infra.settings import Settings

    with MotoServer() as server, tempfile.TemporaryDirectory() as home:
        harness = Harness(Settings(groups=[GROUP], groups_dir=TESTS / "groups", aws_endpoint=server.url,
                                   run_id="rec-statefile", home=Path(home)), say=print)
        try:
            harness.up([GROUP])
            tf = harness.deployer.terraform(GROUP)
            (HERE / "terraform.tfstate").write_text((tf.workdir / "terraform.tfstate").read_text())
            (HERE / "show.json").write_text(json.dumps(tf.show(), indent=1, sort_keys=True) + "\n")
        finally:
            harness.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
