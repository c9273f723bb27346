"""Chaos: inject every catalog fault into the ephemeral run, prove the expected checks catch it, repair, prove green.

A fault counts as caught only through new findings (against a baseline taken
right before its batch) about what it touched; a new finding no fault explains
is a false alarm. Misses, false alarms and what a repair left behind are
findings of the ``chaos`` check, and every test here gives that check's verdict.

Which faults and checks apply to a group can be narrowed in its group.toml::

    [chaos]
    faults = ["sg_opened_to_world", "rogue_instance"]   # default: the whole catalog
    checks = ["drift", "unmanaged", "mutation"]          # default: every check
"""

import pytest

from immutable_infra import experiment
from immutable_infra.chaos import CATALOG, detection_matrix, missed, write_matrix
from immutable_infra.findings import format_findings
from immutable_infra.plugin import TOOL_ERRORS
from immutable_infra import verify
from immutable_infra.verify import CHECKS

pytestmark = [pytest.mark.infra_destructive, pytest.mark.infra_check("chaos")]


@pytest.fixture(scope="session")
def chaos_experiment(applied_group, infra, infra_report):
    config = applied_group.config.raw.get("chaos", {})
    faults = config.get("faults", list(CATALOG))
    dry_run = infra.settings.chaos_dry_run
    __tracebackhide__ = True
    try:
        # Only the checks that can give this group a verdict watch for faults (the others' suites say why not).
        checks, not_here = verify.applicable(infra, applied_group.name, config.get("checks", list(CHECKS)))
        if not_here:
            infra_report.fact(applied_group.name, "chaos", checks_not_applicable=not_here)
        result = experiment.run(infra, applied_group.name, faults, checks, dry_run=dry_run, audit=infra.settings.audit)
    except TOOL_ERRORS as exc:
        pytest.fail(f"the chaos experiment on {applied_group.name} could not run: {exc}", pytrace=False)
    if not dry_run:
        matrix = detection_matrix(experiment.matrix_rows(result))
        folder = infra.settings.reports_dir / "chaos" / applied_group.name
        infra_report.extra += write_matrix(matrix, folder)
        infra_report.table(applied_group.name, "chaos", "detection", matrix["rows"])
        infra_report.fact(applied_group.name, "chaos", detection_ratio=matrix.get("ratio"),
                          missed=[f"{f}:{c}" for f, c in missed(matrix)],
                          false_alarms=[str(f) for f in result.false_alarms],
                          errors=dict(result.errors), skipped=dict(result.skipped),
                          unsettled_batches=list(result.unsettled),
                          checks_per_batch={str(n): phases for n, phases in result.watched.items()})
        infra_report.findings(applied_group.name, "chaos", result.findings())
    return result


def test_chaos_dry_run_lists_what_would_be_done(chaos_experiment, infra):
    if not infra.settings.chaos_dry_run:
        pytest.skip("only with --chaos-dry-run")
    print("\n".join(line for batch in chaos_experiment.plans for line in batch))
    assert chaos_experiment.plans and not chaos_experiment.outcomes


@pytest.mark.parametrize("fault", list(CATALOG))
def test_fault_is_caught_by_its_expected_checks(chaos_experiment, fault, infra):
    if infra.settings.chaos_dry_run:
        pytest.skip("--chaos-dry-run: nothing injected")
    if fault in chaos_experiment.skipped:
        pytest.skip(chaos_experiment.skipped[fault])
    outcome = chaos_experiment.outcome(fault)
    if outcome is None:
        pytest.skip(f"{fault} is not in this group's [chaos] faults")
    assert not outcome.error, f"{fault} could not be injected ({outcome.fault!r}): {outcome.error}"
    assert outcome.expected or outcome.detected, f"{fault}: no check is expected to catch it here ({outcome.fault!r})"
    assert not outcome.missed, (
        f"{fault} missed by {', '.join(outcome.missed)}: injected {outcome.fault!r}; "
        f"caught by {', '.join(outcome.detected) or 'nothing'}"
    )


def test_no_false_alarm(chaos_experiment, infra):
    if infra.settings.chaos_dry_run:
        pytest.skip("--chaos-dry-run: nothing injected")
    assert not chaos_experiment.false_alarms, (
        "new findings that no injected fault explains (false alarms):\n" + format_findings(chaos_experiment.false_alarms))


def test_everything_green_after_repair(chaos_experiment, infra):
    if infra.settings.chaos_dry_run:
        pytest.skip("--chaos-dry-run: nothing injected")
    repair_errors = {k: v for k, v in chaos_experiment.errors.items() if k not in CATALOG}
    assert not repair_errors, "the repair did not run to the end: " + "; ".join(f"{k}: {v}" for k, v in repair_errors.items())
    assert not chaos_experiment.residue, (
        "findings left after the repair (the group was not settled over them):\n"
        + format_findings(chaos_experiment.residue))
