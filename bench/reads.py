"""Benchmark: what one verification pass and one chaos batch read (``show -json``, describe snapshots, EC2 calls).

    PYTHONPATH=plugins python bench/reads.py

Three groups built in moto in-process and a stand-in Terraform that counts its
``show -json`` calls (the fake harness of tests/test_reading.py), the real
checks and the real chaos experiment (repair and settle are no-ops). Before
one Reading per pass (commit 2afa7c3) the same script printed:
``verify_group(all 6 checks)`` show_json=13 describe_group=3 aws_calls=75;
``applicable(all 6)`` show_json=5; one ``sg_opened_to_world`` batch
show_json=45 describe_group=10 run_snapshot=3 aws_calls=245.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", MOTO_EC2_LOAD_DEFAULT_AMIS="false")

from moto import mock_aws  # noqa: E402

from immutable_infra import experiment, live, verify  # noqa: E402
from test_reading import ALL, FakeHarness  # noqa: E402

snaps: Counter = Counter()


def _count(attr: str) -> None:
    real = getattr(live, attr)

    def wrapper(*args, **kwargs):
        snaps[attr] += 1
        return real(*args, **kwargs)

    setattr(live, attr, wrapper)


def main() -> None:
    for attr in ("describe_group", "run_snapshot"):
        _count(attr)
    with mock_aws():
        h = FakeHarness()
        cases = [("pass", lambda: verify.verify_group(h, "g1", ALL)),
                 ("applicable", lambda: verify.applicable(h, "g1", ALL)),
                 ("chaos_batch_sg_opened", lambda: experiment.run(h, "g1", ["sg_opened_to_world"], ALL)),
                 ("chaos_batch_rogue", lambda: experiment.run(h, "g1", ["rogue_instance"], ALL))]
        for label, fn in cases:
            h.calls.clear()
            snaps.clear()
            t0 = time.monotonic()
            fn()
            seconds = time.monotonic() - t0
            c = h.calls
            show = sum(v for k, v in c.items() if k.startswith("show:"))
            aws = sum(v for k, v in c.items() if k.startswith("aws:"))
            print(f"{label}: show_json={show} describe_group={snaps['describe_group']} "
                  f"run_snapshot={snaps['run_snapshot']} aws_calls={aws} seconds={seconds:.2f}")
            print(f"show_json_{label}: {show}")
            print(f"describe_{label}: {snaps['describe_group']}")


if __name__ == "__main__":
    main()
