"""Catalog: group configs, dependency order, inputs from outputs, and the messages for bad groups."""

from pathlib import Path

import pytest

from immutable_infra.catalog import Catalog, CatalogError, resolve_inputs

ROOT = Path(__file__).parent.parent


def make_group(root: Path, name: str, config: str, tf: str = 'variable "run_id" {}\n') -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "group.toml").write_text(config)
    (path / "main.tf").write_text(tf)
    return path


BASE = 'kind = "application"\nregion = "ap-southeast-1"\nvpc_cidr = "10.0.0.0/16"\n'


def test_seed_groups_load_in_dependency_order():
    catalog = Catalog(ROOT / "fixtures" / "groups")
    order = [g.name for g in catalog.closure(["prd-sg-master"])]
    assert order.index("ops-sg") < order.index("prd-sg-slave") < order.index("prd-sg-master")
    assert [g.name for g in catalog.closure(["prd-cn"])] == ["ops-cn", "prd-cn"]


def test_closure_pulls_dependencies_once(tmp_path):
    make_group(tmp_path, "a", BASE)
    make_group(tmp_path, "b", BASE + '[inputs]\nx = "a.vpc_id"\n')
    make_group(tmp_path, "c", BASE + '[inputs]\nx = "a.vpc_id"\ny = "b.subnet"\n')
    assert [g.name for g in Catalog(tmp_path).closure(["c", "b"])] == ["a", "b", "c"]


def test_unknown_group_names_the_known_ones(tmp_path):
    make_group(tmp_path, "a", BASE)
    with pytest.raises(CatalogError, match=r"unknown group 'nope' in .*; known groups: a"):
        Catalog(tmp_path).closure(["nope"])


def test_cycle_is_named(tmp_path):
    make_group(tmp_path, "a", BASE + '[inputs]\nx = "b.id"\n')
    make_group(tmp_path, "b", BASE + '[inputs]\nx = "a.id"\n')
    with pytest.raises(CatalogError, match=r"group cycle: a -> b -> a"):
        Catalog(tmp_path).closure(["a"])


@pytest.mark.parametrize(
    "config, message",
    [
        ('kind = "application"\nregion = \n', r"is not valid TOML"),
        ('kind = "database"\nregion = "x"\nvpc_cidr = "10.0.0.0/16"\n', r"kind = 'database'; use one of ops-center, application"),
        ('kind = "application"\nvpc_cidr = "10.0.0.0/16"\n', r"has no 'region'; add it"),
        (BASE + '[inputs]\nx = "no-dot"\n', r'input x = .no-dot.; write it as "<group>.<output>"'),
        (BASE + '[roles]\nci = "two"\n', r"\[roles\] must map role names to instance counts"),
    ],
)
def test_malformed_config_names_group_file_and_fix(tmp_path, config, message):
    make_group(tmp_path, "g", config)
    with pytest.raises(CatalogError, match=message) as err:
        Catalog(tmp_path).get("g")
    assert "group g" in str(err.value) and "group.toml" in str(err.value)


def test_missing_config_and_missing_terraform(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="unknown group"):
        Catalog(tmp_path).get("nothing")
    make_group(tmp_path, "notf", BASE, tf="")
    (tmp_path / "notf" / "main.tf").unlink()
    with pytest.raises(CatalogError, match="has no .tf files"):
        Catalog(tmp_path).get("notf")


def test_inputs_resolve_from_outputs_and_missing_output_is_named(tmp_path):
    make_group(tmp_path, "a", BASE)
    make_group(tmp_path, "b", BASE + '[inputs]\nops_vpc_id = "a.vpc_id"\n')
    b = Catalog(tmp_path).get("b")
    assert resolve_inputs(b, {"a": {"vpc_id": "vpc-1"}}) == {"ops_vpc_id": "vpc-1"}
    with pytest.raises(CatalogError, match=r"a has no output 'vpc_id' \(it has: cidr\)"):
        resolve_inputs(b, {"a": {"cidr": "10.0.0.0/16"}})
