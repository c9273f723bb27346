"""Roles: every server carries the right Role tag and sits where its role says.

Over ``describe_*`` results (boto3 shapes) and the roles catalog
(``immutable_infra.roles``): each running instance has exactly one Role tag
naming a known role and a Group tag equal to its group; the role is allowed
in the group's kind; the instance's subnet has the role's Tier; its security
groups carry the role's Purpose tags and open the role's ports; the number
of instances per role is what the group declares; every role in use has its
playbook. ``syntax_check_playbooks`` runs ``ansible-playbook --syntax-check``.
"""

from __future__ import annotations

import shutil
import sys
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from immutable_infra.checks.mutation import instance_security_group_ids
from immutable_infra.findings import Finding
from immutable_infra.roles import Role

CHECK = "roles"


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in item.get("Tags") or () if "Key" in t}


def _opened_ports(groups: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    ranges = []
    for sg in groups:
        for perm in sg.get("IpPermissions") or ():
            if str(perm.get("IpProtocol")) == "-1":
                ranges.append((0, 65535))
            elif perm.get("FromPort") is not None:
                ranges.append((int(perm["FromPort"]), int(perm.get("ToPort", perm["FromPort"]))))
    return ranges


def _finding(group: str, instance_id: str, expected: str, found: str, **detail: Any) -> Finding:
    return Finding(check=CHECK, group=group, address="", aws_id=instance_id, expected=expected, found=found, detail=detail)


def _check_instance(
    group: str,
    kind: str,
    instance: Mapping[str, Any],
    subnets: Mapping[str, Mapping[str, Any]],
    security_groups: Mapping[str, Mapping[str, Any]],
    roles: Mapping[str, Role],
    require_group_tag: bool = True,
) -> tuple[str | None, list[Finding]]:
    iid = instance.get("InstanceId", "")
    tags = _tags(instance)
    out: list[Finding] = []
    role_keys = [k for k in tags if k.strip().lower() == "role"]
    if require_group_tag and tags.get("Group") != group:
        out.append(_finding(group, iid, f"tag Group={group}", f"Group={tags.get('Group')!r}", tags=tags))
    if len(role_keys) != 1 or role_keys[0] != "Role":
        out.append(_finding(group, iid, "exactly one tag named Role", f"Role tags {role_keys}", tags=tags))
        return None, out
    name = tags["Role"]
    role = roles.get(name)
    if role is None:
        out.append(_finding(group, iid, f"Role naming a known role ({', '.join(sorted(roles))})",
                            f"Role={name!r}", role=name))
        return None, out
    if kind not in role.kinds:
        out.append(_finding(group, iid, f"role {name} only in {', '.join(role.kinds)} groups",
                            f"role {name} in a {kind} group", role=name))
    subnet_id = instance.get("SubnetId", "")
    subnet = subnets.get(subnet_id)
    tier = _tags(subnet).get("Tier") if subnet else None
    if subnet is None:
        out.append(_finding(group, iid, f"subnet with Tier={role.tier}", f"subnet {subnet_id or '-'} not found",
                            role=name, subnet=subnet_id))
    elif tier != role.tier:
        out.append(_finding(group, iid, f"subnet with Tier={role.tier}", f"subnet {subnet_id} Tier={tier!r}",
                            role=name, subnet=subnet_id))
    sg_ids = instance_security_group_ids(instance)
    groups = [security_groups[i] for i in sg_ids if i in security_groups]
    purposes = {_tags(sg).get("Purpose") for sg in groups}
    lacking = [p for p in role.security_groups if p not in purposes]
    if lacking:
        out.append(_finding(group, iid, f"security groups with Purpose {', '.join(role.security_groups)}",
                            f"missing Purpose {', '.join(lacking)} (has {sorted(p for p in purposes if p)})",
                            role=name, security_groups=sg_ids))
    ranges = _opened_ports(groups)
    closed = [p for p in role.ports if not any(lo <= p <= hi for lo, hi in ranges)]
    if closed:
        out.append(_finding(group, iid, f"ingress open on {', '.join(map(str, role.ports))}",
                            f"closed: {', '.join(map(str, closed))}", role=name, security_groups=sg_ids))
    return name, out


def find_role_violations(
    group: str,
    kind: str,
    expected_counts: Mapping[str, int],
    instances: Sequence[Mapping[str, Any]],
    subnets: Sequence[Mapping[str, Any]],
    security_groups: Sequence[Mapping[str, Any]],
    roles: Mapping[str, Role],
    playbooks_dir: str | Path,
    require_group_tag: bool = True,
) -> list[Finding]:
    """Every way the group's running instances break the roles contract (see module doc).

    ``require_group_tag``: every instance carries ``Group=<group>`` (a run of
    this tool tags it; a group audited as deployed is only held to its Role).
    """
    by_subnet = {s["SubnetId"]: s for s in subnets if s.get("SubnetId")}
    by_sg = {g["GroupId"]: g for g in security_groups if g.get("GroupId")}
    findings: list[Finding] = []
    counts: Counter[str] = Counter()
    for instance in instances:
        if (instance.get("State") or {}).get("Name") in ("terminated", "shutting-down"):
            continue
        role, found = _check_instance(group, kind, instance, by_subnet, by_sg, roles, require_group_tag)
        findings += found
        if role:
            counts[role] += 1
    for role in sorted(set(expected_counts) | set(counts)):
        want, have = expected_counts.get(role, 0), counts.get(role, 0)
        if want != have:
            what = "missing" if have < want else "extra"
            findings.append(Finding(
                check=CHECK, group=group, address="", aws_id="",
                expected=f"{want} instance(s) of role {role}", found=f"{have} ({what} {abs(want - have)})",
                detail={"role": role, "expected": want, "found": have},
            ))
    playbooks = Path(playbooks_dir)
    for name in sorted(set(counts) | {r for r, n in expected_counts.items() if n}):
        role = roles.get(name)
        if role is not None and not (playbooks / role.playbook).is_file():
            findings.append(Finding(
                check=CHECK, group=group, address="", aws_id="",
                expected=f"playbook {role.playbook} for role {name}",
                found=f"no file {playbooks / role.playbook}", detail={"role": name, "playbook": role.playbook},
            ))
    return findings


def find_ansible_playbook() -> str | None:
    """ansible-playbook on the PATH, or installed beside this Python (a virtualenv that is not activated)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return shutil.which("ansible-playbook") or (str(beside) if beside.exists() else None)


def syntax_check_playbooks(
    playbooks_dir: str | Path, group: str = "-", ansible_playbook: str | None = None
) -> list[Finding]:
    """``ansible-playbook --syntax-check`` on every playbook (one run for all of them); a finding per failing one.

    Skips the calling test (like ``pytest.importorskip``) when
    ansible-playbook is not installed: ``pip install ansible-core``.
    """
    import pytest

    exe = ansible_playbook or find_ansible_playbook()
    if not exe:
        pytest.skip("ansible-playbook is not installed (pip install ansible-core); playbook syntax not checked")
    playbooks = sorted(Path(playbooks_dir).glob("*.y*ml"))
    if not playbooks:
        return []
    # One ansible-playbook run checks them all (Ansible starts once, not once per playbook); only when it fails is
    # each playbook checked on its own, to name the ones that fail.
    if subprocess.run([exe, "--syntax-check", "-i", "localhost,", *map(str, playbooks)],
                      capture_output=True, text=True, timeout=300).returncode == 0:
        return []
    findings = []
    for playbook in playbooks:
        proc = subprocess.run([exe, "--syntax-check", "-i", "localhost,", str(playbook)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            findings.append(Finding(
                check=CHECK, group=group, address="", aws_id="",
                expected=f"{playbook.name} passes ansible-playbook --syntax-check",
                found=f"exit {proc.returncode}: {tail}", detail={"playbook": str(playbook)},
            ))
    return findings
