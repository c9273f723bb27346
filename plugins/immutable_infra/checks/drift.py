"""Drift: what runs differs from what the state says was applied.

Read from a refresh-only plan (``plan -refresh-only``, then ``show -json``):
its ``resource_drift`` lists every resource whose live object differs from
the state, with the state value as ``before`` and the live value as
``after``. (Not the exit code: ``-detailed-exitcode`` says 2 with zero drift
as soon as the configuration has a data source.) A resource gone from AWS
comes as ``["delete"]`` with ``after`` null: it is *missing*. When the plan's
own stream shows no drift at all the engine skips the ``show -json`` and the
plan has no ``prior_state`` (``Plan.from_stream``): there is then no row, so
nothing to classify against a state.

Each attribute-level difference is classified: ``drift``, ``missing``, or
``noise:<rule>`` when a known noise rule (checks/noise.py) explains it. Only
drift and missing become findings; the full table goes to the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from immutable_infra.checks.noise import DEFAULT_NOISE_RULES, Difference, NoiseRule, classify
from immutable_infra.findings import Finding
from immutable_infra.plan import Plan, StateResource, leaf_diff, path_str

CHECK = "drift"


def _row(address: str, aws_id: str, attribute: str, state: Any, live: Any, classification: str, reason: str = "") -> dict[str, Any]:
    return {
        "address": address,
        "aws_id": aws_id,
        "attribute": attribute,
        "state": state,
        "live": live,
        "classification": classification,
        "reason": reason,
    }


def drift_table(
    plan: Plan,
    rules: Sequence[NoiseRule] = DEFAULT_NOISE_RULES,
    state: Sequence[StateResource] | None = None,
) -> list[dict[str, Any]]:
    """Every attribute-level difference of ``plan.drift``, classified.

    Rows: ``address, aws_id, attribute, state, live, classification, reason``;
    classification is ``"drift"``, ``"missing"`` or ``"noise:<rule name>"``.
    ``state`` is the refreshed state the noise rules look into (managed rule
    and route resources); by default the plan's own ``prior_state``.
    """
    managed = list(state) if state is not None else plan.prior_resources()
    rows = []
    for drift in plan.drift:
        if drift.mode != "managed":
            continue
        aws_id = drift.aws_id
        if drift.is_missing:
            rows.append(_row(drift.address, aws_id, "", aws_id or drift.before, None, "missing",
                             f"{drift.type} in state, gone from AWS"))
            continue
        for path, before, after in leaf_diff(drift.before, drift.after):
            diff = Difference(
                resource_type=drift.type,
                address=drift.address,
                path=path_str(path),
                before=before,
                after=after,
                resource_before=drift.before or {},
                resource_after=drift.after or {},
                state=managed,
            )
            rule = classify(diff, rules)
            if rule is None:
                rows.append(_row(drift.address, aws_id, diff.path, before, after, "drift"))
            else:
                rows.append(_row(drift.address, aws_id, diff.path, before, after, f"noise:{rule.name}", rule.reason))
    return rows


def find_drift(
    plan: Plan,
    group: str,
    rules: Sequence[NoiseRule] = DEFAULT_NOISE_RULES,
    state: Sequence[StateResource] | None = None,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Findings for every real difference in a refresh-only ``plan``, and the full drift table.

    One finding per drifted attribute (``expected`` the state value,
    ``found`` the live value) and one per missing resource; noise rows
    stay in the table only. See ``drift_table`` for ``state``.
    """
    table = drift_table(plan, rules, state)
    findings = []
    for row in table:
        if row["classification"] == "missing":
            findings.append(
                Finding(
                    check=CHECK,
                    group=group,
                    address=row["address"],
                    aws_id=row["aws_id"],
                    expected="present in AWS (it is in the state)",
                    found="missing: deleted outside Terraform",
                    detail=dict(row),
                )
            )
        elif row["classification"] == "drift":
            findings.append(
                Finding(
                    check=CHECK,
                    group=group,
                    address=row["address"],
                    aws_id=row["aws_id"],
                    expected=f"{row['attribute']} = {row['state']!r} (state)",
                    found=f"{row['attribute']} = {row['live']!r} (live)",
                    detail=dict(row),
                )
            )
    return findings, table
