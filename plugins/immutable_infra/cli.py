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
from immutable_infra.progress import console_line
from immutable_infra.sandbox import MotoServer, SandboxError
from immutable_infra.settings import Settings, SettingsError, env_name, path_problems, usage_problems


def _say(line: str) -> None:
    console_line(lambda text: print(text, file=sys.stderr, flush=True), line)


def _settings(args: argparse.Namespace, groups: list[str], run_id: str | None) -> Settings:
    endpoint = args.aws_endpoint or os.environ.get(env_name("aws_endpoint")) or None
    # Messages name a setting as the user gave it: the flag, else the environment variable it came from.
    sources = {name: env_name(name) for name in ("aws_endpoint", "groups_dir", "terraform", "ttl", "home")
               if not getattr(args, name, None) and os.environ.get(env_name(name))}
    return Settings(
        sources=sources,
        groups=groups,
        groups_dir=Path(args.groups_dir or os.environ.get(env_name("groups_dir")) or "fixtures/groups").resolve(),
        aws_endpoint=endpoint,
        real_aws=args.real_aws,
        run_id=run_id,
        keep=True,
        terraform=args.terraform or os.environ.get(env_name("terraform")) or None,
        parallelism=args.parallelism,
        ttl_hours=_duration(getattr(args, "ttl", None) or os.environ.get(env_name("ttl")), "--ttl"),
        home=default_home(),
    )


def cmd_up(args: argparse.Namespace) -> int:
    s = _settings(args, args.groups, args.run_id)
    if s.embedded:
        _say("up needs an endpoint that outlives this command: start `immutable-infra sandbox` "
             "and pass --aws-endpoint URL (or --real-aws)")
        return 2
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
    """Terraform's destroy of each group, then the run's tag inventory: what is still tagged with it is deleted.

    Exits 0 only when nothing tagged with the run remains (the run then leaves the store); otherwise 1, naming
    each resource left. ``--forget`` drops a run whose endpoint is gone for good, saying what may remain.
    First, the embedded hosts a killed session left under the run's folder are stopped (both with ``--forget``);
    one that is left (not root) is named and keeps the run in the store too.
    """
    home = default_home()
    run = Run.load(home, args.run_id)
    hosts_left = _stop_hosts(run)
    if args.forget:
        if hosts_left:
            _say(f"run {run.id} is NOT forgotten: its embedded hosts named above are still there")
            return 1
        return _forget(run)
    endpoint = args.aws_endpoint or run.endpoint
    s = _settings(args, [], run.id)
    s.aws_endpoint = endpoint
    s.real_aws = endpoint is None
    s.groups_dir = Path(run.groups_dir)
    harness = Harness(s, say=_say)
    harness._run = run
    try:
        harness.sandbox  # the endpoint answers, or one line saying it does not
    except SandboxError as exc:
        raise SandboxError(f"{exc}; if it is gone for good, drop the run with: "
                           f"immutable-infra down --run-id {run.id} --forget") from None
    before = len(run.outside_terraform)
    problems = harness.deployer.teardown(run.live())
    outside = run.outside_terraform[before:]
    if outside:
        _say(f"deleted outside Terraform ({len(outside)}; tagged Run={run.id} but in no state):")
        for line in outside:
            _say(f"  {line}")
    for p in problems:
        _say(p)
    regions = ", ".join(harness.deployer._regions()) or "no region"
    if problems or hosts_left:
        _say(f"run {run.id} is NOT destroyed: what is named above is still there; it stays in `immutable-infra runs`")
        return 1
    run.forget()
    _say(f"run {run.id} destroyed: nothing tagged Run={run.id} remains ({regions}) and no embedded host of it runs; "
         "removed from the run store")
    return 0


def _stop_hosts(run: Run) -> list[str]:
    """Stop the embedded hosts a killed session left under the run's folder; say which; return what is left."""
    from immutable_infra.embedded_hosts import HostsLeftError, stop_leftover_hosts

    why = None
    try:
        stopped, left = stop_leftover_hosts(run.path), []
    except HostsLeftError as exc:
        stopped, left, why = exc.stopped, exc.remaining, exc.reason
    if stopped:
        _say(f"embedded hosts stopped: {', '.join(stopped)}")
    if left:
        _say(f"embedded hosts of run {run.id} left{f' ({why})' if why else ''}:")
        for line in left:
            _say(f"  {line}")
    return left


def _forget(run: Run) -> int:
    """Drop a run from the store without touching AWS, after saying what may remain."""
    where = run.endpoint or "real AWS"
    live = run.live()
    if live or run.leftovers:
        _say(f"forgetting run {run.id} without touching {where}; what may remain there (tagged Run={run.id}):")
        for name in live:
            rec = run.groups[name]
            _say(f"  group {name} ({rec.region or '?'}, {rec.status}): {len(rec.resources)} resource(s) in its state"
                 + (", more if its apply was cut short" if rec.status in ("applying", "failed") else ""))
        for line in run.leftovers:
            _say(f"  {line}")
        _say(f"if that endpoint comes back: immutable-infra reap --run-id {run.id}"
             + (f" --aws-endpoint {run.endpoint}" if run.endpoint else " --real-aws"))
    run.forget()
    _say(f"run {run.id} removed from the run store")
    return 0


def _answers(url: str | None) -> bool:
    """Whether an endpoint answers at all (any HTTP status counts). Real AWS (None) is assumed to."""
    if not url:
        return True
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=3).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def _duration(value: str | None, setting: str) -> float:
    from immutable_infra.ephemeral import parse_ttl

    try:
        return parse_ttl(value, setting)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def cmd_reap(args: argparse.Namespace) -> int:
    """Delete the runs whose ExpiresAt has passed (or one run, or runs older than a duration), from the tags alone."""
    from immutable_infra.catalog import Catalog
    from immutable_infra.reaper import AWS_RETRY_DELAYS, ENDPOINT_RETRY_DELAYS, reap_runs
    from immutable_infra.sandbox import Sandbox

    endpoint = args.aws_endpoint or os.environ.get(env_name("aws_endpoint")) or None
    if not endpoint and not args.real_aws:
        raise SandboxError("reap needs the endpoint to clean: --aws-endpoint URL, or --real-aws")
    if endpoint and args.real_aws:
        given = "--aws-endpoint" if args.aws_endpoint else env_name("aws_endpoint")
        raise SettingsError(f"{given} and {_real_aws_source(args)} exclude each other; drop one")
    if args.run_id and args.older_than:
        raise SettingsError("--run-id and --older-than exclude each other; drop one")
    older = _duration(args.older_than, "--older-than") if args.older_than else None
    regions = list(args.region or [])
    if not regions:
        groups_dir = Path(args.groups_dir or os.environ.get(env_name("groups_dir")) or "fixtures/groups")
        catalog = Catalog(groups_dir.resolve())
        for name in catalog.names():
            try:
                regions.append(catalog.get(name).region)
            except ToolError:
                continue
        for run in Run.all(default_home()):
            regions += run.regions()
        regions = list(dict.fromkeys(r for r in regions if r))
    if not regions:
        raise SettingsError(f"no region to look in: name one with --region, or point --groups-dir at the groups "
                            f"(none found in {args.groups_dir or 'fixtures/groups'})")
    sandbox = Sandbox.remote(endpoint)
    delays = ENDPOINT_RETRY_DELAYS if endpoint else AWS_RETRY_DELAYS
    chosen, found, outcome = reap_runs(sandbox.client, regions, args.run_id, older, args.dry_run,
                                       say=lambda line: print(line, flush=True), retry_delays=delays)
    for error in found.errors:
        _say(f"could not list {error}")
    where = f"{endpoint or 'real AWS'} ({', '.join(regions)})"
    if not chosen:
        what = f"run {args.run_id}" if args.run_id else (f"run older than {args.older_than}" if older else "expired run")
        _say(f"nothing to reap: no {what} has resources tagged Run and ExpiresAt on {where}")
        return 1 if found.errors else 0
    for run_id, why in chosen.items():
        mine = [r for r in found.resources if r.run == run_id]
        _say(f"run {run_id} ({why}): {len(mine)} resource(s) on {where}")
    if args.dry_run:
        for r in found.resources:
            print(f"would delete {r}  [Run={r.run} ExpiresAt={r.tags.get('ExpiresAt')}]")
        _say("dry run: nothing was deleted")
        return 0
    for r, why in outcome.refused.items():
        _say(f"left alone {r}: {why}")
    for line in outcome.problems():
        _say(f"could not delete {line}")
    if outcome.left or found.errors:
        _say(f"reap incomplete: {len(outcome.left)} resource(s) left; run it again, or delete them by hand")
        return 1
    hosts_left = []
    for run_id in chosen:
        if Run.exists(default_home(), run_id):
            run = Run.load(default_home(), run_id)
            left = _stop_hosts(run)
            if left:
                hosts_left += left
                continue  # stays in the run store: `down` or `reap` again, as root, stops them
            run.forget()
    if hosts_left:
        _say(f"reap incomplete: {len(hosts_left)} embedded host item(s) left (named above); run it again as root")
        return 1
    _say(f"reaped {len(chosen)} run(s): {len(outcome.deleted)} resource(s) deleted")
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
        if live or run.leftovers:
            if run.leftovers and not live:
                line = line.replace(" " * 40, f"{'(' + str(len(run.leftovers)) + ' left after teardown)':<40}", 1)
            print(line + ("" if _answers(run.endpoint) else
                          f"  UNREACHABLE: bring it back and `down`, or `down --run-id {run.id} --forget`"))
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
        sp.add_argument("--real-aws", action="store_true",
                        help=f"real AWS, credentials from the AWS environment [env {env_name('real_aws')}]")
        sp.add_argument("--groups-dir", metavar="DIR", help="folder of groups (default: fixtures/groups)")
        sp.add_argument("--terraform", metavar="PATH", help="a terraform or tofu binary instead of the embedded one")
        sp.add_argument("--parallelism", type=int, default=DEFAULT_PARALLELISM, help="Terraform -parallelism")

    up = sub.add_parser("up", help="apply groups (and what they depend on) and keep them")
    up.add_argument("groups", nargs="+", metavar="GROUP")
    up.add_argument("--run-id", metavar="ID")
    up.add_argument("--ttl", metavar="DURATION", help="ExpiresAt of the run's resources: now + this (default 6h)")
    common(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="destroy a kept run, and prove from its tags that nothing is left")
    down.add_argument("--run-id", metavar="ID", required=True)
    down.add_argument("--forget", action="store_true",
                      help="the endpoint is gone for good: drop the run from the store, saying what may remain")
    common(down)
    down.set_defaults(func=cmd_down)

    reap = sub.add_parser("reap", help="delete runs whose ExpiresAt has passed (no local state needed)")
    reap.add_argument("--run-id", metavar="ID", help="reap this run, expired or not")
    reap.add_argument("--older-than", metavar="DURATION", help="reap runs created longer ago than this (90m, 2h, 1d)")
    reap.add_argument("--dry-run", action="store_true", help="list what would be deleted; make no change")
    reap.add_argument("--region", action="append", metavar="REGION",
                      help="where to look (repeatable; default: the regions of the groups in --groups-dir and of the kept runs)")
    common(reap)
    reap.set_defaults(func=cmd_reap)

    runs = sub.add_parser("runs", help="list kept runs")
    runs.set_defaults(func=cmd_runs)

    sandbox = sub.add_parser("sandbox", help="serve the embedded AWS (moto on 127.0.0.1) until Ctrl-C")
    sandbox.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    sandbox.set_defaults(func=cmd_sandbox)
    return p


def _real_aws_source(args: argparse.Namespace) -> str:
    return "--real-aws" if getattr(args, "real_aws_flag", False) else env_name("real_aws")


def _real_aws_from_env(args: argparse.Namespace) -> None:
    """``--real-aws`` may also come from IMMUTABLE_INFRA_REAL_AWS (as for the plugin), e.g. set once in a Jenkinsfile."""
    from immutable_infra.settings import parse_bool

    if not hasattr(args, "real_aws"):
        return
    args.real_aws_flag = args.real_aws
    if not args.real_aws and os.environ.get(env_name("real_aws")):
        args.real_aws = parse_bool(os.environ[env_name("real_aws")], env_name("real_aws"))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _real_aws_from_env(args)
    except ToolError as exc:
        _say(f"immutable-infra {args.command}: {exc}")
        return 2
    if args.command in ("up", "down", "reap"):
        from immutable_infra.engine import signals

        signals.install(_say)  # SIGTERM and SIGHUP like Ctrl-C; a second one stops at once
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
