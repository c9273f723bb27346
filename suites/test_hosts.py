"""Hosts: every running instance whose role has a ``[roles.NAME.host]`` contract has on its host what it names.

In the embedded sandbox each instance gets a real host (systemd-nspawn, Debian 12), configured by its role's
playbook; the host is read with testinfra and judged by ``checks.hosts.find_host_findings``. A host that cannot
be reached is an error, never a finding and never a pass.

Then the host faults (``immutable_infra.host_faults``: a pinned package upgraded in place, a service stopped, a
config file edited, a port opened): each aimed from the role contract at a host of the group, all read once and
each named by the host check with the instance id; no new finding elsewhere, from the host check or from the
group's AWS-side checks; the faulted hosts replaced from the image and green. Those tests are chaos (their
verdict is the ``chaos`` check's, their matrix ``reports/chaos/<group>/hosts/``) and destructive (not in
``--audit``); ``--chaos-dry-run`` lists the faults and touches nothing.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from immutable_infra import host_faults
from immutable_infra.checks.hosts import find_host_findings
from immutable_infra.findings import format_findings
from immutable_infra.hosts import read_host_facts
from immutable_infra.plugin import cannot_check


@pytest.fixture(scope="session")
def host_facts(infra, infra_hosts):
    """Instance id -> HostFacts, read once per group on each checked host, the hosts at the same time (each read is
    many short round trips); an unreachable host: an error naming it."""
    ids = sorted(infra_hosts.contracts)
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(ids)))) as pool:
        reads = {i: pool.submit(read_host_facts, infra_hosts.handle(i).url, infra_hosts.contracts[i]) for i in ids}
    facts = {}
    for instance_id, read in reads.items():
        with cannot_check(infra, f"host {instance_id} (role {infra_hosts.roles[instance_id]}) of {infra_hosts.group}"):
            facts[instance_id] = read.result()
    return facts


@pytest.mark.infra_check("hosts")
def test_hosts_match_their_role_contract(applied_group, infra, infra_hosts, host_facts, infra_report):
    findings = []
    for instance_id, facts in sorted(host_facts.items()):
        role = infra_hosts.roles[instance_id]
        with cannot_check(infra, f"host {instance_id} (role {role}) of {applied_group.name}"):
            findings += find_host_findings(applied_group.name, instance_id, role, infra_hosts.contracts[instance_id],
                                           facts, address=infra_hosts.addresses.get(instance_id, ""),
                                           baked=infra_hosts.baked.get(instance_id))
    infra_report.findings(applied_group.name, "hosts", findings)
    group_hosts = infra_hosts.hosts
    infra_report.fact(applied_group.name, "hosts", hosts=len(group_hosts.hosts), checked=sorted(host_facts),
                      boot_seconds=round(max((h.boot_seconds for h in group_hosts.hosts.values()), default=0.0), 1),
                      playbook_seconds={r: round(run.elapsed, 1) for r, run in sorted(group_hosts.playbooks.items())},
                      unconfigured=dict(group_hosts.unconfigured))
    checked = ", ".join(f"{i} ({infra_hosts.roles[i]})" for i in sorted(host_facts))
    assert not findings, (f"{applied_group.name}: hosts break their role's host contract (checked {checked}):\n"
                          + format_findings(findings))


# -- host faults: each caught by the host check, and by nothing else ------------------------------------------


@pytest.fixture(scope="session")
def host_chaos(applied_group, infra, infra_hosts, host_facts, infra_report):
    """The host faults (``immutable_infra.host_faults``) on the group's hosts, right after the contract test read
    them: aimed from each role's contract, injected, read once, attributed, the hosts replaced and read again.
    A verify pass of the group's applicable AWS-side checks before and after the injection shows they see none
    of it."""
    from immutable_infra import verify
    from immutable_infra.chaos import detection_matrix, missed, write_matrix
    from immutable_infra.reading import Reading

    group = applied_group.name
    if not getattr(infra_hosts, "embedded", True):
        pytest.skip(f"host faults: injected only on embedded hosts in this version; {group}'s hosts are instances "
                    "reached over ssh, and repairing a host fault replaces the host (on AWS: the instance), which "
                    "is not done")
    targets = {i: host_faults.HostTarget(infra_hosts.roles[i], infra_hosts.contracts[i], facts,
                                         infra_hosts.baked.get(i))
               for i, facts in host_facts.items()}

    def aws_pass():
        reading = Reading(infra)
        checks, _ = verify.applicable(infra, group, list(verify.CHECKS), reading)
        results = verify.verify_group(infra, group, checks, reading)
        return checks, [f for r in results.values() for f in r.findings]

    __tracebackhide__ = True
    with cannot_check(infra, f"host faults on {group}"):
        exp = host_faults.run_experiment(
            group, infra_hosts.hosts, targets, infra.catalog.groups_dir.parent / "playbooks", infra.catalog.roles,
            dry_run=infra.settings.chaos_dry_run, aws_pass=aws_pass, addresses=infra_hosts.addresses)
    infra_report.fact(group, "chaos", host_faults_not_aimed=dict(exp.aimed.not_aimed))
    if exp.dry_run:
        return exp
    named = sum(1 for f in exp.injected if not exp.attribution.missed.get(repr(f)))
    infra.say(f"{group}: host faults: {len(exp.injected)} injected ({len(exp.aimed.not_aimed)} not aimed), {named} "
              f"named by the host check, {len(exp.false_alarms)} false alarm(s); {len(exp.replaced)} host(s) replaced "
              f"from the image; {', '.join(f'{k} {v} s' for k, v in exp.seconds.items())}")
    columns = (host_faults.CHECK, *verify.CHECKS)
    matrix = detection_matrix(exp.matrix_rows(), checks=columns)
    infra_report.extra += write_matrix(matrix, infra.settings.reports_dir / "chaos" / group / "hosts")
    infra_report.table(group, "chaos", "host-detection", matrix["rows"])
    infra_report.fact(group, "chaos", host_faults=[repr(f) for f in exp.aimed.faults],
                      host_detection_ratio=matrix.get("ratio"), host_missed=[f"{f}:{c}" for f, c in missed(matrix)],
                      host_false_alarms=[str(f) for f in exp.false_alarms], host_errors=dict(exp.errors),
                      host_aws_checks_watching=exp.aws_checks, hosts_replaced=exp.replaced,
                      host_faults_seconds=exp.seconds)
    infra_report.findings(group, "chaos", exp.findings())
    return exp


@pytest.mark.infra_destructive
@pytest.mark.infra_check("chaos")
def test_host_faults_dry_run_lists_what_would_be_done(host_chaos, infra):
    if not infra.settings.chaos_dry_run:
        pytest.skip("only with --chaos-dry-run")
    print("\n".join(host_chaos.aimed.plans()))
    print("\n".join(f"not aimed: {name}: {why}" for name, why in host_chaos.aimed.not_aimed.items()))
    assert host_chaos.aimed.faults or host_chaos.aimed.not_aimed


@pytest.mark.infra_destructive
@pytest.mark.infra_check("chaos")
@pytest.mark.parametrize("fault", list(host_faults.CATALOG))
def test_host_fault_is_named_with_the_instance_id(host_chaos, fault, infra):
    if infra.settings.chaos_dry_run:
        pytest.skip("--chaos-dry-run: nothing injected")
    aimed = host_chaos.fault(fault)
    if aimed is None:
        pytest.skip(f"{fault}: {host_chaos.aimed.not_aimed[fault]}")
    assert repr(aimed) not in host_chaos.errors, f"{fault} could not be injected ({aimed!r}): {host_chaos.errors.get(repr(aimed))}"
    caught = host_chaos.attribution.caught[repr(aimed)]
    assert not host_chaos.attribution.missed[repr(aimed)], (
        f"{fault} missed by the host check: injected {aimed!r}; expected new findings "
        f"{', '.join(aimed.expected_ids(host_chaos.group))}; the host check named: "
        + (", ".join(f.id for f in caught) or "nothing"))
    seen_by_aws = [f for f in host_chaos.aws_new if f.aws_id == aimed.instance_id]
    assert not seen_by_aws, f"{fault} ({aimed!r}) seen by AWS-side checks that must not see it:\n" + format_findings(seen_by_aws)


@pytest.mark.infra_destructive
@pytest.mark.infra_check("chaos")
def test_host_faults_raise_no_false_alarm(host_chaos, infra):
    if infra.settings.chaos_dry_run or not host_chaos.aimed.faults:
        pytest.skip("--chaos-dry-run: nothing injected" if infra.settings.chaos_dry_run else
                    "no host fault could be aimed here: " + "; ".join(host_chaos.aimed.not_aimed.values()))
    assert host_chaos.aws_checks, "no AWS-side check could watch the host faults (verify.applicable gave none)"
    assert not host_chaos.false_alarms, (
        f"new findings that no injected host fault explains (AWS-side checks watching: "
        f"{', '.join(host_chaos.aws_checks)}):\n" + format_findings(host_chaos.false_alarms))


@pytest.mark.infra_destructive
@pytest.mark.infra_check("chaos")
def test_hosts_green_after_replacement(host_chaos, infra):
    if infra.settings.chaos_dry_run or not host_chaos.aimed.faults:
        pytest.skip("--chaos-dry-run: nothing injected" if infra.settings.chaos_dry_run else
                    "no host fault could be aimed here")
    assert not host_chaos.repair_error, f"the faulted hosts were not replaced: {host_chaos.repair_error}"
    assert host_chaos.replaced == sorted({f.instance_id for f in host_chaos.aimed.faults})
    assert not host_chaos.residue, ("findings left after the hosts were replaced from the image:\n"
                                    + format_findings(host_chaos.residue))
