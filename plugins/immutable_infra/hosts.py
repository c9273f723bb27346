"""Hosts: what a running host holds, read through testinfra (``local://``, ``ssh://user@host``, ``docker://name``...).

- :func:`read_host_facts` reads, in one pass, exactly what a role's
  ``[roles.NAME.host]`` contract names (packages, services, listening TCP
  ports and their addresses, files, users) into :class:`HostFacts`, plain data that
  ``checks/hosts.py`` judges and that records to JSON. A host that cannot be
  reached or read raises :class:`HostUnreachable` (a tool error, never a
  finding).
- Package lists: anything with a ``packages()`` method that returns
  ``{name: (version, architecture)}`` is a :class:`PackageSource`: a recorded
  manifest (:class:`ManifestPackages`) or a live host
  (:class:`TestinfraPackages`); :func:`live_package_parity` compares a live
  dev box with an image build's manifest, and :func:`live_content_check` runs
  the image parity content check that way (``--dev-box URL``).
  ``checks/parity.py`` never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from immutable_infra.config import HostContract
from immutable_infra.errors import ToolError
from immutable_infra.findings import Finding
from immutable_infra.images import (
    DPKG_COMMAND,
    RPM_COMMAND,
    AllowList,
    Build,
    ImageCatalog,
    ImageManifestError,
    Packages,
    parse_packages,
    read_manifest_file,
)

if TYPE_CHECKING:
    from immutable_infra.checks.parity import PackageDiff


@runtime_checkable
class PackageSource(Protocol):
    """Something that can list installed packages: name -> (version, architecture)."""

    def packages(self) -> Packages: ...


class ManifestPackages:
    """Packages from a recorded package manifest (``<build>.packages.txt``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ManifestPackages({str(self.path)!r})"

    def packages(self) -> Packages:
        text = read_manifest_file(self.path, "package manifest", f"write it with {DPKG_COMMAND} or {RPM_COMMAND}")
        return parse_packages(text, self.path)


class HostPackagesError(ToolError, RuntimeError):
    """A live host could not list its packages (a tool problem, not a finding)."""


class TestinfraPackages:
    """Packages of a live host, through testinfra (``local://``, ``ssh://user@host``, ``docker://name``...).

    Runs ``dpkg-query`` where it exists, else ``rpm``, with the same format
    as the package manifests, so the two compare directly.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, host_url: str, **kwargs: Any) -> None:
        self.host_url = host_url
        self._kwargs = kwargs
        self._read: Packages | None = None

    def __repr__(self) -> str:
        return f"TestinfraPackages({self.host_url!r})"

    def packages(self) -> Packages:
        """The host's packages, read once (later calls return the same read)."""
        if self._read is None:
            self._read = self._list()
        return self._read

    def _list(self) -> Packages:
        import testinfra

        try:
            host = testinfra.get_host(self.host_url, **self._kwargs)
            has_dpkg = host.exists("dpkg-query")
            has_rpm = not has_dpkg and host.exists("rpm")
            command = DPKG_COMMAND if has_dpkg else RPM_COMMAND
            result = host.run(command) if has_dpkg or has_rpm else None
        except Exception as exc:  # testinfra's transport errors (ssh exits 255: RuntimeError)
            raise HostPackagesError(f"{self.host_url}: cannot list packages: {_cause(exc)}") from exc
        if result is None:
            raise HostPackagesError(f"{self.host_url}: neither dpkg-query nor rpm found; cannot list packages")
        if result.rc != 0:
            raise HostPackagesError(
                f"{self.host_url}: {command} exited {result.rc}: {result.stderr.strip()[-500:]}"
            )
        return parse_packages(result.stdout, f"{self.host_url} ({command})")


# --------------------------------------------------------------------------- host facts


class HostUnreachable(ToolError):
    """A host could not be reached or read (ssh refused, a timeout, a command missing); names the URL and the cause."""


@dataclass(frozen=True)
class HostFacts:
    """What one host holds, as read for one contract: only what the contract names.

    - ``packages``: name -> installed version, ``None`` when the package is not
      installed (the version is testinfra's: dpkg's full version; rpm's
      VERSION without RELEASE).
    - ``services``: name -> ``{"enabled": bool, "running": bool}``.
    - ``listening``: every TCP port listening, on any address -> the
      addresses it listens on, as the host reports them (``"0.0.0.0"``,
      ``"::"``, ``"10.21.1.10"``, ``"127.0.0.53%lo"``), sorted; ``None`` when
      the sockets were not read (the contract names no ports). JSON object
      keys are strings, so :meth:`to_dict` writes ``{"22": ["0.0.0.0", "::"]}``.
    - ``files``: path -> ``{"exists", "mode" ("0644"), "owner", "content"}``;
      ``content`` is read only when the contract asks for substrings.
    - ``users``: name -> exists.

    A name the contract asks about and the record lacks was not read; the
    check refuses such a record rather than passing it
    (``checks.hosts.facts_missing``).
    """

    url: str
    packages: dict[str, str | None] = field(default_factory=dict)
    services: dict[str, dict[str, bool]] = field(default_factory=dict)
    listening: dict[int, tuple[str, ...]] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "packages": dict(self.packages),
            "services": {name: dict(state) for name, state in self.services.items()},
            "listening": None if self.listening is None else {
                str(port): list(addresses) for port, addresses in sorted(self.listening.items())},
            "files": {path: dict(state) for path, state in self.files.items()},
            "users": dict(self.users),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostFacts:
        """Facts from :meth:`to_dict`'s shape (recorded JSON); a record without ``url`` is a ValueError."""
        if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
            raise ValueError(f"host facts need a 'url' (the testinfra host URL they were read from); got {data!r:.80}")
        unknown = sorted(set(data) - {"url", "packages", "services", "listening", "files", "users"})
        if unknown:
            raise ValueError(f"host facts of {data['url']}: unknown keys {unknown}")
        return cls(
            url=data["url"],
            packages=dict(data.get("packages") or {}),
            services={name: dict(state) for name, state in (data.get("services") or {}).items()},
            listening=_listening_from(data["url"], data.get("listening")),
            files={path: dict(state) for path, state in (data.get("files") or {}).items()},
            users=dict(data.get("users") or {}),
        )


def _listening_from(url: str, value: Any) -> dict[int, tuple[str, ...]] | None:
    """``{"22": ["0.0.0.0", "::"]}`` (recorded JSON) -> ``{22: ("0.0.0.0", "::")}``; bare ports are a ValueError."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"host facts of {url}: listening must map each TCP port to the addresses it listens on, "
                         f"e.g. {{\"22\": [\"0.0.0.0\", \"::\"]}}; got {value!r:.80} (a record without addresses: "
                         "read it again with read_host_facts)")
    listening: dict[int, tuple[str, ...]] = {}
    for port, addresses in value.items():
        if (not str(port).isdigit() or not isinstance(addresses, (list, tuple)) or not addresses
                or not all(isinstance(a, str) for a in addresses)):
            raise ValueError(f"host facts of {url}: listening {port!r}: {addresses!r:.80} is not a TCP port "
                             "with a non-empty list of addresses")
        listening[int(port)] = tuple(sorted(set(addresses)))
    return dict(sorted(listening.items()))


@contextmanager
def _reading(url: str, what: str) -> Iterator[None]:
    """Anything testinfra raises while reading ``what`` becomes HostUnreachable naming the host and the cause."""
    try:
        yield
    except HostUnreachable:
        raise
    except Exception as exc:  # testinfra raises RuntimeError, AssertionError, ValueError, NotImplementedError...
        raise HostUnreachable(f"{url}: cannot {what}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """One line: a failed command's stderr (testinfra's ssh backend raises RuntimeError(CommandResult)), else the text."""
    result = exc.args[0] if exc.args else None
    stderr = getattr(result, "stderr", None)
    text = stderr if isinstance(stderr, str) and stderr.strip() else str(exc)
    return " ".join(text.split())[-500:] or type(exc).__name__


def parse_tcp_socket(socket_url: str) -> tuple[str, int] | None:
    """One of testinfra's ``get_listening_sockets()`` strings -> (address, port) for TCP; None for anything else.

    ``tcp://0.0.0.0:22`` -> ("0.0.0.0", 22); ``tcp://:::22`` and
    ``tcp://[::]:22`` -> ("::", 22); ``tcp://127.0.0.53%lo:53`` ->
    ("127.0.0.53%lo", 53) (the interface scope kept); ``udp://...`` and
    ``unix://...`` -> None. A TCP string without an address or a numeric port
    is a ValueError: a socket the check cannot place must not be skipped.
    """
    if not socket_url.startswith("tcp://"):
        return None
    address, sep, port = socket_url[len("tcp://"):].rpartition(":")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not sep or not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"cannot parse listening socket {socket_url!r}: expected tcp://ADDRESS:PORT")
    return address, int(port)


def read_host_facts(host_url: str, contract: HostContract, **testinfra_kwargs: Any) -> HostFacts:
    """Read on ``host_url`` (a testinfra host URL) exactly what ``contract`` names, in one pass.

    ``testinfra_kwargs`` go to ``testinfra.get_host`` (e.g. ``timeout=5``,
    ``ssh_config=...``, ``ssh_extra_args="-o BatchMode=yes"``). Raises
    :class:`HostUnreachable` when the host cannot be reached (first command
    fails: ssh refused, a timeout, the backend's command missing) or something
    the contract names cannot be read (no ``ss``/``netstat``, no service
    manager...): the check must not pass a host it could not look at.
    """
    import testinfra

    with _reading(host_url, "reach the host"):
        host = testinfra.get_host(host_url, **testinfra_kwargs)
        probe = host.run("true")
    if probe.rc != 0:
        cause = " ".join((probe.stderr or probe.stdout or "").split())[-500:] or "no output"
        raise HostUnreachable(f"{host_url}: cannot reach the host: `true` exited {probe.rc}: {cause}")

    packages: dict[str, str | None] = {}
    for name in contract.packages:
        with _reading(host_url, f"read package {name}"):
            package = host.package(name)
            packages[name] = package.version if package.is_installed else None
    services: dict[str, dict[str, bool]] = {}
    for name in contract.services:
        with _reading(host_url, f"read service {name}"):
            service = host.service(name)
            services[name] = {"enabled": bool(service.is_enabled), "running": bool(service.is_running)}
    listening: dict[int, tuple[str, ...]] | None = None
    if contract.ports or contract.ports_exclusive:
        with _reading(host_url, "read the listening sockets"):
            found: dict[int, set[str]] = {}
            for parsed in map(parse_tcp_socket, host.socket.get_listening_sockets()):
                if parsed is not None:
                    found.setdefault(parsed[1], set()).add(parsed[0])
        listening = {port: tuple(sorted(found[port])) for port in sorted(found)}
    files: dict[str, dict[str, Any]] = {}
    for wanted in contract.files:
        with _reading(host_url, f"read file {wanted.path}"):
            f = host.file(wanted.path)
            if not f.exists:
                files[wanted.path] = {"exists": False, "mode": None, "owner": None, "content": None}
                continue
            files[wanted.path] = {
                "exists": True,
                "mode": f"{f.mode:04o}",
                "owner": f.user,
                "content": f.content_string if wanted.contains else None,
            }
    users: dict[str, bool] = {}
    for name in contract.users:
        with _reading(host_url, f"read user {name}"):
            users[name] = bool(host.user(name).exists)
    return HostFacts(host_url, packages, services, listening, files, users)


# --------------------------------------------------------------------------- live parity


@dataclass(frozen=True)
class LivePackageParity:
    """A live host's packages against an image build's manifest: the differences and where each side came from.

    ``diffs`` are :func:`immutable_infra.checks.parity.diff_packages` results
    with the live host on the dev-box side (``removed`` = only on the host,
    ``added`` = only in the manifest); allowed ones carry ``allowed=True``.
    """

    host_source: str
    manifest_source: str
    diffs: tuple[PackageDiff, ...]
    #: Packages on either side (the union of the names).
    compared: int = 0

    @property
    def violations(self) -> tuple[PackageDiff, ...]:
        """The differences ``parity.toml`` does not allow."""
        return tuple(d for d in self.diffs if not d.allowed)


def live_package_parity(
    host: str | PackageSource, manifest: Path | str, allow: AllowList | None = None, *, template: str | None = None,
    **testinfra_kwargs: Any,
) -> LivePackageParity:
    """Compare a running dev box (a testinfra URL or any PackageSource) with an image build's package manifest.

    The host is the ``vagrant`` side of the allow-list, the manifest the
    ``amazon-ebs`` side, as in the content check; ``testinfra_kwargs`` go to
    ``testinfra.get_host`` for a URL. A host that cannot list its
    packages raises HostPackagesError; a bad manifest ImageManifestError.
    """
    from immutable_infra.checks.parity import diff_packages

    source = TestinfraPackages(host, **testinfra_kwargs) if isinstance(host, str) else host
    label = f"live host {source.host_url}" if isinstance(source, TestinfraPackages) else f"live host {source!r}"
    manifest_path = Path(manifest)
    image = ManifestPackages(manifest_path).packages()  # first: a bad manifest fails before any connection
    live = source.packages()
    diffs = diff_packages(live, image, allow, template=template)
    return LivePackageParity(label, f"manifest {manifest_path}", tuple(diffs), len(set(live) | set(image)))


@dataclass(frozen=True)
class LiveContentCheck:
    """The image parity content check against a live dev box: findings, report rows, and the source read."""

    source: str
    findings: list[Finding]
    rows: list[dict[str, Any]]


def live_content_check(
    group: str, templates: Iterable[str], catalog: ImageCatalog, allow: AllowList | None, host: str | PackageSource,
    **testinfra_kwargs: Any,
) -> LiveContentCheck:
    """What ``suites/test_image_parity.py`` runs with ``--dev-box URL``: the live dev box against the current run.

    The host's packages are read once (``dpkg-query``, else ``rpm``) and
    compared, through :func:`live_package_parity` (the content check's diff
    and ``parity.toml``), with the package manifest of every amazon-ebs build
    of each template's current Packer run. An unreachable host raises
    :class:`HostPackagesError` (a tool error: the test errors, it never falls
    back to the recorded manifests).
    """
    from immutable_infra.checks.parity import live_content_violations

    source = TestinfraPackages(host, **testinfra_kwargs) if isinstance(host, str) else host
    label = f"live host {source.host_url}" if isinstance(source, TestinfraPackages) else f"live host {source!r}"
    if isinstance(source, TestinfraPackages):
        source.packages()  # reach the host before anything else: an unreachable dev box errors first

    def compare(template: str, ami: Build) -> LivePackageParity:
        if ami.packages_path is None:
            raise ImageManifestError(ami.artifact_id, f"build {ami.name!r} of {template} has no package manifest file",
                                     "load the catalog with images.load_catalog")
        return live_package_parity(source, ami.packages_path, allow, template=template)

    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for template in sorted(templates):
        more, more_rows = live_content_violations(group, template, catalog, compare)
        findings += more
        rows += more_rows
    return LiveContentCheck(label, findings, rows)
