"""The ``immutable-infra`` command: bring runs up, tear them down, list them, serve a sandbox.

    immutable-infra sandbox [--port P]                 serve the embedded AWS until Ctrl-C
    immutable-infra up GROUP... [--run-id ID] [--aws-endpoint URL]
    immutable-infra down --run-id ID [--aws-endpoint URL]
    immutable-infra runs

Same engine and the same run store as the pytest plugin: a run brought up
here is tested with ``pytest suites/ --group G --run-id ID --aws-endpoint URL``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
from pathlib import Path

from immutable_infra.engine import DEFAULT_PARALLELISM
from immutable_infra.ephemeral import Run, RunError, default_home
from immutable_infra.errors import ToolError
from immutable_infra.harness import Harness
from immutable_infra.sandbox import MotoServer, SandboxError
from immutable_infra.settings import Settings, SettingsError, env_name, path_problems, usage_problems


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, groups: list[str], run_id: str | None) -> Settings:
    endpoint = args.aws_endpoint or os.environ.get(env_name("aws_endpoint")) or None
    return Settings(
        groups=groups,
        groups_dir=Path(args.groups_dir or os.environ.get(env_name("groups_dir")) or "fixtures/groups").resolve(),
        aws_endpoint=endpoint,
        real_aws=args.real_aws,
        run_id=run_id,
        keep=True,
        terraform=args.terraform or os.environ.get(env_name("terraform")) or None,
        parallelism=args.parallelism,
        home=default_home(),
    )


def cmd_up(args: argparse.Namespace) -> int:
    s = _settings(args, args.groups, args.run_id)
    if s.embedded:
        _say("up needs an endpoint that outlives this command: start `immutable-infra sandbox` "
             "and pass --aws-endpoint URL (or --real-aws)")
        return 2
    if os.environ.get("IMMUTABLE_INFRA_HOME"):
        s.sources["home"] = "IMMUTABLE_INFRA_HOME"
    problems = usage_problems(s) + path_problems(s, reports=False)
    if problems:
        raise SettingsError(problems[0])
    harness = Harness(s, say=_say)
    harness.catalog.validate()  # every group of the folder, roles.toml, parity.toml: before any apply
    harness.catalog.closure(s.groups)
    try:
        harness.up(s.groups)
    except BaseException:
        problems = harness.teardown(keep=False)
        for p in problems:
            _say(p)
        raise
    run = harness.run
    run.keep = True
    run.save()
    endpoint = f" --aws-endpoint {run.endpoint}" if run.endpoint else " --real-aws"
    print(run.id)
    _say(f"run {run.id} is up ({run.resource_count()} resources). Test it with:\n"
         f"  pytest suites/ {' '.join('--group ' + g for g in s.groups)} --run-id {run.id}{endpoint}\n"
         f"Destroy it with:\n  immutable-infra down --run-id {run.id}{endpoint}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    home = default_home()
    run = Run.load(home, args.run_id)
    endpoint = args.aws_endpoint or run.endpoint
    s = _settings(args, [], run.id)
    s.aws_endpoint = endpoint
    s.real_aws = endpoint is None
    s.groups_dir = Path(run.groups_dir)
    harness = Harness(s, say=_say)
    harness._run = run
    harness.applied_here = [n for n in run.order if run.groups[n].status != "destroyed"]
    problems = harness.teardown(keep=False)
    for p in problems:
        _say(p)
    if problems:
        return 1
    run.keep = False
    run.save()
    _say(f"run {run.id} destroyed")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """Kept runs, one line each; a run.json that cannot be read is listed as damaged (exit status 1), never hidden."""
    home = default_home()
    print(f"{'run':<12} {'groups':<40} {'age':>8} {'resources':>9}  endpoint")
    now = dt.datetime.now(dt.timezone.utc)
    damaged = 0
    for path in sorted((home / "runs").glob("*/run.json")):
        try:
            run = Run.load(home, path.parent.name)
            live = [n for n in run.order if run.groups[n].status not in ("destroyed",)]
            hours = (now - dt.datetime.fromisoformat(run.created)).total_seconds() / 3600
            line = (f"{run.id:<12} {','.join(live):<40} {hours:>7.1f}h {run.resource_count():>9}  "
                    f"{run.endpoint or 'real AWS'}")
        except (RunError, TypeError, KeyError, ValueError, AttributeError) as exc:
            damaged += 1
            why = str(exc) if isinstance(exc, RunError) else f"{path} is damaged ({type(exc).__name__}: {exc})"
            print(f"{path.parent.name:<12} DAMAGED: {why}; fix or remove {path.parent} "
                  "(its group workspaces hold the Terraform states)")
            continue
        if live:
            print(line)
    return 1 if damaged else 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise SandboxError(f"--port {args.port} is not a port number; give 1-65535, or leave it out for a free one")
    if args.port:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", args.port))
            except OSError as exc:
                raise SandboxError(f"--port {args.port}: 127.0.0.1:{args.port} is in use ({exc.strerror}); "
                                   "choose another port, or leave --port out for a free one") from None
    server = MotoServer(port=args.port).start()
    print(server.url, flush=True)
    _say(f"embedded AWS sandbox (moto, with compatibility fixes) on {server.url}; Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="immutable-infra", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--aws-endpoint", metavar="URL", help="a running AWS-compatible endpoint (e.g. from `immutable-infra sandbox`)")
        sp.add_argument("--real-aws", action="store_true", help="real AWS, credentials from the AWS environment")
        sp.add_argument("--groups-dir", metavar="DIR", help="folder of groups (default: fixtures/groups)")
        sp.add_argument("--terraform", metavar="PATH", help="a terraform or tofu binary instead of the embedded one")
        sp.add_argument("--parallelism", type=int, default=DEFAULT_PARALLELISM, help="Terraform -parallelism")

    up = sub.add_parser("up", help="apply groups (and what they depend on) and keep them")
    up.add_argument("groups", nargs="+", metavar="GROUP")
    up.add_argument("--run-id", metavar="ID")
    common(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="destroy a kept run")
    down.add_argument("--run-id", metavar="ID", required=True)
    common(down)
    down.set_defaults(func=cmd_down)

    runs = sub.add_parser("runs", help="list kept runs")
    runs.set_defaults(func=cmd_runs)

    sandbox = sub.add_parser("sandbox", help="serve the embedded AWS (moto on 127.0.0.1) until Ctrl-C")
    sandbox.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    sandbox.set_defaults(func=cmd_sandbox)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ToolError as exc:
        _say(f"immutable-infra {args.command}: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
