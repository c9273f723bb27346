"""roles.py (catalog loader) and checks/roles.py (tag-to-role correctness) on recorded describe_* data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from immutable_infra.checks.roles import find_ansible_playbook, find_role_violations, syntax_check_playbooks
from immutable_infra.roles import Role, RolesError, load_roles

DATA = Path(__file__).parent / "data" / "plans"

CATALOG = """
[roles.reverse-proxy]
kinds = ["application"]
playbook = "reverse-proxy.yml"
tier = "public"
security_groups = ["reverse-proxy"]
ports = [80]
image_template = "debian11-base"

[roles.mesos-master]
kinds = ["ops-center"]
playbook = "mesos-master.yml"
tier = "private"
services = ["mesos-master"]
"""


@pytest.fixture
def roles(tmp_path: Path) -> dict[str, Role]:
    path = tmp_path / "roles.toml"
    path.write_text(CATALOG)
    return load_roles(path)


@pytest.fixture
def playbooks(tmp_path: Path) -> Path:
    d = tmp_path / "playbooks"
    d.mkdir()
    (d / "reverse-proxy.yml").write_text("- hosts: all\n  tasks: []\n")
    return d


@pytest.fixture
def described() -> dict:
    data = json.loads((DATA / "describe_after_apply.json").read_text())
    data["instances"] = [i for i in data["instances"] if {"Key": "Group", "Value": "rec-group"} in i["Tags"]]
    return data


def check(described, roles, playbooks, kind="application", expected=None):
    return find_role_violations("rec-group", kind, expected if expected is not None else {"reverse-proxy": 1},
                                described["instances"], described["subnets"], described["security_groups"],
                                roles, playbooks)


def set_tag(item: dict, key: str, value: str | None) -> None:
    item["Tags"] = [t for t in item["Tags"] if t["Key"] != key] + ([{"Key": key, "Value": value}] if value else [])


# -- catalog ------------------------------------------------------------------

def test_load_roles(roles):
    proxy = roles["reverse-proxy"]
    assert proxy == Role("reverse-proxy", ("application",), "reverse-proxy.yml", "public", ("reverse-proxy",), (80,),
                         "debian11-base")
    master = roles["mesos-master"]
    assert master.ports == () and master.image_template is None and master.extra == {"services": ["mesos-master"]}


@pytest.mark.parametrize(("text", "message"), [
    ("[roles.x\n", "not valid TOML"),
    ("title = 'no roles'\n", "no roles"),
    ('[roles.x]\nkinds = ["application"]\nplaybook = "x.yml"\n', "lacks tier"),
    ('[roles.x]\nkinds = "application"\nplaybook = "x.yml"\ntier = "public"\n', "kinds must be a list"),
    ('[roles.x]\nkinds = ["prod"]\nplaybook = "x.yml"\ntier = "public"\n', "unknown group kind"),
    ('[roles.x]\nkinds = ["application"]\nplaybook = "x.yml"\ntier = "public"\nports = ["80"]\n', "ports must be"),
    ('[roles.x]\nkinds = ["application"]\nplaybook = ""\ntier = "public"\n', "playbook must be"),
])
def test_bad_catalog_names_file_and_fix(tmp_path, text, message):
    path = tmp_path / "roles.toml"
    path.write_text(text)
    with pytest.raises(RolesError, match=message) as info:
        load_roles(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_catalog(tmp_path):
    with pytest.raises(RolesError, match="not found; create it"):
        load_roles(tmp_path / "nope.toml")


# -- violations -----------------------------------------------------------------

def test_recorded_group_satisfies_its_roles(described, roles, playbooks):
    assert check(described, roles, playbooks) == []


def test_role_changed_out_of_band(roles, playbooks):
    data = json.loads((DATA / "describe_out_of_band.json").read_text())
    findings = find_role_violations("rec-group", "application", {"reverse-proxy": 1}, data["instances"],
                                    data["subnets"], data["security_groups"], roles, playbooks)
    found = [f.found for f in findings]
    # the managed proxy now says Role=bastion; the debug instance has no Group tag and an unknown role
    assert any("Role='bastion'" in f for f in found)
    assert any("Role='debug'" in f for f in found)
    assert any("Group=None" in f for f in found)
    assert any("missing 1" in f for f in found)
    assert all(f.check == "roles" for f in findings)


def test_wrong_group_tag_and_duplicate_role_tags(described, roles, playbooks):
    set_tag(described["instances"][0], "Group", "prd-cn")
    described["instances"][0]["Tags"].append({"Key": "role", "Value": "bastion"})
    findings = check(described, roles, playbooks)
    assert any("Group='prd-cn'" in f.found for f in findings)
    assert any("exactly one tag named Role" in f.expected for f in findings)


def test_role_not_allowed_in_kind(described, roles, playbooks):
    findings = check(described, roles, playbooks, kind="ops-center")
    assert [f.found for f in findings] == ["role reverse-proxy in a ops-center group"]


def test_subnet_tier(described, roles, playbooks):
    set_tag(described["subnets"][[s["SubnetId"] for s in described["subnets"]].index(
        described["instances"][0]["SubnetId"])], "Tier", "private")
    [finding] = check(described, roles, playbooks)
    assert "Tier='private'" in finding.found and finding.aws_id == described["instances"][0]["InstanceId"]


def test_security_group_purpose_and_ports(described, roles, playbooks):
    roles = dict(roles)
    roles["reverse-proxy"] = Role("reverse-proxy", ("application",), "reverse-proxy.yml", "public",
                                  ("reverse-proxy", "ssh-from-ops"), (80, 443))
    findings = check(described, roles, playbooks)
    assert {f.found for f in findings} == {"missing Purpose ssh-from-ops (has ['reverse-proxy'])", "closed: 443"}


def test_security_groups_read_from_primary_interface(described, roles, playbooks):
    described["instances"][0]["SecurityGroups"] = []
    assert check(described, roles, playbooks) == []


def test_counts_missing_and_extra(described, roles, playbooks):
    findings = check(described, roles, playbooks, expected={"reverse-proxy": 2})
    assert [f.found for f in findings] == ["1 (missing 1)"]
    extra = copy.deepcopy(described["instances"][0])
    extra["InstanceId"] = "i-0extra"
    described["instances"].append(extra)
    stopped = copy.deepcopy(extra)
    stopped["InstanceId"], stopped["State"] = "i-0gone", {"Name": "terminated", "Code": 48}
    described["instances"].append(stopped)
    findings = check(described, roles, playbooks, expected={"reverse-proxy": 1})
    assert [f.found for f in findings] == ["2 (extra 1)"]


def test_playbook_must_exist(described, roles, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    [finding] = check(described, roles, empty)
    assert "reverse-proxy.yml" in finding.expected and finding.detail["role"] == "reverse-proxy"


@pytest.mark.skipif(find_ansible_playbook() is None, reason="ansible-playbook not installed (pip install -e '.[test]')")
def test_syntax_check_playbooks(tmp_path, playbooks):
    (playbooks / "broken.yml").write_text("- hosts: all\n  tasks:\n    - name: x\n      nosuchmodule_xyz: {}\n")
    findings = syntax_check_playbooks(playbooks, "rec-group")
    assert [Path(f.detail["playbook"]).name for f in findings] == ["broken.yml"]  # named among the sound ones
    (playbooks / "broken.yml").unlink()
    assert list(playbooks.glob("*.yml")) and syntax_check_playbooks(playbooks, "rec-group") == []


def test_syntax_check_skips_without_ansible(playbooks, monkeypatch):
    import immutable_infra.checks.roles as mod

    monkeypatch.setattr(mod, "find_ansible_playbook", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="ansible-playbook is not installed"):
        syntax_check_playbooks(playbooks)


def test_a_deployed_group_is_held_to_its_role_tag_not_to_a_run_s_group_tag(playbooks):
    """A team's own instances carry Role; Group is the tag a run of this tool adds (verify.roles passes False)."""
    from immutable_infra.checks.lifecycle import find_untagged_instances

    instance = {"InstanceId": "i-team", "State": {"Name": "running"}, "Tags": [{"Key": "Role", "Value": "web"}]}
    assert [f.expected for f in find_untagged_instances("g", [instance])] == ["Group=g"]
    assert find_untagged_instances("g", [instance], require_group_tag=False) == []
    no_role = {"InstanceId": "i-bare", "State": {"Name": "running"}, "Tags": []}
    assert [f.expected for f in find_untagged_instances("g", [no_role], require_group_tag=False)] == ["a Role tag"]
    roles = {"web": Role("web", ("application",), "web.yml", "public")}
    with_group = find_role_violations("g", "application", {"web": 1}, [instance], [], [], roles, playbooks)
    without = find_role_violations("g", "application", {"web": 1}, [instance], [], [], roles, playbooks,
                                   require_group_tag=False)
    assert any(f.expected == "tag Group=g" for f in with_group)
    assert not any("Group" in f.expected for f in without)
