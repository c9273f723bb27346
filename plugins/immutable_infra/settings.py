"""Settings: every option from the command line, an environment variable or an ini key, in that order."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutable_infra.engine import DEFAULT_PARALLELISM

ENV_PREFIX = "IMMUTABLE_INFRA_"
INI_PREFIX = "immutable_infra_"

#: name -> (help, ini type, default). The command-line flag is --name with dashes.
OPTIONS: dict[str, tuple[str, str, Any]] = {
    "group": ("apply this group (and the groups it takes inputs from) and test it; repeatable", "args", []),
    "groups_dir": ("folder of groups (default: fixtures/groups)", "string", "fixtures/groups"),
    "aws_endpoint": ("use this running AWS-compatible endpoint instead of the embedded moto server", "string", ""),
    "real_aws": ("use real AWS (credentials from the usual AWS environment; provider from the registry)", "bool", False),
    "run_id": ("use this run id; reuse the run if it exists (nothing new is applied or destroyed)", "string", ""),
    "keep": ("leave the run deployed at the end; prints its id and how to destroy it", "bool", False),
    "terraform": ("drive this terraform or tofu binary instead of the embedded Terraform", "string", ""),
    "reports_dir": ("where reports go (default: reports)", "string", "reports"),
    "audit": ("read-only: test a deployed run (--run-id) without applying, writing or destroying anything", "bool", False),
    "base_ref": ("merge gate: apply the groups as they were at this git revision, then plan the working tree against them", "string", ""),
    "rebuild_regression": ("fail when a group's rebuild exceeds the median of its last 10 recorded rebuilds by more than PCT percent", "string", ""),
    "chaos_dry_run": ("list the faults the chaos suite would inject, and touch nothing", "bool", False),
    "parallelism": (f"Terraform -parallelism (default: {DEFAULT_PARALLELISM})", "string", str(DEFAULT_PARALLELISM)),
}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def ini_name(name: str) -> str:
    return INI_PREFIX + name


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    groups: list[str] = field(default_factory=list)
    groups_dir: Path = Path("fixtures/groups")
    aws_endpoint: str | None = None
    real_aws: bool = False
    run_id: str | None = None
    keep: bool = False
    terraform: str | None = None
    reports_dir: Path = Path("reports")
    parallelism: int = DEFAULT_PARALLELISM
    audit: bool = False
    rebuild_regression: float | None = None
    chaos_dry_run: bool = False
    base_ref: str | None = None
    home: Path = Path(".immutable-infra")

    @property
    def embedded(self) -> bool:
        return not self.aws_endpoint and not self.real_aws


def _percent(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        pct = float(str(value).rstrip("%"))
    except ValueError:
        raise ValueError(f"--rebuild-regression takes a percentage such as 20, not {value!r}") from None
    if pct < 0:
        raise ValueError(f"--rebuild-regression must not be negative, not {value!r}")
    return pct


def _home(config: Any, root: Path) -> Path:
    """Where runs live: IMMUTABLE_INFRA_HOME, else the immutable_infra_home ini key, else <rootdir>/.immutable-infra."""
    from immutable_infra.ephemeral import default_home

    ini = config.getini("immutable_infra_home")
    if ini and not os.environ.get("IMMUTABLE_INFRA_HOME"):
        return Path(ini) if Path(ini).is_absolute() else root / ini
    return default_home(root)


def from_pytest_config(config: Any) -> Settings:
    """Resolve settings: command line, then IMMUTABLE_INFRA_* environment, then pytest.ini."""
    root = Path(str(config.rootpath))

    def get(name: str) -> Any:
        value = config.getoption(name)
        if value not in (None, [], False, ""):
            return value
        env = os.environ.get(env_name(name))
        if env:
            return [g for g in env.replace(",", " ").split() if g] if name == "group" else env
        ini = config.getini(ini_name(name))
        if ini not in (None, [], ""):
            return ini
        return OPTIONS[name][2]

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else root / p

    try:
        parallelism = int(get("parallelism"))
    except ValueError:
        raise ValueError(f"parallelism must be a whole number, not {get('parallelism')!r}") from None
    return Settings(
        groups=list(dict.fromkeys(get("group"))),
        groups_dir=path(get("groups_dir")),
        aws_endpoint=get("aws_endpoint") or None,
        real_aws=_truthy(get("real_aws")),
        run_id=get("run_id") or None,
        keep=_truthy(get("keep")),
        terraform=get("terraform") or None,
        reports_dir=path(get("reports_dir")),
        parallelism=parallelism,
        audit=_truthy(get("audit")),
        rebuild_regression=_percent(get("rebuild_regression")),
        chaos_dry_run=_truthy(get("chaos_dry_run")),
        base_ref=get("base_ref") or None,
        home=_home(config, root),
    )


def usage_problems(s: Settings) -> list[str]:
    """Option combinations that cannot work, each with its fix."""
    problems = []
    if s.aws_endpoint and s.real_aws:
        problems.append("--aws-endpoint and --real-aws exclude each other; drop one")
    if s.aws_endpoint and not s.aws_endpoint.startswith(("http://", "https://")):
        problems.append(f"--aws-endpoint {s.aws_endpoint}: give a URL such as http://127.0.0.1:5000")
    if s.keep and s.embedded:
        problems.append(
            "--keep needs an endpoint that outlives the session: the embedded moto server stops with it; "
            "start one with `immutable-infra sandbox` and pass --aws-endpoint URL"
        )
    if s.run_id:
        from immutable_infra.ephemeral import RUN_ID

        if not RUN_ID.match(s.run_id):
            problems.append(
                f"--run-id {s.run_id}: use 1-16 characters of lowercase a-z, 0-9 and '-' (it goes into AWS names)"
            )
    if s.audit and not s.run_id:
        problems.append(
            "--audit reads a deployed run and never applies: name it with --run-id ID "
            "(bring one up with `immutable-infra up GROUP --aws-endpoint URL`)"
        )
    if s.audit and s.base_ref:
        problems.append("--base-ref applies the base version, which an audit never does; drop one of them")
    if s.audit and s.keep:
        problems.append("--audit never destroys anything, so --keep has no meaning there; drop it")
    if s.parallelism < 1:
        problems.append("--parallelism must be at least 1")
    return problems
