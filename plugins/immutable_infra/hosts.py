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
  dev box with an image build's manifest.
- Live parity: :class:`LiveHost` reads a host's packages and, in one
  command, the sha256 of named configuration files;
  :func:`live_content_check` runs the image parity content check with the
  dev box read live (``--dev-box URL``) and each AMI build read live from
  its running instance when there is one (:class:`ImageHost`), else from its
  recorded manifests.
  ``checks/parity.py`` never imports this module.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    ConfigHashes,
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


class HostConfigsError(ToolError, RuntimeError):
    """A live host's configuration files could not be hashed (a tool problem, not a finding)."""


#: What the one-pass read prints for a path the host does not have.
_ABSENT = "absent\t"


def config_hash_command(paths: Iterable[str]) -> str:
    """One shell command that prints ``sha256sum`` lines for the paths that exist and ``absent<TAB>PATH`` for the
    others, and fails (exit 3) on a path that exists but cannot be hashed (a directory, no permission)."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (f'for p in {quoted}; do if [ -e "$p" ] || [ -L "$p" ]; then sha256sum -- "$p" || exit 3; '
            "else printf 'absent\\t%s\\n' \"$p\"; fi; done")


def parse_config_read(text: str, paths: Iterable[str], url: str) -> ConfigHashes:
    """The output of :func:`config_hash_command` -> path -> sha256 for the files present (absent ones left out).

    Every asked path must be answered, hashed or absent, else :class:`HostConfigsError`:
    a read that looked at fewer files than asked must not compare as equal.
    """
    from immutable_infra.images import parse_config_hashes

    absent = {line[len(_ABSENT):] for line in text.splitlines() if line.startswith(_ABSENT)}
    try:
        hashes = parse_config_hashes("\n".join(line for line in text.splitlines() if not line.startswith(_ABSENT)),
                                     f"{url} (sha256sum)")
    except ImageManifestError as exc:
        raise HostConfigsError(f"{url}: cannot hash configuration files: {exc.problem}") from None
    unanswered = sorted(set(paths) - absent - set(hashes))
    if unanswered:
        raise HostConfigsError(f"{url}: the configuration file read did not answer for {', '.join(unanswered)}")
    return {path: hashes[path] for path in sorted(hashes) if path in set(paths)}


class LiveHost:
    """A host read live for parity, through testinfra: its packages and the sha256 of named configuration files.

    Each is read once (one command for all the files) and kept; ``source``
    is what reports say the side came from (``live host <url>``).
    A host that cannot be read raises :class:`HostPackagesError` or
    :class:`HostConfigsError` (tool errors, never findings).
    """

    __test__ = False

    def __init__(self, host_url: str, source: str | None = None, **kwargs: Any) -> None:
        self.host_url = host_url
        self.source = source or f"live host {host_url}"
        self._kwargs = kwargs
        self._packages = TestinfraPackages(host_url, **kwargs)
        self._configs: dict[tuple[str, ...], ConfigHashes] = {}

    def __repr__(self) -> str:
        return f"LiveHost({self.host_url!r})"

    def packages(self) -> Packages:
        return self._packages.packages()

    def configs(self, paths: Iterable[str]) -> ConfigHashes:
        """sha256 of those of ``paths`` that exist on the host (a missing file is left out: a difference)."""
        key = tuple(sorted(set(paths)))
        if key not in self._configs:
            self._configs[key] = self._hash(key) if key else {}
        return self._configs[key]

    def _hash(self, paths: tuple[str, ...]) -> ConfigHashes:
        import testinfra

        command = config_hash_command(paths)
        try:
            result = testinfra.get_host(self.host_url, **self._kwargs).run(command)
        except Exception as exc:  # testinfra's transport errors
            raise HostConfigsError(f"{self.host_url}: cannot hash configuration files: {_cause(exc)}") from exc
        if result.rc != 0:
            cause = " ".join((result.stderr or result.stdout or "").split())[-500:] or "no output"
            raise HostConfigsError(f"{self.host_url}: cannot hash configuration files (exit {result.rc}): {cause}"
                                   + ("; read the host as root (testinfra URL ?sudo=true)" if result.rc == 3 else ""))
        return parse_config_read(result.stdout, paths, self.host_url)


@dataclass(frozen=True)
class ImageHost:
    """A running instance of an AMI build, reachable as a host: the image side read live."""

    instance_id: str
    url: str


@dataclass(frozen=True)
class LiveContentCheck:
    """The image parity content check against a live dev box: findings, report rows, and the sources read.

    ``source`` is the dev box's; ``ami_source`` every AMI-side source, joined
    (``live instance i-... at ssh://...`` and/or ``manifest <path>``);
    ``image_hosts`` says whether and why not the image side was read live.
    """

    source: str
    findings: list[Finding]
    rows: list[dict[str, Any]]
    ami_source: str = ""
    image_hosts: str = ""


def live_content_check(
    group: str, templates: Iterable[str], catalog: ImageCatalog, allow: AllowList | None, host: str | LiveHost,
    *, image_hosts: Mapping[tuple[str, str], ImageHost] | None = None, no_image_host: str = "",
    reader: Callable[..., LiveHost] | None = None, **testinfra_kwargs: Any,
) -> LiveContentCheck:
    """What ``suites/test_image_parity.py`` runs with ``--dev-box URL``: the live dev box against the current run.

    The dev box's packages (``dpkg-query``, else ``rpm``) and the sha256 of
    the configuration files the parity compares
    (:func:`~immutable_infra.checks.parity.config_paths`) are read once, and
    compared with every amazon-ebs build of each template's current Packer
    run through the content check's diff and ``parity.toml``. The AMI side
    of a build is read live, the same way, from its running instance when
    ``image_hosts`` has one for ``(template, build name)``; else it is the
    build's recorded package and config manifests (``no_image_host`` says
    why, in ``LiveContentCheck.image_hosts``). A host that cannot be read
    raises :class:`HostPackagesError`/:class:`HostConfigsError` (a tool
    error: the test errors, it never falls back to the recorded manifests).

    ``host`` is a testinfra URL or anything with LiveHost's ``source``,
    ``packages()`` and ``configs(paths)``; ``reader(url, source,
    **testinfra_kwargs)`` opens an image host (default :class:`LiveHost`).
    """
    from immutable_infra.checks.parity import compare_content, config_paths, live_content_violations

    open_host = reader or LiveHost
    dev = open_host(host, None, **testinfra_kwargs) if isinstance(host, str) else host
    dev_source = dev.source
    dev.packages()  # reach the dev box before anything else: an unreachable dev box errors first
    image_hosts = dict(image_hosts or {})
    live_images: dict[str, LiveHost] = {}

    def compare(template: str, ami: Build) -> Any:
        paths = config_paths(catalog, template, allow)
        dev_configs = dev.configs(paths)
        on = image_hosts.get((template, ami.name))
        if on is not None:
            if on.url not in live_images:
                live_images[on.url] = open_host(on.url, f"live instance {on.instance_id} at {on.url}",
                                                **testinfra_kwargs)
            image = live_images[on.url]
            return compare_content(dev.packages(), dev_configs, image.packages(), image.configs(paths), allow,
                                   template=template, dev_box_source=dev_source, ami_source=image.source,
                                   ami=f"the AMI's instance {on.instance_id}")
        if ami.packages_path is None:
            raise ImageManifestError(ami.artifact_id, f"build {ami.name!r} of {template} has no package manifest file",
                                     "load the catalog with images.load_catalog")
        return compare_content(dev.packages(), dev_configs, ami.packages, ami.config, allow, template=template,
                               dev_box_source=dev_source, ami_source=f"manifest {ami.packages_path}")

    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for template in sorted(templates):
        more, more_rows = live_content_violations(group, template, catalog, compare)
        findings += more
        rows += more_rows
    ami_source = ", ".join(dict.fromkeys(r["ami_source"] for r in rows))
    read_live = sum(not r["ami_source"].startswith("manifest ") for r in rows)
    if read_live and read_live == len(rows):
        note = "every AMI build read live from its running instance"
    elif read_live:
        note = (f"{read_live} of {len(rows)} AMI builds read live from a running instance; the others from "
                "their recorded manifests (no running instance of theirs is reachable as a host)")
    else:
        note = f"the AMI side from the recorded manifests: {no_image_host or 'no image host given'}"
    return LiveContentCheck(dev_source, findings, rows, ami_source, note)
