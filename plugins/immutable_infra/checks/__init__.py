"""Invariant checks: plain functions over plain data (plan JSON, state, describe results).

The users' API for their own suites: every ``find_*`` function is importable
from here, returns a list of ``Finding`` and never talks to AWS itself::

    from immutable_infra.checks import find_unmanaged, format_findings

Each submodule holds one invariant (``drift``, ``unmanaged``, ``mutation``,
``roles``, ``reachability``, ``parity``, ``lifecycle``, ``hosts``); to run a check live on
an applied group, use the ``infra_verify`` fixture or ``immutable_infra.verify``.
"""

from immutable_infra.findings import Finding, format_findings
from immutable_infra.checks.mutation import (
    find_fingerprint_changes, find_mutations, find_replacements, fingerprint_instance,
)
from immutable_infra.checks.drift import find_drift
from immutable_infra.checks.unmanaged import find_unmanaged
from immutable_infra.checks.lifecycle import find_missing_consumed_outputs, find_pending_changes, find_untagged_instances
from immutable_infra.checks.roles import find_role_violations, syntax_check_playbooks
from immutable_infra.checks.reachability import analyze, analyze_all, find_flow_violations, find_peering_problems
from immutable_infra.checks.parity import find_content_violations, find_lineage_violations
from immutable_infra.checks.hosts import facts_missing, find_host_findings

__all__ = [
    "Finding", "format_findings",
    "find_drift", "find_unmanaged", "find_mutations", "find_replacements", "find_fingerprint_changes",
    "fingerprint_instance", "find_pending_changes", "find_untagged_instances", "find_missing_consumed_outputs",
    "find_role_violations", "syntax_check_playbooks", "find_flow_violations", "find_peering_problems",
    "analyze", "analyze_all", "find_content_violations", "find_lineage_violations",
    "find_host_findings", "facts_missing",
]
