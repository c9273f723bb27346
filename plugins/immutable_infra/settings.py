"""Settings: every option from the command line, an environment variable or an ini key, in that order."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutable_infra.engine import DEFAULT_PARALLELISM
from immutable_infra.errors import ToolError

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
    "audit": ("read-only: test the groups as deployed (from their own Terraform backend), or a run with --run-id; "
              "never applies, writes or destroys anything", "bool", False),
    "backend_config": ("--audit of the groups as deployed: KEY=VALUE or a file, passed to terraform init as "
                       "-backend-config (what the team's wrapper passes); repeatable", "args", []),
    "base_ref": ("merge gate: apply the groups as they were at this git revision, then plan the working tree against them", "string", ""),
    "rebuild_regression": ("fail when a group's rebuild exceeds the median of its last 10 recorded rebuilds by more than PCT percent", "string", ""),
    "chaos_dry_run": ("list the faults the chaos suite would inject, and touch nothing", "bool", False),
    "parallelism": (f"Terraform -parallelism (default: {DEFAULT_PARALLELISM})", "string", str(DEFAULT_PARALLELISM)),
    "ttl": ("how long the run's resources live: their ExpiresAt tag, for the reaper (90m, 2h, 1d; default 6h)", "string", ""),
    "reap_expired": ("at the start, delete every run on the endpoint whose ExpiresAt has passed (see immutable-infra reap)", "bool", False),
    "dev_box": ("a testinfra host URL of the developers' box (ssh://vagrant@127.0.0.1:2222), or vagrant://NAME[?cwd=DIR]: "
                "the image parity suite reads its packages and config files live instead of the recorded vagrant "
                "manifests", "string", ""),
    "host_user": ("outside the embedded sandbox: the user the host suite logs in as on the group's instances "
                  "(admin, ec2-user, ubuntu); with --host-key it reaches them through the group's bastion", "string", ""),
    "host_key": ("outside the embedded sandbox: the ssh private key file that opens the instances and the bastion",
                 "string", ""),
    "bastion": ("outside the embedded sandbox: reach the instances' private addresses through USER@HOST[:PORT] "
                "(ssh ProxyJump); default: the group's running instance tagged with the bastion role that has a "
                "public address", "string", ""),
    "bastion_role": ("the Role tag value of the group's bastion instance, when --bastion is not given "
                     "(default: bastion)", "string", "bastion"),
    "no_hosts": ("do not build the embedded hosts of the groups' instances: the host suite (suites/test_hosts.py) skips", "bool", False),
}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def ini_name(name: str) -> str:
    return INI_PREFIX + name


#: What pytest's ini parser and this plugin take as true and as false (case-insensitive).
TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")


class SettingsError(ToolError, ValueError):
    """A setting cannot be used; the message names the setting as the user wrote it and the fix."""


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_bool(value: Any, setting: str) -> bool:
    """A boolean setting; anything but a recognised true/false word is an error naming ``setting``."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(
        f"{setting} = {value!r} is neither true nor false; write one of {', '.join(TRUE_WORDS)} "
        f"or one of {', '.join(FALSE_WORDS)}"
    )


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
    backend_config: list[str] = field(default_factory=list)
    rebuild_regression: float | None = None
    chaos_dry_run: bool = False
    base_ref: str | None = None
    ttl_hours: float = 6.0
    reap_expired: bool = False
    no_hosts: bool = False
    dev_box: str | None = None
    host_user: str | None = None
    host_key: Path | None = None
    bastion: str | None = None
    bastion_role: str = "bastion"
    home: Path = Path(".immutable-infra")
    #: Where each setting that was given came from, as the user wrote it: "--keep", "IMMUTABLE_INFRA_KEEP",
    #: "ini key immutable_infra_keep". Messages name the setting by it.
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        return self.sources.get(name, flag_name(name))

    def given(self, name: str, value: Any) -> str:
        """A setting and its value as the user wrote them: ``--run-id X``, ``IMMUTABLE_INFRA_RUN_ID = 'X'``."""
        src = self.source(name)
        return f"{src} {value}" if src.startswith("--") else f"{src} = {value!r}"

    @property
    def deployed_audit(self) -> bool:
        """--audit without --run-id: the groups as deployed, read from their own backends."""
        return self.audit and not self.run_id

    @property
    def embedded(self) -> bool:
        # A fresh embedded sandbox holds nothing deployed: an audit of what is deployed reads real AWS
        # unless --aws-endpoint names where it is.
        return not self.aws_endpoint and not self.real_aws and not self.deployed_audit


def _percent(value: Any, setting: str = "--rebuild-regression") -> float | None:
    if value in (None, ""):
        return None
    try:
        pct = float(str(value).rstrip("%"))
    except ValueError:
        raise SettingsError(f"{setting} takes a percentage such as 20, not {value!r}") from None
    if pct < 0:
        raise SettingsError(f"{setting} must not be negative, not {value!r}")
    return pct


def _ttl(value: Any, setting: str = "--ttl") -> float:
    from immutable_infra.ephemeral import parse_ttl

    try:
        return parse_ttl(value, setting)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _home(config: Any, root: Path) -> Path:
    """Where runs live: IMMUTABLE_INFRA_HOME, else the immutable_infra_home ini key, else <rootdir>/.immutable-infra."""
    from immutable_infra.ephemeral import default_home

    ini = config.getini("immutable_infra_home")
    if ini and not os.environ.get("IMMUTABLE_INFRA_HOME"):
        return Path(ini) if Path(ini).is_absolute() else root / ini
    return default_home(root)


def from_pytest_config(config: Any) -> Settings:
    """Resolve settings: command line, then IMMUTABLE_INFRA_* environment, then pytest.ini.

    A value that cannot be used raises SettingsError naming the setting as it was given (the flag, the
    environment variable or the ini key).
    """
    import pytest

    root = Path(str(config.rootpath))
    sources: dict[str, str] = {}

    def get(name: str) -> Any:
        value = config.getoption(name)
        if value not in (None, [], False, ""):
            sources[name] = flag_name(name)
            return value
        env = os.environ.get(env_name(name))
        if env:
            sources[name] = env_name(name)
            if name == "group":
                return [g for g in env.replace(",", " ").split() if g]
            return env.split() if name == "backend_config" else env
        try:
            ini = config.getini(ini_name(name))
        except (ValueError, pytest.UsageError) as exc:  # pytest's bool parser: "invalid truth value 'maybe'"
            given = str(exc).removeprefix("invalid truth value ").strip()
            raise SettingsError(
                f"ini key {ini_name(name)} = {given} is neither true nor false; "
                f"write {ini_name(name)} = true or false (in pytest.ini or with -o)"
            ) from None
        if ini not in (None, [], ""):
            sources[name] = f"ini key {ini_name(name)}"
            return ini
        return OPTIONS[name][2]

    def flag(name: str) -> bool:
        value = get(name)
        return parse_bool(value, sources.get(name, flag_name(name)))

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else root / p

    raw_parallelism = get("parallelism")
    try:
        parallelism = int(raw_parallelism)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{sources.get('parallelism', '--parallelism')} must be a whole number, not {raw_parallelism!r}"
        ) from None
    groups = list(dict.fromkeys(get("group")))
    regression = get("rebuild_regression")
    settings = Settings(
        groups=groups,
        groups_dir=path(get("groups_dir")),
        aws_endpoint=get("aws_endpoint") or None,
        real_aws=flag("real_aws"),
        run_id=get("run_id") or None,
        keep=flag("keep"),
        terraform=get("terraform") or None,
        reports_dir=path(get("reports_dir")),
        parallelism=parallelism,
        audit=flag("audit"),
        backend_config=list(get("backend_config") or []),
        rebuild_regression=_percent(regression, sources.get("rebuild_regression", "--rebuild-regression")),
        chaos_dry_run=flag("chaos_dry_run"),
        base_ref=get("base_ref") or None,
        ttl_hours=_ttl(get("ttl"), sources.get("ttl", "--ttl")),
        reap_expired=flag("reap_expired"),
        no_hosts=flag("no_hosts"),
        dev_box=get("dev_box") or None,
        host_user=get("host_user") or None,
        host_key=path(os.path.expanduser(get("host_key"))) if get("host_key") else None,
        bastion=get("bastion") or None,
        bastion_role=str(get("bastion_role") or "bastion"),
        home=_home(config, root),
    )
    if os.environ.get("IMMUTABLE_INFRA_HOME"):
        sources["home"] = "IMMUTABLE_INFRA_HOME"
    elif config.getini("immutable_infra_home"):
        sources["home"] = "ini key immutable_infra_home"
    settings.sources = sources
    return settings


def _writable_dir_problem(path: Path, setting: str, what: str) -> str | None:
    """Why ``path`` cannot be used as a folder this tool writes into, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{setting} {path} is a file, not a folder; {what}: name a folder (it is created if missing)"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{setting} {path} is not writable; {what}: name a folder you can write to"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{setting} {path} cannot be created: {parent} is a file; {what}: name a folder you can write to"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{setting} {path} cannot be created: {parent} is not writable; {what}: name a folder you can write to"
    return None


def path_problems(s: Settings, reports: bool = True) -> list[str]:
    """Folders and programs named by the settings that cannot be used, each with its fix.

    ``reports=False`` leaves the reports folder out (the ``immutable-infra`` command writes no reports).
    """
    import shutil

    problems = []
    unusable = _writable_dir_problem(s.reports_dir, s.source("reports_dir"), "reports are written there")
    if reports and unusable:
        problems.append(unusable)
    if not s.audit or s.home.exists():
        home = _writable_dir_problem(s.home, s.sources.get("home", "the runs folder"),
                                     "runs and their Terraform states live there")
        if home:
            problems.append(home)
    if s.terraform:
        found = shutil.which(s.terraform)
        if found is None:
            what = "does not exist" if not Path(s.terraform).exists() else "is not an executable program"
            problems.append(
                f"{s.source('terraform')} {s.terraform} {what}; give the path of a terraform or tofu binary "
                "(or one on PATH), or drop it to use the embedded Terraform"
            )
    if s.host_key is not None:
        key = s.given("host_key", s.host_key)
        if not s.host_key.exists():
            problems.append(f"{key} does not exist; give the ssh private key file that opens the instances (ssh -i)")
        elif not s.host_key.is_file():
            problems.append(f"{key} is not a file; give the ssh private key file that opens the instances (ssh -i)")
        elif not os.access(s.host_key, os.R_OK):
            problems.append(f"{key} cannot be read; give a private key file you can read")
    if s.dev_box and s.dev_box.startswith("vagrant://") and shutil.which("vagrant") is None:
        problems.append(f"{s.given('dev_box', s.dev_box)}: vagrant is not on PATH; install Vagrant, or give the box "
                        "as an ssh URL (vagrant ssh-config > box.ssh-config; --dev-box ssh://default?ssh_config=box.ssh-config)")
    return problems


def usage_problems(s: Settings) -> list[str]:
    """Option combinations that cannot work, each with its fix, naming each setting as it was given."""
    problems = []
    endpoint, real, keep, audit = (s.source(n) for n in ("aws_endpoint", "real_aws", "keep", "audit"))
    if s.aws_endpoint and s.real_aws:
        problems.append(f"{endpoint} and {real} exclude each other; drop one")
    if s.aws_endpoint and not s.aws_endpoint.startswith(("http://", "https://")):
        problems.append(f"{s.given('aws_endpoint', s.aws_endpoint)}: give a URL such as http://127.0.0.1:5000")
    if s.keep and s.embedded:
        problems.append(
            f"{keep} needs an endpoint that outlives the session: the embedded moto server stops with it; "
            "start one with `immutable-infra sandbox` and pass --aws-endpoint URL"
        )
    if s.run_id and not _run_id_ok(s.run_id):
        problems.append(
            f"{s.given('run_id', s.run_id)}: use 1-16 characters of lowercase a-z, 0-9 and '-' (it goes into AWS names)"
        )
    if s.audit and s.run_id and _run_id_ok(s.run_id):
        from immutable_infra.ephemeral import Run

        if not Run.exists(s.home, s.run_id):
            problems.append(
                f"{audit} {s.given('run_id', s.run_id)}: there is no run {s.run_id!r} in {s.home / 'runs'}, and an "
                "audit only reads a deployed run; `immutable-infra runs` lists them (mind IMMUTABLE_INFRA_HOME)"
            )
    if s.backend_config and not s.deployed_audit:
        problems.append(
            f"{s.source('backend_config')} is for auditing the groups as deployed (--audit without --run-id); "
            + ("a run's groups keep their state in the run" if s.run_id else "add --audit, or drop it"))
    if s.deployed_audit and s.reap_expired:
        problems.append(f"{s.source('reap_expired')} deletes resources, which an audit ({audit}) never does; drop one")
    if s.audit and s.base_ref:
        problems.append(f"{s.source('base_ref')} applies the base version, which an audit ({audit}) never does; "
                        "drop one of them")
    if s.audit and s.keep:
        problems.append(f"{audit} never destroys anything, so {keep} has no meaning there; drop it")
    problems += _remote_host_problems(s)
    if s.parallelism < 1:
        problems.append(f"{s.source('parallelism')} must be at least 1, not {s.parallelism}")
    return problems


def _run_id_ok(run_id: str) -> bool:
    from immutable_infra.ephemeral import RUN_ID

    return bool(RUN_ID.match(run_id))


def _remote_host_problems(s: Settings) -> list[str]:
    """--host-user, --bastion, --bastion-role that cannot be used, each with its fix."""
    from immutable_infra.transports import parse_bastion, user_problem

    problems = []
    if s.host_user:
        problem = user_problem(s.host_user, s.given("host_user", s.host_user))
        if problem:
            problems.append(problem)
    if s.bastion:
        try:
            parse_bastion(s.bastion, s.given("bastion", s.bastion))
        except ValueError as exc:
            problems.append(str(exc))
    if not s.bastion_role.strip() or any(c.isspace() for c in s.bastion_role):
        problems.append(f"{s.given('bastion_role', s.bastion_role)} is not a Role tag value; give the bastion's "
                        "role as its instances are tagged (Role=bastion), without spaces")
    return problems
