"""Rebuild overhead and overlap, on one embedded sandbox.

    python bench/rebuild.py            # about 12 minutes on a 2-core machine

Prints:
1. raw Terraform (the same engine, no product) apply + destroy of prd-sg-slave,
   against the product's rebuild of the same group (destroy + apply + its
   refresh-only settle, outputs and fingerprints), and the ratio (goal <= 1.10);
2. two independent chains (ops-sg -> prd-sg-slave, ops-cn -> prd-cn) brought up
   one group after another, against the product bringing them up together
   (goal: close to the longest chain, not the sum).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))

from immutable_infra.catalog import resolve_inputs  # noqa: E402
from immutable_infra.engine import Terraform  # noqa: E402
from immutable_infra.harness import Harness  # noqa: E402
from immutable_infra.settings import Settings  # noqa: E402


def harness(home: Path, endpoint: str) -> Harness:
    s = Settings(groups_dir=ROOT / "fixtures" / "groups", aws_endpoint=endpoint, home=home)
    return Harness(s, say=lambda line: None)


def main() -> None:
    from immutable_infra.sandbox import MotoServer

    server = MotoServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            h = harness(home, server.url)
            h.up(["ops-sg"])

            # 1. raw Terraform on a copy of prd-sg-slave, prepared exactly as the product prepares it
            group = h.catalog.get("prd-sg-slave")
            outputs = {n: r.outputs for n, r in h.run.groups.items() if r.status == "applied"}
            raw_run = h.run
            ws = raw_run.prepare(group, h.catalog, h.sandbox, resolve_inputs(group, outputs))
            raw_ws = ws.parent / "raw-prd-sg-slave"
            ws.rename(raw_ws)
            tf = Terraform(raw_ws, h.sandbox.terraform_env())
            tf.init()
            t0 = time.monotonic()
            tf.apply()
            raw_apply = time.monotonic() - t0
            t0 = time.monotonic()
            tf.destroy()
            raw_destroy = time.monotonic() - t0
            raw = raw_apply + raw_destroy

            # the product's rebuild of the same group
            h.up(["prd-sg-slave"])
            timing = h.rebuild("prd-sg-slave")
            ours = timing["total_seconds"]
            print(f"raw terraform apply + destroy of prd-sg-slave: {raw_apply:.1f} + {raw_destroy:.1f} = {raw:.1f} s")
            print(f"product rebuild of prd-sg-slave:               {timing['apply_seconds']:.1f} + "
                  f"{timing['destroy_seconds']:.1f} = {ours:.1f} s")
            print(f"ratio: {ours / raw:.2f} (goal <= 1.10)")
            h.teardown()

            # 2. two independent chains: one group after another, then together
            h = harness(home, server.url)
            sequential = 0.0
            for name in ("ops-sg", "prd-sg-slave", "ops-cn", "prd-cn"):
                t0 = time.monotonic()
                h.up([name])
                sequential += time.monotonic() - t0
            h.teardown()
            h = harness(home, server.url)
            t0 = time.monotonic()
            h.up(["prd-sg-slave", "prd-cn"])
            together = time.monotonic() - t0
            chains = {n: h.run.groups[n].timings for n in h.run.order}
            longest = max(
                sum(chains[g].get("init", 0) + chains[g]["apply"] + chains[g].get("refresh", 0) for g in chain)
                for chain in (("ops-sg", "prd-sg-slave"), ("ops-cn", "prd-cn"))
            )
            h.teardown()
            print(f"two chains one group after another: {sequential:.1f} s")
            print(f"two chains by the product:          {together:.1f} s (longest chain alone: {longest:.1f} s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
